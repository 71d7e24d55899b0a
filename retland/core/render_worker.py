"""The child process that draws frames (retland.core.render): `python -m retland.core.render_worker JOB OUT`.

JOB is an .npz with the model (MJB bytes), qpos [F, nq], the frame size and the camera;
OUT receives uint8 frames [F, height, width, 3] (.npy). MUJOCO_GL is set by the parent
before this process imports mujoco. Imports nothing but numpy and mujoco (no JAX)."""
from __future__ import annotations

import sys
from pathlib import Path


def main(job: str, out: str) -> None:
    import mujoco
    import numpy as np

    d = np.load(job)
    model = mujoco.MjModel.from_binary_path("scene.mjb", {"scene.mjb": d["mjb"].tobytes()})
    width, height = (int(x) for x in d["size"])
    model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
    model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
    light = model.vis.headlight
    light.ambient[:] = np.maximum(light.ambient, 0.3)
    light.diffuse[:] = np.maximum(light.diffuse, 0.5)
    data = mujoco.MjData(model)
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.distance, cam.azimuth, cam.elevation = float(d["distance"]), float(d["azimuth"]), float(d["elevation"])
    track, planar, z = int(d["track_body"]), bool(d["planar"]), float(d["lookat_z"])
    qpos = d["qpos"]
    frames = np.empty((len(qpos), height, width, 3), np.uint8)
    with mujoco.Renderer(model, height, width) as renderer:
        # software GL: shadows and reflections cost most of a frame and show nothing the gait needs
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        for i, q in enumerate(qpos):
            data.qpos[:] = q
            mujoco.mj_kinematics(model, data)
            x, y = data.xpos[track][0], data.xpos[track][1]
            cam.lookat[:] = (x, 0.0 if planar else y, z)
            renderer.update_scene(data, cam)
            frames[i] = renderer.render()
    tmp = Path(out).with_suffix(".tmp.npy")
    np.save(tmp, frames)
    tmp.replace(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
