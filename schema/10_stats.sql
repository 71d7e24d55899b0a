-- 10_stats.sql — statistics of post-update return distributions (PURDs)
--
-- A distribution is the set of rows of `post_update_returns` sharing
-- (run_id, step, operator_id): the returns of many independent updates applied to one
-- checkpoint. Definitions are docs/method.md §2 Statistics of a PURD; `retland.stats` is
-- the NumPy twin and tests/test_stats.py holds the two to the same numbers (1e-9
-- relative).
--
-- Defines
--   purd_stats(alpha := 0.1, beta := 0.5)   table macro, one row per distribution:
--       run_id, algo, env, variant, seed, step, operator_id,
--       n, mean, std, skewness, mode, ltp, mode_nonpositive, cvar
--     (algo/env/variant/seed come from `runs`, variant through run_variant; NULL if the
--     run is not registered there)
--   distribution_stats                       view: purd_stats() at the paper's defaults
--   purd_mean(returns), purd_std(returns), purd_skewness(returns), purd_mode(returns),
--   purd_ltp(returns, beta := 0.5), purd_cvar(returns, alpha := 0.1)
--       the same statistics of one DOUBLE[] list (NULL for an empty list), for ad hoc
--       pooling, e.g. the CVaR of everything each algorithm produced:
--         SELECT algo, purd_cvar(list("return"), alpha := 0.05)
--         FROM post_update_returns JOIN runs USING (run_id) GROUP BY algo;
--   purd_bin(x, lo, hi), purd_bin_edge(k, lo, hi)
--       the histogram arithmetic behind `mode`, exposed so it can be checked.
--
-- Conventions
--   std is the population std (ddof = 0); skewness is the biased Fisher–Pearson
--   coefficient m3 / m2^1.5. A constant distribution (including n = 1) has std 0 and
--   skewness NULL. Unlike scipy.stats.skew, a nearly-constant sample still gets a
--   skewness: moments are summed about a first estimate of the mean and then corrected,
--   so tiny spreads at large magnitudes stay accurate instead of being rounding noise.
--   mode is the midpoint of the fullest of 100 equal bins over [min, max], with values
--   assigned to bins exactly as numpy.histogram(returns, bins=100) assigns them; the
--   lowest bin wins ties; a constant distribution's mode is its value.
--   ltp is the share of returns strictly below beta * mode, for every mode (as the
--   definition gives it, and as the authors compute it). mode_nonpositive (BOOLEAN)
--   flags mode <= 0: there the threshold is <= 0, not "a fraction of the usual return";
--   the paper's Fig. 2 puts such policies on the right border. The value is kept, so
--   every aggregate counts them; filter on mode_nonpositive to leave them out.
--   cvar = q + avg(least(r - q, 0)) / alpha with q = quantile_cont(r, alpha), numpy's
--   default (linear) quantile: the mean of the lower alpha tail, higher is better.
--   alpha must be in (0, 1].

-- Edge k (0..100) of numpy.histogram's 100 bins over [lo, hi]. numpy builds them with
-- linspace: k * step + lo, the last edge pinned to hi, and a different rounding order
-- when step underflows to 0.
CREATE OR REPLACE MACRO purd_bin_edge(k, lo, hi) AS
    CASE
        WHEN k = 100 THEN hi
        WHEN (hi - lo) / 100 = 0 THEN k / 100 * (hi - lo) + lo
        ELSE k * ((hi - lo) / 100) + lo
    END;

-- Bin (0..99) of x among 100 bins over [lo, hi] (lo < hi), bit-for-bit numpy's
-- uniform-bin fast path: a scaled guess with the top edge folded into bin 99, then one
-- step down or up where rounding put the guess on the wrong side of an edge. The three
-- stages are separate macros so purd_stats can compute them as columns: nesting them
-- would repeat the guess in every place an edge is compared.
CREATE OR REPLACE MACRO purd_bin_guess(x, lo, hi) AS
    CASE WHEN lo < hi THEN least(trunc((x - lo) / (hi - lo) * 100)::BIGINT, 99) ELSE 0 END;

CREATE OR REPLACE MACRO purd_bin_lowered(x, i, lo, hi) AS
    i - (x < purd_bin_edge(i, lo, hi))::BIGINT;

CREATE OR REPLACE MACRO purd_bin_raised(x, i, lo, hi) AS
    i + (x >= purd_bin_edge(i + 1, lo, hi) AND i <> 99)::BIGINT;

CREATE OR REPLACE MACRO purd_bin(x, lo, hi) AS
    purd_bin_raised(x, purd_bin_lowered(x, purd_bin_guess(x, lo, hi), lo, hi), lo, hi);

-- Packs (count desc, bin asc) into one integer, so that max() over a distribution's
-- bins finds the fullest bin and, among equally full ones, the lowest.
CREATE OR REPLACE MACRO purd_bin_rank(bin_count, k) AS bin_count * 100 + (99 - k);

CREATE OR REPLACE MACRO purd_mode_of(top_rank, lo, hi) AS
    CASE WHEN lo = hi THEN lo
         ELSE (purd_bin_edge(99 - top_rank % 100, lo, hi)
               + purd_bin_edge(100 - top_rank % 100, lo, hi)) / 2 END;

-- Moments from power sums s1, s2, s3 of deviations from a centre c (corrected two-pass):
-- c is off the mean only by rounding, so the corrections in a = s1 / n cost no precision.
CREATE OR REPLACE MACRO purd_mean_of(n, lo, hi, c, s1) AS
    CASE WHEN lo = hi THEN lo ELSE c + s1 / n END;

CREATE OR REPLACE MACRO purd_m2_of(n, lo, hi, s1, s2) AS
    CASE WHEN lo = hi THEN 0.0 ELSE s2 / n - (s1 / n) * (s1 / n) END;

CREATE OR REPLACE MACRO purd_m3_of(n, s1, s2, s3) AS
    s3 / n - 3 * (s1 / n) * (s2 / n) + 2 * (s1 / n) * (s1 / n) * (s1 / n);

CREATE OR REPLACE MACRO purd_std_of(m2) AS sqrt(greatest(m2, 0.0));

CREATE OR REPLACE MACRO purd_skewness_of(m2, m3) AS
    CASE WHEN m2 > 0 THEN m3 / (m2 * sqrt(m2)) END;

CREATE OR REPLACE MACRO purd_ltp_of(n_below, n) AS n_below / n;

CREATE OR REPLACE MACRO purd_mode_nonpositive(mode) AS NOT mode > 0;

CREATE OR REPLACE MACRO purd_cvar_of(q, tail_sum, n, alpha) AS
    q + tail_sum / n / CASE WHEN alpha > 0 AND alpha <= 1 THEN alpha
                            ELSE error('alpha must be in (0, 1], got ' || alpha::VARCHAR) END;

-- Statistics of one list of returns.
CREATE OR REPLACE MACRO purd_moments(returns) AS (
    SELECT {'mean': purd_mean_of(n, lo, hi, c, s1),
            'std': purd_std_of(purd_m2_of(n, lo, hi, s1, s2)),
            'skewness': purd_skewness_of(purd_m2_of(n, lo, hi, s1, s2), purd_m3_of(n, s1, s2, s3))}
    FROM (
        SELECT count(*) AS n, min(x) AS lo, max(x) AS hi, any_value(c) AS c,
               sum(x - c) AS s1,
               sum((x - c) * (x - c)) AS s2,
               sum((x - c) * (x - c) * (x - c)) AS s3
        FROM (SELECT unnest(returns) AS x, list_avg(returns) AS c)
    )
    WHERE n > 0
);

CREATE OR REPLACE MACRO purd_mean(returns) AS purd_moments(returns).mean;

CREATE OR REPLACE MACRO purd_std(returns) AS purd_moments(returns).std;

CREATE OR REPLACE MACRO purd_skewness(returns) AS purd_moments(returns).skewness;

CREATE OR REPLACE MACRO purd_mode(returns) AS (
    SELECT purd_mode_of(max(purd_bin_rank(bin_count, bin)), any_value(lo), any_value(hi))
    FROM (
        SELECT purd_bin(x, lo, hi) AS bin, count(*) AS bin_count,
               any_value(lo) AS lo, any_value(hi) AS hi
        FROM (SELECT unnest(returns) AS x, list_min(returns) AS lo, list_max(returns) AS hi)
        GROUP BY bin
    )
);

CREATE OR REPLACE MACRO purd_ltp(returns, beta := 0.5) AS (
    SELECT purd_ltp_of(count_if(x < beta * mode), count(*))
    FROM (SELECT unnest(returns) AS x, purd_mode(returns) AS mode)
);

CREATE OR REPLACE MACRO purd_cvar(returns, alpha := 0.1) AS (
    SELECT purd_cvar_of(any_value(q), sum(least(x - q, 0)), count(*), alpha)
    FROM (SELECT unnest(returns) AS x, list_aggregate(returns, 'quantile_cont', alpha) AS q)
);

-- One read of post_update_returns: `dists` groups it into one row per distribution (key,
-- range, a centre for the moments, the alpha-quantile and the list of its returns) and is
-- MATERIALIZED, so the later passes read that buffer, never the view again. Reading the
-- view once is cheaper (its dedupe runs once) and makes every statistic of a row come
-- from the same snapshot of a warehouse that is being written to. The key is stored once
-- per distribution; the passes over returns group by a small integer id instead.
CREATE OR REPLACE MACRO purd_stats(alpha := 0.1, beta := 0.5) AS TABLE
WITH
dists AS MATERIALIZED (
    SELECT run_id, step, operator_id,
           row_number() OVER () AS dist,
           count(*) AS n,
           min("return") AS lo,
           max("return") AS hi,
           avg("return") AS c,
           quantile_cont("return", alpha) AS q,
           list("return") AS returns
    FROM post_update_returns
    GROUP BY run_id, step, operator_id
),
-- Each return's histogram bin and its deviation from the centre.
deviations AS (
    SELECT dist, q, lo, hi, x, x - c AS d, purd_bin_guess(x, lo, hi) AS guess
    FROM (SELECT dist, q, lo, hi, c, unnest(returns) AS x FROM dists)
),
lowered AS (
    SELECT *, purd_bin_lowered(x, guess, lo, hi) AS lowered FROM deviations
),
binned AS (
    SELECT *, purd_bin_raised(x, lowered, lo, hi) AS bin FROM lowered
),
-- Aggregated per (distribution, bin) first, so one hash aggregate yields both the bin
-- counts for the mode and partial sums that roll up to the distribution.
per_bin AS (
    SELECT dist, bin,
           count(*) AS bin_count,
           sum(d) AS s1, sum(d * d) AS s2, sum(d * d * d) AS s3,
           sum(least(x - q, 0)) AS tail_sum
    FROM binned
    GROUP BY dist, bin
),
per_distribution AS (
    SELECT dist,
           max(purd_bin_rank(bin_count, bin)) AS top_rank,
           sum(s1) AS s1, sum(s2) AS s2, sum(s3) AS s3, sum(tail_sum) AS tail_sum
    FROM per_bin
    GROUP BY dist
),
summarized AS (
    SELECT run_id, step, operator_id, n, q, tail_sum, returns,
           purd_mean_of(n, lo, hi, c, s1) AS mean,
           purd_m2_of(n, lo, hi, s1, s2) AS m2,
           purd_m3_of(n, s1, s2, s3) AS m3,
           purd_mode_of(top_rank, lo, hi) AS mode
    FROM dists JOIN per_distribution USING (dist)
)
-- LTP needs the mode, and the mode needs every return binned first: counted in the list.
SELECT s.run_id, r.algo, r.env, run_variant(r.variant, r.source) AS variant, r.seed, s.step, s.operator_id,
       s.n,
       s.mean,
       purd_std_of(s.m2) AS std,
       purd_skewness_of(s.m2, s.m3) AS skewness,
       s.mode,
       purd_ltp_of(len(list_filter(s.returns, lambda x: x < beta * s.mode)), s.n) AS ltp,
       purd_mode_nonpositive(s.mode) AS mode_nonpositive,
       purd_cvar_of(s.q, s.tail_sum, s.n, alpha) AS cvar
FROM summarized AS s
LEFT JOIN runs AS r USING (run_id)
ORDER BY s.run_id, s.step, s.operator_id;

CREATE OR REPLACE VIEW distribution_stats AS
SELECT * FROM purd_stats();
