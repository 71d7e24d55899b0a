"""A reproducibility record for every run and sampling job."""
from __future__ import annotations

import json
import platform
import sys
from importlib import metadata

PACKAGES = ("retland", "jax", "jaxlib", "flax", "optax", "brax", "mujoco", "orbax-checkpoint",
            "numpy", "duckdb", "pyarrow", "polars", "scipy", "playground", "mujoco-mjx")


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows: the
    machine line of a benchmark."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_label(device=None) -> str:
    """`platform:device kind` of a JAX device (default: this process's first), the form
    the timing tables and the throughput views record devices in."""
    if device is None:
        import jax

        device = jax.devices()[0]
    return f"{device.platform}:{getattr(device, 'device_kind', '')}"


def devices() -> list[str]:
    try:
        import jax  # inside the try: a record must never break the job it describes

        return [device_label(d) for d in jax.devices()]
    except Exception as exc:  # a record must never break the job it describes
        return [f"unavailable: {exc}"]


def reproducibility_record(config: dict | None = None, with_devices: bool = True) -> str:
    """JSON text: versions, platform, devices, command line and the config."""
    record = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": package_versions(),
        "devices": devices() if with_devices else None,
        "argv": sys.argv,
        "config": config,
    }
    return json.dumps(record, sort_keys=True, default=str)
