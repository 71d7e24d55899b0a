-- 70_throughput.sql — how fast this warehouse's jobs ran, per kind of work and device
--
-- Sampling, landscape and interpolation jobs commit a chunk_timings row with every flush of
-- rows (how many chunks, how long); training jobs (BC included) commit a training_timings
-- row per stretch between two stops (evaluations, checkpoints, the end of warm-up);
-- `retland study --plan --calibrate` adds short measurements of tasks never run here
-- (training_timings with source 'calibration', sampling_calibrations). These views turn
-- them into rates that `retland study --plan` divides the work left by.
--
-- Defines
--   sampling_throughput   view, one row per (algo, env, variant, backend, operator_kind,
--       device, source) that sampled here (operator_kind: the operator's kind, or landscape /
--       interpolation for those tables' rollouts; source: job, or calibration):
--       flushes, steady_env_steps, steady_seconds (flushes after a job's first),
--       env_steps_per_second (steady_env_steps / steady_seconds; NULL when every flush
--       was a first one), first_flush_seconds (median seconds of the first flushes:
--       their chunks plus the program's compile when it was not compiled yet),
--       first_flush_env_steps (median env steps of those first flushes),
--       batch_size (the largest chunk size seen), recorded_until (the newest flush)
--   training_throughput   view, one row per (algo, env, variant, backend, device, seeds,
--       source) that trained here (seeds: vmapped together; source: job — stretches of
--       training jobs —, calibration, or evaluations — jobs from before training_timings,
--       measured end to end from their evaluations' wall_seconds): jobs, stretches,
--       steady_env_steps, steady_seconds (stretches after warm-up that hold no compile;
--       evaluations and checkpoint writing included), env_steps_per_second (their ratio;
--       for evaluations: end to end, compile included), first_seconds / first_env_steps
--       (median over jobs of the sum of their compile and warm-up stretches: what a job
--       costs beyond its steady rate, once), recorded_until
--
-- env steps are simulated steps: a sampling chunk counts B x horizon (padding included),
-- a training stretch seeds x env steps of each seed (BC: gradient steps). device is
-- `platform:device kind` of the first device (cpu:cpu, gpu:NVIDIA H100 80GB HBM3).

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
SELECT algo, env, variant, backend, operator_kind, device, source,
       count(*) AS flushes,
       sum(env_steps) FILTER (WHERE NOT includes_compile) AS steady_env_steps,
       sum(seconds) FILTER (WHERE NOT includes_compile) AS steady_seconds,
       sum(env_steps) FILTER (WHERE NOT includes_compile)
           / nullif(sum(seconds) FILTER (WHERE NOT includes_compile), 0) AS env_steps_per_second,
       median(seconds) FILTER (WHERE includes_compile) AS first_flush_seconds,
       median(env_steps) FILTER (WHERE includes_compile) AS first_flush_env_steps,
       max(batch_size) AS batch_size,
       max(recorded_at) AS recorded_until
FROM (SELECT algo, env, variant, backend, operator_kind, device, 'job' AS source, env_steps, seconds,
             includes_compile, batch_size, recorded_at FROM t
      UNION ALL
      SELECT algo, env, variant, backend, operator_kind, device, 'calibration', env_steps, seconds,
             includes_compile, batch_size, recorded_at FROM sampling_calibrations)
GROUP BY ALL;

CREATE OR REPLACE VIEW training_throughput AS
WITH per_job AS (  -- the stretches of each job (or calibration run) and seed-group size
    SELECT algo, env, variant, backend, device, seeds, source, job_id,
           count(*) AS stretches,
           sum(env_steps) FILTER (WHERE NOT includes_compile AND NOT warmup) AS steady_env_steps,
           sum(seconds) FILTER (WHERE NOT includes_compile AND NOT warmup) AS steady_seconds,
           sum(seconds) FILTER (WHERE includes_compile OR warmup) AS first_seconds,
           sum(env_steps) FILTER (WHERE includes_compile OR warmup) AS first_env_steps,
           max(recorded_at) AS recorded_at
    FROM training_timings
    GROUP BY ALL
), per_run AS (  -- jobs from before training_timings: their evaluations' wall clock
    SELECT r.run_id, r.algo, r.env, run_variant(r.variant, r.source) AS variant, r.backend,
           coalesce(json_extract_string(r.repro, '$.devices[0]'), 'unknown') AS device,
           json_extract_string(r.config, '$.job_id') AS job_id,
           max(e.step) AS steps, max(e.wall_seconds) AS seconds
    FROM runs r JOIN evaluations e USING (run_id)
    WHERE r.source = 'trained'
      AND json_extract_string(r.config, '$.job_id') NOT IN (SELECT DISTINCT job_id FROM training_timings)
    GROUP BY ALL
), old_jobs AS (
    SELECT algo, env, variant, backend, device, count(*) AS seeds, 'evaluations' AS source, job_id,
           count(*) AS stretches, sum(steps)::BIGINT AS steady_env_steps, max(seconds) AS steady_seconds,
           NULL::DOUBLE AS first_seconds, NULL::BIGINT AS first_env_steps, NULL::TIMESTAMPTZ AS recorded_at
    FROM per_run
    GROUP BY ALL
)
SELECT algo, env, variant, backend, device, seeds, source, count(*) AS jobs,
       sum(stretches)::BIGINT AS stretches,
       sum(steady_env_steps)::BIGINT AS steady_env_steps, sum(steady_seconds) AS steady_seconds,
       sum(steady_env_steps) / nullif(sum(steady_seconds), 0) AS env_steps_per_second,
       median(first_seconds) AS first_seconds, median(first_env_steps) AS first_env_steps,
       max(recorded_at) AS recorded_until
FROM (SELECT * FROM per_job UNION ALL BY NAME SELECT * FROM old_jobs)
GROUP BY ALL;
