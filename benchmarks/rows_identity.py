"""Do refactors leave the stored rows bit for bit the same? (same platform only)

Runs one fixed, small study through the command line, which survives any internal
reorganisation: a tiny TD3 job on hopper, td3 / gaussian / action distributions of its
checkpoints, a 3×3 landscape and both kinds of interpolation pair. Then hashes the
stored values of post_update_returns, landscape_points and interpolation_points (ids
that embed a job's creation time are replaced by seed and step) and compares them with
the hashes recorded in rows_identity.json.

Returns are chaotic in θ and XLA's arithmetic depends on the CPU, the JAX/XLA build and
the backend, so hashes are recorded per platform key (CPU model, jax and jaxlib versions,
backend): `--record` adds or rewrites this platform's entry (before a refactor), a plain
run checks against it (after it), and on a platform with no entry says so and skips
(exit 0) instead of reporting a difference that XLA, not the refactor, made. Takes about
2-3 minutes on 2 cores.

    python benchmarks/rows_identity.py --record   # before
    python benchmarks/rows_identity.py            # after: exit 1 if a hash differs
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORD = HERE / "rows_identity.json"

# variant "brax": the rows recorded before task variants existed are brax's rules.
CONFIG = """\
env = "hopper"
variant = "brax"
seeds = 2
total_steps = 120
checkpoints = [60, 120]
eval_every = 60
horizon = 20

[agent]
algo = "td3"
hidden = [16, 16]
batch_size = 8
learning_starts = 40
buffer_size = 120
"""

# Rows are keyed by run seed and step, never by ids holding a creation time.
HASHED = {
    "post_update_returns": """
        SELECT r.seed, p.step, o.kind, o.params, p.update_index, p."return", p.discounted_return,
               p.episode_length, p.terminated, p.chunk_size
        FROM post_update_returns p JOIN runs r USING (run_id) JOIN operators o USING (operator_id)
        ORDER BY ALL""",
    "landscape_points": """
        SELECT r.seed, g.step, p.* EXCLUDE (grid_id)
        FROM landscape_points p JOIN landscape_grids g USING (grid_id) JOIN runs r USING (run_id)
        ORDER BY ALL""",
    "interpolation_points": """
        SELECT ra.seed AS seed_a, q.step_a, rb.seed AS seed_b, q.step_b, p.* EXCLUDE (pair_id)
        FROM interpolation_points p JOIN interpolation_pairs q USING (pair_id)
        JOIN runs ra ON ra.run_id = q.run_a JOIN runs rb ON rb.run_id = q.run_b
        ORDER BY ALL""",
}


def retland(*args: str) -> None:
    cmd = [sys.executable, "-m", "retland.cli.main", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"failed: retland {' '.join(args)}\n{done.stdout}\n{done.stderr}")


def study(wh: Path, pack: str = "off") -> dict[str, str]:
    config = wh.parent / "tiny.toml"
    config.write_text(CONFIG)
    retland("train", "--config", str(config), "--no-progress", "-w", str(wh))
    for op in ("td3", "gaussian", "action"):
        retland("sample", "--algo", "td3", "--env", "hopper", "--operator", op, "--samples", "24",
                "--horizon", "20", "--batch-size", "8", "--pack", pack, "-w", str(wh))
    import retland as rl

    run = rl.query("SELECT run_id FROM runs WHERE seed = 0", warehouse=wh).item()
    retland("landscape", "--run", run, "--step", "120", "--grid", "3", "--horizon", "20", "--batch-size", "8",
            "--no-progress", "-w", str(wh))
    retland("interpolate", "--env", "hopper", "--algo", "td3", "--pair-kind", "both", "--points", "3", "--samples", "2",
            "--horizon", "20", "--batch-size", "8", "--no-progress", "-w", str(wh))
    out = {}
    for table, sql in HASHED.items():
        df = rl.query(sql, warehouse=wh)
        out[table] = f"{df.height} rows, sha256 " + hashlib.sha256(df.write_csv().encode()).hexdigest()[:24]
    return out


def platform_key() -> str:
    """Where recorded hashes hold: CPU model and architecture, jax/jaxlib, backend."""
    from importlib.metadata import version

    import jax

    from retland.core.repro import cpu_name

    return (f"{platform.machine()} {cpu_name()}, jax {version('jax')}, jaxlib {version('jaxlib')}, "
            f"{jax.default_backend()}")


def load_records() -> dict[str, dict]:
    """platform key -> {table: hash}."""
    return json.loads(RECORD.read_text())["records"] if RECORD.exists() else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--record", action="store_true", help="write the hashes for this platform")
    ap.add_argument("--pack", default="off",
                    help="sample with --pack W (packed chunks): a check, never recorded; the recorded rows are "
                         "unpacked, so post_update_returns is expected to differ in some samples' last bits")
    args = ap.parse_args()
    if args.record and args.pack != "off":
        sys.exit("--record takes the unpacked rows only (leave --pack out)")
    key = platform_key()
    records = load_records()
    if not args.record and key not in records:
        known = "; ".join(records) or "none"
        print(f"skipped: no hashes recorded for this platform ({key}); recorded: {known}. "
              "Rows are only bit-identical on one platform and XLA build: run with --record "
              "before the refactor, then check after it.")
        return
    with tempfile.TemporaryDirectory() as tmp:
        got = study(Path(tmp) / "wh", args.pack)
    print(f"platform: {key}")
    for table, value in got.items():
        print(f"{table:22s} {value}")
    if args.record:
        records[key] = got
        RECORD.write_text(json.dumps({"records": records}, indent=1, sort_keys=True) + "\n")
        print(f"recorded in {RECORD}")
        return
    want = records[key]
    differ = [t for t in got if got[t] != want.get(t)]
    for t in differ:
        print(f"DIFFERS {t}: recorded {want.get(t)}")
    print("identical to the recorded rows" if not differ else f"{len(differ)} table(s) differ")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
