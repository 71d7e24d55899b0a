-- 40_failures.sql — where a failing post-update rollout parts from a successful one
--
-- Table `trajectories` (written by `retland failures`) holds, per failure pair, the
-- per-step re-rolls of a successful sample (return within 10% of the PURD mean) and a
-- failing one (return < 50% of the PURD mode) of one checkpoint: reward, cumulative
-- return G_t, done, torso height and pitch. docs/method.md §6.2 Failures, Fig. 3.
--
-- Defines
--   failure_divergence_at(tolerance := 0.05)   table macro, one row per pair:
--       pair_id, run_id, step, operator_id, success_index, failure_index,
--       success_return, failure_return (G at the last step),
--       diverge_step: the step after the last one at which the two cumulative returns
--           were still close, |G_t^success − G_t^failure| <= tolerance × max(|G_t^success|, 1):
--           from there on they stay apart (NULL if they end close; 0 if never close),
--       failure_end_step: the step the failing episode terminated at (NULL if it ran
--           to the horizon),
--       failure_kind: 'termination' when the failing episode ended early, else
--           'low-reward' (it ran to the horizon collecting little: an absorbing stretch),
--       failure_reward_after: the failing run's mean reward per step from diverge_step on
--           (0 for steps after its termination), success_reward_after: the same for success
--   failure_divergence                          view: failure_divergence_at() at 0.05

CREATE OR REPLACE MACRO failure_divergence_at(tolerance := 0.05) AS TABLE
WITH s AS (SELECT * FROM trajectories WHERE role = 'success'),
     f AS (SELECT * FROM trajectories WHERE role = 'failure'),
     joined AS (
        SELECT s.pair_id, s.run_id, s.step, s.operator_id, s.t,
               s.update_index AS success_index, f.update_index AS failure_index,
               s.reward AS s_reward, f.reward AS f_reward,
               s.cumulative_return AS s_g, f.cumulative_return AS f_g, f.done AS f_done,
               last_value(s.cumulative_return) OVER w AS success_return,
               last_value(f.cumulative_return) OVER w AS failure_return,
               max(s.t) OVER w AS max_t
        FROM s JOIN f USING (pair_id, t)
        WINDOW w AS (PARTITION BY s.pair_id ORDER BY s.t ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
     ),
     div AS (
        SELECT pair_id, any_value(run_id) AS run_id, any_value(step) AS step,
               any_value(operator_id) AS operator_id,
               any_value(success_index) AS success_index, any_value(failure_index) AS failure_index,
               any_value(success_return) AS success_return, any_value(failure_return) AS failure_return,
               CASE WHEN bool_or(t = max_t AND abs(s_g - f_g) <= tolerance * greatest(abs(s_g), 1.0)) THEN NULL
                    ELSE coalesce(max(t) FILTER (WHERE abs(s_g - f_g) <= tolerance * greatest(abs(s_g), 1.0)) + 1, 0)
               END AS diverge_step,
               min(t) FILTER (WHERE f_done) AS failure_end_step
        FROM joined GROUP BY pair_id
     )
SELECT d.*,
       CASE WHEN d.failure_end_step IS NOT NULL THEN 'termination' ELSE 'low-reward' END AS failure_kind,
       avg(j.f_reward) FILTER (WHERE j.t >= d.diverge_step) AS failure_reward_after,
       avg(j.s_reward) FILTER (WHERE j.t >= d.diverge_step) AS success_reward_after
FROM div d JOIN joined j USING (pair_id)
GROUP BY ALL;

CREATE OR REPLACE VIEW failure_divergence AS
SELECT * FROM failure_divergence_at();
