"""Task variants: the paper's Brax 0.0.13 rules against brax 0.14's own.

Most tests here hold the paper's rules on brax 0.14's robots (retland.core.paper_tasks,
backend positional): what paper-variant runs made before retland had Brax 0.0.13's
simulator still roll out on. The simulator itself is tests/core/test_brax0013.py's and, against
Brax 0.0.13, tests/core/test_oracle.py's."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from retland.core.envs import VARIANTS, check_variant, env_dims, make_env, reference_state
from retland.train.config import TrainConfig


def _posed(env, z: float, angle: float):
    """A pipeline state of hopper/walker2d at rest with torso height z and pitch `angle`."""
    q = env.sys.init_q
    z0 = float(env.pipeline_init(q, jnp.zeros(env.sys.qd_size())).x.pos[0, 2])
    q = q.at[1].add(z - z0).at[2].set(angle)  # rootz slide, rooty hinge
    return env.pipeline_init(q, jnp.zeros(env.sys.qd_size()))


def _step_from(name: str, variant: str, z: float, angle: float):
    env = make_env(name, "positional", variant=variant)
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    ps = _posed(env, z, angle)
    state = state.replace(pipeline_state=ps)
    out = jax.jit(env.step)(state, jnp.zeros(env.action_size))
    return out, float(out.pipeline_state.x.pos[0, 2]), float(out.pipeline_state.q[2])


def test_hopper_tilted_lives_under_paper_rules_and_ends_under_brax_rules():
    # The probe: tilted 0.3 rad at z 1.2. Brax 0.0.13 ended a hopper on height only
    # (z < 0.7); brax 0.14 also ends it when |torso angle| >= 0.2.
    paper, z, angle = _step_from("hopper", "paper", 1.2, 0.3)
    assert 0.7 < z < 1.3 and abs(angle - 0.3) < 0.05  # still tilted and up after one step
    assert float(paper.done) == 0.0
    brax, _, angle = _step_from("hopper", "brax", 1.2, 0.3)
    assert abs(angle) > 0.2 and float(brax.done) == 1.0
    # the paper's rule still ends a hopper whose torso is below 0.7 (lying almost flat)
    low, z, _ = _step_from("hopper", "paper", 0.5, 1.4)
    assert z < 0.7 and float(low.done) == 1.0


def _walker_done(variant: str, z: float, angle: float) -> bool:
    if variant == "paper":  # Brax 0.0.13: height only
        return not 0.7 <= z <= 2.0
    return not (0.8 < z < 2.0 and -1.0 < angle < 1.0)  # brax 0.14


def test_walker2d_paper_height_range_and_no_angle_rule():
    # Poses between the two rules: low (0.7 <= z < 0.8) and leaning past brax's |angle| < 1.
    # Each variant's done flag must follow its own rule at the state the step reaches.
    by_rule = []
    for z, angle in ((0.75, 0.95), (1.2, 1.2)):
        flags = {}
        for variant in ("paper", "brax"):
            out, z1, a1 = _step_from("walker2d", variant, z, angle)
            assert float(out.done) == float(_walker_done(variant, z1, a1)), (variant, z, angle, z1, a1)
            flags[variant] = (float(out.done), z1, a1)
        assert (flags["paper"][0], flags["brax"][0]) == (0.0, 1.0), flags
        by_rule.append(flags["brax"])
    assert by_rule[0][1] < 0.8 and abs(by_rule[0][2]) < 1.0  # brax ended the first on height alone
    assert by_rule[1][1] > 0.8 and abs(by_rule[1][2]) > 1.0  # and the second on its angle alone


def test_paper_observations_have_the_brax_0_0_13_layouts():
    # hopper/walker2d: z, quaternion, joint angles, torso velocity, joint velocities;
    # halfcheetah: z, quaternion (w, y), joints, (vx, vz), pitch rate, joint velocities.
    assert env_dims("hopper", variant="paper") == (1 + 4 + 3 + 3 + 3, 3)
    assert env_dims("walker2d", variant="paper") == (1 + 4 + 6 + 3 + 6, 6)
    assert env_dims("halfcheetah", variant="paper") == (1 + 2 + 6 + 2 + 1 + 6, 6)
    assert env_dims("hopper", variant="brax") == (11, 3)
    assert env_dims("hopper", "positional", variant="paper") == env_dims("hopper", variant="paper")


def test_paper_control_steps_are_brax_0_0_13s():
    # 1000 steps of hopper/walker2d cover 20 s as in the paper, not brax 0.14's 8 s
    for name, paper_dt, brax_dt in (("hopper", 0.02, 0.008), ("walker2d", 0.02, 0.008), ("halfcheetah", 0.05, 0.05)):
        assert float(make_env(name, variant="paper").dt) == pytest.approx(paper_dt, rel=1e-6)
        assert float(make_env(name, "positional", variant="paper").dt) == pytest.approx(paper_dt, rel=1e-6)
        assert float(make_env(name, variant="brax").dt) == pytest.approx(brax_dt, rel=1e-6)


def test_paper_reset_perturbs_joints_only_and_noise_zero_is_s0():
    env = make_env("hopper", "positional", reset_noise_scale=0.005, variant="paper")
    s = jax.jit(env.reset)(jax.random.PRNGKey(3))
    q, qd = s.pipeline_state.q, s.pipeline_state.qd
    assert jnp.all(q[:3] == env.sys.init_q[:3]) and jnp.all(qd[:3] == 0)  # root at rest
    assert 0 < float(jnp.abs(q[3:]).max()) <= 0.005 and 0 < float(jnp.abs(qd[3:]).max()) <= 0.005
    s0 = reference_state("hopper", "positional", variant="paper")
    assert jnp.all(s0.pipeline_state.q == env.sys.init_q) and jnp.all(s0.pipeline_state.qd == 0)


def test_paper_ant_contacts_match_brax_physics_and_are_observed_and_paid():
    from retland.core.paper_tasks import _positional_step

    env = make_env("ant", "positional", variant="paper")
    assert env_dims("ant", "positional", variant="paper") == (87, 8)
    assert env_dims("ant", variant="paper") == (87, 8)  # Brax 0.0.13's simulator: the same layout  # 27 + 10 bodies x (3 + 3) contact values

    def run(state, act):
        def body(s, _):
            return env.step(s, act), s.reward
        state, rewards = jax.lax.scan(body, state, None, length=25)  # falls onto its feet
        ps = state.pipeline_state
        ref = env.pipeline_step(ps, act)
        mine = jax.lax.scan(lambda p, _: (_positional_step(env.sys, p, act)[0], None), ps, (), env._n_frames)[0]
        return state, ref, mine

    state, ref, mine = jax.jit(run)(jax.jit(env.reset)(jax.random.PRNGKey(0)), 0.2 * jnp.ones(8))
    assert jnp.array_equal(ref.q, mine.q) and jnp.array_equal(ref.qd, mine.qd)  # the same physics step
    contact = state.obs[27:].reshape(2, 10, 3)
    assert float(jnp.abs(contact).max()) > 0  # feet touch the floor
    assert float(jnp.abs(contact).max()) <= 1.0  # clipped as in Brax 0.0.13
    assert jnp.all(contact[:, 9] == 0)  # the floor row
    cost = -float(state.metrics["reward_contact"])
    assert cost == pytest.approx(5e-4 * float(jnp.sum(jnp.square(contact[0]))), rel=1e-5)


def test_variant_is_checked_recorded_and_legacy_configs_read_as_brax():
    # dmc: DeepMind Control tasks only (tests/core/test_dmc.py); minatar: MinAtar games (tests/core/test_minatar.py)
    assert VARIANTS == ("paper", "brax", "dmc", "minatar")
    with pytest.raises(ValueError, match="unknown task variant 'gym'"):
        check_variant("gym")
    assert TrainConfig().variant == "paper"
    with pytest.raises(ValueError, match="variant"):
        TrainConfig(variant="gym")
    assert TrainConfig().backend == "brax0013" and TrainConfig(variant="brax").backend == "positional"
    with pytest.raises(ValueError, match="paper variant runs on Brax 0.0.13's simulator: backend brax0013"):
        TrainConfig(env="ant", backend="positional")
    with pytest.raises(ValueError, match="backend brax0013 .* runs the paper's tasks"):
        TrainConfig(variant="brax", backend="brax0013")
    # A paper run from before retland had Brax 0.0.13's simulator still loads.
    old = TrainConfig(variant="brax").model_dump(mode="json")
    assert TrainConfig.from_stored(dict(old, variant="paper")).backend == "positional"
    # A config stored before variants existed: brax 0.14's rules, whatever today's default.
    legacy = TrainConfig(variant="brax").model_dump(mode="json")
    del legacy["variant"]
    assert TrainConfig.from_stored(legacy).variant == "brax"
    assert TrainConfig.from_stored(dict(legacy, variant="paper")).variant == "paper"


def test_ppo_follows_the_authors_code_where_table_1_is_silent_and_old_runs_keep_their_config():
    from retland.agents import ppo
    from retland.train.config import PPOConfig

    cfg = PPOConfig()
    assert (cfg.actor_head_scale, cfg.critic_head_scale, cfg.value_coef) == (0.01, 1.0, 1.0)
    obs = jnp.ones((1, 11))
    params = ppo.actor_net(cfg, 3).init(jax.random.PRNGKey(0), obs)["params"]
    head = params["MLP_0"]["Dense_2"]["kernel"]
    # an orthogonal 64x3 kernel with gain g has columns of norm g
    assert jnp.allclose(jnp.linalg.norm(head, axis=0), 0.01, rtol=1e-4)
    legacy = TrainConfig(variant="brax", agent=PPOConfig()).model_dump(mode="json")
    for k in ("variant",):
        del legacy[k]
    for k in ("actor_head_scale", "critic_head_scale"):
        del legacy["agent"][k]
    legacy["agent"]["value_coef"] = 2.0  # stored explicitly by every earlier run
    old = TrainConfig.from_stored(legacy).agent
    assert (old.actor_head_scale, old.critic_head_scale, old.value_coef) == (2.0**0.5, 2.0**0.5, 2.0)
