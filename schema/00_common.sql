-- 00_common.sql — macros the other schema files use
--
-- Defines
--   run_variant(variant, source)   macro: the task rules a run was trained with, from its
--       `runs` row: `paper` (Brax 0.0.13's terminations, rewards and observations, as the
--       paper used) or `brax` (brax 0.14's own). Runs recorded before variants existed
--       have NULL in runs.variant and were trained on brax's rules; imported runs stay
--       NULL (retland does not know their task).

CREATE OR REPLACE MACRO run_variant(variant, source) AS
    coalesce(variant, CASE WHEN source <> 'imported' THEN 'brax' END);
