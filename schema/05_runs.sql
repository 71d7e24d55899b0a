-- 05_runs.sql — one row per run: what the warehouse holds of it
--
-- `runs` registers each run (trained, imported or derived by `retland stabilize`);
-- `checkpoints` its saved states with their evaluation return; `post_update_returns`
-- the sampled post-update returns, grouped into distributions by (step, operator_id).
--
-- Defines
--   run_checkpoint_summary   view, one row per run:
--       run_id, algo, env, variant, simulator (run_simulator(backend, variant)), seed, source,
--       checkpoints (distinct checkpoint steps, 0 if none),
--       best_eval_return (highest checkpoint eval_return; NULL if none)
--   run_summary              view, one row per run (what `retland runs` lists):
--       the columns of run_checkpoint_summary, then
--       distributions (distinct (step, operator_id) of its post-update returns, 0 if none),
--       samples (its post-update return rows, 0 if none)
--   run_listing              view, one row per run (what `retland runs` prints): the columns
--       of run_summary, then steps (its distinct checkpoint steps, ascending; NULL if none)
--   run_checkpoint_listing   view: run_listing without reading post_update_returns
--       (distributions and samples 0), what `retland runs` lists when that table is damaged
--   distribution_progress    view, one row per stored distribution (what `retland status` shows):
--       run_id, step, operator_id, rows (its post-update return rows),
--       chunk_sizes (the distinct chunk_size values of its rows, a list; one unless a
--       job was resumed with another --batch-size), indices (its update_index values, a list)
--
-- variant is run_variant(runs.variant, runs.source) of 00_common.sql.
--
-- run_checkpoint_summary does not read post_update_returns, so it still answers when a
-- part of that table is damaged; `retland runs` falls back to it (through
-- run_checkpoint_listing, with 0 distributions and samples) then.

CREATE OR REPLACE VIEW run_checkpoint_summary AS
SELECT r.run_id, r.algo, r.env, run_variant(r.variant, r.source) AS variant,
       run_simulator(r.backend, r.variant) AS simulator,
       r.seed, r.source,
       count(DISTINCT c.step) AS checkpoints,
       max(c.eval_return) AS best_eval_return
FROM runs r
LEFT JOIN checkpoints c USING (run_id)
GROUP BY ALL;

CREATE OR REPLACE VIEW run_summary AS
SELECT s.*,
       coalesce(d.distributions, 0) AS distributions,
       coalesce(d.samples, 0) AS samples
FROM run_checkpoint_summary s
LEFT JOIN (
    SELECT run_id, count(DISTINCT (step, operator_id)) AS distributions, count(*) AS samples
    FROM post_update_returns
    GROUP BY run_id
) d USING (run_id);

CREATE OR REPLACE VIEW distribution_progress AS
SELECT run_id, step, operator_id,
       count(*) AS rows,
       list(DISTINCT chunk_size) AS chunk_sizes,
       list(update_index) AS indices
FROM post_update_returns
GROUP BY run_id, step, operator_id;

-- What `retland runs` lists: run_summary (or, when post_update_returns cannot be read,
-- run_checkpoint_summary with 0 distributions and samples) with each run's checkpoint steps.
CREATE OR REPLACE VIEW run_listing AS
SELECT s.*,
       (SELECT list(DISTINCT c.step ORDER BY c.step) FROM checkpoints c WHERE c.run_id = s.run_id) AS steps
FROM run_summary s;

CREATE OR REPLACE VIEW run_checkpoint_listing AS
SELECT s.*, 0::BIGINT AS distributions, 0::BIGINT AS samples,
       (SELECT list(DISTINCT c.step ORDER BY c.step) FROM checkpoints c WHERE c.run_id = s.run_id) AS steps
FROM run_checkpoint_summary s;
