"""`retland train` as a request: its options, parsed, and the one runner the command and
a study call (`run_request`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

from retland.config.requests import Bar, bar, duration_text, int_list_text, options

__all__ = ["TrainRequest", "run_request"]


@dataclass(frozen=True)
class TrainRequest:
    """A training job: the fields of `load_train_config` that `retland train` takes as
    options (None: the config file's, else the default), or `resume`, a job id to
    continue with its recorded config."""

    command: ClassVar[str] = "train"

    algo: str | None = None
    env: str | None = None
    variant: str | None = None
    seeds: int | None = None
    seed: int | None = None
    total_steps: int | None = None
    checkpoints: tuple[int, ...] | None = None
    backend: str | None = None
    eval_every: int | None = None
    config: Path | None = None  # TOML file of TrainConfig fields and an [agent] table
    resume: str | None = None
    teacher: str | None = None  # algo bc: the TD3 checkpoint RUN@STEP it clones (retland.train.bc)
    store_states: bool | None = None  # TD3/SAC: keep each replay row's simulator state (start states, A.4)
    # Not part of the job: how long this process may train (seconds), as `train`'s deadline.
    time_limit: float | None = None

    def overrides(self) -> dict:
        """The options given, as `load_train_config` keywords."""
        return dict(env=self.env, seeds=self.seeds, seed=self.seed, total_steps=self.total_steps,
                    checkpoints=self.checkpoints, eval_every=self.eval_every, backend=self.backend,
                    variant=self.variant, store_states=self.store_states)

    def train_config(self, wh=None):
        """The TrainConfig of a new job (pydantic ValidationError names a bad field). A
        behaviour-cloning job (algo bc) takes its task and dataset from its teacher, read
        from `wh` (retland.train.bc.TeacherError names a bad teacher)."""
        from retland.train.config import load_train_config

        options, agent_fields = self.overrides(), None
        if self.algo == "bc":
            from retland.train.bc import TeacherError, clone_fields, parse_teacher, resolve_teacher

            if self.teacher is None:
                raise TeacherError("--algo bc clones a teacher: give --teacher RUN@STEP (a TD3 checkpoint)")
            parse_teacher(self.teacher)  # a malformed text is refused before the warehouse is read
            if wh is None:
                raise TeacherError("a behaviour-cloning job reads its teacher from the warehouse: pass it")
            fields = clone_fields(resolve_teacher(wh, self.teacher), options)
            agent_fields = fields.pop("agent")
            options.update(fields)
            if options["seeds"] is None:
                options["seeds"] = 1  # one clone per teacher, as the paper
        elif self.teacher is not None:
            from retland.train.bc import TeacherError

            raise TeacherError("--teacher names the policy a behaviour-cloning run clones: use it with --algo bc")
        return load_train_config(self.config, algo=self.algo, agent_fields=agent_fields, **options)

    def argv(self) -> list[str]:
        limit = [("--time-limit", duration_text(self.time_limit) if self.time_limit is not None else None)]
        if self.resume is not None:
            return ["train", "--resume", self.resume] + options(limit)
        return ["train"] + options([
            ("--algo", self.algo), ("--env", self.env), ("--variant", self.variant), ("--seeds", self.seeds),
            ("--seed", self.seed), ("--total-steps", self.total_steps),
            ("--checkpoints", int_list_text(self.checkpoints) if self.checkpoints else None),
            ("--backend", self.backend), ("--eval-every", self.eval_every), ("--teacher", self.teacher),
            ("--store-states", self.store_states),
            ("--config", str(self.config) if self.config is not None else None)] + limit)


def run_request(wh, request: TrainRequest, *, progress: Bar | None = None,
                on_start: Callable[[object], None] | None = None):
    """Train (or resume) the request's job into `wh`; `on_start(cfg)` sees its config
    before anything compiles. With `request.time_limit` the job stops in time to stay
    within it, counted from this call (`train`'s deadline). Returns
    `retland.train.job.TrainResult`."""
    import time

    from retland.train.job import resume_config, train

    deadline = None if request.time_limit is None else time.monotonic() + request.time_limit

    cfg = resume_config(wh, request.resume) if request.resume is not None else request.train_config(wh)
    if on_start is not None:
        on_start(cfg)
    unit = "gradient-steps" if cfg.algo == "bc" else "env-steps"  # a clone's steps are gradient steps
    with bar(progress, cfg.steps, f"{cfg.algo} {cfg.env} x{cfg.seeds}", unit=unit, rate_scale=cfg.seeds) as advance:
        return train(cfg, wh, progress=advance, resume=request.resume, deadline=deadline)
