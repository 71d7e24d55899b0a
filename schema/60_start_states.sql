-- 60_start_states.sql — post-update returns from start states other than s0 (the paper's
-- Appendix A.4, Fig. 10)
--
-- A distribution whose rollouts start at replay row r of its checkpoint's buffer (the state
-- the agent observed when it collected transition r) has `start=row<r>` in its operator id,
-- just before h=, and start_row = r in the operator's params (retland.purd.operators);
-- from s0 the id has no start. docs/method.md "Post-update returns from other start states".
--
-- Defines
--   start_state_stats_at(alpha := 0.1, beta := 0.5)   table macro, one row per distribution:
--       purd_stats' columns, then start ('s0' or 'row<r>'), start_row (NULL for s0),
--       base_operator_id (the operator id without its start: what the rows of one
--       checkpoint share across start states) and replay_size (the checkpoint's buffer)
--   start_state_stats                                 view: start_state_stats_at() at the paper's defaults
--   start_state_ltp                                   view, one row per (run, base operator, start row r),
--       the rows of Fig. 10: algo, env, variant, seed, run_id, base_operator_id, start_row,
--       checkpoints (how many of the run's checkpoints were sampled from row r),
--       ltp (their mean LTP: the figure's y, at collection index r), ltp_min, ltp_max,
--       mean_return (mean of the distributions' means), samples (rows behind them),
--       mode_nonpositive_checkpoints (of them, those whose distribution has mode <= 0: a
--       state from which every update fails at once, LTP 1 against a threshold <= 0,
--       as purd_stats counts it; see docs/method.md §2),
--       s0_ltp (mean LTP from s0 at the same checkpoints, NULL where s0 was not sampled
--       at all of them), s0_checkpoints
--   start_of(operator_id), start_row_of(operator_id), base_operator_of(operator_id)
--       the start parts of an operator id

CREATE OR REPLACE MACRO start_row_of(operator_id) AS
    TRY_CAST(NULLIF(regexp_extract(operator_id, '[\[,]start=row([0-9]+)[,\]]', 1), '') AS BIGINT);

CREATE OR REPLACE MACRO start_of(operator_id) AS
    coalesce('row' || start_row_of(operator_id)::VARCHAR, 's0');

CREATE OR REPLACE MACRO base_operator_of(operator_id) AS
    regexp_replace(operator_id, 'start=row[0-9]+,', '');

CREATE OR REPLACE MACRO start_state_stats_at(alpha := 0.1, beta := 0.5) AS TABLE
SELECT s.*,
       start_of(s.operator_id) AS start,
       start_row_of(s.operator_id) AS start_row,
       base_operator_of(s.operator_id) AS base_operator_id,
       c.replay_size
FROM purd_stats(alpha := alpha, beta := beta) AS s
LEFT JOIN checkpoints AS c USING (run_id, step)
ORDER BY s.run_id, s.step, base_operator_id, start_row NULLS FIRST;

CREATE OR REPLACE VIEW start_state_stats AS
SELECT * FROM start_state_stats_at();

CREATE OR REPLACE VIEW start_state_ltp AS
WITH stats AS MATERIALIZED (SELECT * FROM start_state_stats),
rows_ AS (SELECT * FROM stats WHERE start_row IS NOT NULL),
s0 AS (SELECT run_id, step, base_operator_id, ltp FROM stats WHERE start_row IS NULL)
SELECT r.algo, r.env, r.variant, r.seed, r.run_id, r.base_operator_id, r.start_row,
       count(*) AS checkpoints,
       avg(r.ltp) AS ltp,
       min(r.ltp) AS ltp_min,
       max(r.ltp) AS ltp_max,
       avg(r.mean) AS mean_return,
       sum(r.n)::BIGINT AS samples,
       count_if(r.mode_nonpositive)::BIGINT AS mode_nonpositive_checkpoints,
       CASE WHEN count(s0.ltp) = count(*) THEN avg(s0.ltp) END AS s0_ltp,
       count(s0.ltp) AS s0_checkpoints
FROM rows_ AS r
LEFT JOIN s0 USING (run_id, step, base_operator_id)
GROUP BY ALL
ORDER BY r.env, r.algo, r.seed, r.run_id, r.base_operator_id, r.start_row;
