"""The agents' hyperparameters: one typed model per algorithm, defaults = the paper's
Table 1 (docs/method.md §4), and the training schedule's defaults. Imports nothing heavy:
the agents (retland.agents), training (retland.train) and the command line read them."""
from __future__ import annotations

import math
from typing import Annotated, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from retland.config.registry import ALGOS, check_algo

# Every number of a config has a declared range, checked before anything is written or
# compiled: a negative batch size or a NaN learning rate is refused, not trained.


def _number(v):
    # pydantic would read a TOML `batch_size = true` as 1, and report a NaN as "not > 0"
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {str(v).lower()}")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {v}")
    return v


_Num = BeforeValidator(_number)
Size = Annotated[int, _Num, Field(ge=1)]  # batch sizes, counts, widths, periods
Count = Annotated[int, _Num, Field(ge=0)]  # may be zero: warm-up steps, seeds
Rate = Annotated[float, _Num, Field(gt=0, allow_inf_nan=False)]  # learning rates, epsilons, temperatures
NonNegative = Annotated[float, _Num, Field(ge=0, allow_inf_nan=False)]  # noise scales, loss weights
Discount = Annotated[float, _Num, Field(gt=0, le=1, allow_inf_nan=False)]  # gamma, tau: (0, 1]
Fraction = Annotated[float, _Num, Field(ge=0, le=1, allow_inf_nan=False)]  # probabilities, λ: [0, 1]
Finite = Annotated[float, _Num, Field(allow_inf_nan=False)]
Hidden = Annotated[tuple[Size, ...], Field(min_length=1)]  # hidden layer widths, >= 1 layer


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TD3Config(_Model):
    """TD3 (Fujimoto et al. 2018) as in docs/method.md: actor loss on min(Q1, Q2)."""

    algo: Literal["td3"] = "td3"
    learning_rate: Rate = 3e-4  # actor and critic Adam
    # Adam ε of every optimizer: the authors' code (optax default); Table 1 prints 1.5e-4.
    # It sets the size of each sampled update where √v is small (docs/method.md §4).
    adam_eps: Rate = 1e-8
    batch_size: Size = 256
    gamma: Discount = 0.99
    tau: Discount = 0.005
    policy_delay: Size = 2  # actor and target updates every `policy_delay` critic updates
    policy_noise: NonNegative = 0.2  # target policy smoothing noise
    noise_clip: NonNegative = 0.5
    exploration_noise: NonNegative = 0.1
    learning_starts: Count = 10_000  # uniform random warm-up steps, no updates
    buffer_size: Size = 1_000_000
    hidden: Hidden = (256, 256)


class SACConfig(_Model):
    """SAC (Haarnoja et al. 2018) with learned temperature, tanh-Gaussian actor."""

    algo: Literal["sac"] = "sac"
    learning_rate: Rate = 3e-4  # actor, critics and temperature Adam
    adam_eps: Rate = 1e-8  # as TD3Config.adam_eps
    batch_size: Size = 256
    gamma: Discount = 0.99
    tau: Discount = 0.005
    initial_temperature: Rate = 1.0
    target_entropy_scale: NonNegative = 0.5  # target entropy = -scale * |A|
    log_std_min: Finite = -10.0
    log_std_max: Finite = 2.0
    # The actor's log-std: "separate", its own layer on the last hidden layer (orthogonal
    # gain 1.0), as the authors' jaxrl NormalTanhPolicy; "joint", the second half of one
    # output layer of 2A units at gain √2 (retland before). Unset in a TrainConfig it
    # follows the variant: separate under paper, joint otherwise; runs recorded before the
    # field existed read joint (TrainConfig.from_stored), which they were trained with.
    log_std_head: Literal["separate", "joint"] = "separate"
    learning_starts: Count = 10_000
    buffer_size: Size = 1_000_000
    hidden: Hidden = (256, 256)

    @model_validator(mode="after")
    def _log_std_range(self):
        if self.log_std_min >= self.log_std_max:
            raise ValueError(f"log_std_min={self.log_std_min} must be < log_std_max={self.log_std_max}")
        return self


class PPOConfig(_Model):
    """PPO (Schulman et al. 2017) with Brax-scale batches: 2048 envs x 16 steps."""

    algo: Literal["ppo"] = "ppo"
    num_envs: Size = 2048
    unroll_length: Size = 16
    num_minibatches: Size = 2
    update_epochs: Size = 4
    learning_rate: Rate = 0.0026
    adam_eps: Rate = 1e-5
    gamma: Discount = 0.99
    gae_lambda: Fraction = 0.95
    clip_eps: Rate = 0.2
    # Loss = policy + value_coef·MSE(V, return): 1 is the authors' vf_coef 2 on their ½·MSE.
    value_coef: NonNegative = 1.0
    entropy_coef: NonNegative = 0.0
    max_grad_norm: Rate = 1.0
    hidden: Hidden = (64, 64)
    # Orthogonal gains of the output layers (the hidden layers use √2), as the authors' code.
    actor_head_scale: Rate = 0.01
    critic_head_scale: Rate = 1.0
    # "box": a Gaussian policy over [-1, 1]^A (the robot tasks); "discrete": a categorical
    # policy over the actions of a MinAtar game (logits from the actor; the deterministic
    # policy is their argmax). A MinAtar run gets "discrete" and MINATAR_PPO's defaults.
    action_space: Literal["box", "discrete"] = "box"

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.unroll_length

    @model_validator(mode="after")
    def _minibatches_divide(self):
        if self.steps_per_update % self.num_minibatches:
            raise ValueError(
                f"num_envs*unroll_length={self.steps_per_update} is not divisible by "
                f"num_minibatches={self.num_minibatches}")
        return self


# PPO's defaults on a MinAtar game (discrete actions), where a field is not given. The
# paper's appendix A.6 states no hyperparameters for its ALE runs; these are CleanRL's
# ppo_atari.py (8 envs x 128 steps, 4 minibatches x 4 epochs, Adam 2.5e-4 with eps 1e-5,
# clip 0.1, entropy 0.01, grad-norm clip 0.5, vf_coef 0.5 on ½·MSE = value_coef 0.25 here),
# on a 64-64 tanh MLP over MinAtar's flattened 10 x 10 x C channels instead of the
# Nature CNN over 84 x 84 frames (docs/method.md "Discrete control").
MINATAR_PPO: dict = {"action_space": "discrete", "num_envs": 8, "unroll_length": 128, "num_minibatches": 4,
                     "update_epochs": 4, "learning_rate": 2.5e-4, "adam_eps": 1e-5, "clip_eps": 0.1,
                     "value_coef": 0.25, "entropy_coef": 0.01, "max_grad_norm": 0.5}


class BCConfig(_Model):
    """Behaviour cloning (the paper's Appendix A.7): TD3's actor network trained by Adam on
    the mean squared error to a teacher's deterministic actions, over the teacher's logged
    data (its replay rows up to the teacher checkpoint). The paper states none of the
    network, minibatch or optimizer: retland takes TD3's (docs/method.md, "Behaviour
    cloning"). A run's steps are gradient steps."""

    algo: Literal["bc"] = "bc"
    learning_rate: Rate = 3e-4  # TD3's actor Adam
    adam_eps: Rate = 1e-8  # as TD3Config.adam_eps
    batch_size: Size = 256  # TD3's minibatch
    hidden: Hidden = (256, 256)  # TD3's actor
    # The teacher: a TD3 checkpoint (run id, env step) and its replay size there, the
    # number of logged rows the clone trains on. Set from the teacher by
    # retland.train.bc.clone_config; a new run without them is refused (TrainConfig).
    teacher_run_id: str | None = None
    teacher_step: Count | None = None
    dataset_size: Size = 1


AgentConfig = Annotated[Union[TD3Config, SACConfig, PPOConfig, BCConfig], Field(discriminator="algo")]
AGENT_CONFIGS: dict[str, type[_Model]] = {"td3": TD3Config, "sac": SACConfig, "ppo": PPOConfig, "bc": BCConfig}
assert tuple(AGENT_CONFIGS) == ALGOS, "every algorithm of the registry has its config here"

# BC: the paper's 1M gradient steps (Appendix A.7).
DEFAULT_TOTAL_STEPS = {"td3": 1_000_000, "sac": 1_000_000, "ppo": 60_000_000, "bc": 1_000_000}


def agent_config(algo: str, **overrides) -> TD3Config | SACConfig | PPOConfig | BCConfig:
    """The algorithm's config with the default hyperparameters; ValueError on an unknown algo."""
    return AGENT_CONFIGS[check_algo(algo)](**overrides)


def default_checkpoints(algo: str, total_steps: int, granularity: int = 1) -> tuple[int, ...]:
    """Ten checkpoints. Off-policy: midpoints of ten equal segments (50k, 150k, …, 950k
    for 1e6 steps). PPO: ten evenly spaced ends of segments, on update boundaries. BC:
    like PPO, in gradient steps, the last one the end of the run (the paper logs 10
    policies through each BC run)."""
    if algo in ("ppo", "bc"):
        steps = [(i + 1) * total_steps // 10 for i in range(10)]
    else:
        steps = [(2 * i + 1) * total_steps // 20 for i in range(10)]
    steps = [max(granularity, s // granularity * granularity) for s in steps]
    return tuple(sorted(set(steps)))
