#!/usr/bin/env bash
# run_study.sh — accuracy and time-to-accuracy of compressed-ddp against dense training and
# PyTorch DDP (dense allreduce, PowerSGD) on a slow, emulated network. Needs root.
#
# Topology: W worker network namespaces <P>-w0..<P>-w{W-1}, each with one interface eth0
# (10.77.0.(i+1)/24), joined by veth pairs to a bridge br0 in a hub namespace <P>-hub. Every
# link is rate-limited in both directions with a tbf qdisc (worker eth0 egress and hub port
# egress). Nothing is created in the host namespace: no host links, routes or addresses.
# <P> is "cddp<pid>" so concurrent studies never collide. Every namespace (and with it every
# veth, bridge and qdisc) is removed on exit, Ctrl-C, TERM and failure (trap EXIT INT TERM);
# namespaces left by a study that was SIGKILLed are removed at the next start.
#
# One process per namespace per run:
#   ip netns exec <P>-w$i env RANK=$i WORLD_SIZE=W LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 \
#     MASTER_ADDR=10.77.0.1 MASTER_PORT=... GLOO_SOCKET_IFNAME=eth0 cddp-train train --config ...
#
# Usage: run_study.sh [options]
#   --quick               a few-minute smoke study: 1 rate (1gbit), tiny subset, small mlp,
#                         runs dense, topk1_ef (+ ddp_dense when /usr/bin/python3 has torch)
#   --rate R              1gbit | 100mbit | both | any tc rate (e.g. 500mbit)   [both]
#   --model M             mlp (784-2048-2048-10, 5.8M params) | simple_cnn | both | vit_tiny
#                         (407,690 params; not in "both")                    [both]
#   --runs LIST           comma-separated run names (see RUNS below), or one of the lists
#                         compare (issue #14), wire (#13), adamw (#18)       [all]
#   --epochs N            [2]      --train-subset N [0 = all 60000]   --test-subset N [0]
#   --batch-size N        per rank [64]    --lr X [0.05]    --schedule S [cosine]
#   --eval-every N        optimizer steps between evaluations [50]
#   --weight-decay X      AdamW runs' decoupled weight decay (cddp and DDP alike) [0.05]
#   --onebit-warmup N     adamw_onebit_* runs: dense AdamW steps before the variance freezes [100]
#   --min-numel N         compression.min_numel of every cddp run (unset: the trainer's 32768;
#                         powersgd_* runs: 0)
#   --repeats N           run everything N times with the same seed (noise estimate) [1]
#   --seeds LIST          run everything once per seed, e.g. 0,1,2 (seed spread; output in
#                         <run>/seed<S>); overrides --repeats                 [0]
#   --out DIR             [runs/study]     --bin PATH  cddp-train (else $CDDP_TRAIN, build/*/bin)
#   --run-timeout S       per run, seconds [3600; quick: 120]
#   --netns-selftest      only set up the namespaces, measure the rate of each link pair with
#                         tools/experiments/tc_measure.py, and tear down (no binary needed)
#   --simulate-failure    with --netns-selftest: fail on purpose after setup (checks cleanup)
#   --no-summary          do not run summarize_study.py at the end
#   --dry-run             write every run's config and check it with `cddp-train train --dry-run`,
#                         check each PyTorch peer's arguments (`ddp_baseline.py --dry-run`);
#                         no namespaces, no root, no training
# Exit: 0 done, 1 a run failed, 2 usage, 77 cannot run here (not root, no netns, no binary).
#
# RUNS (cddp-train unless ddp_*; same seed, data, batch, epochs, lr schedule):
#   dense                  plugin none
#   topk1_ef               top-k 1%, error feedback, momentum_mode global
#   topk1_ef_dgc           top-k 1%, error feedback, momentum_mode dgc
#   topk1_ef_dgc_bf16      the same, values on the wire as bf16 (compression.value_dtype)
#   topk1_ef_dgc_overlap   the same, exchange overlapped with backward (distributed.overlap)
#   topk1_ef_dgc_bf16_overlap  both
#   topk1_ef_dgc_fp32_allgather  top-k 1 %, EF, dgc, fp32 values, the allgather (cddp-train's
#                          defaults before 3f40f7a; topk1_ef_dgc is the defaults of the binary)
#   topk1_ef_dgc_bf16_sparse_overlap  bf16 values, the sparse allreduce, overlapped with
#                          backward in buckets of 8 MiB (the mlp's two weights in two buckets)
#   topk1_ef_dgc_sparse    the same, averaged by the sparse allreduce (compression.exchange)
#   topk1_ef_dgc_bf16_sparse   bf16 values and the sparse allreduce
#   topk1_ef_warmup_dgc    top-k 1%, EF, dgc, DGC warm-up (dense, then exponential density decay)
#   topk01_ef_warmup       top-k 0.1%, EF, DGC warm-up (dense, then exponential density decay)
#   topk01_ef_warmup_dgc   same, momentum_mode dgc (momentum correction + masking)
#   topk01_ef              top-k 0.1%, EF, momentum_mode global, no warm-up
#   topk01_ef_dgc          top-k 0.1%, EF, momentum_mode dgc, no warm-up
#   randk1_ef              random-k 1%, EF
#   topk1_noef             top-k 1%, no error feedback
#   threshold_ef           threshold (|x| >= tau, plugin default tau), EF
#   qsgd                   QSGD, plugin defaults (16 levels, 512-entry buckets), no EF (unbiased)
#   terngrad               TernGrad, plugin defaults, no EF (unbiased)
#   natural                natural compression, plugin defaults, no EF (unbiased)
#   sign_signsgd           signSGD with majority vote, EF off (as in the paper)
#   sign_scaled_ef         scaled sign ||x||_1/n * sign(x), EF (Karimireddy et al.)
#   sign_onebit_ef         1-bit SGD (two reconstruction values), EF (Seide et al.)
#   cast_fp16, cast_bf16   16-bit casts (sum payload), no EF
#   powersgd_r2            PowerSGD rank 2, EF, warm start, 10 dense steps first (plugin defaults);
#                          min_numel 0, so that the plugin's min_compression_rate alone decides
#                          which tensors are compressed, as PyTorch's hook does (it compresses the
#                          mlp's 10x2048 classifier, which the trainer's 32768 would send dense)
#   powersgd_r4            PowerSGD rank 4, likewise
#   powersgd_r4_overlap    the same, its rounds run during backward (distributed.overlap), as
#                          the hook's run in DDP's comm hook
#   ddp_dense              PyTorch DDP, gloo, dense allreduce        (ddp_baseline.py)
#   ddp_fp16               PyTorch DDP, gloo, fp16_compress_hook
#   ddp_powersgd_r2        PyTorch DDP, gloo, PowerSGD hook rank 2, start_powerSGD_iter 10
#   ddp_powersgd_r4        PyTorch DDP, gloo, PowerSGD hook rank 4, start_powerSGD_iter 10
#   ddp_powersgd           PyTorch DDP, gloo, PowerSGD hook rank 4 (mlp) / 2 (cnn), 2 dense steps
#   adamw_dense            CompressedAdamW, no compressor (plain AdamW; --lr, --weight-decay)
#   adamw_onebit_topk1     1-bit Adam: --onebit-warmup dense steps, then top-k 1 % of the momentum, EF
#   adamw_onebit_sign      1-bit Adam with the scaled sign of the momentum, EF
#   adamw_naive_topk1      Adam on the averaged top-k 1 % gradient (EF): the control
#   ddp_adamw              PyTorch DDP, gloo, dense allreduce, torch.optim.AdamW
# Momentum for every run without DGC is "global" (SGD's momentum on the averaged gradient).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PY=/usr/bin/python3
W=4
SUBNET=10.77.0
P="cddp$$"

QUICK=0 RATE=both MODEL=both RUNS="" EPOCHS=2 TRAIN_SUBSET=0 TEST_SUBSET=0 BATCH=64 LR=0.05
ADAMW_WD=0.05 ONEBIT_WARMUP=100 MIN_NUMEL="" RUN_OPT=sgd
SCHEDULE=cosine EVAL_EVERY=50 REPEATS=1 OUT="" BIN="${CDDP_TRAIN:-}" RUN_TIMEOUT="" SELFTEST=0
SIMFAIL=0 SUMMARY=1 LOG_EVERY=10 HIDDEN="2048,2048" SEEDS="" SEED=0 DRY=0
ALL_RUNS="dense,topk1_ef,topk1_ef_dgc,topk1_ef_warmup_dgc,topk01_ef_warmup,topk01_ef_warmup_dgc,topk01_ef,topk01_ef_dgc,randk1_ef,topk1_noef,ddp_dense,ddp_powersgd"
# AdamW and 1-bit Adam against PyTorch DDP with AdamW (issue #18's study): --runs adamw
ADAMW_RUNS="adamw_dense,adamw_onebit_topk1,adamw_onebit_sign,adamw_naive_topk1,ddp_adamw"
# Every compressor family against every PyTorch DDP peer (issue #14's study): --runs compare
# Top-k 1 % with 16-bit values and with the exchange overlapped, against DDP + PowerSGD (issue #13): --runs wire
WIRE_RUNS="topk1_ef_dgc,topk1_ef_dgc_fp32_allgather,topk1_ef_dgc_bf16,topk1_ef_dgc_overlap,topk1_ef_dgc_bf16_overlap,topk1_ef_dgc_sparse,topk1_ef_dgc_bf16_sparse,topk1_ef_dgc_bf16_sparse_overlap,ddp_powersgd_r4"
COMPARE_RUNS="dense,topk1_ef_dgc,topk01_ef_dgc,randk1_ef,threshold_ef,qsgd,terngrad,natural,sign_signsgd,sign_scaled_ef,sign_onebit_ef,cast_fp16,cast_bf16,powersgd_r2,powersgd_r4,ddp_dense,ddp_fp16,ddp_powersgd_r2,ddp_powersgd_r4"

ORIG_ARGS="$*"
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "run_study: $*" >&2; exit 2; }
skip() { echo "run_study: SKIP: $*" >&2; exit 77; }

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --rate) RATE="$2"; shift ;;
    --model) MODEL="$2"; shift ;;
    --runs) RUNS="$2"; shift ;;
    --epochs) EPOCHS="$2"; shift ;;
    --train-subset) TRAIN_SUBSET="$2"; shift ;;
    --test-subset) TEST_SUBSET="$2"; shift ;;
    --batch-size) BATCH="$2"; shift ;;
    --lr) LR="$2"; shift ;;
    --weight-decay) ADAMW_WD="$2"; shift ;;
    --onebit-warmup) ONEBIT_WARMUP="$2"; shift ;;
    --min-numel) MIN_NUMEL="$2"; shift ;;
    --schedule) SCHEDULE="$2"; shift ;;
    --eval-every) EVAL_EVERY="$2"; shift ;;
    --log-every) LOG_EVERY="$2"; shift ;;
    --hidden) HIDDEN="$2"; shift ;;
    --repeats) REPEATS="$2"; shift ;;
    --seeds) SEEDS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --bin) BIN="$2"; shift ;;
    --run-timeout) RUN_TIMEOUT="$2"; shift ;;
    --netns-selftest) SELFTEST=1 ;;
    --simulate-failure) SIMFAIL=1 ;;
    --no-summary) SUMMARY=0 ;;
    --dry-run) DRY=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done

if [ "$QUICK" = 1 ]; then
  RATE=1gbit MODEL=mlp HIDDEN="256,128" EPOCHS=1 TRAIN_SUBSET=2048 TEST_SUBSET=500 BATCH=32 EVAL_EVERY=8
  LOG_EVERY=4
  [ -n "$RUNS" ] || RUNS="dense,topk1_ef,ddp_dense"
  : "${RUN_TIMEOUT:=120}"
  : "${OUT:=$REPO/runs/study-quick}"
fi
: "${RUN_TIMEOUT:=3600}"
: "${OUT:=$REPO/runs/study}"
[ -n "$RUNS" ] || RUNS="$ALL_RUNS"
[ "$RUNS" = compare ] && RUNS="$COMPARE_RUNS"
[ "$RUNS" = adamw ] && RUNS="$ADAMW_RUNS"
[ "$RUNS" = wire ] && RUNS="$WIRE_RUNS"
if [ -n "$SEEDS" ]; then
  echo "$SEEDS" | grep -Eq '^[0-9]+(,[0-9]+)*$' || die "--seeds: a comma-separated list of integers, got '$SEEDS'"
  REPEATS=$(echo "$SEEDS" | tr ',' '\n' | wc -l)
fi
seed_of_repeat() { if [ -n "$SEEDS" ]; then echo "$SEEDS" | cut -d, -f"$1"; else echo 0; fi; }
case "$RATE" in both) RATES="1gbit 100mbit" ;; *) RATES="$RATE" ;; esac
case "$MODEL" in both) MODELS="mlp simple_cnn" ;; mlp|simple_cnn|vit_tiny) MODELS="$MODEL" ;; *) die "--model: mlp, simple_cnn, vit_tiny or both" ;; esac

# ------------------------------------------------------------------ can this machine run it?
if [ "$DRY" = 1 ]; then :; else
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces and tc)"
command -v ip >/dev/null && command -v tc >/dev/null || skip "iproute2 (ip, tc) is not installed"
command -v timeout >/dev/null || skip "coreutils timeout is missing"
probe="cddpprobe$$"
if ! timeout 10 ip netns add "$probe" 2>/dev/null; then
  skip "cannot create a network namespace here (container without CAP_SYS_ADMIN?)"
fi
probe_ok=1
timeout 10 ip -n "$probe" link add pa type veth peer name pb 2>/dev/null || probe_ok=0
[ "$probe_ok" = 1 ] && { timeout 10 tc -n "$probe" qdisc add dev pa root tbf rate 100mbit burst 128kb latency 50ms \
  2>/dev/null || probe_ok=2; }
timeout 10 ip netns del "$probe" 2>/dev/null || true
[ "$probe_ok" = 1 ] || skip "$( [ "$probe_ok" = 0 ] && echo "cannot create veth pairs" || echo "tc tbf qdisc unavailable (sch_tbf)")"
fi

if [ "$SELFTEST" = 0 ]; then
  if [ -z "$BIN" ]; then
    for c in "$REPO"/build/release/bin/cddp-train $(ls -t "$REPO"/build/*/bin/cddp-train 2>/dev/null); do
      [ -x "$c" ] && { BIN="$c"; break; }
    done
  fi
  [ -n "$BIN" ] && [ -x "$BIN" ] || skip "cddp-train binary not found (build it, or pass --bin / CDDP_TRAIN)"
  [ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] \
    || skip "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)"
fi
# A Python for the connectivity probe and the rate check (standard library only).
if [ ! -x "$PY" ]; then
  PY="$(command -v python3 || true)"
  [ -n "$PY" ] || skip "no python3 (needed for the namespace connectivity probe)"
fi
HAVE_TORCH_PY=0
[ -x "$PY" ] && timeout 60 "$PY" -c "import torch.distributed as d; assert d.is_gloo_available()" 2>/dev/null && HAVE_TORCH_PY=1

# ------------------------------------------------------------------ namespaces
NSES=()
PIDS=()

stale_cleanup() {  # namespaces of studies whose process is gone (SIGKILL leaves them)
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^cddp[0-9]+-(hub|w[0-9]+)$' || true); do
    pid="${ns#cddp}"; pid="${pid%%-*}"
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run_study: removing stale namespace $ns (study pid $pid is gone)" >&2
      ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
}

kill_workers() {
  local p ns
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    local alive=0
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true; done
  # anything still inside our namespaces (grandchildren) — only namespaces this study made
  for ns in "${NSES[@]:-}"; do
    [ -n "$ns" ] && { ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true; }
  done
  PIDS=()
}

teardown() {
  kill_workers
  local ns
  for ns in "${NSES[@]:-}"; do
    [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null || true
  done
  NSES=()
}

on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  teardown
  [ "$rc" = 0 ] || echo "run_study: exit $rc; namespaces removed" >&2
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tbf_burst() {  # bytes: at least 128 KiB, and at least 5 ms at the rate
  local r="$1" bps
  bps=$(echo "$r" | awk '{ v=$1; n=v+0; u=tolower(v); sub(/^[0-9.]+/, "", u);
    m = (u=="gbit")?1e9:(u=="mbit")?1e6:(u=="kbit")?1e3:(u=="bit"||u=="")?1:0;
    if (m==0) { print 0 } else { printf "%d", n*m } }')
  [ "$bps" -gt 0 ] || die "cannot parse rate $r (use e.g. 1gbit, 100mbit)"
  awk -v b="$bps" 'BEGIN { x = b / 8 * 0.005; if (x < 131072) x = 131072; printf "%d", x }'
}

setup_net() {  # setup_net RATE
  local rate="$1" burst i ns hub="$P-hub"
  burst=$(tbf_burst "$rate")
  ip netns add "$hub"; NSES+=("$hub")
  ip -n "$hub" link set lo up
  ip -n "$hub" link add br0 type bridge
  ip -n "$hub" link set br0 up
  for ((i = 0; i < W; i++)); do
    ns="$P-w$i"
    ip netns add "$ns"; NSES+=("$ns")
    ip -n "$ns" link set lo up
    ip -n "$hub" link add "p$i" type veth peer name eth0 netns "$ns"
    ip -n "$hub" link set "p$i" master br0
    ip -n "$hub" link set "p$i" up
    ip -n "$ns" addr add "$SUBNET.$((i + 1))/24" dev eth0
    ip -n "$ns" link set eth0 up
    tc -n "$ns" qdisc add dev eth0 root tbf rate "$rate" burst "$burst" latency 50ms
    tc -n "$hub" qdisc add dev "p$i" root tbf rate "$rate" burst "$burst" latency 50ms
  done
  # wait until the bridge forwards (ports leave the listening state; STP is off, so ~instant)
  # (a TCP connect from the last worker to rank 0's address; ping may not be installed)
  local probe_port=29400
  ip netns exec "$P-w0" timeout 20 "$PY" -c "
import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('$SUBNET.1', $probe_port)); s.listen(8); s.settimeout(15)
c, _ = s.accept(); c.close()" &
  local lp=$!
  PIDS+=("$lp")
  for _ in $(seq 1 50); do
    if ip netns exec "$P-w$((W - 1))" timeout 2 "$PY" -c "
import socket; socket.create_connection(('$SUBNET.1', $probe_port), timeout=1).close()" 2>/dev/null; then
      wait "$lp" 2>/dev/null || true
      PIDS=()
      return 0
    fi
    sleep 0.2
  done
  echo "run_study: the bridge does not forward between namespaces" >&2
  return 1
}

stale_cleanup
mkdir -p "$OUT"

if [ "$SELFTEST" = 1 ]; then
  for rate in $RATES; do
    echo "run_study: selftest: setting up $W namespaces at $rate (prefix $P)"
    setup_net "$rate"
    ip netns list | grep -E "^$P-" | sed 's/^/  /'
    tc -n "$P-w0" qdisc show dev eth0 | sed 's/^/  w0 eth0: /'
    if [ "$SIMFAIL" = 1 ]; then
      echo "run_study: selftest: simulating a failure now (cleanup must still run)"
      false  # set -e: the EXIT trap removes everything
    fi
    ip netns exec "$P-w1" timeout 60 "$PY" "$HERE/tc_measure.py" server --bind "$SUBNET.2" --port 5201 \
      >"$OUT/selftest-$rate.server" 2>&1 &
    srv=$!
    PIDS+=("$srv")
    sleep 1
    ip netns exec "$P-w0" timeout 60 "$PY" "$HERE/tc_measure.py" client --host "$SUBNET.2" --port 5201 --seconds 5 \
      | tee "$OUT/selftest-$rate.client"
    wait "$srv" || true
    echo "run_study: selftest: configured $rate, measured (receiver): $(cat "$OUT/selftest-$rate.server")"
    teardown
  done
  exit 0
fi

# ------------------------------------------------------------------ configs and runs
hidden_toml() { echo "[$(echo "$1" | sed 's/,/, /g')]"; }

# write_config FILE NAME MODEL OUTDIR PLUGIN RATIO EF MM WARM_DENSE WARM_DECAY [PARAMS]
#   RATIO "-": the plugin takes none (quantizers, signs, casts, PowerSGD, threshold);
#   PARAMS: "key = value" lines for [compression.params], separated by ';'.
write_config() {
  local f="$1" name="$2" model="$3" out="$4" plugin="$5" ratio="$6" ef="$7" mm="$8" wd="$9" wdec="${10}"
  local params="${11:-}"
  {
    echo "# generated by tools/experiments/run_study.sh"
    echo "[run]"
    echo "name = \"$name\""
    echo "seed = $SEED"
    echo "output_dir = \"$out\""
    echo "epochs = $EPOCHS"
    echo "log_every = $LOG_EVERY"
    echo "eval_every = $EVAL_EVERY"
    echo "threads = 1"
    echo "[model]"
    echo "name = \"$model\""
    [ "$model" = mlp ] && echo "hidden = $(hidden_toml "$HIDDEN")"
    echo "[data]"
    echo "name = \"fashion_mnist\""
    echo "batch_size = $BATCH"
    echo "train_subset = $TRAIN_SUBSET"
    echo "test_subset = $TEST_SUBSET"
    echo "[optimizer]"
    echo "lr = $LR"
    if [ "$RUN_OPT" = sgd ]; then
      echo "momentum = 0.9"
      echo "momentum_mode = \"$mm\""
    else  # adamw_onebit | adamw_naive
      echo "name = \"adamw\""
      echo "weight_decay = $ADAMW_WD"
      echo "adamw_mode = \"${RUN_OPT#adamw_}\""
      echo "onebit_warmup_steps = $ONEBIT_WARMUP"
    fi
    echo "schedule = \"$SCHEDULE\""
    echo "[compression]"
    echo "plugin = \"$plugin\""
    local min_numel="${MIN_NUMEL:-${RUN_MIN_NUMEL:-}}"  # --min-numel, else the run's own, else the trainer's
    [ -n "$min_numel" ] && echo "min_numel = $min_numel"
    if [ "$plugin" != none ]; then
      [ "$ratio" = - ] || echo "ratio = $ratio"
      echo "error_feedback = $ef"
      echo "warmup_dense_steps = $wd"
      echo "warmup_decay_steps = $wdec"
      [ -n "${RUN_VALUE_DTYPE:-}" ] && echo "value_dtype = \"$RUN_VALUE_DTYPE\""
      [ -n "${RUN_EXCHANGE:-}" ] && echo "exchange = \"$RUN_EXCHANGE\""
      if [ -n "$params" ]; then
        echo "[compression.params]"
        echo "$params" | tr ';' '\n' | sed 's/^ *//'
      fi
    fi
    echo "[distributed]"
    echo "backend = \"gloo\""
    echo "timeout_s = 120"
    [ -n "${RUN_OVERLAP:-}" ] && echo "overlap = $RUN_OVERLAP"
    [ -n "${RUN_BUCKET_CAP_MB:-}" ] && echo "bucket_cap_mb = $RUN_BUCKET_CAP_MB"
    echo "[checkpoint]"
    echo "enabled = false"
    echo "resume = \"never\""
    echo "[metrics]"
    echo "tensorboard = false"
    echo "progress = \"log\""
  } >"$f"
}

FAILED=0
PORT=29500

# launch_run RATE MODEL RUN REPEAT
launch_run() {
  local rate="$1" model="$2" run="$3" rep="$4" dir cmd i ns t0 t1 rc=0 kind=cddp
  dir="$OUT/$rate/$model/$run"
  SEED=$(seed_of_repeat "$rep")
  if [ -n "$SEEDS" ]; then dir="$dir/seed$SEED"; elif [ "$REPEATS" -gt 1 ]; then dir="$dir/rep$rep"; fi
  rm -rf "$dir"; mkdir -p "$dir"
  PORT=$((PORT + 1))
  local ddp_args=(--model "$model" --hidden "$HIDDEN" --train-subset "$TRAIN_SUBSET" --test-subset "$TEST_SUBSET"
    --batch-size "$BATCH" --epochs "$EPOCHS" --lr "$LR" --momentum 0.9 --schedule "$SCHEDULE" --seed "$SEED" --threads 1
    --log-every "$LOG_EVERY" --eval-every "$EVAL_EVERY" --timeout-s 120 --output-dir "$dir")
  RUN_OPT=sgd
  case "$run" in
    adamw_*) RUN_OPT=adamw_onebit ;;&
    adamw_dense|adamw_naive_*) RUN_OPT=adamw_naive ;;&
    adamw_dense)          write_config "$dir/config.toml" "$run" "$model" "$dir" none 1 false global 0 0 ;;
    adamw_onebit_topk1|adamw_naive_topk1) write_config "$dir/config.toml" "$run" "$model" "$dir" topk 0.01 true global 0 0 ;;
    adamw_onebit_sign)    write_config "$dir/config.toml" "$run" "$model" "$dir" sign - true global 0 0 'variant = "scaled"' ;;
    ddp_adamw)            kind=ddp; ddp_args+=(--hook none --optimizer adamw --weight-decay "$ADAMW_WD") ;;
    dense)                write_config "$dir/config.toml" "$run" "$model" "$dir" none 1 false global 0 0 ;;
    topk1_ef)             write_config "$dir/config.toml" "$run" "$model" "$dir" topk 0.01 true global 0 0 ;;
    topk1_ef_dgc)         write_config "$dir/config.toml" "$run" "$model" "$dir" topk 0.01 true dgc 0 0 ;;
    topk1_ef_dgc_bf16)    RUN_VALUE_DTYPE=bf16 write_config "$dir/config.toml" "$run" "$model" "$dir" topk 0.01 true dgc 0 0 ;;
    topk1_ef_dgc_overlap) RUN_OVERLAP=true write_config "$dir/config.toml" "$run" "$model" "$dir" topk 0.01 true dgc 0 0 ;;
    topk1_ef_dgc_bf16_overlap) RUN_VALUE_DTYPE=bf16 RUN_OVERLAP=true write_config "$dir/config.toml" "$run" "$model" "$dir" topk 0.01 true dgc 0 0 ;;
    topk1_ef_dgc_sparse)  RUN_EXCHANGE=sparse_allreduce write_config "$dir/config.toml" "$run" "$model" "$dir" topk 0.01 true dgc 0 0 ;;
    topk1_ef_dgc_bf16_sparse) RUN_VALUE_DTYPE=bf16 RUN_EXCHANGE=sparse_allreduce write_config "$dir/config.toml" "$run" "$model" "$dir" topk 0.01 true dgc 0 0 ;;
    topk1_ef_dgc_fp32_allgather) RUN_VALUE_DTYPE=fp32 RUN_EXCHANGE=allgather write_config "$dir/config.toml" "$run" "$model" "$dir" topk 0.01 true dgc 0 0 ;;
    topk1_ef_dgc_bf16_sparse_overlap) RUN_VALUE_DTYPE=bf16 RUN_EXCHANGE=sparse_allreduce RUN_OVERLAP=true RUN_BUCKET_CAP_MB=8 write_config "$dir/config.toml" "$run" "$model" "$dir" topk 0.01 true dgc 0 0 ;;
    topk1_ef_warmup_dgc)  write_config "$dir/config.toml" "$run" "$model" "$dir" topk 0.01 true dgc "$WD" "$WDEC" ;;
    topk01_ef_warmup)     write_config "$dir/config.toml" "$run" "$model" "$dir" topk 0.001 true global "$WD" "$WDEC" ;;
    topk01_ef_warmup_dgc) write_config "$dir/config.toml" "$run" "$model" "$dir" topk 0.001 true dgc "$WD" "$WDEC" ;;
    topk01_ef)            write_config "$dir/config.toml" "$run" "$model" "$dir" topk 0.001 true global 0 0 ;;
    topk01_ef_dgc)        write_config "$dir/config.toml" "$run" "$model" "$dir" topk 0.001 true dgc 0 0 ;;
    randk1_ef)            write_config "$dir/config.toml" "$run" "$model" "$dir" randomk 0.01 true global 0 0 ;;
    topk1_noef)           write_config "$dir/config.toml" "$run" "$model" "$dir" topk 0.01 false global 0 0 ;;
    threshold_ef)         write_config "$dir/config.toml" "$run" "$model" "$dir" threshold - true global 0 0 ;;
    qsgd|terngrad|natural) write_config "$dir/config.toml" "$run" "$model" "$dir" "$run" - false global 0 0 ;;
    sign_signsgd)         write_config "$dir/config.toml" "$run" "$model" "$dir" sign - false global 0 0 'variant = "signsgd"' ;;
    sign_scaled_ef)       write_config "$dir/config.toml" "$run" "$model" "$dir" sign - true global 0 0 'variant = "scaled"' ;;
    sign_onebit_ef)       write_config "$dir/config.toml" "$run" "$model" "$dir" sign - true global 0 0 'variant = "onebit"' ;;
    cast_fp16)            write_config "$dir/config.toml" "$run" "$model" "$dir" cast - false global 0 0 'dtype = "fp16"' ;;
    cast_bf16)            write_config "$dir/config.toml" "$run" "$model" "$dir" cast - false global 0 0 'dtype = "bf16"' ;;
    powersgd_r2)          RUN_MIN_NUMEL=0 write_config "$dir/config.toml" "$run" "$model" "$dir" powersgd - true global 0 0 'rank = 2; start_iter = 10' ;;
    powersgd_r4)          RUN_MIN_NUMEL=0 write_config "$dir/config.toml" "$run" "$model" "$dir" powersgd - true global 0 0 'rank = 4; start_iter = 10' ;;
    powersgd_r4_overlap)  RUN_MIN_NUMEL=0 RUN_OVERLAP=true write_config "$dir/config.toml" "$run" "$model" "$dir" powersgd - true global 0 0 'rank = 4; start_iter = 10' ;;
    ddp_dense)            kind=ddp; ddp_args+=(--hook none) ;;
    ddp_fp16)             kind=ddp; ddp_args+=(--hook fp16) ;;
    ddp_powersgd_r2)      kind=ddp; ddp_args+=(--hook powersgd --powersgd-rank 2 --start-powersgd-iter 10) ;;
    ddp_powersgd_r4)      kind=ddp; ddp_args+=(--hook powersgd --powersgd-rank 4 --start-powersgd-iter 10) ;;
    ddp_powersgd)         kind=ddp; ddp_args+=(--hook powersgd --powersgd-rank "$([ "$model" = mlp ] && echo 4 || echo 2)") ;;
    *) die "unknown run $run (see --help)" ;;
  esac
  if [ "$kind" = ddp ] && [ "$HAVE_TORCH_PY" = 0 ]; then
    echo "run_study: skipping $run: $PY has no torch with gloo" >&2
    echo '{"skipped": "no torch in /usr/bin/python3"}' >"$dir/run.json"
    return 0
  fi
  if [ "$kind" = cddp ]; then
    cmd=("$BIN" train --config "$dir/config.toml")
  else
    cmd=("$PY" "$HERE/ddp_baseline.py" "${ddp_args[@]}")
  fi
  if [ "$DRY" = 1 ]; then
    echo "run_study: [dry $rate $model $run seed $SEED] ${cmd[*]}"
    if ! "${cmd[@]}" --dry-run >"$dir/dry-run.log" 2>&1; then
      echo "run_study: $run: the config does not validate:" >&2
      tail -5 "$dir/dry-run.log" >&2
      FAILED=1
    fi
    return 0
  fi
  echo "run_study: [$rate $model $run rep $rep] ${cmd[*]}"
  t0=$(date +%s.%N)
  PIDS=()
  for ((i = 0; i < W; i++)); do
    ns="$P-w$i"
    ip netns exec "$ns" timeout -k 10 "$RUN_TIMEOUT" env RANK=$i WORLD_SIZE=$W LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 \
      MASTER_ADDR="$SUBNET.1" MASTER_PORT=$PORT GLOO_SOCKET_IFNAME=eth0 OMP_NUM_THREADS=1 \
      "${cmd[@]}" >"$dir/rank$i.log" 2>&1 &
    PIDS+=($!)
  done
  for p in "${PIDS[@]}"; do wait "$p" || rc=$((rc == 0 ? $? : rc)); done
  PIDS=()
  t1=$(date +%s.%N)
  local wall
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  printf '{"run": "%s", "kind": "%s", "rate": "%s", "model": "%s", "repeat": %s, "seed": %s, "rc": %s, "wall_s": %s, "world_size": %s, "command": "%s", "launch": "ip netns exec %s-wI env RANK=I WORLD_SIZE=%s LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 MASTER_ADDR=%s.1 MASTER_PORT=%s GLOO_SOCKET_IFNAME=eth0"}\n' \
    "$run" "$kind" "$rate" "$model" "$rep" "$SEED" "$rc" "$wall" "$W" "$(echo "${cmd[*]}" | sed 's/"/\\"/g')" "$P" "$W" "$SUBNET" "$PORT" \
    >"$dir/run.json"
  if [ "$rc" != 0 ]; then
    echo "run_study: $run failed (exit $rc); last lines of rank0.log:" >&2
    tail -5 "$dir/rank0.log" >&2 || true
    FAILED=1
  else
    echo "run_study: $run done in ${wall}s"
  fi
}

{
  echo "date: $(date -Is)"
  echo "host: nproc=$(nproc) cpu=\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')\" kernel=$(uname -r)"
  echo "loadavg at start: $(cat /proc/loadavg)"
  echo "git: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "binary: ${BIN}"
  echo "command: $0 $ORIG_ARGS"
  echo "settings: W=$W rates=\"$RATES\" models=\"$MODELS\" runs=$RUNS epochs=$EPOCHS train_subset=$TRAIN_SUBSET test_subset=$TEST_SUBSET batch=$BATCH lr=$LR schedule=$SCHEDULE eval_every=$EVAL_EVERY repeats=$REPEATS seeds=${SEEDS:-0} hidden=$HIDDEN"
} >"$OUT/study.txt"

for rate in $RATES; do
  [ "$DRY" = 1 ] || setup_net "$rate"
  for model in $MODELS; do
    # DGC warm-up: the first ~4% of the steps dense, then density decays to the target over ~8%.
    n=$TRAIN_SUBSET; [ "$n" -gt 0 ] || n=60000
    steps=$(( EPOCHS * ( (n + W - 1) / W + BATCH - 1 ) / BATCH ))
    WD=$(( steps / 25 )); WDEC=$(( steps / 12 ))
    for ((rep = 1; rep <= REPEATS; rep++)); do
      for run in ${RUNS//,/ }; do
        launch_run "$rate" "$model" "$run" "$rep"
      done
    done
  done
  teardown
done
echo "loadavg at end: $(cat /proc/loadavg)" >>"$OUT/study.txt"

if [ "$SUMMARY" = 1 ] && [ "$DRY" = 0 ]; then
  dest="$OUT/results.md"
  timeout 300 "$PY" "$HERE/summarize_study.py" "$OUT" --out "$dest" || { echo "run_study: summarize_study.py failed" >&2; FAILED=1; }
fi

if [ "$QUICK" = 1 ] && [ "$FAILED" = 0 ]; then  # the quick study must have produced evaluations
  for f in $(find "$OUT" -name metrics.jsonl); do
    grep -q '"test_acc"' "$f" || { echo "run_study: $f has no test_acc row" >&2; FAILED=1; }
  done
fi
exit "$FAILED"
