"""The failure pairs' frames in the report (docs/method.md §6.2 Frames; Fig. 1 right, Fig. 4).

Reads view `failure_renders` (schema/45_renders.sql) and embeds the files its rows point at:
per pair, the two filmstrips (success above failure, the divergence step framed in red,
the failing strip ending at its termination) and their animations. The report draws
nothing itself: `retland failures` and `retland render` draw and store the frames. Pairs
without frames get one line: the command that draws them, or why nothing can be drawn here.
"""
from __future__ import annotations

import polars as pl

from .blocks import Block, Frames, Note
from .context import ReportContext

# One pair's two strips drawn alike (the same settings): the first settings, in order, that
# has both roles.
FAILURE_RENDERS_SQL = """
SELECT * FROM failure_renders
QUALIFY count(*) OVER (PARTITION BY pair_id, settings) = 2
ORDER BY pair_id, settings, role DESC
"""
# Failure pairs stored, with what `retland render` needs to draw them.
FAILURE_PAIR_KEYS_SQL = "SELECT DISTINCT pair_id, run_id, step, operator_id FROM trajectories ORDER BY pair_id"
# Pairs shown with frames at most (each embeds two strips and two animations).
MAX_PAIRS = 6


def frame_blocks(ctx: ReportContext, names: pl.DataFrame) -> list[Block]:
    if not ctx.row_count("trajectories"):
        return []
    pairs = ctx.sql(FAILURE_PAIR_KEYS_SQL)
    rows = ctx.sql(FAILURE_RENDERS_SQL) if ctx.has_table("failure_renders") else pl.DataFrame()
    label = dict(zip(names["pair_id"].to_list(), names["pair"].to_list()))
    blocks: list[Block] = []
    drawn: set[str] = set()
    missing_files = 0
    for pid in (rows["pair_id"].unique(maintain_order=True).to_list() if rows.height else []):
        if len(drawn) == MAX_PAIRS:
            break
        group = rows.filter(pl.col("pair_id") == pid)
        group = group.filter(pl.col("settings") == group["settings"][0])
        strips = []
        for r in group.iter_rows(named=True):
            try:
                png = (ctx.root / r["filmstrip_path"]).read_bytes()
                webp = (ctx.root / r["animation_path"]).read_bytes() if r["animation_path"] else None
            except (OSError, TypeError):
                missing_files += 1
                break
            ends = (f"falls at step {r['episode_length']}" if r["terminated"]
                    else f"runs all {r['episode_length']} steps")
            strips.append((f"{r['role']}: update {r['update_index']}, return {r['stored_return']:.1f}, {ends}",
                           png, webp))
        if len(strips) != len(group):
            continue
        drawn.add(pid)
        div = group["diverge_step"][0]
        fail = group.filter(pl.col("role") == "failure").row(0, named=True)
        if div is None:
            where = ""
        elif fail["terminated"] and div > fail["episode_length"]:
            # the returns part only once the successful one outgrows what the failing one had
            where = (f"; the returns part at step {div}, after the failing rollout fell (framed in red on the "
                     "successful strip)")
        else:
            where = f"; the returns part at step {div} (framed in red)"
        blocks.append(Frames(f"frames-{len(drawn)}", f"{label.get(pid, pid)}: the gait", tuple(strips),
                             f"Frames every {group['frame_every'][0]} env steps{where}; drawn with "
                             f"{group['renderer'][0]}."))
    undrawn = [r for r in pairs.iter_rows(named=True) if r["pair_id"] not in drawn]
    if missing_files:
        blocks.append(Note(f"{missing_files} drawn pair(s) left out: their frame files are not in the warehouse "
                           "folder (copied without artifacts/?)."))
    if undrawn and len(drawn) < MAX_PAIRS:
        from retland.core import render as core_render

        first = undrawn[0]
        if core_render.available() is None:
            blocks.append(Note(f"No frames of {len(undrawn)} failure pair(s): {core_render.unavailable_reason()}."))
        else:
            blocks.append(Note(f"No frames of {len(undrawn)} failure pair(s) yet: `retland render {first['run_id']} "
                               f"--step {first['step']} --operator {first['operator_id']}` draws one "
                               "(`retland failures` draws its pairs)."))
    return blocks
