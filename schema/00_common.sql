-- 00_common.sql — macros the other schema files use
--
-- Defines
--   run_variant(variant, source)   macro: the task rules a run was trained with, from its
--       `runs` row: `paper` (Brax 0.0.13's terminations, rewards and observations, as the
--       paper used) or `brax` (brax 0.14's own). Runs recorded before variants existed
--       have NULL in runs.variant and were trained on brax's rules; imported runs stay
--       NULL (retland does not know their task).
--   run_simulator(backend, variant)   macro: a person's name for the physics a run used:
--       `brax0013` is Brax 0.0.13's simulator (the paper's, retland's own JAX version);
--       positional/generalized/spring/mjx are brax 0.14's backends (a paper-variant run on
--       one of them predates retland's brax0013: the paper's rules on brax 0.14's robots);
--       a DeepMind Control run's mjx is MuJoCo MJX; a MinAtar game's gymnax is gymnax MinAtar
--       (no physics: a game's JAX rules).

CREATE OR REPLACE MACRO run_variant(variant, source) AS
    coalesce(variant, CASE WHEN source <> 'imported' THEN 'brax' END);

CREATE OR REPLACE MACRO run_simulator(backend, variant) AS
    CASE WHEN variant = 'dmc' THEN 'MuJoCo MJX'
         WHEN variant = 'minatar' THEN 'gymnax MinAtar'
         WHEN backend = 'brax0013' THEN 'Brax 0.0.13'
         WHEN backend IS NULL THEN NULL
         ELSE 'brax 0.14 ' || backend END;
