"""2-D return landscapes around a checkpoint (docs/method.md §6.1 2-D landscape; Fig. 1, A.2, A.12).

    J(θ + a·d1 + b·d2)  for (a, b) on a G × G grid over [lo, hi]² (× zoom)

Directions:
- update (default): d1 = θ1 − θ, d2 = θ2 − θ, where θ1, θ2 are the operator's samples 0
  and 1 (keys fold_in(PRNGKey(seed), 0 | 1), exactly the sampler's θ_0 and θ_1), so 1.0
  on an axis is one update.
- gaussian: d1, d2 ~ N(0, I), an independent key per tensor.
- filter-normalized (Li et al. 2018): gaussian directions with each output unit's
  weights (a kernel column) rescaled to the norm of that unit's weights in θ; biases 0.

Point p = iy·G + ix holds a = axis[ix], b = axis[iy]; with K = samples_per_point > 1,
sample k adds σ·ε_k (key fold_in(PRNGKey(seed), k), the same draw at every point), so
per-point LTP / CVaR / std maps can be drawn. Flat index j = p·K + k, evaluated in
chunks by the chunk engine (`retland.purd.engine`).

The directions (and θ) are saved as an .npz under artifacts/landscapes/<hash>/ with
their sha256 in `landscape_grids`, so a grid can be re-rendered, zoomed or extended
with the very same directions. A grid is identified by what defines it (run, step,
direction kind and seed, operator, window, resolution, K, σ, horizon), so a rerun finds
it without recomputing the directions.

A policy stored with `retland.add_policy` (an added run) has no training update: its
landscapes take gaussian or filter-normalized directions, or update directions of the
gaussian operator.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from retland.agents import get_agent
from retland.config.requests import Bar, bar
from retland.agents.policy import PolicyConfig
from retland.purd import sampling
from retland.purd.engine import FLUSH_SECONDS, AgentPolicy, SampleProgram, fill
from retland.purd.operators import AGENT_KINDS, gaussian_perturb, parse_operator, sample_key
from retland.config.settings import LandscapeError, LandscapeRequest
from retland.train.checkpoints import list_checkpoints, load_checkpoint, run_config, run_record
from retland.warehouse.sqlgen import in_list

# ---------------------------------------------------------------------- arithmetic

def axis(lo: float, hi: float, resolution: int) -> np.ndarray:
    """[G] float64 grid coordinates, both ends included."""
    return np.linspace(lo, hi, resolution)


def grid_points(lo: float, hi: float, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ix, iy, a, b), each [G²], point p = iy·G + ix."""
    g = axis(lo, hi, resolution)
    iy, ix = np.divmod(np.arange(resolution * resolution), resolution)
    return ix.astype(np.int32), iy.astype(np.int32), g[ix], g[iy]


def parse_range(text: str) -> tuple[float, float]:
    """'-2:2' -> (-2.0, 2.0)."""
    lo, sep, hi = str(text).partition(":")
    try:
        out = float(lo), float(hi)
    except ValueError:
        out = None
    if not sep or out is None or not all(np.isfinite(out)) or out[0] >= out[1]:
        raise LandscapeError(f"--range {text!r}: expected LO:HI with LO < HI, e.g. -2:2")
    return out


def parse_zoom(text: str) -> tuple[float, ...]:
    """'1,0.25,0.0625' -> (1.0, 0.25, 0.0625): each level scales the window around 0."""
    try:
        out = tuple(float(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        out = ()
    if not out or not all(np.isfinite(z) and z > 0 for z in out):
        raise LandscapeError(f"--zoom {text!r}: expected comma-separated positive factors, e.g. 1,0.25,0.0625")
    return out


@dataclass(frozen=True)
class GridParams:
    """make_params: op_state = (θ, d1, d2, a [P] f32, b [P] f32, noise base key)."""
    samples: int
    sigma: float

    def __call__(self, op_state, key, index):
        theta, d1, d2, a, b, noise_base = op_state
        p = jnp.minimum(index // self.samples, a.shape[0] - 1)
        out = jax.tree.map(lambda t, x, y: t + a[p] * x + b[p] * y, theta, d1, d2)
        if self.samples > 1 and self.sigma > 0:
            out = jax.lax.optimization_barrier(out)  # θ at the origin stays exactly θ + σε
            out = gaussian_perturb(out, sample_key(noise_base, index % self.samples), self.sigma)
        return out


# ---------------------------------------------------------------------- directions

def filter_normalize(direction, theta):
    """Li et al. 2018: per output unit (last axis of a kernel), scale the direction to
    the norm of θ's weights of that unit; zero the biases (1-D leaves)."""
    def one(d, t):
        if d.ndim < 2:
            return jnp.zeros_like(d)
        axes = tuple(range(d.ndim - 1))
        dn = jnp.sqrt(jnp.sum(d * d, axis=axes, keepdims=True))
        tn = jnp.sqrt(jnp.sum(t * t, axis=axes, keepdims=True))
        return d * tn / jnp.maximum(dn, 1e-12)

    return jax.tree.map(one, direction, theta)


def gaussian_direction(theta, key):
    """ε ~ N(0, I) shaped like θ (one key per tensor, as gaussian_perturb)."""
    return gaussian_perturb(jax.tree.map(jnp.zeros_like, theta), key, 1.0)


def directions_hash(theta, d1, d2) -> str:
    h = hashlib.sha256()
    for tree in (theta, d1, d2):
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            arr = np.ascontiguousarray(np.asarray(leaf, np.float32))
            h.update(jax.tree_util.keystr(path).encode() + str(arr.shape).encode() + arr.tobytes())
    return h.hexdigest()


def _flat(prefix: str, tree) -> dict[str, np.ndarray]:
    return {prefix + jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def save_directions(wh, theta, d1, d2) -> tuple[str, str]:
    """(sha256, path relative to the root) of the npz holding θ, d1, d2 (written once)."""
    digest = directions_hash(theta, d1, d2)
    folder = wh.artifact_dir("landscapes", digest[:16])
    path = folder / "directions.npz"
    if not path.exists():
        tmp = folder / f".tmp-{os.getpid()}.npz"
        np.savez(tmp, **_flat("theta", theta), **_flat("d1", d1), **_flat("d2", d2))
        os.replace(tmp, path)
    return digest, wh.relative(path)


def load_directions(wh, relpath: str, like):
    """(θ, d1, d2) from a saved npz, shaped like the pytree `like`."""
    data = np.load(wh.root / relpath)
    paths, treedef = jax.tree_util.tree_flatten_with_path(like)
    out = []
    for prefix in ("theta", "d1", "d2"):
        leaves = [data[prefix + jax.tree_util.keystr(p)] for p, _ in paths]
        out.append(jax.tree_util.tree_unflatten(treedef, leaves))
    return tuple(out)


# --------------------------------------------------------------------------- grids

@dataclass
class GridPlan:
    grid_id: str
    zoom: float
    lo: float
    hi: float
    batch_size: int
    present: set[int]
    stored: dict | None  # the landscape_grids row, when there is one


@dataclass
class LandscapePlan:
    request: LandscapeRequest
    env: str
    algo: str
    backend: str
    horizon: int
    operator_id: str | None
    grids: list[GridPlan]
    variant: str = field(kw_only=True)  # the run's task rules

    @property
    def todo(self) -> int:
        return sum(self.request.n - len(g.present) for g in self.grids)


def grid_id(req: LandscapeRequest, operator_id: str | None, zoom: float, horizon: int) -> str:
    doc = [req.run_id, int(req.step), req.directions, operator_id, req.seed, repr(float(req.lo)),
           repr(float(req.hi)), repr(float(zoom)), req.resolution, req.samples_per_point,
           repr(float(req.sigma)) if req.samples_per_point > 1 else None, int(horizon)]
    return "lg-" + hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:16]


def plan(wh, req: LandscapeRequest, batch_size: int | str | None = "auto") -> LandscapePlan:
    """Validate the request against the warehouse and read what is stored; nothing is
    computed or written."""
    req.check()
    try:
        rec = run_record(wh, req.run_id)
    except ValueError as exc:
        raise LandscapeError(str(exc)) from None
    steps = list_checkpoints(wh, req.run_id)
    if req.step not in steps:
        raise LandscapeError(f"run {req.run_id} has no checkpoint at step {req.step}; it has {steps}")
    train_cfg = run_config(rec)
    horizon = int(req.horizon or train_cfg.horizon)
    operator_id = None
    if req.directions == "update":
        try:
            spec = parse_operator(req.operator, env=rec["env"], horizon=horizon, seed=req.seed)
        except ValueError as exc:
            raise LandscapeError(str(exc)) from None
        if not spec.changes_params:
            raise LandscapeError(f"--operator {req.operator}: update directions need an operator that changes θ "
                                 "(td3, sac, ppo or gaussian)")
        if spec.kind in AGENT_KINDS and isinstance(train_cfg, PolicyConfig):
            raise LandscapeError(f"--operator {spec.kind}: {req.run_id} is an added policy ({rec['algo']}), which "
                                 "has no training update; use --directions gaussian or filter-normalized, or "
                                 "--operator gaussian")
        if spec.kind in AGENT_KINDS and spec.kind != rec["algo"]:
            raise LandscapeError(f"--operator {spec.kind} needs a {spec.kind} run; {req.run_id} is {rec['algo']}")
        operator_id = spec.operator_id
    grids = []
    for z in req.zoom:
        gid = grid_id(req, operator_id, z, horizon)
        stored = wh.query("SELECT * FROM landscape_grids WHERE grid_id = ?", [gid]).to_dicts()
        present = set(wh.query("SELECT point * ? + sample AS j FROM landscape_points WHERE grid_id = ?",
                               [req.samples_per_point, gid])["j"].to_list())
        if stored:
            b = int(stored[0]["chunk_size"])
            if batch_size not in (None, "auto") and int(batch_size) != b:
                raise LandscapeError(f"grid {gid} was started with --batch-size {b}; use {b} or auto to resume it")
        elif batch_size in (None, "auto"):
            b = sampling.auto_batch_size(req.n)
        else:
            b = int(batch_size)
            if b < 1:
                raise LandscapeError(f"--batch-size must be >= 1, got {b}")
        grids.append(GridPlan(gid, z, req.lo * z, req.hi * z, b, present, stored[0] if stored else None))
    return LandscapePlan(req, rec["env"], rec["algo"], rec["backend"], horizon, operator_id, grids,
                         variant=train_cfg.variant)


def compute_directions(req: LandscapeRequest, ckpt, operator_id: str | None):
    """(agent, θ, d1, d2) of the request at a loaded checkpoint."""
    agent = get_agent(ckpt.algo, ckpt.config)
    theta = agent.actor_params(ckpt.agent_state)
    base = jax.random.PRNGKey(req.seed)
    if req.directions == "update":
        spec = parse_operator(req.operator, env=ckpt.env, seed=req.seed)
        program, op_state = sampling.checkpoint_program(spec, ckpt)
        make = jax.jit(program.make_params)
        d = [jax.tree.map(jnp.subtract, make(op_state, sample_key(base, i), jnp.int32(i)), theta) for i in (0, 1)]
    else:
        # keys 0 and 1 of a stream separate from the noise samples' (fold_in(base, k))
        dkey = jax.random.fold_in(base, 2**31 - 1)
        d = [gaussian_direction(theta, jax.random.fold_in(dkey, i)) for i in (0, 1)]
        if req.directions == "filter-normalized":
            d = [filter_normalize(x, theta) for x in d]
    return agent, theta, d[0], d[1]


@dataclass
class GridResult:
    grid_id: str
    zoom: float
    rows_written: int = 0
    seconds: float = 0.0


def run(wh, p: LandscapePlan, *, devices=None, progress: Callable[[int], None] | None = None,
        flush_seconds: float = FLUSH_SECONDS) -> list[GridResult]:
    """Compute and append every grid's missing rollouts."""
    req = p.request
    results = [GridResult(g.grid_id, g.zoom) for g in p.grids]
    todo = [(g, r) for g, r in zip(p.grids, results) if len(g.present) < req.n or g.stored is None]
    if not todo:
        return results
    ckpt = load_checkpoint(wh, req.run_id, req.step)
    agent, theta, d1, d2 = compute_directions(req, ckpt, p.operator_id)
    digest, relpath = save_directions(wh, theta, d1, d2)
    for g, _ in todo:
        if g.stored is not None and g.stored["directions_hash"] != digest:
            raise LandscapeError(
                f"grid {g.grid_id}: the directions computed now (sha256 {digest[:12]}) differ from the stored "
                f"ones ({g.stored['directions_hash'][:12]}); refusing to mix them in one grid")
    prog = SampleProgram(p.env, p.backend, p.horizon, AgentPolicy(agent), GridParams(req.samples_per_point, float(req.sigma)),
                         variant=p.variant)
    K = req.samples_per_point
    for g, res in todo:
        t0 = time.monotonic()
        if g.stored is None:
            wh.append("landscape_grids", [{
                "grid_id": g.grid_id, "run_id": req.run_id, "step": req.step, "directions": req.directions,
                "operator_id": p.operator_id, "directions_hash": digest, "directions_path": relpath,
                "lo": g.lo, "hi": g.hi, "zoom": g.zoom, "resolution": req.resolution, "samples_per_point": K,
                "sigma": float(req.sigma) if K > 1 else None, "seed": req.seed, "horizon": p.horizon,
                "chunk_size": g.batch_size, "created_at": datetime.now(timezone.utc)}])
        ix, iy, a, b = grid_points(g.lo, g.hi, req.resolution)
        op_state = (theta, d1, d2, jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32),
                    jax.random.PRNGKey(req.seed))
        def columns(j, g=g, ix=ix, iy=iy, a=a, b=b):
            pt = j // K
            return {"grid_id": [g.grid_id] * len(j), "point": pt.astype(np.int32),
                    "sample": (j % K).astype(np.int32), "ix": ix[pt], "iy": iy[pt], "a": a[pt], "b": b[pt]}

        try:
            res.rows_written += fill(
                wh, "landscape_points", columns, prog, op_state, req.n, g.batch_size, g.present,
                label=f"grid {g.grid_id}", devices=devices, flush_seconds=flush_seconds, progress=progress,
                timing={"run_id": req.run_id, "step": int(req.step), "operator_id": g.grid_id}).rows_written
        finally:
            res.seconds = time.monotonic() - t0
    return results


def grid_summary(wh, grid_ids: list[str]):
    """Rows of the view `landscape_summary` (schema/20_landscape.sql) for these grids,
    the widest zoom first."""
    cond, params = in_list("grid_id", grid_ids)
    return wh.query(f"SELECT * FROM landscape_summary WHERE {cond} ORDER BY zoom DESC", params)


def run_request(wh, request: LandscapeRequest, *, batch_size: int | str | None = "auto", devices=None,
                progress: Bar | None = None,
                on_plan: Callable[[LandscapePlan], None] | None = None) -> tuple[LandscapePlan, list[GridResult]]:
    """A checked request's landscape, what `retland landscape` and a study's landscape
    stage compute: its run resolved (a unique prefix; RunSelectionError), planned (what is
    stored; `on_plan` sees it before anything is computed), the missing rollouts computed
    with one `progress` bar. Returns the plan (its request with the full run id) and the
    grids. batch_size/devices choose how, not what: they do not change the rows."""
    import dataclasses

    from retland.warehouse.runs import require_checkpoint, resolve_run

    request.check()
    run_id = resolve_run(wh, request.run_id, seed_option=None)  # a landscape names its run whole
    request = dataclasses.replace(request, run_id=run_id)
    require_checkpoint(wh, run_id, request.step, "a landscape")
    p = plan(wh, request, batch_size)
    if on_plan is not None:
        on_plan(p)
    with bar(progress, p.todo, "landscape", unit="rollouts") as advance:
        results = run(wh, p, devices=devices, progress=advance)
    return p, results
