"""Report blocks of the analyses, on hand-made rows (no JAX): a note when the table is
empty, charts with the rows' data otherwise."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from retland.report import analysis_charts as ac
from retland.report.blocks import Figure, Note, Table
from retland.report.context import ReportContext

NOW = datetime.now(timezone.utc)


def fill(wh):
    wh.append("landscape_grids", [{
        "grid_id": "g1", "run_id": "r", "step": 10, "directions": "update", "operator_id": "td3[h=10,seed=0]",
        "directions_hash": "x", "directions_path": "p", "lo": -1.0, "hi": 1.0, "zoom": 1.0, "resolution": 3,
        "samples_per_point": 2, "sigma": 0.1, "seed": 0, "horizon": 10, "chunk_size": 8, "created_at": NOW}])
    wh.append("landscape_points", [{
        "grid_id": "g1", "point": p, "sample": k, "ix": p % 3, "iy": p // 3, "a": p % 3 - 1.0, "b": p // 3 - 1.0,
        "return": 100.0 - 10 * p + k, "episode_length": 10, "terminated": False} for p in range(9) for k in range(2)])
    for kind, pid, vals in (("same-run", "s", [10, 9, 11]), ("different-run", "d", [10, 0.1, 12])):
        wh.append("interpolation_pairs", [{
            "pair_id": pid, "kind": kind, "env": "hopper", "algo": "td3", "run_a": "a", "step_a": 1, "run_b": "b",
            "step_b": 1, "points": 3, "samples": 1, "sigma": 0.0, "seed": 0, "horizon": 10, "chunk_size": 8,
            "created_at": NOW}])
        wh.append("interpolation_points", [{"pair_id": pid, "point": p, "sample": 0, "lam": p / 2, "return": v,
                                            "episode_length": 10, "terminated": False} for p, v in enumerate(vals)])
    T = 6
    rows = []
    for role, rewards in (("success", [1, 1, 1, 1, 1, 1]), ("failure", [1, 1, 0.2, 0, 0, 0])):
        g = np.cumsum(rewards)
        rows += [{"pair_id": "r@10/op/0-1", "role": role, "t": t, "run_id": "r", "step": 10, "operator_id": "op",
                  "update_index": int(role == "failure"), "reward": float(rewards[t]), "cumulative_return": float(g[t]),
                  "done": role == "failure" and t >= 3, "torso_height": 1.0, "torso_pitch": 0.0,
                  "stored_return": float(g[-1])} for t in range(T)]
    wh.append("trajectories", rows)


def test_empty_tables_give_a_note_naming_the_command(warehouse):
    ctx = ReportContext(warehouse.connect(), n_resamples=50)
    for build, command in ((ac.landscape_blocks, "retland landscape"), (ac.failure_blocks, "retland failures"),
                           (ac.interpolation_blocks, "retland interpolate")):
        (note,) = build(ctx)
        assert isinstance(note, Note) and command in note.text


def test_blocks_carry_the_rows(warehouse):
    fill(warehouse)
    ctx = ReportContext(warehouse.connect(), n_resamples=50)
    land = ac.landscape_blocks(ctx)
    assert [b.name for b in land] == ["landscape-mean", "landscape-ltp"]
    spec = land[0].chart.to_dict()
    assert len(spec["data"]["values"] if "values" in spec.get("data", {}) else
               next(iter(spec["datasets"].values()))) == 9
    fail = ac.failure_blocks(ctx)
    # the pair has no frames: one note after the table (the command, or why none can be drawn)
    assert [type(b) for b in fail] == [Figure, Figure, Table, Note] and "frames" in fail[3].text
    div = fail[2].frame.row(0, named=True)
    # G_s = 1..6, G_f = 1, 2, 2.2, …: last close (gap <= 5% of G_s) at t = 1; terminated at t = 3
    assert (div["returns part at step"], div["failing rollout ends at step"], div["kind of failure"]) == (
        2, 3, "termination")
    interp = ac.interpolation_blocks(ctx)
    assert [b.name for b in interp] == ["interpolation-curves", "interpolation-btp", "interpolation-btp-summary"]
    summary = interp[2].frame
    assert dict(zip(summary["kind"], summary["btp_iqm"])) == {"same-run": 0.0, "different-run": 1 / 3}


def test_stabilize_blocks_compare_the_arms_paired_by_seed(warehouse):
    """Two seeds, two arms, one proposal: the reject arm of seed 0 rejects (holds the
    checkpoint), everything else accepts; the effect table pairs arms by seed."""
    from retland.report.stabilize_charts import stabilize_blocks

    def row(arm, seed, proposal, accepted, mean, ltp, last_mean, last_ltp):
        return {"experiment_id": "e", "arm": arm, "seed": seed, "proposal": proposal, "run_id": "r", "step": 10,
                "derived_run_id": f"d-{arm}-{seed}", "criterion": "cvar", "alpha": 0.1, "beta": 0.5,
                "tolerance": 0.0, "n_samples": 4, "accepted": accepted, "last_accepted": 0, "mean": mean,
                "mode": 1000.0,
                "ltp": ltp, "cvar": mean - 50, "last_mean": last_mean, "last_ltp": last_ltp,
                "last_cvar": last_mean - 50, "eval_return": mean}

    rows = []
    for seed in (0, 1):
        for arm in ("reject", "baseline"):
            rows.append(row(arm, seed, 0, True, 1000.0 + seed, 0.1, 1000.0 + seed, 0.1))
    rows += [row("reject", 0, 1, False, 500.0, 0.5, 1000.0, 0.1), row("baseline", 0, 1, True, 500.0, 0.5, 1000.0, 0.1),
             row("reject", 1, 1, True, 1100.0, 0.0, 1001.0, 0.1), row("baseline", 1, 1, True, 1100.0, 0.0, 1001.0, 0.1)]
    warehouse.append("stabilize_steps", rows)
    # samples: proposal 0 has one return below 0.5 x the source mode (1000); the baseline's
    # proposal 1 of seed 0 lies wholly below it (its own LTP is 0: the mode moved down)
    samples = {0: [1000.0, 1000.0, 400.0, 1000.0], (1, 0): [450.0, 460.0, 470.0, 480.0], (1, 1): [1100.0] * 4}
    warehouse.append("stabilize_returns", [
        {"experiment_id": "e", "arm": arm, "seed": seed, "proposal": p, "update_index": i, "return": r}
        for arm in ("reject", "baseline") for seed in (0, 1) for p in (0, 1)
        for i, r in enumerate(samples[0] if p == 0 else samples[(1, seed)])])
    blocks = stabilize_blocks(ReportContext(warehouse.connect(), n_resamples=50))
    assert [b.name for b in blocks] == ["stabilize-fig7", "stabilize-fig7-table", "stabilize-a10", "stabilize-arms"]
    fig7 = blocks[1].frame.row(0, named=True)  # one source policy (run 'r' is not in runs: env 'unknown')
    # seed 0: reject holds 1000 (LTP 0.1) vs baseline 500 (LTP 0.5); seed 1: identical; mean over seeds
    assert fig7["sources"] == 1 and fig7["mean_change"] == 250.0 and fig7["ltp_change"] == -0.2
    assert fig7["ltp_reject"] == 0.05 and (fig7["ltp_lo"], fig7["ltp_hi"]) == (-0.2, -0.2)
    # against the source's mode: reject of seed 0 holds proposal 0 (1 of 4 below), the
    # baseline holds proposal 1 (4 of 4 below); seed 1 has none below in either arm
    assert fig7["retland_ltp_source_change"] == -0.375
