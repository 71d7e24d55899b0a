"""The paper's task rules (Brax 0.0.13's) on brax 0.14's robots and physics: older runs only.

New runs of the paper variant run Brax 0.0.13's own simulator (retland.core.brax0013,
backend brax0013). This module keeps rolling out paper-variant runs made before that,
which recorded a brax 0.14 backend (positional and the others); what follows describes it.

The paper trained and measured on Brax 0.0.13's ant, halfcheetah, hopper and walker2d.
brax 0.14 keeps the robots but changed the task rules around them, and failures of a
post-update policy *are* terminations, so the rules move LTP, skewness and CVaR directly.
This module restores the 0.0.13 rules on top of brax 0.14's systems:

| rule | brax 0.14 (`variant="brax"`) | paper, Brax 0.0.13 (`variant="paper"`) |
| --- | --- | --- |
| hopper ends | z ≤ 0.7, \\|torso angle\\| ≥ 0.2, any \\|q[2:], qd\\| ≥ 100 | z < 0.7 only |
| walker2d ends | z ∉ (0.8, 2), \\|torso angle\\| ≥ 1 | z ∉ [0.7, 2] only |
| ant ends | z ∉ (0.2, 1) | same |
| hopper/walker2d forward reward | torso x velocity | mass-weighted centre-of-mass x velocity |
| ant reward | forward + 1 − 0.5·\\|a\\|² (contact cost fixed at 0) | also − 5e-4 · Σ clip(contact impulse, ±1)² |
| observation | q (without x) and qd; hopper/walker2d clip qd to ±10 | torso z, torso quaternion, joint angles, torso velocity, joint velocities (ant: + clipped contact impulses, 87 values) |
| reset noise | uniform on every q; qd uniform (hopper, walker2d) or Gaussian (ant, halfcheetah) | uniform ±scale on joint angles and joint velocities only |
| control step | hopper/walker2d 8 ms (4 physics steps of 2 ms, as Gym); ant/halfcheetah 50 ms | 20 ms / 50 ms: hopper and walker2d act every 10 physics steps, so 1000 steps are 20 s as in the paper |

What still differs is the simulator itself: 0.0.13's own physics engine against brax 0.14's
`positional` (or another) backend on MJCF models, with their own masses, gears and time
steps. Returns are therefore not numerically comparable with the paper's, but the rules
that decide when an episode fails and what it pays are the paper's.

Ant's contact impulses: Brax 0.0.13 observed, per body, the velocity change its collision
step applied (summed over the physics substeps of one env step), clipped to ±1, and paid
5e-4 · Σ of the squared clipped linear part. brax 0.14's ant cannot do either
(`use_contact_forces=True` raises, the cost is fixed at 0). The paper ant here runs brax
0.14's positional step itself (`_positional_step`, the same sequence of calls as
`brax.positional.pipeline.step`, tested to give identical states) and keeps the
velocity-level collision update `collisions.resolve_velocity` returns, which is the same
quantity on brax 0.14's position-based solver. It therefore needs `backend="positional"`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

INF = float("inf")
# Brax 0.0.13 had one body more than brax 0.14's ant has links: the floor, whose contact
# impulse is always zero. Keeping its row keeps the paper's 87-value observation.
_ANT_PAPER_BODIES = 10


def _com_x(sys, pipeline_state) -> jax.Array:
    """Mass-weighted x position of the links' centres of mass."""
    x_i = pipeline_state.x.vmap().do(sys.link.inertia.transform)
    mass = sys.link.inertia.mass
    return jnp.sum(x_i.pos[:, 0] * mass) / jnp.sum(mass)


def _positional_step(sys, state, act):
    """One step of brax 0.14's positional pipeline, also returning the collision
    velocity update per link (what Brax 0.0.13 reported as contact impulse)."""
    from brax import actuator, com, contact, kinematics
    from brax.base import Motion
    from brax.positional import collisions, integrator, joints

    x_i_prev = state.x_i
    tau = actuator.to_tau(sys, act, state.q, state.qd)
    xdd_i = Motion.create(vel=sys.gravity)
    xf_i = joints.acceleration_update(sys, state, tau)
    if sys.enable_fluid:  # not used by the four tasks; refused in PaperAnt.__init__
        raise NotImplementedError("fluid forces")
    xdd_i += Motion(
        ang=jax.vmap(lambda x, y: x @ y)(com.inv_inertia(sys, state.x), xf_i.ang),
        vel=jax.vmap(lambda x, y: x * y)(1 / state.mass, xf_i.vel),
    )
    x_i, xd_i = integrator.integrate_xdd(sys, state.x_i, state.xd_i, xdd_i)
    x, xd = com.to_world(sys, x_i, xd_i)
    state = state.replace(x=x, xd=xd, x_i=x_i, xd_i=xd_i)

    x_i = joints.position_update(sys, state)
    x, _ = com.to_world(sys, x_i, xd_i)
    state = state.replace(x=x, x_i=x_i)

    c = contact.get(sys, x)
    x_i, dlambda = collisions.resolve_position(sys, state, x_i_prev, c)
    xd_i_prev = xd_i
    xd_i = integrator.project_xd(sys, x_i, x_i_prev)
    x, xd = com.to_world(sys, x_i, xd_i)
    state = state.replace(x=x, xd=xd, x_i=x_i, xd_i=xd_i)

    xdv_i = collisions.resolve_velocity(sys, state, xd_i_prev, c, dlambda)
    xd_i = integrator.integrate_xdv(sys, xd_i, xdv_i)

    x, xd = com.to_world(sys, x_i, xd_i)
    j, jd, a_p, a_c = kinematics.world_to_joint(sys, x, xd)
    q, qd = kinematics.inverse(sys, j, jd)
    new = state.replace(q=q, qd=qd, x=x, xd=xd, contact=None, x_i=x_i, xd_i=xd_i, j=j, jd=jd, a_p=a_p, a_c=a_c)
    return new, xdv_i


def _paper_class(base_cls, *, z_range, forward, terminate, healthy_reward, ctrl_cost, contact_cost, obs, dt):
    """A subclass of a brax 0.14 task that replaces reset, step and observation with the
    Brax 0.0.13 rules. `obs` is one of 'planar' (hopper, walker2d), 'cheetah', 'ant'."""
    from brax.envs.base import State

    class Paper(base_cls):
        variant = "paper"

        def __init__(self, backend: str, reset_noise_scale: float):
            super().__init__(backend=backend, reset_noise_scale=reset_noise_scale)
            if abs(float(self.dt) - dt) > 1e-6 * dt:
                # hopper/walker2d: brax 0.14 acts every 4 physics steps of 2 ms (8 ms,
                # as Gym); Brax 0.0.13 acted every 20 ms, so a 1000-step episode was 20 s.
                frames = round(dt / float(self.sys.opt.timestep))
                super().__init__(backend=backend, reset_noise_scale=reset_noise_scale, n_frames=frames)
                if abs(float(self.dt) - dt) > 1e-6 * dt:
                    raise ValueError(f"{base_cls.__name__}: cannot reach the paper's control step {dt} s "
                                     f"with physics steps of {float(self.sys.opt.timestep)} s")
            self._paper_noise = float(reset_noise_scale)
            # Joints after the root: every one is actuated in these four robots.
            self._root_q = self.sys.q_size() - self.sys.act_size()
            self._root_qd = self.sys.qd_size() - self.sys.act_size()
            if contact_cost and backend != "positional":
                raise ValueError(
                    f"the paper variant of {base_cls.__name__.lower()} observes and pays contact impulses, which "
                    f"retland computes from brax's positional solver: use backend positional, or variant brax")
            if contact_cost and self.sys.enable_fluid:
                raise ValueError("the paper ant does not support fluid forces")

        # -- reset: Brax 0.0.13 perturbed joint angles and joint velocities only,
        # uniformly in ±scale; the root (torso pose and velocity) starts at rest.
        def reset(self, rng):
            k1, k2 = jax.random.split(rng)
            s = self._paper_noise
            n = self.sys.act_size()
            q = self.sys.init_q.at[self._root_q:].add(jax.random.uniform(k1, (n,), minval=-s, maxval=s))
            qd = jnp.zeros(self.sys.qd_size()).at[self._root_qd:].set(
                jax.random.uniform(k2, (n,), minval=-s, maxval=s))
            ps = self.pipeline_init(q, qd)
            contact = jnp.zeros((_ANT_PAPER_BODIES, 3)) if obs == "ant" else None
            zero = jnp.zeros(())
            metrics = {"reward_forward": zero, "reward_ctrl": zero, "reward_healthy": zero,
                       "reward_contact": zero}
            return State(ps, self._paper_obs(ps, contact, contact), zero, zero, metrics)

        def step(self, state, action):
            ps0 = state.pipeline_state
            if obs == "ant":
                def frame(carry, _):
                    ps, vel, ang = carry
                    ps, dv = _positional_step(self.sys, ps, action)
                    return (ps, vel + dv.vel, ang + dv.ang), None
                n_links = self.sys.num_links()
                zeros = jnp.zeros((n_links, 3))
                (ps, cvel, cang), _ = jax.lax.scan(frame, (ps0, zeros, zeros), (), self._n_frames)
                pad = jnp.zeros((_ANT_PAPER_BODIES - n_links, 3))
                cvel = jnp.concatenate([cvel, pad])
                cang = jnp.concatenate([cang, pad])
            else:
                ps = self.pipeline_step(ps0, action)
                cvel = cang = None
            if forward == "com":
                x_velocity = (_com_x(self.sys, ps) - _com_x(self.sys, ps0)) / self.dt
            else:
                x_velocity = (ps.x.pos[0, 0] - ps0.x.pos[0, 0]) / self.dt
            ctrl = ctrl_cost * jnp.sum(jnp.square(action))
            contact = (contact_cost * jnp.sum(jnp.square(jnp.clip(cvel, -1.0, 1.0)))
                       if contact_cost else jnp.zeros(()))
            reward = x_velocity + healthy_reward - ctrl - contact
            if terminate:
                z = ps.x.pos[0, 2]
                lo, hi = z_range
                done = jnp.where((z < lo) | (z > hi), 1.0, 0.0)
            else:
                done = jnp.zeros(())
            state.metrics.update(reward_forward=x_velocity, reward_ctrl=-ctrl,
                                 reward_healthy=jnp.full((), healthy_reward), reward_contact=-contact)
            return state.replace(pipeline_state=ps, obs=self._paper_obs(ps, cvel, cang),
                                 reward=reward, done=done)

        def _paper_obs(self, ps, cvel, cang):
            q, qd = ps.q, ps.qd
            z = ps.x.pos[0, 2:3]
            rot = ps.x.rot[0]
            joints_q, joints_qd = q[self._root_q:], qd[self._root_qd:]
            if obs == "planar":
                parts = [z, rot, joints_q, ps.xd.vel[0], joints_qd]
            elif obs == "cheetah":
                parts = [z, rot[jnp.array([0, 2])], joints_q, ps.xd.vel[0, jnp.array([0, 2])],
                         ps.xd.ang[0, 1:2], joints_qd]
            else:
                parts = [z, rot, joints_q, ps.xd.vel[0], ps.xd.ang[0], joints_qd,
                         jnp.clip(cvel, -1.0, 1.0).reshape(-1), jnp.clip(cang, -1.0, 1.0).reshape(-1)]
            return jnp.concatenate(parts)

    Paper.__name__ = Paper.__qualname__ = f"Paper{base_cls.__name__}"
    return Paper


# Brax 0.0.13's rules per task (its hopper.py, walker2d.py, ant.py, halfcheetah.py).
PAPER_RULES = {
    "hopper": dict(z_range=(0.7, INF), forward="com", terminate=True, healthy_reward=1.0,
                   ctrl_cost=1e-3, contact_cost=0.0, obs="planar", dt=0.02),
    "walker2d": dict(z_range=(0.7, 2.0), forward="com", terminate=True, healthy_reward=1.0,
                     ctrl_cost=1e-3, contact_cost=0.0, obs="planar", dt=0.02),
    "ant": dict(z_range=(0.2, 1.0), forward="torso", terminate=True, healthy_reward=1.0,
                ctrl_cost=0.5, contact_cost=5e-4, obs="ant", dt=0.05),
    "halfcheetah": dict(z_range=(-INF, INF), forward="torso", terminate=False, healthy_reward=0.0,
                        ctrl_cost=0.1, contact_cost=0.0, obs="cheetah", dt=0.05),
}


def paper_env(name: str, brax_class, backend: str, reset_noise_scale: float):
    """The paper-rules version of task `name`, built on brax 0.14's class for it."""
    cls = _paper_class(brax_class, **PAPER_RULES[name])
    return cls(backend=backend, reset_noise_scale=reset_noise_scale)
