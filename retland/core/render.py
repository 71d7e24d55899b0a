"""Drawing simulator states: MuJoCo's own renderer, off screen, in a child process.

Scenes. Every task is drawn as a MuJoCo model whose qpos a stored pose fills
(`retland.core.rollout.pose`):
- brax 0.14 tasks (variant brax, and the legacy paper runs on a brax backend): the task's
  own MJCF model (`env.sys.mj_model`); the pose is the pipeline's q, which is that model's
  qpos;
- Brax 0.0.13's tasks (variant paper, backend brax0013): a model built here from the
  task's SystemSpec, each body a free body carrying its capsules (radius, length, offset
  and euler rotation as Brax 0.0.13 reads them), the floor a checkered plane; the pose
  holds every body's position and quaternion, so qpos is [pos, quat] per non-floor body;
- DeepMind Control tasks: Playground's MJCF model (`task.mj_model`), pose = qpos.

Renderer. MuJoCo's `Renderer` needs an OpenGL context. On a machine without a display or
GPU that is EGL or OSMesa on Debian's software Mesa (llvmpipe): packages libegl-mesa0 and
libgl1-mesa-dri (EGL) or libosmesa6 (OSMesa). MuJoCo picks its GL backend from MUJOCO_GL
when it is first imported, and brax imports it long before anything is drawn, so frames are
drawn by a child process (`python -m retland.core.render_worker`) started with MUJOCO_GL
set: $MUJOCO_GL if the user set it, else egl, then osmesa. A GL driver that crashes takes
the child with it, not the analysis. `available()` says which backend works (or why none
does), once per process.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GL_BACKENDS = ("egl", "osmesa")
WORKER = "retland.core.render_worker"
# Size of one drawn frame (pixels); the worker raises the model's offscreen buffer to fit.
DEFAULT_SIZE = (320, 240)


class RenderUnavailable(RuntimeError):
    """No OpenGL backend can draw here; the message says what was tried, in one line."""


@dataclass(frozen=True)
class Scene:
    """A MuJoCo model of one task (as MJB bytes), how a pose becomes its qpos, and the camera:
    it looks at `track_body`'s x (and y, for tasks that leave the plane) at height
    `lookat_z`, from `distance`, `azimuth` and `elevation` (degrees)."""

    task: str
    mjb: bytes
    nq: int
    layout: str  # "qpos": pose = qpos; "bodies": pose = [pos (nb × 3), rot (nb × 4)]
    bodies: tuple[int, ...]  # layout bodies: the indices of the bodies drawn (floor left out)
    nb: int  # layout bodies: bodies in the pose
    track_body: int
    lookat_z: float
    distance: float
    azimuth: float = 90.0
    elevation: float = -10.0
    planar: bool = True

    def qpos(self, poses: np.ndarray) -> np.ndarray:
        """[F, nq] qpos of the model from poses [F, P]."""
        poses = np.asarray(poses, np.float64)
        if self.layout == "qpos":
            if poses.shape[-1] != self.nq:
                raise ValueError(f"{self.task}: poses have {poses.shape[-1]} coordinates, the model {self.nq}")
            return poses
        nb = self.nb
        if poses.shape[-1] != 7 * nb:
            raise ValueError(f"{self.task}: poses have {poses.shape[-1]} numbers, expected 7 × {nb} bodies")
        pos = poses[:, : 3 * nb].reshape(len(poses), nb, 3)
        rot = poses[:, 3 * nb:].reshape(len(poses), nb, 4)
        return np.concatenate([np.concatenate([pos[:, i], rot[:, i]], axis=1) for i in self.bodies], axis=1)


# Camera distance and look-at height per task (side view; ant from above at an angle).
_CAMERA = {"hopper": (3.5, 0.8), "walker2d": (3.5, 0.9), "halfcheetah": (4.0, 0.4), "ant": (6.0, 0.3)}


def _mjb(model) -> bytes:
    import mujoco

    buf = np.empty(mujoco.mj_sizeModel(model), np.uint8)
    mujoco.mj_saveModel(model, None, buf)
    return buf.tobytes()


def paper_scene_xml(name: str) -> str:
    """MJCF of Brax 0.0.13's task `name`: a free body per simulated body with its capsules."""
    from retland.core.brax0013 import math as bm
    from retland.core.brax0013.tasks import SPECS

    spec = SPECS[name]
    parts = []
    for i, body in enumerate(spec.bodies):
        if body.plane:
            continue
        geoms = []
        for cap in body.capsules:
            q = bm.np_euler_to_quat([float(x) for x in cap.rot])
            half = max(float(cap.length) / 2 - float(cap.radius), 1e-6)
            geoms.append(f'<geom type="capsule" size="{cap.radius} {half}" pos="{" ".join(map(str, cap.pos))}" '
                         f'quat="{" ".join(f"{x:.9g}" for x in q)}" material="body"/>')
        parts.append(f'<body name="b{i}"><freejoint/>{"".join(geoms)}</body>')
    return f"""<mujoco model="brax0013-{name}">
  <visual><global offwidth="1280" offheight="960"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.5 0.5 0.5" specular="0.1 0.1 0.1"/></visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1=".4 .5 .6" rgb2="0 0 0" width="64" height="64"/>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.15 0.15 0.15" rgb2="0.8 0.8 0.8" width="100" height="100"/>
    <material name="floor" texture="grid" texrepeat="60 60" reflectance="0.2"/>
    <material name="body" rgba="0.8 0.6 0.4 1"/>
  </asset>
  <worldbody>
    <light pos="0 0 4" dir="0 0 -1" directional="true" diffuse="0.8 0.8 0.8"/>
    <geom type="plane" size="40 40 0.1" material="floor"/>
    {"".join(parts)}
  </worldbody>
</mujoco>"""


@functools.lru_cache(maxsize=None)
def scene(env: str, backend: str, variant: str) -> Scene:
    """The Scene of a task as a run recorded it; ValueError (one line) if it cannot be drawn."""
    import mujoco

    from retland.core import envs
    from retland.core.envs import PAPER_BACKEND, is_dmc, is_minatar

    env, backend, variant = envs.check_task(env, backend, variant)
    if is_minatar(env):
        raise ValueError(f"{env} is a MinAtar game: its 10 x 10 screens have no MuJoCo scene to draw (retland "
                         "renders the brax and DeepMind Control tasks)")
    distance, lookat_z = _CAMERA.get(env, (4.0, 0.8))
    if is_dmc(env):
        model = envs.make_env(env, backend, variant=variant).task.mj_model
        extent = float(model.stat.extent)
        return Scene(env, _mjb(model), int(model.nq), "qpos", (), 0, 1, float(model.stat.center[2]),
                     max(2.0, 1.5 * extent), planar=False)
    if backend == PAPER_BACKEND:
        from retland.core.brax0013.tasks import SPECS

        spec = SPECS[env]
        model = mujoco.MjModel.from_xml_string(paper_scene_xml(env))
        drawn = tuple(i for i, b in enumerate(spec.bodies) if not b.plane)
        return Scene(env, _mjb(model), int(model.nq), "bodies", drawn, len(spec.bodies), 1, lookat_z, distance,
                     elevation=-25.0 if env == "ant" else -10.0, planar=env != "ant")
    sys_ = envs.make_env(env, backend, variant=variant).sys
    model = getattr(sys_, "mj_model", None)
    if model is None:
        raise ValueError(f"{env} ({variant}, {backend}): its brax system carries no MuJoCo model to draw")
    return Scene(env, _mjb(model), int(model.nq), "qpos", (), 0, 1, lookat_z, distance,
                 elevation=-25.0 if env == "ant" else -10.0, planar=env != "ant")


# ------------------------------------------------------------------------------ renderer

def _gl_choices() -> tuple[str, ...]:
    user = os.environ.get("MUJOCO_GL", "").strip().lower()
    return (user,) if user else GL_BACKENDS


def _run_worker(gl: str, job: Path, out: Path, timeout: float) -> str | None:
    """None if the worker drew `job` into `out` with backend `gl`, else why not (one line)."""
    env = dict(os.environ, MUJOCO_GL=gl, PYOPENGL_PLATFORM=gl)
    try:
        proc = subprocess.run([sys.executable, "-m", WORKER, str(job), str(out)], env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"{gl}: no frames after {timeout:.0f} s"
    if proc.returncode == 0 and out.exists():
        return None
    lines = [ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()]
    return f"{gl}: {lines[-1] if lines else f'exit status {proc.returncode}'}"[:200]


_PROBE_XML = """<mujoco><worldbody><light pos="0 0 3"/><geom type="plane" size="2 2 .1" rgba=".8 .8 .8 1"/>
<body pos="0 0 .5"><freejoint/><geom type="capsule" size=".1 .2" rgba=".8 .3 .2 1"/></body></worldbody></mujoco>"""


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[str | None, str]:
    import mujoco

    model = mujoco.MjModel.from_xml_string(_PROBE_XML)
    probe = Scene("probe", _mjb(model), int(model.nq), "qpos", (), 0, 1, 0.3, 2.0)
    why = []
    for gl in _gl_choices():
        try:
            frames = _draw(gl, probe, np.asarray(model.qpos0)[None], 64, 48, timeout=120)
        except RenderUnavailable as exc:
            why.append(str(exc))
            continue
        if frames.std() > 0:
            return gl, ""
        why.append(f"{gl}: blank frames")
    return None, "; ".join(why)


def available() -> str | None:
    """The GL backend frames are drawn with (egl, osmesa, or $MUJOCO_GL), or None."""
    return _probe()[0]


def unavailable_reason() -> str:
    """Why nothing can be drawn here, in one line (empty if something can)."""
    gl, why = _probe()
    if gl:
        return ""
    return (f"no OpenGL renderer for MuJoCo ({why}); on Debian/Ubuntu: apt-get install libegl-mesa0 "
            "libgl1-mesa-dri (or libosmesa6 with MUJOCO_GL=osmesa)")


def _draw(gl: str, sc: Scene, qpos: np.ndarray, width: int, height: int, timeout: float) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="retland-render-") as tmp:
        job, out = Path(tmp) / "job.npz", Path(tmp) / "frames.npy"
        np.savez(job, mjb=np.frombuffer(sc.mjb, np.uint8), qpos=np.asarray(qpos, np.float64),
                 size=np.array([width, height]), track_body=sc.track_body, lookat_z=sc.lookat_z,
                 distance=sc.distance, azimuth=sc.azimuth, elevation=sc.elevation, planar=sc.planar)
        why = _run_worker(gl, job, out, timeout)
        if why is not None:
            raise RenderUnavailable(why)
        return np.load(out)


def draw(sc: Scene, poses: np.ndarray, width: int = DEFAULT_SIZE[0], height: int = DEFAULT_SIZE[1]) -> np.ndarray:
    """Frames uint8 [F, height, width, 3] of poses [F, P]; RenderUnavailable if none can be drawn."""
    gl = available()
    if gl is None:
        raise RenderUnavailable(unavailable_reason())
    qpos = sc.qpos(poses)
    return _draw(gl, sc, qpos, int(width), int(height), timeout=60 + 0.5 * len(qpos))
