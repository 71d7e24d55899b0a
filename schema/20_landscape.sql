-- 20_landscape.sql — 2-D return landscapes, one row per grid point
--
-- A grid (table `landscape_grids`, written by `retland landscape`) evaluates
-- J(θ + a·d1 + b·d2) at resolution² points (a, b) of the window [lo, hi]², with
-- samples_per_point gaussian(σ) samples per point, the same draws at every point
-- (table `landscape_points`). With update directions, a = 1 is one update
-- (θ + d1 = θ1, the operator's sample 0). docs/method.md §6.1 2-D landscape.
--
-- Defines
--   landscape_values   view, one row per (grid, point):
--       grid_id, run_id, step, directions, zoom, resolution, ix, iy, a, b,
--       n, mean, std (ddof 0), min, ltp (purd_ltp; NULL when n = 1),
--       mode_nonpositive (the point's mode <= 0, where ltp counts returns below a
--       non-positive threshold; NULL when n = 1), cvar (purd_cvar at alpha 0.1; NULL when n = 1)
--     With one sample per point, mean is the return of θ + a·d1 + b·d2 itself.
--   landscape_summary   view, one row per grid (what `retland landscape` prints):
--       grid_id, zoom, resolution, points (grid points with samples), min and max
--       (of the points' mean), at_origin (the mean at a = b = 0, the checkpoint itself)

CREATE OR REPLACE VIEW landscape_values AS
SELECT
    g.grid_id, g.run_id, g.step, g.directions, g.zoom, g.resolution,
    p.point, any_value(p.ix) AS ix, any_value(p.iy) AS iy, any_value(p.a) AS a, any_value(p.b) AS b,
    count(*) AS n,
    avg(p."return") AS mean,
    stddev_pop(p."return") AS std,
    min(p."return") AS min,
    CASE WHEN count(*) > 1 THEN purd_ltp(list(p."return")) END AS ltp,
    CASE WHEN count(*) > 1 THEN purd_mode_nonpositive(purd_mode(list(p."return"))) END AS mode_nonpositive,
    CASE WHEN count(*) > 1 THEN purd_cvar(list(p."return")) END AS cvar
FROM landscape_points p
JOIN landscape_grids g USING (grid_id)
GROUP BY g.grid_id, g.run_id, g.step, g.directions, g.zoom, g.resolution, p.point;

CREATE OR REPLACE VIEW landscape_summary AS
SELECT grid_id, zoom, any_value(resolution) AS resolution, count(*) AS points,
       min(mean) AS min, max(mean) AS max,
       max(mean) FILTER (WHERE a = 0 AND b = 0) AS at_origin
FROM landscape_values
GROUP BY grid_id, zoom;
