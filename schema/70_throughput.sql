-- 70_throughput.sql — how fast this warehouse's jobs ran, per kind of work and device
--
-- Sampling, landscape and interpolation jobs commit a chunk_timings row with every flush of
-- rows (how many chunks, how long); training jobs record wall_seconds with every
-- evaluation. These views turn them into rates that `retland study --plan` divides the
-- work left by.
--
-- Defines
--   sampling_throughput   view, one row per (algo, env, variant, backend, operator_kind,
--       device) that sampled here (operator_kind: the operator's kind, or landscape /
--       interpolation for those tables' rollouts):
--       flushes, steady_env_steps, steady_seconds (flushes after a job's first),
--       env_steps_per_second (steady_env_steps / steady_seconds; NULL when every flush
--       was a first one), first_flush_seconds (median seconds of the first flushes:
--       their chunks plus the program's compile when it was not compiled yet),
--       first_flush_env_steps (median env steps of those first flushes),
--       batch_size (the largest chunk size seen), recorded_until (the newest flush)
--   training_throughput   view, one row per (algo, env, variant, backend, device, seeds):
--       jobs, env_steps (seeds x steps reached, summed over jobs), seconds (their
--       wall_seconds at the last evaluation, summed), env_steps_per_second (compile,
--       evaluations and checkpoints included: end to end)
--
-- env steps are simulated steps: a sampling chunk counts B x horizon (padding included),
-- a training job seeds x env steps of each seed. device is `platform:device kind` of the
-- first device (cpu:cpu, gpu:NVIDIA H100 80GB HBM3).

CREATE OR REPLACE VIEW sampling_throughput AS
WITH t AS (
    SELECT c.*, r.algo, r.env, run_variant(r.variant, r.source) AS variant, r.backend,
           CASE c.table_name
               WHEN 'post_update_returns' THEN coalesce(o.kind, split_part(c.operator_id, '[', 1))
               WHEN 'landscape_points' THEN 'landscape'
               ELSE 'interpolation' END AS operator_kind
    FROM chunk_timings c
    JOIN runs r USING (run_id)
    LEFT JOIN (SELECT DISTINCT operator_id, kind FROM operators) o USING (operator_id)
)
SELECT algo, env, variant, backend, operator_kind, device,
       count(*) AS flushes,
       sum(env_steps) FILTER (WHERE NOT includes_compile) AS steady_env_steps,
       sum(seconds) FILTER (WHERE NOT includes_compile) AS steady_seconds,
       sum(env_steps) FILTER (WHERE NOT includes_compile)
           / nullif(sum(seconds) FILTER (WHERE NOT includes_compile), 0) AS env_steps_per_second,
       median(seconds) FILTER (WHERE includes_compile) AS first_flush_seconds,
       median(env_steps) FILTER (WHERE includes_compile) AS first_flush_env_steps,
       max(batch_size) AS batch_size,
       max(recorded_at) AS recorded_until
FROM t
GROUP BY ALL;

CREATE OR REPLACE VIEW training_throughput AS
WITH per_run AS (
    SELECT r.run_id, r.algo, r.env, run_variant(r.variant, r.source) AS variant, r.backend,
           coalesce(json_extract_string(r.repro, '$.devices[0]'), 'unknown') AS device,
           json_extract_string(r.config, '$.job_id') AS job_id,
           max(e.step) AS steps, max(e.wall_seconds) AS seconds
    FROM runs r JOIN evaluations e USING (run_id)
    WHERE r.source = 'trained'
    GROUP BY ALL
), per_job AS (
    SELECT algo, env, variant, backend, device, job_id, count(*) AS seeds,
           sum(steps)::BIGINT AS env_steps, max(seconds) AS seconds
    FROM per_run
    GROUP BY ALL
)
SELECT algo, env, variant, backend, device, seeds, count(*) AS jobs,
       sum(env_steps)::BIGINT AS env_steps, sum(seconds) AS seconds,
       sum(env_steps) / nullif(sum(seconds), 0) AS env_steps_per_second
FROM per_job
WHERE seconds > 0
GROUP BY ALL;
