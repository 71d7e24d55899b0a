"""Import post-update returns computed elsewhere (CSV or Parquet) into the warehouse.

Each (algo, env, seed) becomes a run with source 'imported', each operator name an
operator of kind 'imported'. Everything is validated before anything is written, and
rows whose key is already stored are skipped, so re-importing a file adds nothing.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from retland.warehouse import Warehouse, WarehouseError
from retland.warehouse.writer import RowError, check_rows, validate

REQUIRED = {
    "algo": pl.Utf8,
    "env": pl.Utf8,
    "seed": pl.Int32,
    "step": pl.Int64,
    "operator": pl.Utf8,
    "update_index": pl.Int64,
    "return": pl.Float64,
}
OPTIONAL = {"discounted_return": pl.Float64, "episode_length": pl.Int32, "terminated": pl.Boolean}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_OPERATOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+=,\[\]-]*$")


@dataclass(frozen=True)
class ImportSummary:
    rows_in_file: int
    rows_written: int
    runs: int
    distributions: int


def read_returns_file(path: Path) -> pl.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise WarehouseError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            df = pl.read_csv(path, infer_schema_length=None)
        elif suffix in (".parquet", ".pq"):
            df = pl.read_parquet(path)
        else:
            raise WarehouseError(f"{path}: unsupported file type {suffix or '(none)'}; give a .csv or .parquet file")
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise WarehouseError(f"{path}: cannot read: {exc}") from None
    return df


def _cast(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise WarehouseError(f"{path}: missing column(s) {', '.join(missing)}; required: {', '.join(REQUIRED)}")
    unknown = [c for c in df.columns if c not in REQUIRED and c not in OPTIONAL]
    if unknown:
        raise WarehouseError(
            f"{path}: unknown column(s) {', '.join(unknown)}; allowed: {', '.join([*REQUIRED, *OPTIONAL])}"
        )
    if df.height == 0:
        raise WarehouseError(f"{path}: no rows")
    out = []
    for name, dtype in {**REQUIRED, **OPTIONAL}.items():
        if name not in df.columns:
            continue
        col = df.get_column(name)
        try:
            cast = col.cast(dtype, strict=True)
        except pl.exceptions.PolarsError:
            cast = None
        if cast is None or (dtype.is_integer() and col.dtype.is_float() and not (col.is_null() | (col == col.round(0))).all()):
            raise WarehouseError(f"{path}: column {name!r} must be {dtype}, got values like {col.head(3).to_list()}")
        out.append(cast)
    return pl.DataFrame(out)


def _check(df: pl.DataFrame, path: Path) -> None:
    """File-level checks (empty cells, names, duplicate keys), then the warehouse's own
    value rules (`TableSpec.checks`: finite returns, steps and indices >= 0, …) applied to
    the file's rows, so an error names the row of the file."""
    for name in REQUIRED:
        nulls = df.get_column(name).is_null()
        if nulls.any():
            row = int(nulls.arg_true()[0])
            raise WarehouseError(f"{path}: row {row}: column {name!r} is empty")
    for name, pattern in (("algo", _NAME), ("env", _NAME), ("operator", _OPERATOR)):
        values = df.get_column(name).unique().to_list()
        for v in values:
            if not pattern.match(v):
                raise WarehouseError(f"{path}: {name} {v!r} has characters outside letters, digits and _ . + -")
    # The same rules every other write path meets; file column -> (table, column).
    targets = {"runs": {"seed": "seed"}, "post_update_returns": {
        c: c for c in ("step", "update_index", "return", *OPTIONAL) if c in df.columns}}
    for table, columns in targets.items():
        try:
            check_rows(table, df.select(pl.col(f).alias(t) for f, t in columns.items()).to_arrow())
        except RowError as exc:
            file_column = next(f for f, t in columns.items() if t == exc.column)
            raise WarehouseError(
                f"{path}: row {exc.rows[0]}: column {file_column!r} has {exc.problem}; accepted: {exc.accepted}"
            ) from None
    key = ["algo", "env", "seed", "step", "operator", "update_index"]
    dup = df.select(key).is_duplicated()
    if dup.any():
        row = int(dup.arg_true()[0])
        raise WarehouseError(f"{path}: row {row}: duplicate key {df.select(key).row(row, named=True)}")


def import_returns(wh: Warehouse, path: Path, tag: str = "imported") -> ImportSummary:
    path = Path(path)
    if not _NAME.match(tag):
        raise WarehouseError(f"tag {tag!r}: use letters, digits and _ . + - only")
    df = _cast(read_returns_file(path), path)
    _check(df, path)
    df = df.with_columns(
        pl.format("{}-{}-" + tag + "-s{}", "algo", "env", "seed").alias("run_id"),
    )
    runs = df.select("run_id", "algo", "env", "seed").unique(maintain_order=True)
    checkpoints = df.select("run_id", "step").unique(maintain_order=True)
    operators = df.select(pl.col("operator").alias("operator_id")).unique(maintain_order=True)
    returns = df.select(
        "run_id", "step", pl.col("operator").alias("operator_id"), "update_index", "return",
        *[c for c in OPTIONAL if c in df.columns],
    )

    source = json.dumps({"imported_from": str(path.resolve())})
    if not wh.exists:  # created only now, so a refused file leaves no empty warehouse behind
        wh = Warehouse.open(wh.root)
    con = wh.connect()
    try:
        con.register("in_runs", runs.to_arrow())
        con.register("in_ckpts", checkpoints.to_arrow())
        con.register("in_ops", operators.to_arrow())
        con.register("in_returns", returns.to_arrow())
        clash = con.execute(
            "SELECT r.run_id, r.source FROM runs r JOIN in_runs i USING (run_id) "
            "WHERE r.source <> 'imported' OR r.algo <> i.algo OR r.env <> i.env OR r.seed <> i.seed LIMIT 1"
        ).fetchall()
        if clash:
            raise WarehouseError(f"run id {clash[0][0]!r} already exists as a {clash[0][1]} run; import with another --tag")

        def new(sql: str) -> pl.DataFrame:
            return con.sql(sql).pl()

        new_runs = new("SELECT * FROM in_runs ANTI JOIN runs USING (run_id)")
        new_ckpts = new("SELECT * FROM in_ckpts ANTI JOIN checkpoints USING (run_id, step)")
        new_ops = new("SELECT * FROM in_ops ANTI JOIN operators USING (operator_id)")
        new_returns = new(
            "SELECT * FROM in_returns ANTI JOIN post_update_returns USING (run_id, step, operator_id, update_index)"
        )
    finally:
        con.close()
    # Every table's rows pass the warehouse's validation before the first is written.
    batches = {
        "runs": new_runs.with_columns(pl.lit("imported").alias("source"), pl.lit(source).alias("config")),
        "operators": new_ops.with_columns(pl.lit("imported").alias("kind"), pl.lit(source).alias("params")),
        "checkpoints": new_ckpts,
        "post_update_returns": new_returns,
    }
    try:
        checked = {table: validate(table, rows) for table, rows in batches.items()}
    except WarehouseError as exc:
        raise WarehouseError(f"{path}: {exc}") from None
    # One commit for all four tables: a reader (or a crash) sees all of the file's rows or none.
    counts = wh.append_many(checked, command="import-returns")
    written = counts.get("post_update_returns", 0)
    return ImportSummary(
        rows_in_file=df.height,
        rows_written=written,
        runs=runs.height,
        distributions=df.select("run_id", "step", "operator").unique().height,
    )
