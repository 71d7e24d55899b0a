"""retland: return landscapes of deep-RL policies.

    import retland
    con = retland.connect("data/warehouse")        # DuckDB connection with views + macros
    df = retland.query("SELECT * FROM distribution_stats")   # polars DataFrame
    wh = retland.Warehouse.open("data/warehouse", create=False)
    df = retland.distribution_stats(wh, where="env = 'hopper'", bootstrap=True)
    retland.stats.cvar(returns, alpha=0.1)          # the NumPy twin of the SQL macros
    ckpt = retland.load_checkpoint(wh, run_id, step)  # loads jax and orbax (brax only when .state is read)
    run_id = retland.add_policy(wh, env="hopper", apply="pkg.mod:apply", params=p, name="mine")
    retland.sample_update(wh, run_id, 0, update="pkg.mod:step", state=s, n=256)   # your own update
    retland.sample(wh, run="td3-hopper", steps=[120000], operator="td3", samples=256)  # `retland sample`
    retland.run(retland.LandscapeRequest("td3-hopper", 120000), wh)  # any command, as its request

The public names are `__all__`. `stats`, `distribution_stats`, `load_checkpoint`,
`add_policy`, `sample_update` (retland.ingest.own), `sample` (retland.purd.job) and the
request classes are imported on first use (the warehouse names too), so that `import retland` for queries
stays fast and never imports jax.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> (module, attribute or None for the module itself), imported on first access;
# the warehouse too, so that `import retland.cli` (the command line's first step) imports
# nothing before it can turn a Ctrl-C into one line
_LAZY = {
    "Warehouse": ("retland.warehouse", "Warehouse"),
    "WarehouseError": ("retland.warehouse", "WarehouseError"),
    "connect": ("retland.warehouse", "connect"),
    "resolve_root": ("retland.warehouse", "resolve_root"),
    "stats": ("retland.stats", None),
    "distribution_stats": ("retland.analyses.distributions", "distribution_stats"),
    "load_checkpoint": ("retland.train.checkpoints", "load_checkpoint"),
    "add_policy": ("retland.ingest.own", "add_policy"),
    "sample_update": ("retland.ingest.own", "sample_update"),
    "sample": ("retland.purd.job", "sample"),
    # every command as a request that `run` runs (the study's stages are these)
    "TrainRequest": ("retland.train.request", "TrainRequest"),
    "ExampleRequest": ("retland.shipped", "ExampleRequest"),
    "SampleRequest": ("retland.purd.job", "SampleRequest"),
    "FailuresRequest": ("retland.analyses.failures", "FailuresRequest"),
    "LandscapeRequest": ("retland.config.settings", "LandscapeRequest"),
    "InterpolationRequest": ("retland.analyses.interpolation", "InterpolationRequest"),
    "StabilizeRequest": ("retland.analyses.stabilize", "StabilizeRequest"),
    "CloneRequest": ("retland.analyses.clones", "CloneRequest"),
    "StatsRequest": ("retland.analyses.distributions", "StatsRequest"),
    "ReportRequest": ("retland.report", "ReportRequest"),
}

__all__ = [
    "CloneRequest",
    "ExampleRequest",
    "FailuresRequest",
    "InterpolationRequest",
    "LandscapeRequest",
    "ReportRequest",
    "SampleRequest",
    "StabilizeRequest",
    "StatsRequest",
    "TrainRequest",
    "Warehouse",
    "add_policy",
    "WarehouseError",
    "connect",
    "distribution_stats",
    "load_checkpoint",
    "query",
    "resolve_root",
    "run",
    "sample",
    "sample_update",
    "stats",
]


def query(sql: str, warehouse=None, params=None):
    """Run one read-only SQL statement on a warehouse; returns a polars DataFrame."""
    from .warehouse import PYTHON_HOW, Warehouse

    return Warehouse.open(warehouse, create=False, _how=PYTHON_HOW).query(sql, params)


def run(request, warehouse=None, *, progress=None):
    """Run one command's request into a warehouse (a path, a Warehouse, or None for the
    default) with the library function the command itself calls, and return its result:
    `retland.run(retland.TrainRequest(algo="td3", env="hopper", seeds=2))` trains as
    `retland train --algo td3 --env hopper --seeds 2` does; `request.argv()` is that
    command line. progress: a bar factory (retland.config.requests.Bar) or None."""
    from .study.run import run_request
    from .warehouse import Warehouse

    wh = warehouse if isinstance(warehouse, Warehouse) else Warehouse.open(warehouse)
    return run_request(wh, request, progress=progress)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'retland' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
