"""The typed config of a training job (`TrainConfig`): the task, the schedule and one
agent's hyperparameters (retland.config.agents, defaults = the paper's Table 1,
docs/method.md §4).

The CLI and the Python API build the same models; a run's config is stored as JSON in
its `runs` row, so every number that shaped a checkpoint is recorded with it.
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator, model_validator

from retland.config.agents import (DEFAULT_TOTAL_STEPS, MINATAR_PPO, AgentConfig, BCConfig, Count, Finite, PPOConfig,  # noqa: F401
                                   Rate, SACConfig, Size, TD3Config, _Model, agent_config, default_checkpoints)
from retland.config.registry import (BRAX_ENVS, DEFAULT_HORIZON, DEFAULT_VARIANT, LEGACY_VARIANT,
                                     PAPER_BACKEND, check_algo, check_backend, check_env, check_new_task,
                                     check_variant, default_backend, default_variant, is_minatar)
from retland.core import dmc
from retland.core.envs import default_horizon


MAX_CHECKPOINTS = 1000
# PPO on a MinAtar game: the paper's 10M env steps per run on the ALE (appendix A.6).
MINATAR_TOTAL_STEPS = 10_000_000


def default_total_steps(algo: str, env: str) -> int:
    """Env steps per seed when none are given: the algorithm's (A.1), or the paper's 10M
    for PPO on a game (A.6)."""
    return MINATAR_TOTAL_STEPS if is_minatar(env) and algo == "ppo" else DEFAULT_TOTAL_STEPS[algo]


class DMCTask(_Model):
    """What a DeepMind Control run records about its task, read from MuJoCo Playground
    (`retland.core.dmc.task_info`): the episode length, time steps and reward range."""

    source: str  # "mujoco_playground <version> dm_control_suite.<Name>"
    episode_length: Size  # control steps per episode
    ctrl_dt: Rate  # seconds per control step (one env step)
    sim_dt: Rate  # seconds per physics step
    reward_min: Finite
    reward_max: Finite


class TrainConfig(_Model):
    """One training job: `seeds` runs of one algorithm on one env, vmapped together.

    A DeepMind Control env (cheetah-run, …) defaults to its own rules (variant dmc),
    backend mjx and its episode length as horizon, and records its `task`."""

    env: str = "hopper"
    # Task rules: "paper" = Brax 0.0.13's tasks, as the paper trained on; "brax" = brax
    # 0.14's; "dmc" = a DeepMind Control task's own (the only rules those tasks take).
    variant: str = DEFAULT_VARIANT
    # Physics: brax0013 (Brax 0.0.13's simulator) for the paper variant; a brax 0.14
    # backend for the brax variant (default positional); mjx for a DeepMind Control task.
    # None = the default of the env and variant.
    backend: str = PAPER_BACKEND
    seeds: Size = 20
    seed: Count = 0  # seed index i of the job's runs uses PRNGKey(seed + i)
    total_steps: Size | None = None  # env steps per seed; None = the algo's default
    checkpoints: tuple[Size, ...] | None = None  # env steps; None = default_checkpoints
    eval_every: Size | None = None  # env steps between learning-curve points; None = total/50
    horizon: Size = DEFAULT_HORIZON  # episode length (time-limit truncation) and eval horizon
    agent: AgentConfig = Field(default_factory=TD3Config)
    # DeepMind Control tasks: the task's record (filled in from Playground); None for brax.
    task: DMCTask | None = None
    # TD3/SAC on a brax task: also store, with every replay row, the simulator state its
    # observation was taken in (the env's pipeline_state), so rollouts can start from
    # collected states (`retland sample --start replay:K`). Costs memory and disk: see
    # docs/method.md "Post-update returns from other start states". Training is unchanged.
    store_states: bool = False

    @property
    def algo(self) -> str:
        return self.agent.algo

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data):
        """A DeepMind Control env brings its own defaults: backend mjx, variant dmc, the
        task's episode length as horizon, and its task record (kept as stored if given)."""
        if not isinstance(data, dict):
            return data
        env = data.get("env", cls.model_fields["env"].default)
        if data.get("backend") is None and isinstance(env, str) and env in BRAX_ENVS:
            data = {**data, "backend": default_backend(env, data.get("variant") or DEFAULT_VARIANT)}
        if isinstance(env, str) and is_minatar(env):
            return cls._minatar_defaults(data, env)
        if not (isinstance(env, str) and dmc.is_dmc(env) and dmc.have_playground()):
            return data  # a brax task, or an error the env check reports
        data = dict(data)
        data.setdefault("backend", default_backend(env))
        data.setdefault("variant", default_variant(env))
        data.setdefault("horizon", default_horizon(env))
        if data.get("task") is None:
            data["task"] = dmc.task_info(env)._asdict()
        return data

    @classmethod
    def _minatar_defaults(cls, data: dict, env: str) -> dict:
        """A MinAtar game: backend gymnax, variant minatar, gymnax's time limit as horizon
        (when gymnax is installed; else the env check reports it), and a PPO agent's
        unset fields from MINATAR_PPO (a categorical policy, CleanRL's Atari PPO)."""
        from retland.config.registry import have_gymnax

        data = dict(data)
        for key in ("backend", "variant"):
            if data.get(key) is None:
                data[key] = default_backend(env) if key == "backend" else default_variant(env)
        if have_gymnax() and data.get("horizon") is None:
            data["horizon"] = default_horizon(env)
        agent = data.get("agent")
        if isinstance(agent, dict) and agent.get("algo") == "ppo":
            data["agent"] = {**MINATAR_PPO, **agent}
        elif isinstance(agent, PPOConfig):
            given = agent.model_dump(include=agent.model_fields_set)
            data["agent"] = PPOConfig(**{**MINATAR_PPO, **given})
        return data

    @model_validator(mode="before")
    @classmethod
    def _sac_log_std_head(cls, data):
        """A SAC agent whose log_std_head is not given follows the task variant: the
        authors' separate head under paper, retland's former joint head otherwise."""
        if not isinstance(data, dict):
            return data
        agent = data.get("agent")
        is_sac = (isinstance(agent, dict) and agent.get("algo") == "sac") or isinstance(agent, SACConfig)
        if not is_sac or (isinstance(agent, dict) and "log_std_head" in agent) or (
                isinstance(agent, SACConfig) and "log_std_head" in agent.model_fields_set):
            return data
        env = data.get("env", cls.model_fields["env"].default)
        variant = data.get("variant") or (default_variant(env) if isinstance(env, str) else DEFAULT_VARIANT)
        head = "separate" if variant == "paper" else "joint"
        data = dict(data)
        data["agent"] = ({**agent, "log_std_head": head} if isinstance(agent, dict)
                         else agent.model_copy(update={"log_std_head": head}))
        return data

    @field_validator("env", "backend", "variant")
    @classmethod
    def _task(cls, v, info):
        if info.field_name == "env":
            return check_env(v)
        env = info.data.get("env")  # absent if the env was refused
        if info.field_name == "variant":
            return check_variant(v, env)
        return check_backend(v, env, info.data.get("variant"))

    @field_validator("checkpoints")
    @classmethod
    def _few_enough_checkpoints(cls, v):
        # each checkpoint stores every seed's state and replay buffer: a range typed for a
        # list (50000..60000: 10,001 of them) is a mistake, not a schedule
        if v is not None and len(v) > MAX_CHECKPOINTS:
            raise ValueError(f"{len(v):,} checkpoints: at most {MAX_CHECKPOINTS:,} (each stores every seed's state "
                             "and replay buffer); list the steps, e.g. 50000,150000,250000")
        return v

    @field_validator("task")
    @classmethod
    def _task_record(cls, v, info):
        env = info.data.get("env")
        if v is not None and env is not None and not dmc.is_dmc(env):
            raise ValueError(f"a task record is for DeepMind Control envs; {env} is a brax task")
        return v

    @property
    def granularity(self) -> int:
        """Env steps per seed that one training iteration takes (PPO: a whole rollout)."""
        return self.agent.steps_per_update if self.algo == "ppo" else 1

    @property
    def steps(self) -> int:
        """Env steps per seed actually trained: total_steps rounded down to whole
        iterations (PPO's 6e7 default is 1831 iterations of 32768 = 59,998,208)."""
        total = int(self.total_steps or default_total_steps(self.algo, self.env))
        return total // self.granularity * self.granularity

    @property
    def checkpoint_steps(self) -> tuple[int, ...]:
        if self.checkpoints is not None:
            return tuple(sorted(set(self.checkpoints)))
        return default_checkpoints(self.algo, self.steps, self.granularity)

    @property
    def eval_interval(self) -> int:
        if self.eval_every is not None:
            return self.eval_every
        g = self.granularity
        return max(g, self.steps // 50 // g * g)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo):
        if self.seed + self.seeds - 1 > 2**31 - 1:
            raise ValueError(f"seed={self.seed} with seeds={self.seeds}: run seeds go up to seed + seeds - 1, "
                             f"which must be <= {2**31 - 1} (the runs table stores them as int32)")
        total, g = self.steps, self.granularity
        if total < g or total == 0:
            raise ValueError(f"total_steps={self.total_steps} is less than one {self.algo} iteration ({g} env steps)")
        bad = [s for s in self.checkpoint_steps if s <= 0 or s > total]
        if bad:
            raise ValueError(f"checkpoint steps {bad} are outside (0, total_steps={total}]")
        off = [s for s in self.checkpoint_steps if s % g]
        if off:
            raise ValueError(f"checkpoint steps {off} are not multiples of {g} (env steps per {self.algo} iteration)")
        if self.eval_interval <= 0 or self.eval_interval % g:
            raise ValueError(f"eval_every={self.eval_interval} must be a positive multiple of {g}")
        if not (info.context or {}).get("stored"):
            check_new_task(self.env, self.backend, self.variant)
            if self.algo == "bc" and (self.agent.teacher_run_id is None or self.agent.teacher_step is None):
                raise ValueError("a bc run clones a teacher: give it one (retland train --algo bc --teacher RUN@STEP)")
        discrete = getattr(self.agent, "action_space", "box") == "discrete"
        if is_minatar(self.env) != discrete:
            if is_minatar(self.env) and self.algo != "ppo":
                raise ValueError(f"{self.env} is a MinAtar game (discrete actions): only ppo trains on it (a "
                                 f"categorical policy), not {self.algo}")
            raise ValueError(f"agent.action_space={getattr(self.agent, 'action_space', 'box')!r} does not fit "
                             f"{self.env}: discrete for the MinAtar games, box for every other task")
        if self.store_states:
            if self.algo not in ("td3", "sac"):
                raise ValueError(f"store_states: only TD3 and SAC keep a replay buffer to store states with, "
                                 f"not {self.algo}")
            if dmc.is_dmc(self.env):
                raise ValueError(f"store_states: {self.env} is a DeepMind Control task, whose MJX simulator "
                                 "states retland does not store; collected start states are offered for the "
                                 "brax tasks (ant, halfcheetah, hopper, walker2d)")
        if self.algo in ("td3", "sac"):
            if self.agent.buffer_size < total:
                raise ValueError(
                    f"buffer_size={self.agent.buffer_size} < total_steps={total}: the replay "
                    "buffer must not wrap (checkpoints index its prefix)")
            if self.agent.learning_starts >= total:
                raise ValueError(
                    f"learning_starts={self.agent.learning_starts} must be < total_steps={total}")
        return self

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_stored(json.loads(text))

    @classmethod
    def from_stored(cls, data: dict) -> "TrainConfig":
        """A config as recorded in a `runs` row. Runs recorded before task variants
        existed were trained with brax's own task rules, so a missing variant reads as
        "brax", never as today's default; likewise a SAC agent without log_std_head
        reads "joint", the layout its checkpoints hold."""
        data = dict(data)
        data.setdefault("variant", LEGACY_VARIANT)
        agent = data.get("agent")
        if isinstance(agent, dict) and agent.get("algo") == "ppo":
            # PPO runs recorded before the head gains were fields used √2 on every layer.
            data["agent"] = {"actor_head_scale": 2.0**0.5, "critic_head_scale": 2.0**0.5, **agent}
        if isinstance(agent, dict) and agent.get("algo") == "sac":
            # SAC runs recorded before log_std_head existed had one joint output layer.
            data["agent"] = {"log_std_head": "joint", **agent}
        # Stored runs are read as they were made: a paper-variant run from before the paper
        # variant had Brax 0.0.13's simulator names a brax 0.14 backend, and still loads.
        return cls.model_validate(data, context={"stored": True})


def load_train_config(path: str | Path | None = None, *, agent_fields: dict | None = None,
                      **overrides) -> TrainConfig:
    """A TrainConfig from an optional TOML file, then keyword overrides (None = unset),
    and `agent_fields` over the file's agent table (a BC run's teacher).

    TOML layout: top-level TrainConfig fields, and an `[agent]` table with `algo` and
    any algorithm field, e.g. `[agent]\\nalgo = "td3"\\nbatch_size = 128`.
    """
    data: dict = {}
    if path is not None:
        data = tomllib.loads(Path(path).read_text())
    agent = dict(data.pop("agent", {}))
    algo = overrides.pop("algo", None) or agent.get("algo") or "td3"
    if agent.get("algo", algo) != algo:
        raise ValueError(f"config file says algo={agent['algo']!r} but {algo!r} was requested")
    agent["algo"] = check_algo(algo)
    agent.update(agent_fields or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    # The agent table is validated inside TrainConfig, so errors read agent.<field>.
    return TrainConfig(agent=agent, **data)
