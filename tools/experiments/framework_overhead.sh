#!/usr/bin/env bash
# framework_overhead.sh — what compressed-ddp itself costs at world size 1 with compression off:
# cddp-train (plugin "none", one process) against plain PyTorch (ddp_baseline.py --no-ddp) and
# PyTorch DDP at world size 1, the same model, threads, batch and number of steps. The three
# alternate, round after round, so a noisy machine slows them alike; the ratio is taken per round.
#
# It does not measure communication or compression (there is none at world size 1), and its
# Python side uses torch's own data order and initialisation (ddp_baseline.py says how they differ).
#
#   tools/experiments/framework_overhead.sh [--model mlp|simple_cnn] [--hidden 2048,2048] [--steps N] [--rounds R]
#                                           [--threads T] [--batch B] [--out DIR]
# Prints one line per run and a summary: the median step ms of each (after the first 10 % of
# the steps) and cddp-train's ratio to plain PyTorch.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
MODEL=mlp HIDDEN=2048,2048 STEPS=300 ROUNDS=3 THREADS=1 BATCH=64 OUT="runs/overhead"
CDDP="${CDDP_TRAIN:-$ROOT/build/release/bin/cddp-train}"
PY=/usr/bin/python3
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL="$2"; shift 2 ;;
    --hidden) HIDDEN="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --batch) BATCH="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "framework_overhead.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -x "$CDDP" ] || { echo "framework_overhead.sh: $CDDP is not built (cmake --build --preset release)" >&2; exit 2; }
"$PY" -c "import torch" 2>/dev/null || { echo "framework_overhead.sh: $PY has no torch (apt-get install python3-torch)" >&2; exit 2; }
mkdir -p "$OUT"

run_cddp() {
  local dir="$1"
  "$CDDP" train --config "$ROOT/configs/fashion_mnist_dense.toml" \
    --set run.name=overhead --set "run.output_dir=$dir" --set "run.max_steps=$STEPS" --set run.epochs=100 \
    --set run.log_every=10 --set run.eval_every=0 --set "run.threads=$THREADS" --set "model.name=$MODEL" --set "model.hidden=[$HIDDEN]" \
    --set "data.batch_size=$BATCH" --set distributed.nproc_per_node=1 --set checkpoint.enabled=false \
    --set metrics.tensorboard=false --set metrics.progress=log >"$dir.log" 2>&1
}
run_torch() {
  local dir="$1"; shift
  "$PY" "$ROOT/tools/experiments/ddp_baseline.py" --nproc 1 --model "$MODEL" --hidden "$HIDDEN" --max-steps "$STEPS" \
    --epochs 100 --threads "$THREADS" --batch-size "$BATCH" --log-every 10 --output-dir "$dir" "$@" >"$dir.log" 2>&1
}
for r in $(seq 1 "$ROUNDS"); do
  run_cddp "$OUT/cddp-$r"
  run_torch "$OUT/torch-$r" --no-ddp
  run_torch "$OUT/ddp-$r"
  echo "round $r done"
done
"$PY" - "$OUT" "$ROUNDS" <<'EOF'
import json, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def median_step(d):
    rows = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl")) if '"step_ms"' in l]
    rows = [r for r in rows if "step_ms" in r]
    rows = rows[max(1, len(rows) // 10):]
    return statistics.median(r["step_ms"] for r in rows)
ratios = []
for r in range(1, rounds + 1):
    c, t, d = (median_step(os.path.join(out, f"{k}-{r}")) for k in ("cddp", "torch", "ddp"))
    ratios.append(c / t)
    print(f"round {r}: cddp-train {c:.2f} ms, PyTorch {t:.2f} ms, PyTorch DDP (W=1) {d:.2f} ms; cddp/PyTorch {c / t:.3f}")
print(f"cddp-train / plain PyTorch, median over {rounds} rounds: {statistics.median(ratios):.3f} "
      f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
EOF
