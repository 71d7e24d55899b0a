"""retland: return landscapes of deep-RL policies.

    import retland
    con = retland.connect("data/warehouse")        # DuckDB connection with views + macros
    df = retland.query("SELECT * FROM distribution_stats")   # polars DataFrame

Heavy modules (jax, brax) are imported lazily so that querying a warehouse stays fast.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .warehouse import Warehouse, WarehouseError, connect, resolve_root


def query(sql: str, warehouse=None, params=None):
    """Run one read-only SQL statement on a warehouse; returns a polars DataFrame."""
    return Warehouse.open(warehouse, create=False).query(sql, params)


def __getattr__(name):
    if name == "load_checkpoint":
        from .checkpoints import load_checkpoint

        return load_checkpoint
    raise AttributeError(f"module 'retland' has no attribute {name!r}")


__all__ = ["Warehouse", "WarehouseError", "connect", "query", "resolve_root", "load_checkpoint"]
