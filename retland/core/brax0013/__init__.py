"""Brax 0.0.13's simulator (position-based "pbd" dynamics) and its ant, halfcheetah,
hopper and walker2d tasks, reimplemented in current JAX (no brax import).

    task = make_task("hopper")           # standard 0.0.13 reset noise
    state = jax.jit(task.reset)(key)     # State(pipeline_state=QP, obs, reward, done, metrics, info)
    state = jax.jit(task.step)(state, action)
"""
from retland.core.brax0013.system import QP, Info, P, System, SystemSpec
from retland.core.brax0013.tasks import STANDARD_RESET_NOISE, SPECS, State, Task, make_task

TASKS = ("ant", "halfcheetah", "hopper", "walker2d")

__all__ = ["TASKS", "STANDARD_RESET_NOISE", "SPECS", "make_task", "Task", "State", "QP", "Info", "P",
           "System", "SystemSpec"]
