#!/usr/bin/env bash
# The GPU checks of BENCHMARKS.md as one bounded script: what a session with a GPU runs.
#
#   benchmarks/device_check.sh SECONDS [OUT]
#
# SECONDS is this call's wall budget; OUT (default $OUT, else results/device-check) gets the
# logs and the paper study's stages.json/summary.json. Run it again with a new budget and
# it goes on: the paper study's warehouse stays in .gpu-study/ under the checkout (make
# gpu-wheels puts .whl/ beside it; both are git-ignored), so a second call on the same
# machine resumes training from its last checkpoint and samples only what is missing.
#
# In order, each step only when the budget still holds it:
#   1. the machine: jax, devices, the wheels installed from .whl/ (when there is one);
#   2. the training call's cost at 1 and 20 seeds (benchmarks/train_chunks.py, ~1-2 min),
#      the baseline every later training figure is compared with, on the same card;
#   3. the paper's TD3 hopper study (benchmarks/gpu_study.py --paper) with what is left,
#      less a margin, as its --time-limit; resumed by the next call;
#   4. once the study is complete: packed vs full-chunk sampling (benchmarks/packing.py --gpu).
# Python 3.11+ with a CUDA jax, flax, optax, orbax-checkpoint, numpy, scipy, pyarrow, rich and
# typer installed; the rest comes from .whl/ (make gpu-wheels, on a machine with an index).
# TINY=1 runs the same steps at CPU size (gpu_study --tiny, tiny networks), to try the
# script before a device call.
set -uo pipefail
cd "$(dirname "$0")/.."
BUDGET=${1:?usage: benchmarks/device_check.sh SECONDS [OUT]}
OUT_DIR=${2:-${OUT:-results/device-check}}
STUDY=${STUDY_DIR:-.gpu-study}
MARGIN=${MARGIN:-25}  # seconds kept back for writing summaries and the copy back
START=$(date +%s)
if [ "${TINY:-0}" = 1 ]; then
  STUDY_ARGS="--tiny --sample-seeds all"; CHUNK_ARGS="--sizes tiny --seeds 1,2 --steps 500 --prefill 100 --repeats 1"
  PACK_ARGS="--distributions 4 --samples 64 --horizon 50 --repeats 1"; STUDY=${STUDY_DIR:-.gpu-study-tiny}
else
  STUDY_ARGS="--paper"; CHUNK_ARGS="--sizes table1 --seeds 1,20 --steps 2000"; PACK_ARGS="--gpu"
fi
mkdir -p "$OUT_DIR" "$STUDY"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
case "$STUDY" in /*) ;; *) STUDY=$PWD/$STUDY ;; esac
export RETLAND_JAX_CACHE=${RETLAND_JAX_CACHE:-$STUDY/jax-cache}
left() { echo $(( BUDGET - ($(date +%s) - START) - MARGIN )); }
log() { echo "[device_check $(( $(date +%s) - START ))s] $*" | tee -a "$OUT_DIR/device_check.log"; }

WHEELS=${WHEELS:-.whl}  # WHEELS=none: use what the interpreter has (a CPU try in the project's venv)
if [ "$WHEELS" != none ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE=${SITE:-/tmp/retland-site}
  if [ ! -f "$SITE/.installed" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
      && touch "$SITE/.installed" || { log "wheels: install failed"; exit 2; }
  fi
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 - <<'EOF' 2>&1 | tee -a "$OUT_DIR/device_check.log"
import jax, sys
d = jax.devices()[0]
print(f"python {sys.version.split()[0]}, jax {jax.__version__}, {d.platform} {getattr(d, 'device_kind', '')} x{jax.device_count()}")
import duckdb, pydantic, retland  # noqa: F401  (what the compute path needs beyond the node's stack)
print(f"duckdb {duckdb.__version__}, pydantic {pydantic.__version__}, retland from {retland.__file__}")
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] || { log "the machine lacks what the compute path needs"; exit 2; }

# A step's output is kept (and the step not run again) only when it ended well.
keep() { if [ "$1" -eq 0 ]; then mv "$2.part" "$2"; else log "$(basename "$2"): exit $1, not kept"; fi; }

if [ ! -f "$STUDY/train_chunks.txt" ] && [ "$(left)" -gt 240 ]; then
  log "train_chunks: the training call's cost, 1 step against 500 steps per call"
  timeout 180 python3 benchmarks/train_chunks.py $CHUNK_ARGS 2>&1 | tee "$STUDY/train_chunks.txt.part"
  keep "${PIPESTATUS[0]}" "$STUDY/train_chunks.txt"
fi
[ -f "$STUDY/train_chunks.txt" ] && cp "$STUDY/train_chunks.txt" "$OUT_DIR/"

if [ "$(left)" -gt 60 ]; then
  LIMIT=$(left)
  log "paper study: $LIMIT s of this call"
  # --time-limit stops it in time; SIGINT a minute later (it flushes what it sampled) is the net
  timeout -s INT $(( LIMIT + 60 )) python3 benchmarks/gpu_study.py $STUDY_ARGS --out "$STUDY/paper" --no-report \
    --time-limit "0:$LIMIT" 2>&1 | tee -a "$OUT_DIR/paper.txt"
  log "paper study: exit ${PIPESTATUS[0]}"
fi
for f in stages.json summary.json; do [ -f "$STUDY/paper/$f" ] && cp "$STUDY/paper/$f" "$OUT_DIR/"; done

if [ -f "$STUDY/paper/summary.json" ] && [ ! -f "$STUDY/packing.txt" ] && [ "$(left)" -gt 150 ]; then
  log "packing: packed vs unpacked vs full 4096-wide chunks"
  timeout "$(left)" python3 benchmarks/packing.py $PACK_ARGS 2>&1 | tee "$STUDY/packing.txt.part"
  keep "${PIPESTATUS[0]}" "$STUDY/packing.txt"
fi
[ -f "$STUDY/packing.txt" ] && cp "$STUDY/packing.txt" "$OUT_DIR/"
log "done: $(ls "$OUT_DIR" | tr '\n' ' ')"
