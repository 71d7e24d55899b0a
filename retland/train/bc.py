"""Behaviour-cloning runs (the paper's Appendix A.7): a clone's config from its teacher
checkpoint, and the teacher's logged data relabelled with the teacher's actions.

The teacher is a TD3 checkpoint RUN@STEP. Its logged data are the replay rows it had
collected by then, [0, replay_size) of its run's buffer (the buffer only grows, so this
prefix is exactly what the teacher had seen at STEP, warm-up rows included). Each row's
action is replaced by the teacher's deterministic action π_teacher(obs), computed once in
batches; the clone then trains on (obs, π_teacher(obs)) with TD3's actor network,
minibatch and Adam (retland.agents.bc). The clone inherits the teacher's task (env,
variant, backend, horizon), so its returns are comparable to the teacher's.
"""
from __future__ import annotations

import re

import numpy as np

from retland.config.registry import TEACHER_ALGOS
from retland.core.replay import Transition

TEACHER = re.compile(r"^\s*(?P<run>[^@\s]+)\s*@\s*(?P<step>[^@\s]+)\s*$")


class TeacherError(ValueError):
    """A teacher that cannot be cloned (one line)."""


def parse_teacher(text: str) -> tuple[str, int]:
    """'RUN@STEP' -> (RUN, STEP); STEP may be written 95000, 9.5e4 or 95_000."""
    m = TEACHER.match(text or "")
    if not m:
        raise TeacherError(f"--teacher {text!r}: expected RUN@STEP, e.g. td3-hopper-20261207-143042-6f57-s0@100000")
    raw = m.group("step").replace("_", "")
    try:
        value = float(raw)
    except ValueError:
        raise TeacherError(f"--teacher {text!r}: step {m.group('step')!r} is not a number") from None
    if not value.is_integer() or value < 0:
        raise TeacherError(f"--teacher {text!r}: step {m.group('step')!r} is not a whole env step")
    return m.group("run"), int(value)


def resolve_teacher(wh, text: str) -> dict:
    """The teacher checkpoint named by 'RUN@STEP' (RUN may be a unique prefix of a run id):
    {run_id, step, env, variant, backend, horizon, replay_size}; TeacherError when the run
    is unknown or ambiguous, not a trained TD3 run, or has no stored checkpoint at STEP."""
    from retland.train.checkpoints import run_config
    from retland.warehouse.runs import RunSelectionError, resolve_run

    run_text, step = parse_teacher(text)
    try:
        run_id = resolve_run(wh, run_text, option="--teacher", seed_option=None)
    except RunSelectionError as exc:
        raise TeacherError(str(exc)) from None
    record = wh.records("SELECT * FROM runs WHERE run_id = ?", [run_id])[0]
    if record["algo"] not in TEACHER_ALGOS or record["source"] != "trained":
        raise TeacherError(f"--teacher {text!r}: run {run_id} is a {record['source']} {record['algo']} run; a teacher "
                           f"is a trained {' or '.join(TEACHER_ALGOS)} run (the paper clones TD3 policies)")
    rows = wh.records("SELECT artifact_path, replay_size FROM checkpoints WHERE run_id = ? AND step = ?",
                      [run_id, step])
    if not rows or rows[0]["artifact_path"] is None:
        steps = [r["step"] for r in wh.records("SELECT DISTINCT step FROM checkpoints WHERE run_id = ? "
                                               "AND artifact_path IS NOT NULL ORDER BY step", [run_id])]
        raise TeacherError(f"--teacher {text!r}: run {run_id} has no stored checkpoint at step {step}; it has "
                           f"{', '.join(map(str, steps)) if steps else 'none'}")
    size = int(rows[0]["replay_size"] or 0)
    if size < 1:
        raise TeacherError(f"--teacher {text!r}: checkpoint {run_id}@{step} has logged no data to clone")
    cfg = run_config(record)
    return dict(run_id=run_id, step=step, env=cfg.env, variant=cfg.variant, backend=cfg.backend,
                horizon=cfg.horizon, replay_size=size)


def clone_fields(teacher: dict, given: dict) -> dict:
    """The TrainConfig fields a clone of `teacher` takes from it: its task, and the agent's
    teacher and dataset size. `given` holds the task options typed (None = not given);
    one that differs from the teacher's is refused."""
    for name in ("env", "variant", "backend"):
        if given.get(name) is not None and given[name] != teacher[name]:
            raise TeacherError(f"--{name} {given[name]}: the teacher {teacher['run_id']}@{teacher['step']} was "
                               f"trained with {name} {teacher[name]}, and a clone runs its teacher's task; "
                               f"drop --{name}")
    return dict(env=teacher["env"], variant=teacher["variant"], backend=teacher["backend"],
                horizon=teacher["horizon"],
                agent=dict(teacher_run_id=teacher["run_id"], teacher_step=teacher["step"],
                           dataset_size=teacher["replay_size"]))


def teacher_dataset(wh, cfg) -> Transition:
    """The clone's training data: the teacher checkpoint's replay prefix with every action
    replaced by the teacher's deterministic action (float32 arrays [dataset_size, ...])."""
    import jax.numpy as jnp

    from retland.agents import get_agent
    from retland.agents.bc import relabel
    from retland.train.checkpoints import load_checkpoint

    acfg = cfg.agent
    teacher = load_checkpoint(wh, acfg.teacher_run_id, acfg.teacher_step)
    if teacher.replay_size != acfg.dataset_size:
        raise TeacherError(f"teacher {teacher.run_id}@{teacher.step} holds {teacher.replay_size} logged rows, the "
                           f"clone's config says {acfg.dataset_size}")
    n = acfg.dataset_size
    data = Transition(*(np.asarray(x[:n]) for x in teacher.replay))
    actor = get_agent(teacher.algo, teacher.config).actor_params(teacher.agent_state)
    actions = relabel(actor, jnp.asarray(data.obs))
    return data._replace(action=np.asarray(actions, np.float32))
