"""JAX's persistent compilation cache, on by default for retland's programs.

A 1000-step brax rollout takes 10-25 s to compile; with the cache a second process
(a resumed job, the next shard, the next test run) loads the executable instead.
Executables are keyed by JAX on the program, compile options and platform, so a cache
folder can be shared by jobs and machines of one kind.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "RETLAND_JAX_CACHE"
_enabled: Path | None = None


def default_path() -> Path:
    """$RETLAND_JAX_CACHE, else ~/.cache/retland/jax."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "retland" / "jax"


def enable(path: str | os.PathLike | None = None) -> Path:
    """Turn the cache on (idempotent); returns the folder in use.

    JAX reads the folder once, at its first compile; later calls with another path only
    take effect in a fresh process, so the first caller decides.
    """
    global _enabled
    if _enabled is not None:
        return _enabled
    import jax

    target = Path(path).expanduser() if path is not None else default_path()
    if jax.config.jax_compilation_cache_dir:  # set by the user (env var or config): respect it
        _enabled = Path(jax.config.jax_compilation_cache_dir)
        return _enabled
    target.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(target))
    # Cache everything that took at least a second to compile (all rollouts do).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    _enabled = target
    return target
