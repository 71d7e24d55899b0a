-- 45_renders.sql — frames of re-rolled post-update samples
--
-- Table `renders` (written by `retland render` and `retland failures`) holds one row per
-- drawn sample: the files under artifacts/renders/ (poses .npz, filmstrip .png,
-- animation .webp, paths relative to the warehouse root) and what they show (the
-- filmstrip's steps, the episode's length, the divergence step marked in a failure pair).
-- docs/method.md §6.2 Frames.
--
-- Defines
--   failure_renders   view: renders of failure pairs, one row per (pair, role, settings),
--       with the pair's divergence (failure_divergence: failure_kind, failure_end_step)
--       and `settings` (every/animation_every/width x height), so a reader can take the
--       two strips of one pair drawn alike.

CREATE OR REPLACE VIEW failure_renders AS
SELECT r.*, concat(r.frame_every, '/', r.animation_every, '/', r.width, 'x', r.height) AS settings,
       d.failure_kind, d.failure_end_step, d.success_index, d.failure_index
FROM renders r JOIN failure_divergence d ON d.pair_id = r.pair_id
WHERE r.pair_id IS NOT NULL;
