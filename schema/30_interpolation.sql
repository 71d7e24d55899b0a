-- 30_interpolation.sql — value curves and below-threshold proportions of interpolations
--
-- An interpolation pair (table `interpolation_pairs`) evaluates θ(λ) = (1−λ)·θa + λ·θb at
-- `points` values of λ (linspace(0, 1), endpoints included), each with `samples` gaussian
-- perturbations that are the same K draws at every λ (table `interpolation_points`).
-- docs/method.md §6.3 Interpolation and BTP; written by `retland interpolate`.
--
-- Defines
--   interpolation_curves                     view, one row per (pair, point):
--       pair_id, kind, env, algo, point, lam, value (mean of the point's returns),
--       std, n_samples
--   interpolation_btp_at(threshold := 0.1)   table macro, one row per pair:
--       pair_id, kind, env, algo, run_a, step_a, run_b, step_b,
--       value_a (value at λ = 0), value_b (value at λ = 1),
--       cutoff = threshold × least(value_a, value_b),
--       btp = share of the pair's points whose value < cutoff (strict),
--       n_points, complete (every point holds all `samples` samples),
--       pair_seed (seed of the random pair draw that chose the pair; NULL for
--       explicit --a/--b pairs and pairs stored before pairs were drawn at random)
--   interpolation_btp                        view: interpolation_btp_at() at the paper's 0.1
--
-- Pairs: `retland interpolate --env E --pairs KIND` draws --pairs-per-kind pairs (500)
-- of each kind at random from every eligible one (same-run: any two checkpoints of a
-- run; different-run: checkpoints of two runs of one training config with different
-- seeds), with --pair-seed. pair_seed records the draw that first chose a pair: a pair
-- drawn again under another seed is not stored twice and keeps its first seed, so the
-- exact pairs of a draw come from rerunning the command with its seed (nothing is
-- recomputed), which also prints that draw's BTP.
--
-- Aggregating BTP over pairs and envs (IQM with stratified bootstrap CIs, split by kind)
-- is `retland.interpolation.btp_summary`, which `retland interpolate` prints; only
-- complete pairs should enter it.
-- Note: the column holding λ is `lam` (`lambda` is a DuckDB keyword).

CREATE OR REPLACE VIEW interpolation_curves AS
SELECT
    p.pair_id, p.kind, p.env, p.algo, x.point,
    any_value(x.lam) AS lam,
    avg(x."return") AS value,
    stddev_pop(x."return") AS std,
    count(*) AS n_samples
FROM interpolation_points x
JOIN interpolation_pairs p USING (pair_id)
GROUP BY ALL;

CREATE OR REPLACE MACRO interpolation_btp_at(threshold := 0.1) AS TABLE
WITH ends AS (
    SELECT
        pair_id,
        max(value) FILTER (WHERE point = 0) AS value_a,
        max(value) FILTER (WHERE lam = 1.0) AS value_b
    FROM interpolation_curves
    GROUP BY pair_id
)
SELECT
    p.pair_id, p.kind, p.env, p.algo, p.run_a, p.step_a, p.run_b, p.step_b,
    e.value_a, e.value_b,
    threshold * least(e.value_a, e.value_b) AS cutoff,
    avg((c.value < threshold * least(e.value_a, e.value_b))::DOUBLE) AS btp,
    count(*) AS n_points,
    count(*) = any_value(p.points) AND min(c.n_samples) = any_value(p.samples) AS complete,
    p.pair_seed
FROM interpolation_pairs p
JOIN interpolation_curves c USING (pair_id)
JOIN ends e USING (pair_id)
GROUP BY ALL;

CREATE OR REPLACE VIEW interpolation_btp AS
SELECT * FROM interpolation_btp_at();
