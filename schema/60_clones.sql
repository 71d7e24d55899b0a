-- 60_clones.sql — behaviour cloning (the paper's Appendix A.7): clones beside their teachers
--
-- A BC run (`retland train --algo bc --teacher RUN@STEP`: runs.algo = 'bc', source
-- 'trained') records its teacher checkpoint in runs.parent_run_id / parent_step. Its
-- checkpoints are clone policies logged through the BC run.
--
-- Defines
--   bc_clones        view, one row per checkpoint of a BC run:
--       clone_run_id, env, variant, clone_seed, clone_step,
--       is_last (the BC run's last checkpoint: the clone compared by default),
--       teacher_run_id, teacher_step
--   bc_pairs_all     view, one row per (clone checkpoint, operator) whose post-update
--                    distribution under the clone's own update (bc[...]) and whose
--                    teacher's distribution under TD3's update with the same horizon
--                    and key seed (td3[...]) are both sampled: the columns of bc_clones,
--       operator (the bc[...] id), teacher_operator (the td3[...] id),
--       clone_n, clone_mean, clone_std, clone_ltp, clone_cvar, clone_mode_nonpositive,
--       teacher_n, teacher_mean, teacher_std, teacher_ltp, teacher_cvar,
--       teacher_mode_nonpositive (each from distribution_stats: LTP at β = 0.5 of the
--       distribution's own mode, CVaR at α = 0.1)
--   bc_pairs         view: bc_pairs_all at each BC run's last checkpoint, the unit of the
--                    paper's Fig. 22 (`retland clones` computes its correlations and means)

CREATE OR REPLACE VIEW bc_clones AS
SELECT r.run_id AS clone_run_id, r.env, run_variant(r.variant, r.source) AS variant, r.seed AS clone_seed,
       c.step AS clone_step,
       c.step = max(c.step) OVER (PARTITION BY r.run_id) AS is_last,
       r.parent_run_id AS teacher_run_id, r.parent_step AS teacher_step
FROM runs r
JOIN checkpoints c USING (run_id)
WHERE r.algo = 'bc' AND r.source = 'trained' AND r.parent_run_id IS NOT NULL;

CREATE OR REPLACE VIEW bc_pairs_all AS
WITH stats AS MATERIALIZED (
    SELECT * FROM distribution_stats
    WHERE starts_with(operator_id, 'bc[') OR starts_with(operator_id, 'td3[')
)
SELECT k.*, co.operator_id AS operator, tt.operator_id AS teacher_operator,
       co.n AS clone_n, co.mean AS clone_mean, co.std AS clone_std, co.ltp AS clone_ltp, co.cvar AS clone_cvar,
       co.mode_nonpositive AS clone_mode_nonpositive,
       tt.n AS teacher_n, tt.mean AS teacher_mean, tt.std AS teacher_std, tt.ltp AS teacher_ltp,
       tt.cvar AS teacher_cvar, tt.mode_nonpositive AS teacher_mode_nonpositive
FROM bc_clones k
JOIN stats co ON co.run_id = k.clone_run_id AND co.step = k.clone_step AND starts_with(co.operator_id, 'bc[')
JOIN stats tt ON tt.run_id = k.teacher_run_id AND tt.step = k.teacher_step
             AND tt.operator_id = 'td3[' || substr(co.operator_id, 4);

CREATE OR REPLACE VIEW bc_pairs AS
SELECT * FROM bc_pairs_all WHERE is_last;
