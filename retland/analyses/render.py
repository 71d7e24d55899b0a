"""Seeing the gait: frames of re-rolled post-update samples (docs/method.md §6.2 Frames; the
paper's Fig. 1 right, Fig. 4, A.11).

A stored sample (run, step, operator, update index) is re-rolled exactly as
`retland failures` re-rolls it (`failures.reroll_indices`: the sampler's per-step chunk
program, the same chunk, the return checked bit for bit against the stored one), keeping
the simulator's pose at s0 and after every step. Poses are drawn by MuJoCo's renderer
(`retland.core.render`) into
- a filmstrip: the state after k steps for k = 0, every, 2·every, … up to the episode's end;
  a failing (terminated) episode's strip ends at the frame of its termination; in a
  failure pair the divergence step (view failure_divergence) is a frame of both strips,
  marked in red;
- an animation: every `animation_every`-th state of the whole episode, an animated WebP.

Without --index, the checkpoint's first failure pair (`failures.plan`: a sample within
10% of the mean and one below half the mode) is drawn, both strips on the same steps;
its trajectories are stored as `retland failures` stores them (the divergence step is
their view's).

Storage: the poses (.npz), the filmstrip (.png) and the animation (.webp) are files under
artifacts/renders/<hash of render_id>/, written to a temporary name and renamed; one row
per sample in table `renders` points at them (images are not table rows). The report
embeds the files, so it draws nothing itself and builds where no renderer is installed.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from retland.analyses import failures as fl


class RenderError(ValueError):
    """A request that cannot be honoured; the message names what is wrong (one line)."""


@dataclass(frozen=True)
class RenderRequest:
    """What `render` draws: samples `indices` of the distribution of (run_id, step,
    operator) — None: the checkpoint's first failure pair — as a filmstrip every `every`
    steps and an animation (every `animation_every` steps, 0: about 100 frames) of
    `width` × `height` pixel frames."""

    run_id: str
    step: int
    operator: str | None = None
    indices: tuple[int, ...] | None = None
    every: int = 50
    animation: bool = True
    animation_every: int = 0
    width: int = 240
    height: int = 180

    def __post_init__(self):
        for name in ("every", "width", "height"):
            if int(getattr(self, name)) < 1:
                raise RenderError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.animation_every < 0:
            raise RenderError(f"--animation-every must be >= 0, got {self.animation_every}")
        if not (16 <= self.width <= 1280 and 16 <= self.height <= 960):
            raise RenderError(f"frames of {self.width}x{self.height} pixels: width must be in 16..1280, height in "
                              "16..960")
        if self.indices is not None:
            bad = [i for i in self.indices if int(i) < 0]
            if bad or not self.indices:
                raise RenderError(f"--index must be >= 0, got {bad[0] if bad else 'none'}")


@dataclass
class Sample:
    """One sample to draw, with its pair context."""

    index: int
    pair_id: str | None = None
    role: str | None = None
    diverge_step: int | None = None


@dataclass
class RenderPlan:
    request: RenderRequest
    operator_id: str
    chunk_size: int
    stored: dict[int, float]
    samples: list[Sample]
    failure_plan: fl.FailurePlan | None = None
    env: str = ""
    variant: str = ""
    backend: str = ""
    done: dict[int, dict] = field(default_factory=dict)  # index -> stored renders row


def render_id(run_id: str, step: int, operator_id: str, index: int, req: RenderRequest) -> str:
    anim = f"a{req.animation_every or 'auto'}" if req.animation else "a-"
    return f"{run_id}@{step}/{operator_id}/{index}/e{req.every}/{anim}/{req.width}x{req.height}"


def _distribution(wh, run_id: str, step: int, operator: str | None) -> tuple[str, int, dict[int, float]]:
    operator_id = fl.only_distribution(wh, run_id, step, operator, RenderError)
    rows = wh.query("SELECT update_index, \"return\", chunk_size FROM post_update_returns WHERE run_id = ? "
                    "AND step = ? AND operator_id = ?", [run_id, int(step), operator_id])
    sizes = set(rows["chunk_size"].drop_nulls().to_list())
    if len(sizes) != 1:
        raise RenderError(f"run {run_id} step {step} {operator_id}: rows have chunk sizes {sorted(sizes)}; "
                          "the samples cannot be re-rolled exactly")
    return operator_id, int(sizes.pop()), dict(zip(rows["update_index"].to_list(), rows["return"].to_list()))


def plan(wh, req: RenderRequest) -> RenderPlan:
    """Check the request against the warehouse (which samples, can the task be drawn);
    nothing is computed or written. RenderError (one line) otherwise."""
    from retland.config.registry import check_task

    run = wh.query("SELECT env, backend, variant FROM runs WHERE run_id = ?", [req.run_id]).to_dicts()
    if not run:
        raise RenderError(f"run {req.run_id!r} is not in the warehouse")
    try:
        env, backend, variant = check_task(run[0]["env"], run[0]["backend"], run[0]["variant"] or "brax")
    except ValueError as exc:
        raise RenderError(f"run {req.run_id}: {exc}") from None
    fp = None
    if req.indices is None:
        try:
            fp = fl.plan(wh, req.run_id, req.step, req.operator, pairs=1)
        except fl.FailureError as exc:
            raise RenderError(f"{exc} (or name a sample with --index)") from None
        s, f = fp.pairs[0]
        pid = fl.pair_id(req.run_id, req.step, fp.operator_id, s, f)
        samples = [Sample(s, pid, "success"), Sample(f, pid, "failure")]
        operator_id, chunk, stored = fp.operator_id, fp.chunk_size, fp.stored
    else:
        operator_id, chunk, stored = _distribution(wh, req.run_id, req.step, req.operator)
        missing = [i for i in req.indices if int(i) not in stored]
        if missing:
            raise RenderError(f"run {req.run_id} step {req.step} {operator_id} has no sample {missing[0]} "
                              f"(update indices 0..{max(stored)})")
        samples = [Sample(int(i)) for i in dict.fromkeys(req.indices)]
    return _finish(wh, req, env, backend, variant, operator_id, chunk, stored, samples, fp)


def _finish(wh, req, env, backend, variant, operator_id, chunk, stored, samples, fp) -> RenderPlan:
    try:
        fl.spec_of(wh, operator_id)  # refuses user updates and imported operators
    except fl.FailureError as exc:
        raise RenderError(str(exc)) from None
    try:
        from retland.core import render as core_render

        core_render.scene(env, backend, variant)
    except (ValueError, KeyError) as exc:
        raise RenderError(f"{env} ({variant} variant, {backend}) cannot be drawn: {exc}") from None
    p = RenderPlan(req, operator_id, chunk, stored, samples, fp, env, variant, backend)
    ids = [render_id(req.run_id, req.step, operator_id, s.index, req) for s in samples]
    from retland.warehouse.sqlgen import in_list

    cond, params = in_list("render_id", ids)
    for row in wh.query(f"SELECT * FROM renders WHERE {cond}", params).to_dicts():
        p.done[int(row["update_index"])] = row
    return p


def pair_plans(wh, fp: fl.FailurePlan, **settings) -> list[RenderPlan]:
    """A plan per failure pair of a `failures.plan` (`retland failures` draws its pairs so),
    with the request's other fields from `settings` (every, width, …)."""
    run = wh.query("SELECT env, backend, variant FROM runs WHERE run_id = ?", [fp.run_id]).to_dicts()[0]
    from retland.config.registry import check_task

    env, backend, variant = check_task(run["env"], run["backend"], run["variant"] or "brax")
    out = []
    for s, f in fp.pairs:
        req = RenderRequest(fp.run_id, fp.step, fp.operator_id, None, **settings)
        pid = fl.pair_id(fp.run_id, fp.step, fp.operator_id, s, f)
        one = fl.FailurePlan(fp.run_id, fp.step, fp.operator_id, fp.n, fp.mean, fp.mode, fp.ltp, fp.chunk_size,
                             [(s, f)], fp.stored)
        out.append(_finish(wh, req, env, backend, variant, fp.operator_id, fp.chunk_size, fp.stored,
                           [Sample(s, pid, "success"), Sample(f, pid, "failure")], one))
    return out


def missing(p: RenderPlan) -> list[Sample]:
    return [s for s in p.samples if s.index not in p.done]


# ---------------------------------------------------------------------------- drawing

def frame_steps(length: int, every: int, terminated: bool, extra: tuple[int, ...] = ()) -> list[int]:
    """Filmstrip steps k (state after k steps): 0, every, … ≤ length, the last state of a
    terminated episode (its termination), and `extra` steps (the divergence) ≤ length."""
    ks = set(range(0, length + 1, every))
    if terminated:
        ks.add(length)
    ks.update(k for k in extra if 0 <= k <= length)
    return sorted(ks)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def filmstrip(frames: np.ndarray, steps: list[int], *, mark: int | None = None, end: int | None = None) -> bytes:
    """PNG bytes: frames [F, H, W, 3] side by side, each labelled `t = k`; the frame at
    step `mark` framed in red ("diverges"), the one at `end` labelled "falls"."""
    from PIL import Image, ImageDraw

    n, h, w, _ = frames.shape
    gap, label = 4, max(14, h // 10)
    sheet = Image.new("RGB", (n * w + (n - 1) * gap, h + label + 4), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = _font(label - 2)
    for i, (img, k) in enumerate(zip(frames, steps)):
        x = i * (w + gap)
        sheet.paste(Image.fromarray(img), (x, label + 4))
        text = f"t = {k}"
        colour = (0, 0, 0)
        if k == mark:
            text += "  diverges"
            colour = (200, 0, 0)
            draw.rectangle([x, label + 4, x + w - 1, label + 3 + h], outline=(220, 0, 0), width=3)
        if k == end:
            text += "  falls"
            colour = (200, 0, 0)
        draw.text((x + 3, 1), text, fill=colour, font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def animation(frames: np.ndarray, steps: list[int], ms_per_frame: int = 60) -> bytes:
    """Animated WebP bytes of frames [F, H, W, 3], each stamped with its step."""
    from PIL import Image, ImageDraw

    font = _font(max(12, frames.shape[1] // 12))
    imgs = []
    for img, k in zip(frames, steps):
        im = Image.fromarray(img)
        ImageDraw.Draw(im).text((4, 2), f"t = {k}", fill=(255, 255, 255), font=font)
        imgs.append(im)
    buf = io.BytesIO()
    imgs[0].save(buf, format="WEBP", save_all=True, append_images=imgs[1:], duration=ms_per_frame, loop=0,
                 quality=70, method=4)
    return buf.getvalue()


def _write(path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def renderer_name() -> str:
    import mujoco

    from retland.core import render as core_render

    return f"mujoco {mujoco.__version__} {core_render.available()}"


def draw_plan(wh, p: RenderPlan, records: dict[int, dict], *, progress: Callable[[int], None] | None = None) -> list[dict]:
    """Draw and store the plan's samples not drawn yet from their re-rolled `records`
    (`failures.reroll_indices`); returns the rows written. RenderUnavailable if no
    renderer works (nothing written)."""
    from retland.core import render as core_render

    req, todo = p.request, missing(p)
    if not todo:
        return []
    sc = core_render.scene(p.env, p.backend, p.variant)
    name = renderer_name()
    lengths = {s.index: int(records[s.index]["episode_length"]) for s in p.samples if s.index in records}
    terminated = {i: bool(records[i]["done"][-1]) for i in lengths}
    # a pair's strips share their steps (the longer episode's), each ending at its own end
    span = max(lengths.values())
    anim_every = req.animation_every or max(1, math.ceil(span / 100))
    rows = []
    for s in todo:
        rec = records[s.index]
        length = lengths[s.index]
        ks = frame_steps(length, req.every, terminated[s.index],
                         () if s.diverge_step is None else (int(s.diverge_step),))
        poses = rec["pose"]
        anim_ks = sorted(set(range(0, length + 1, anim_every)) | {length}) if req.animation else []
        frames = core_render.draw(sc, poses[ks + anim_ks], req.width, req.height)
        rid = render_id(req.run_id, req.step, p.operator_id, s.index, req)
        folder = wh.artifact_dir("renders", hashlib.sha256(rid.encode()).hexdigest()[:16])
        poses_path, strip_path = folder / "poses.npz", folder / "filmstrip.png"
        buf = io.BytesIO()
        np.savez_compressed(buf, pose=poses.astype(np.float32), reward=rec["reward"], done=rec["done"])
        _write(poses_path, buf.getvalue())
        _write(strip_path, filmstrip(frames[: len(ks)], ks, mark=s.diverge_step,
                                     end=length if terminated[s.index] else None))
        anim_path = None
        if req.animation:
            anim_path = folder / "animation.webp"
            _write(anim_path, animation(frames[len(ks):], anim_ks))
        rows.append({"render_id": rid, "run_id": req.run_id, "step": req.step, "operator_id": p.operator_id,
                     "update_index": s.index, "pair_id": s.pair_id, "role": s.role, "env": p.env,
                     "variant": p.variant, "backend": p.backend, "stored_return": float(p.stored[s.index]),
                     "episode_length": length, "terminated": terminated[s.index],
                     "diverge_step": s.diverge_step, "frame_steps": ",".join(map(str, ks)),
                     "frame_every": req.every, "animation_every": anim_every, "width": req.width,
                     "height": req.height, "renderer": name, "poses_path": wh.relative(poses_path),
                     "filmstrip_path": wh.relative(strip_path),
                     "animation_path": None if anim_path is None else wh.relative(anim_path)})
        if progress:
            progress(1)
    wh.append("renders", rows)
    return rows


def _pair_divergence(wh, p: RenderPlan) -> None:
    ids = sorted({s.pair_id for s in p.samples if s.pair_id})
    if not ids:
        return
    df = fl.divergence(wh, ids)
    steps = {r["pair_id"]: r["diverge_step"] for r in df.to_dicts()}
    for s in p.samples:
        if s.pair_id in steps and steps[s.pair_id] is not None:
            s.diverge_step = int(steps[s.pair_id])


def run(wh, p: RenderPlan, *, records: dict[int, dict] | None = None, checkpoint=None,
        progress: Callable[[int], None] | None = None) -> list[dict]:
    """Re-roll (unless `records` of the samples are given), store a failure pair's
    trajectories if they are not stored, draw and store what the plan lacks."""
    todo = missing(p)
    if not todo:
        return []
    need = [s.index for s in p.samples]
    if records is None or any(i not in records for i in need):
        records = fl.reroll_indices(wh, p.request.run_id, p.request.step, p.operator_id, p.chunk_size, need,
                                    p.stored, checkpoint)
    if p.failure_plan is not None:
        fp = p.failure_plan
        if fl.missing_pairs(wh, fp):
            fl.store(wh, fp, records)
        _pair_divergence(wh, p)
    return draw_plan(wh, p, records, progress=progress)


def render(wh, request: RenderRequest, *, progress: Callable[[int], None] | None = None) -> list[dict]:
    """The library runner: plan, re-roll, draw, store. Returns the rows written (none when
    the warehouse holds them). RenderError / RenderUnavailable (one line) otherwise."""
    return run(wh, plan(wh, request), progress=progress)


def renders_of(wh, pair_ids: list[str]):
    """Stored render rows of these failure pairs (view `failure_renders`), newest settings first."""
    from retland.warehouse.sqlgen import in_list

    cond, params = in_list("pair_id", pair_ids)
    return wh.query(f"SELECT * FROM failure_renders WHERE {cond} ORDER BY pair_id, role DESC", params)


def run_failures_request(wh, request: fl.FailuresRequest, *, progress=None, on_select=None, on_plan=None,
                         on_note: Callable[[str], None] | None = None) -> fl.FailuresOutcome:
    """`retland failures` as one call: `failures.run_request` (re-roll and store the pairs),
    then, with request.frames, draw every pair that has no frames yet from those re-rolls
    (`draw_failure_pairs`). on_note(line) hears why nothing was drawn where no renderer
    works; the pairs are stored all the same. progress: a bar factory
    (retland.config.requests.Bar), one bar of pairs, one of drawn samples."""
    from retland.config.requests import bar

    from retland.config.registry import is_minatar

    outcome = fl.run_request(wh, request, progress=progress, on_select=on_select, on_plan=on_plan)
    if not request.frames:
        return outcome
    envs = {t.run_id: wh.query("SELECT env FROM runs WHERE run_id = ?", [t.run_id]).to_dicts()[0]["env"]
            for t in outcome.targets}
    targets = [t for t in outcome.targets if not is_minatar(envs[t.run_id])]
    if len(targets) < len(outcome.targets) and on_note is not None:
        games = sorted({e for e in envs.values() if is_minatar(e)})
        on_note(f"no frames drawn for {', '.join(games)}: MinAtar games have no MuJoCo scene to draw")
    full = {id(t): fl.plan(wh, t.run_id, t.step, t.operator_id, len(outcome.pair_ids[id(t)]))
            for t in targets}
    undrawn = sum(len(missing(p)) for t in targets for p in pair_plans(wh, full[id(t)]))
    with bar(progress, undrawn, "frames", unit="samples") as advance:
        for t in targets:
            _, note = draw_failure_pairs(wh, full[id(t)], records=outcome.records.get(id(t)), progress=advance)
            if note:
                if on_note is not None:
                    on_note(note)
                break
    return outcome


def draw_failure_pairs(wh, fp: fl.FailurePlan, *, records: dict[int, dict] | None = None,
                       progress: Callable[[int], None] | None = None, **settings) -> tuple[list[dict], str]:
    """Frames of every pair of a failures plan that has none yet (what `retland failures`
    does after storing the trajectories; `records` are its re-rolls, reused when they
    cover the pair). Returns (rows written, note): the note is one line saying why no
    frames were drawn (no renderer here), else empty."""
    from retland.config.registry import is_minatar
    from retland.core import render as core_render

    env = wh.query("SELECT env FROM runs WHERE run_id = ?", [fp.run_id]).to_dicts()[0]["env"]
    if is_minatar(env):  # before planning: a game's scene cannot even be built
        return [], f"no frames drawn: {env} is a MinAtar game, with no MuJoCo scene to draw"
    plans = [p for p in pair_plans(wh, fp, **settings) if missing(p)]
    if not plans:
        return [], ""
    if core_render.available() is None:
        return [], f"no frames drawn: {core_render.unavailable_reason()}"
    rows = []
    for p in plans:
        rows += run(wh, p, records=records, progress=progress)
    return rows, ""
