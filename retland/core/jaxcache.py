"""JAX's persistent compilation cache, on by default for retland's programs.

A 1000-step brax rollout takes 10-25 s to compile; with the cache a second process
(a resumed job, the next shard, the next test run) loads the executable instead.
JAX keys executables on the program, compile options and platform, but not on the
host CPU's instruction set: an executable compiled on an AVX-512 node and loaded on a
node without it can crash with SIGILL (XLA only warns). So the folder holds one
sub-folder per CPU feature set (`host_tag`), and a home folder shared by a cluster's
mixed nodes gives each kind of node its own executables.

The cache skips XLA's compilation, not Python's tracing of the program; the program
store (`retland.core.programs`, in `programs/` beside the per-host folders) keeps the
traced programs too, so a later process skips both.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
from pathlib import Path

import jax

ENV_VAR = "RETLAND_JAX_CACHE"
_enabled: Path | None = None


def default_path() -> Path:
    """$RETLAND_JAX_CACHE, else ~/.cache/retland/jax (the program store's default
    folder is `programs/` inside it)."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "retland" / "jax"


@functools.lru_cache(maxsize=None)
def host_tag() -> str:
    """<machine>-<hash of the CPU's feature flags>, e.g. x86_64-3f9a2c1b0d4e."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key = line.split(":", 1)[0].strip().lower()
            if key in ("flags", "features"):  # x86 | ARM
                flags = " ".join(sorted(line.split(":", 1)[1].split()))
                break
    except OSError:
        pass
    flags = flags or platform.processor() or platform.platform()
    return f"{platform.machine() or 'cpu'}-{hashlib.sha256(flags.encode()).hexdigest()[:12]}"


def enable(path: str | os.PathLike | None = None) -> Path:
    """Turn the cache on (idempotent); returns the folder in use: `host_tag()` under
    `path` (default `default_path()`).

    JAX reads the folder once, at its first compile; later calls with another path only
    take effect in a fresh process, so the first caller decides. A folder the user set
    through JAX's own configuration is used as it is.
    """
    global _enabled
    if _enabled is not None:
        return _enabled
    target = (Path(path).expanduser() if path is not None else default_path()) / host_tag()
    if jax.config.jax_compilation_cache_dir:  # set by the user (env var or config): respect it
        _enabled = Path(jax.config.jax_compilation_cache_dir)
        return _enabled
    target.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(target))
    # Cache everything that took at least a second to compile (all rollouts do).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    _enabled = target
    return target
