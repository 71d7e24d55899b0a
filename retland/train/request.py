"""`retland train` as a request: its options, parsed, and the one runner the command and
a study call (`run_request`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

from retland.config.requests import Bar, bar, int_list_text, options

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

    def overrides(self) -> dict:
        """The options given, as `load_train_config` keywords."""
        return dict(env=self.env, seeds=self.seeds, seed=self.seed, total_steps=self.total_steps,
                    checkpoints=self.checkpoints, eval_every=self.eval_every, backend=self.backend,
                    variant=self.variant)

    def train_config(self):
        """The TrainConfig of a new job (pydantic ValidationError names a bad field)."""
        from retland.train.config import load_train_config

        return load_train_config(self.config, algo=self.algo, **self.overrides())

    def argv(self) -> list[str]:
        if self.resume is not None:
            return ["train", "--resume", self.resume]
        return ["train"] + options([
            ("--algo", self.algo), ("--env", self.env), ("--variant", self.variant), ("--seeds", self.seeds),
            ("--seed", self.seed), ("--total-steps", self.total_steps),
            ("--checkpoints", int_list_text(self.checkpoints) if self.checkpoints else None),
            ("--backend", self.backend), ("--eval-every", self.eval_every),
            ("--config", str(self.config) if self.config is not None else None)])


def run_request(wh, request: TrainRequest, *, progress: Bar | None = None,
                on_start: Callable[[object], None] | None = None):
    """Train (or resume) the request's job into `wh`; `on_start(cfg)` sees its config
    before anything compiles. Returns `retland.train.job.TrainResult`."""
    from retland.train.job import resume_config, train

    cfg = resume_config(wh, request.resume) if request.resume is not None else request.train_config()
    if on_start is not None:
        on_start(cfg)
    with bar(progress, cfg.steps, f"{cfg.algo} {cfg.env} x{cfg.seeds}", unit="env-steps",
             rate_scale=cfg.seeds) as advance:
        return train(cfg, wh, progress=advance, resume=request.resume)
