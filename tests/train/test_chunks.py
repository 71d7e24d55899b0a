"""How a training job cuts its steps into calls of the compiled program (no JAX compile)."""
from __future__ import annotations

from retland.config.agents import PPOConfig, SACConfig, TD3Config
from retland.train.config import TrainConfig
from retland.train.job import TRAIN_CHUNK_MAX, boundaries


def test_off_policy_jobs_call_their_program_once_per_many_steps_and_every_stop_ends_a_chunk():
    for agent in (TD3Config(), SACConfig()):
        cfg = TrainConfig(env="hopper", agent=agent)
        stops, _, chunk = boundaries(cfg)
        assert chunk == TRAIN_CHUNK_MAX  # the defaults' stops (10k warm-up, 20k evaluations, ...) share 10k
        assert all(s % chunk == 0 for s in stops)
    # stops whose gcd has no divisor near the cap: the largest one below it
    cfg = TrainConfig(env="hopper", total_steps=2 * 1009 * 3, checkpoints=(1009 * 3,), eval_every=1009 * 3,
                      agent=TD3Config(learning_starts=1009))
    stops, _, chunk = boundaries(cfg)
    assert chunk == 1  # 1009 is prime and above the cap
    cfg = TrainConfig(env="hopper", total_steps=1200, checkpoints=(600, 1200), eval_every=600,
                      agent=TD3Config(learning_starts=300))
    assert boundaries(cfg)[2] == 300
    assert boundaries(cfg, start=600)[0] == [1200]


def test_ppo_chunk_is_one_iteration():
    cfg = TrainConfig(env="hopper", agent=PPOConfig(num_envs=4, unroll_length=8), total_steps=32 * 10,
                      checkpoints=(32 * 5, 32 * 10), eval_every=32 * 5)
    assert boundaries(cfg)[2] == 32
