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

The public names are `__all__`. `stats`, `distribution_stats`, `load_checkpoint`,
`add_policy`, `sample_update` (retland.ingest.own) and `sample` (retland.purd.job) are
imported on first use (the warehouse names too), so that `import retland` for queries
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
}

__all__ = [
    "Warehouse",
    "add_policy",
    "WarehouseError",
    "connect",
    "distribution_stats",
    "load_checkpoint",
    "query",
    "resolve_root",
    "sample",
    "sample_update",
    "stats",
]


def query(sql: str, warehouse=None, params=None):
    """Run one read-only SQL statement on a warehouse; returns a polars DataFrame."""
    from .warehouse import PYTHON_HOW, Warehouse

    return Warehouse.open(warehouse, create=False, _how=PYTHON_HOW).query(sql, params)


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
