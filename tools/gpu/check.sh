#!/usr/bin/env bash
# check.sh — the one-shot GPU check of issue #15, run ON THE GPU MACHINE from the repository
# root (one H200, LibTorch 2.x from pip in python3, cmake, ninja; no apt, no network):
#   1 environment   torch, CUDA, nvcc, the commit being checked
#   2 unpack        .gpu-debs/*.deb (made by tools/gpu/fetch-debs.sh) into a private prefix
#   3 configure     the whole tree against python3's torch (fallbacks: no bench, minimal tree)
#   4 build         the `gpu` tests, bench_topk_cuda, the plugins, cddp-train
#   5 tests         each `ctest -L gpu` test on its own under `timeout`: a hang is a named
#                   failure ("hang in Suite.Case"); a failed or hung test is rerun once with
#                   CUDA_LAUNCH_BLOCKING=1 CDDP_CUDA_TRACE=1, and the last CUDA call the trace
#                   logged (and, on a hang, the threads' stacks when gdb is there) is recorded
#   6 training      cddp-train, configs/gpu_check.toml, 200 steps on CUDA: simple_cnn and
#                   resnet18 at world size 1 (backend nccl) and 2 (two ranks on the one GPU,
#                   backend gloo: NCCL refuses two ranks on one device)
#   7 bench         bench_topk_cuda: fused EF + top-k vs the ATen chain vs one plain pass
#   8 report        docs/gpu/h200-check.json + docs/gpu/h200-check.md (the table for
#                   docs/benchmarks.md), both also under $OUT, written by check_report.py
# Every phase has a budget (seconds; PHASE_*_S below) and the whole run a deadline
# (CDDP_CHECK_BUDGET_S, default 450 s, under the 8 minutes the issue allows): a phase gets the
# smaller of its budget and what is left after the later phases' minimum shares, so the report
# is always written. A phase that runs out is recorded as such, never retried.
#
# It will not invent a number: what did not run is "not run: <why>" / null in the JSON.
# It will not install anything outside $CDDP_PREFIX and $BUILD, nor touch the accelerator's
# settings.
#
# Dry run, on a machine without a GPU (CDDP_CHECK_ALLOW_NO_CUDA=1): the same phases with what
# is there — the system LibTorch when python3 has no torch, the system packages when there is no
# .gpu-debs — plus a self-test of the timeout / rerun / last-CUDA-call path with a fake hanging
# test, and the training commands on the CPU for a few steps (their report goes to
# $OUT/dry-run-cpu-plumbing.{json,md}, never into docs/). The dry run writes its JSON under
# $OUT only and exits 0 when every phase that can run here did.
#
# Device call (from the lead's machine; COMMIT is the sha of the tree being carried):
#   run(command="CDDP_CHECK_COMMIT=<sha> bash tools/gpu/check.sh", carry=[".gpu-debs"],
#       timeout_s=540)
# Knobs (environment): OUT, CDDP_CHECK_BUDGET_S, CDDP_CHECK_COMMIT, CDDP_CHECK_JOBS (nproc),
#   PYTHON (python3), CDDP_PREFIX (/tmp/cddp-prefix), CDDP_CHECK_ALLOW_NO_CUDA=1 (dry run),
#   CDDP_CHECK_FORCE_MINIMAL=1 (go straight to the minimal-project fallback),
#   CDDP_CHECK_TEST_TIMEOUT_S (per test, 60; topk_cuda_test 90), CDDP_CHECK_RERUN_TIMEOUT_S
#   (45), CDDP_CHECK_TRAIN_TIMEOUT_S (per training run, 45), CDDP_CHECK_TRAIN_STEPS (200),
#   CDDP_CHECK_SKIP_TRAIN=1 / CDDP_CHECK_SKIP_BENCH=1, CDDP_CHECK_WRITE_DOCS=0|1 (default: 1 on
#   a GPU, 0 in a dry run).
set -uo pipefail

T0=$(date +%s)
BUDGET=${CDDP_CHECK_BUDGET_S:-450}
DRY=${CDDP_CHECK_ALLOW_NO_CUDA:-0}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1
OUTDIR="${OUT:-$ROOT/gpu-results}"
mkdir -p "$OUTDIR/tests" "$OUTDIR/train"
OUTDIR="$(cd "$OUTDIR" && pwd)"
LOG="$OUTDIR/check.log"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!

PREFIX="${CDDP_PREFIX:-/tmp/cddp-prefix}"
PY="${PYTHON:-python3}"
JOBS="${CDDP_CHECK_JOBS:-$(nproc)}"
BUILD="$ROOT/build/gpu-check"
MULTIARCH=x86_64-linux-gnu
TEST_TIMEOUT=${CDDP_CHECK_TEST_TIMEOUT_S:-60}
RERUN_TIMEOUT=${CDDP_CHECK_RERUN_TIMEOUT_S:-45}
TRAIN_TIMEOUT=${CDDP_CHECK_TRAIN_TIMEOUT_S:-45}
TRAIN_STEPS=${CDDP_CHECK_TRAIN_STEPS:-200}
WRITE_DOCS=${CDDP_CHECK_WRITE_DOCS:-$([[ "$DRY" == 1 ]] && echo 0 || echo 1)}

# Phase budgets (s) and the minimum share each later phase keeps back.
PHASE_CONFIGURE_S=75;  MIN_CONFIGURE_S=30
PHASE_BUILD_S=180;     MIN_BUILD_S=60
PHASE_TESTS_S=110;     MIN_TESTS_S=40
PHASE_TRAIN_S=110;     MIN_TRAIN_S=30
PHASE_BENCH_S=45;      MIN_BENCH_S=20
MIN_REPORT_S=10

TESTS_TSV="$OUTDIR/tests.tsv"       # name, status, seconds, detail
SELFTEST_TSV="$OUTDIR/selftest.tsv" # the dry run's fake tests, same columns
TRAIN_TSV="$OUTDIR/training.tsv"    # model, world, backend, rc, metrics, status, seconds
PHASES_TSV="$OUTDIR/phases.tsv"     # phase, status, seconds, detail
: >"$TESTS_TSV"; : >"$SELFTEST_TSV"; : >"$TRAIN_TSV"; : >"$PHASES_TSV"

elapsed() { echo $(($(date +%s) - T0)); }
left() { echo $((BUDGET - $(elapsed))); }
step() { echo; echo "=== [$(elapsed)s] $*"; }
# allow CAP RESERVE: seconds a phase may take — its cap, or what is left minus the reserve
# for the later phases, whichever is smaller; at least 5.
allow() {
  local a=$(($(left) - $2))
  ((a > $1)) && a=$1
  ((a < 5)) && a=5
  echo "$a"
}

FAILED=0
declare -a RESULTS=()
record() {  # record PHASE STATUS [detail]
  RESULTS+=("$(printf '%-26s %-5s %s' "$1" "$2" "${3:-}")")
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$(elapsed)" "${3:-}" >>"$PHASES_TSV"
  [[ "$2" == PASS || "$2" == SKIP ]] || FAILED=1
}
# SKIP in a dry run, FAIL on a GPU.
skip_or_fail() { [[ "$DRY" == 1 ]] && echo SKIP || echo FAIL; }
tsv_clean() { printf '%s' "$*" | tr '\t\n' '  ' | sed 's/ *$//' | cut -c1-400; }

COMMIT="${CDDP_CHECK_COMMIT:-}"
if [[ -z "$COMMIT" ]]; then
  if git -C "$ROOT" rev-parse HEAD >/dev/null 2>&1; then
    COMMIT="$(git -C "$ROOT" rev-parse HEAD)"
    [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]] &&
      COMMIT="$COMMIT-dirty"
  else
    COMMIT="unknown (no .git here; pass CDDP_CHECK_COMMIT)"
  fi
fi
DEVICE_NAME="none"
TORCH_VERSION=none
BENCH_STATUS="not run"
REPORT_DONE=0

write_report() {
  ((REPORT_DONE)) && return 0
  REPORT_DONE=1
  local json="$OUTDIR/h200-check.json" md="$OUTDIR/h200-check.md" dry=()
  [[ "$DRY" == 1 ]] && dry=(--dry-run)
  local bench=()
  [[ -s "$OUTDIR/bench_topk_cuda.json" ]] && bench=(--bench "$OUTDIR/bench_topk_cuda.json")
  if "$PY" "$ROOT/tools/gpu/check_report.py" --tests "$TESTS_TSV" --training "$TRAIN_TSV" \
       "${bench[@]}" --bench-status "$BENCH_STATUS" --commit "$COMMIT" --device "$DEVICE_NAME" \
       --torch "$TORCH_VERSION" --elapsed "$(elapsed)" --budget "$BUDGET" "${dry[@]}" \
       --out-json "$json" --out-md "$md"; then
    # Shape check: the keys the issue asks for, a row per kernel size and training run.
    if "$PY" - "$json" <<'PYEOF'; then
import json, sys
r = json.load(open(sys.argv[1]))
for k in ("commit", "device", "torch", "tests", "kernel", "training"):
    assert k in r, f"missing {k}"
for t in ("topk_cuda_test", "compressed_sgd_cuda_test"):
    assert t in r["tests"], f"tests lacks {t}"
assert [row["n"] for row in r["kernel"]] == [1048576, 25000000, 100000000], r["kernel"]
for row in r["kernel"]:
    assert set(("n", "k", "fused_ms", "chain_ms", "plain_ms")) <= set(row), row
models = sorted((t["model"], t["world_size"]) for t in r["training"])
assert models == [("resnet18", 1), ("resnet18", 2), ("simple_cnn", 1), ("simple_cnn", 2)], models
for t in r["training"]:
    assert set(("model", "world_size", "backend", "rc", "step_ms", "compress_ms")) <= set(t), t
if r["dry_run"]:
    assert all(row["fused_ms"] is None for row in r["kernel"]), "a dry run has no kernel times"
    assert all(t["step_ms"] is None for t in r["training"]), "a dry run has no GPU step times"
print("report shape: ok")
PYEOF
      record report PASS "$json"
    else
      record report FAIL "h200-check.json does not have the issue's shape"
    fi
    if [[ "$WRITE_DOCS" == 1 ]]; then
      mkdir -p "$ROOT/docs/gpu"
      cp "$json" "$ROOT/docs/gpu/h200-check.json"
      cp "$md" "$ROOT/docs/gpu/h200-check.md"
      echo "wrote docs/gpu/h200-check.json and docs/gpu/h200-check.md (paste the .md into docs/benchmarks.md)"
    fi
  else
    record report FAIL "check_report.py failed"
  fi
}

finish() {
  local rc=$?
  set +e
  write_report
  step "summary (rc=$rc)"
  {
    echo "cddp GPU check — $(date -u +%FT%TZ) — $(elapsed)s of ${BUDGET}s — commit $COMMIT"
    [[ "$DRY" == 1 ]] && echo "DRY RUN (CDDP_CHECK_ALLOW_NO_CUDA=1): nothing ran on a GPU"
    for r in "${RESULTS[@]}"; do echo "  $r"; done
    echo; echo "tests:"; sed 's/^/  /' "$TESTS_TSV"
    if [[ -s "$SELFTEST_TSV" ]]; then echo "self-tests:"; sed 's/^/  /' "$SELFTEST_TSV"; fi
    echo "training:"; sed 's/^/  /' "$TRAIN_TSV"
    if [[ -f "$OUTDIR/h200-check.md" ]]; then echo; cat "$OUTDIR/h200-check.md"; fi
  } >"$OUTDIR/summary.txt"
  cat "$OUTDIR/summary.txt"
  for f in "$OUTDIR"/*.log "$OUTDIR"/tests/*.log "$OUTDIR"/train/*/*.log; do
    [[ -f "$f" ]] || continue
    if (($(stat -c %s "$f") > 4 * 1024 * 1024)); then
      tail -c $((4 * 1024 * 1024)) "$f" >"$f.tmp" && mv "$f.tmp" "$f"
    fi
  done
  local verdict=PASSED code=0
  if ((FAILED)) || ((rc != 0)); then verdict=FAILED; code=1; fi
  echo "=== cddp GPU check$([[ "$DRY" == 1 ]] && echo " (dry run)"): $verdict after $(elapsed)s (see $OUTDIR)"
  exec 1>&- 2>&-
  wait "$TEE_PID" 2>/dev/null
  exit "$code"
}
trap finish EXIT

# ---------------------------------------------------------------------------------------------
step "1/8 environment"
if [[ -d /usr/local/cuda/bin ]]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
NVCC="${CUDACXX:-$(command -v nvcc || true)}"
{
  echo "host: $(uname -a)"
  echo "nproc: $(nproc)  jobs: $JOBS  budget: ${BUDGET}s  dry run: $DRY  commit: $COMMIT"
  if command -v nvidia-smi >/dev/null; then nvidia-smi -L; else echo "nvidia-smi: not found"; fi
  echo "nvcc: ${NVCC:-NOT FOUND}"
  [[ -n "$NVCC" ]] && "$NVCC" --version | tail -n 2
  echo "cmake: $(cmake --version | head -n 1)"
  echo "ninja: $(ninja --version 2>&1)"
  echo "c++: $(c++ --version | head -n 1)"
  echo "gdb: $(command -v gdb || echo 'not found (no stacks of hung tests)')"
  echo "timeout: $(timeout --version | head -n 1)"
} >"$OUTDIR/env.txt" 2>&1
cat "$OUTDIR/env.txt"

read -r TORCH_VERSION TORCH_PREFIX TORCH_ABI TORCH_CUDA TORCH_CUDA_VER TORCH_DEVICE < <(
  "$PY" - <<'PYEOF' 2>/dev/null || echo "none none 1 False none none"
import torch
dev = torch.cuda.get_device_name(0).replace(" ", "_") if torch.cuda.is_available() else "none"
print(torch.__version__, torch.utils.cmake_prefix_path, int(torch._C._GLIBCXX_USE_CXX11_ABI),
      torch.cuda.is_available(), torch.version.cuda, dev)
PYEOF
)
TORCH_DEVICE="${TORCH_DEVICE//_/ }"
if [[ "$TORCH_VERSION" == none ]]; then
  if [[ "$DRY" != 1 ]]; then
    record environment FAIL "python3 cannot import torch"
    exit 1
  fi
  # Dry run: the system LibTorch (found by CMake's default search), its version from its header.
  TORCH_PREFIX=""
  TORCH_ABI=1
  hdr=$(find /usr/include /usr/local/include -path '*torch/csrc/api/include/torch/version.h' 2>/dev/null | head -n 1)
  [[ -z "$hdr" ]] && hdr=$(find /usr/include /usr/local/include -name version.h -path '*torch*' 2>/dev/null | head -n 1)
  if [[ -n "$hdr" ]]; then
    TORCH_VERSION="$(sed -n 's/.*TORCH_VERSION "\{0,1\}\([0-9][0-9.]*\).*/\1/p' "$hdr" | head -n 1)"
    [[ -z "$TORCH_VERSION" ]] && TORCH_VERSION="$(grep -E 'define TORCH_VERSION_(MAJOR|MINOR|PATCH)' "$hdr" | awk '{print $3}' | paste -sd.)"
  fi
  TORCH_VERSION="${TORCH_VERSION:-unknown} (system LibTorch, dry run)"
  echo "python3 has no torch: dry run with the system LibTorch ($TORCH_VERSION)"
fi
echo "torch: $TORCH_VERSION  cuda available: $TORCH_CUDA  torch cuda: $TORCH_CUDA_VER  cxx11 abi: $TORCH_ABI" | tee -a "$OUTDIR/env.txt"
if [[ "$TORCH_CUDA" == True ]]; then
  DEVICE_NAME="$TORCH_DEVICE"
elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  DEVICE_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1) (torch sees no CUDA)"
else
  DEVICE_NAME="none (no GPU visible)"
fi
# LibTorch >= 2.4: c10d's TCPStore defaults to the libuv backend; core/src/dist/c10d_compat.h
# is where that is handled (the lead's fix). Said here so that a rendezvous failure in the
# training phase is read with that in mind.
if [[ "$TORCH_VERSION" =~ ^2\.([0-9]+) ]] && ((BASH_REMATCH[1] >= 4)); then
  echo "note: torch $TORCH_VERSION >= 2.4: TCPStore defaults to libuv (c10d_compat.h must choose the store backend)" | tee -a "$OUTDIR/env.txt"
fi
if [[ "$TORCH_CUDA" != True && "$DRY" != 1 ]]; then
  record environment FAIL "torch.cuda.is_available() is False"
  exit 1
fi
record environment PASS "torch $TORCH_VERSION, device $DEVICE_NAME, nvcc ${NVCC:-none}"

# ---------------------------------------------------------------------------------------------
step "2/8 unpack .gpu-debs into $PREFIX"
shopt -s nullglob
debs=("$ROOT"/.gpu-debs/*.deb)
USE_PREFIX=0
if ((${#debs[@]} == 0)); then
  if [[ "$DRY" == 1 ]]; then
    record unpack SKIP "no .gpu-debs: the system's packages (dry run)"
  else
    echo "no .gpu-debs/*.deb: run tools/gpu/fetch-debs.sh on the dev machine and carry .gpu-debs"
    record unpack FAIL "no .deb files"
    exit 1
  fi
else
  rm -rf "$PREFIX"; mkdir -p "$PREFIX"
  unpack_ok=1
  for f in "${debs[@]}"; do
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$f" "$PREFIX" || unpack_ok=0
    else  # no dpkg: a .deb is an ar archive holding data.tar.*
      tmp="$(mktemp -d)"
      (cd "$tmp" && ar x "$f") && tar -xf "$tmp"/data.tar.* -C "$PREFIX" || unpack_ok=0
      rm -rf "$tmp"
    fi
  done
  # zlib1g-dev's libz.so points at /lib/$MULTIARCH/libz.so.1.2.13: point it into the prefix.
  if [[ -L "$PREFIX/usr/lib/$MULTIARCH/libz.so" && -f "$PREFIX/lib/$MULTIARCH/libz.so.1.2.13" ]]; then
    ln -sf "$PREFIX/lib/$MULTIARCH/libz.so.1.2.13" "$PREFIX/usr/lib/$MULTIARCH/libz.so"
  fi
  # Debian's runtime libs (libfmt, libspdlog...) for what runs from the build tree.
  export LD_LIBRARY_PATH="$PREFIX/usr/lib/$MULTIARCH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PATH="$PATH:$PREFIX/usr/bin"
  for h in boost/dll.hpp gtest/gtest.h fmt/core.h spdlog/spdlog.h CLI/CLI.hpp toml++/toml.h zlib.h; do
    [[ -e "$PREFIX/usr/include/$h" ]] || echo "warning: $PREFIX/usr/include/$h missing"
  done
  USE_PREFIX=1
  echo "unpacked ${#debs[@]} packages ($(du -sh "$PREFIX" | cut -f1))"
  record unpack "$([[ $unpack_ok == 1 ]] && echo PASS || echo FAIL)" "${#debs[@]} .deb"
fi

# GoogleTest: Debian's libgtest.a uses the new C++ ABI. A LibTorch built with the old one
# (_GLIBCXX_USE_CXX11_ABI=0) needs gtest rebuilt from the shipped sources with that ABI.
GTEST_PREFIX=""
if [[ "$TORCH_ABI" == 0 && "$USE_PREFIX" == 1 ]]; then
  step "2b/8 rebuild GoogleTest with _GLIBCXX_USE_CXX11_ABI=0"
  GTEST_PREFIX=/tmp/cddp-gtest
  if timeout 90 cmake -S "$PREFIX/usr/src/googletest" -B /tmp/cddp-gtest-build -G Ninja \
       -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$GTEST_PREFIX" -DBUILD_GMOCK=ON \
       -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_CXX_FLAGS="-D_GLIBCXX_USE_CXX11_ABI=0" \
       >/tmp/cddp-gtest.log 2>&1 &&
     timeout 90 cmake --build /tmp/cddp-gtest-build -j "$JOBS" >>/tmp/cddp-gtest.log 2>&1 &&
     cmake --install /tmp/cddp-gtest-build >>/tmp/cddp-gtest.log 2>&1; then
    record gtest-old-abi PASS
  else
    tail -n 30 /tmp/cddp-gtest.log; record gtest-old-abi FAIL; GTEST_PREFIX=""
  fi
fi

# ---------------------------------------------------------------------------------------------
step "3/8 configure"
export CMAKE_POLICY_VERSION_MINIMUM=3.5   # CMake 4 and old package files
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
[[ -n "$NVCC" ]] && export CUDACXX="$NVCC"
# nccl.h for the NCCL backend: pip's torch brings it in the nvidia-nccl package (core/CMakeLists.txt
# looks under NCCL_HOME); without it the build has no NCCL and the nccl runs fail by name.
if [[ -z "${NCCL_HOME:-}" ]]; then
  nccl_dir="$("$PY" -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null || true)"
  if [[ -n "$nccl_dir" && -e "$nccl_dir/include/nccl.h" ]]; then export NCCL_HOME="$nccl_dir"; fi
fi
echo "NCCL_HOME: ${NCCL_HOME:-(unset)}"
common_args=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DCDDP_BUILD_TESTS=ON)
prefix_path="$TORCH_PREFIX"
[[ -n "$GTEST_PREFIX" ]] && prefix_path="$prefix_path;$GTEST_PREFIX"
if [[ "$USE_PREFIX" == 1 ]]; then
  prefix_path="$prefix_path;$PREFIX/usr;$PREFIX/usr/lib/$MULTIARCH"
  common_args+=("-DCMAKE_LIBRARY_PATH=$PREFIX/usr/lib/$MULTIARCH" "-DCMAKE_INCLUDE_PATH=$PREFIX/usr/include")
fi
prefix_path="${prefix_path#;}"
[[ -n "$prefix_path" ]] && common_args+=("-DCMAKE_PREFIX_PATH=$prefix_path")
[[ -n "$NVCC" ]] && common_args+=("-DCMAKE_CUDA_COMPILER=$NVCC" "-DCUDAToolkit_ROOT=$(dirname "$(dirname "$NVCC")")")
if command -v ccache >/dev/null; then
  common_args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(dirname "$ROOT")}"
fi
CONF_DEADLINE=$(( $(elapsed) + $(allow $PHASE_CONFIGURE_S $((MIN_BUILD_S + MIN_TESTS_S + MIN_TRAIN_S + MIN_BENCH_S + MIN_REPORT_S))) ))
configure() {  # configure LABEL SRC [extra args]
  local label=$1 src=$2; shift 2
  local t=$((CONF_DEADLINE - $(elapsed)))
  ((t < 5)) && { echo "--- configure ($label): no time left"; return 1; }
  echo "--- configure ($label, ${t}s): cmake -S $src -B $BUILD ${common_args[*]} $*"
  rm -rf "$BUILD"
  timeout -k 5 "$t" cmake -S "$src" -B "$BUILD" "${common_args[@]}" "$@" >>"$OUTDIR/build.log" 2>&1
}
: >"$OUTDIR/build.log"
configured=""
if [[ "${CDDP_CHECK_FORCE_MINIMAL:-0}" != 1 ]] && configure full "$ROOT"; then
  configured=full
elif [[ "${CDDP_CHECK_FORCE_MINIMAL:-0}" != 1 ]] &&
     configure "no bench" "$ROOT" -DCDDP_BUILD_BENCH=OFF; then
  configured=reduced
else
  # Last resort: a minimal project over the same sources — core, the CUDA top-k library and
  # tests/gpu — so that the kernels still get their GPU run when the rest does not configure.
  MINI=/tmp/cddp-mini; rm -rf "$MINI"; mkdir -p "$MINI/tests"
  for d in core plugins tools cmake; do ln -s "$ROOT/$d" "$MINI/$d"; done
  ln -s "$ROOT/tests/gpu" "$MINI/tests/gpu"
  "$PY" - "$ROOT" "$MINI" <<'PYEOF'
import sys
root, mini = sys.argv[1], sys.argv[2]
top = open(f"{root}/CMakeLists.txt").read()
head = top[: top.index("add_subdirectory(core)")]
tests = open(f"{root}/tests/CMakeLists.txt").read().split("file(GLOB")[0]
open(f"{mini}/CMakeLists.txt", "w").write(
    head.replace("include(CddpInstall)", "")
    + "add_subdirectory(core)\nadd_subdirectory(plugins/common)\nadd_subdirectory(plugins/topk/cuda)\n"
    + tests + "\nadd_subdirectory(tests/gpu)\n")
PYEOF
  if configure minimal "$MINI"; then configured=minimal; fi
fi
grep -E "^-- cddp|CUDA compiler|nvcc not found|CMake Error" "$OUTDIR/build.log" | head -n 40
if [[ -z "$configured" ]]; then
  tail -n 60 "$OUTDIR/build.log"
  record configure FAIL "all three attempts failed (build.log)"
  exit 1
fi
has_cuda=OFF
grep -q "cddp: LibTorch .*(CUDA: ON)" "$OUTDIR/build.log" && has_cuda=ON
record configure PASS "$configured tree, LibTorch CUDA: $has_cuda"
if [[ "$has_cuda" != ON ]]; then
  record cuda-libtorch "$(skip_or_fail)" "CDDP_TORCH_HAS_CUDA is OFF: nothing CUDA gets built"
fi

# ---------------------------------------------------------------------------------------------
step "4/8 build"
mapfile -t ninja_targets < <(ninja -C "$BUILD" -t targets all 2>/dev/null | cut -d: -f1 | sort -u)
have_target() { printf '%s\n' "${ninja_targets[@]}" | grep -qx "$1"; }
# The gpu tests: name, working directory, command (shell-quoted), one per line.
list_gpu_tests() {
  ctest --test-dir "$BUILD" -L gpu --show-only=json-v1 2>/dev/null | "$PY" -c '
import json, shlex, sys
for t in json.load(sys.stdin).get("tests", []):
    cmd = t.get("command") or []
    wd = ""
    for p in t.get("properties", []):
        if p.get("name") == "WORKING_DIRECTORY":
            wd = p.get("value", "")
    if cmd:
        print(t["name"] + "\t" + wd + "\t" + shlex.join(cmd))
'
}
mapfile -t GPU_TESTS < <(list_gpu_tests)
targets=()
for line in "${GPU_TESTS[@]}"; do
  exe="$(basename "$(cut -f3 <<<"$line" | "$PY" -c 'import shlex,sys; print(shlex.split(sys.stdin.read())[0])')")"
  have_target "$exe" && targets+=("$exe")
done
for t in bench_topk_cuda cddp-train cddp_topk_cuda; do have_target "$t" && targets+=("$t"); done
while read -r t; do targets+=("$t"); done < <(printf '%s\n' "${ninja_targets[@]}" | grep -E '^cddp_plugin_[a-z0-9_]+$')
mapfile -t targets < <(printf '%s\n' "${targets[@]}" | grep -v '^$' | sort -u)
echo "targets: ${targets[*]:-none}"
if ((${#targets[@]} == 0)); then
  record build "$(skip_or_fail)" "no targets to build"
else
  bt=$(allow $PHASE_BUILD_S $((MIN_TESTS_S + MIN_TRAIN_S + MIN_BENCH_S + MIN_REPORT_S)))
  echo "ninja -j$JOBS -k 0 (timeout ${bt}s)"
  if timeout -k 5 "$bt" ninja -C "$BUILD" -j "$JOBS" -k 0 "${targets[@]}" >>"$OUTDIR/build.log" 2>&1; then
    record build PASS "${#targets[@]} targets"
  else
    grep -E "error|FAILED" "$OUTDIR/build.log" | head -n 40
    record build FAIL "see build.log (continuing with what was built)"
  fi
fi

# ---------------------------------------------------------------------------------------------
step "5/8 GPU tests, one at a time, each under timeout"
# run_one NAME SECONDS LOGFILE WORKDIR CMD... — echoes "rc seconds"; on the way to a timeout,
# when STACKS=1 and gdb exists, the test's threads' stacks go to LOGFILE.stacks.
run_one() {
  local name=$1 secs=$2 log=$3 wd=$4; shift 4
  local t0=$SECONDS
  (cd "${wd:-$BUILD}" && exec timeout -k 5 "$secs" "$@") >"$log" 2>&1 &
  local tpid=$!
  if [[ "${STACKS:-0}" == 1 ]] && command -v gdb >/dev/null && ((secs > 8)); then
    # Watch: 4 s before the timeout, dump the stacks of the test (timeout's child).
    local until=$((t0 + secs - 4))
    while kill -0 "$tpid" 2>/dev/null && ((SECONDS < until)); do sleep 1; done
    if kill -0 "$tpid" 2>/dev/null; then
      local kids
      kids="$(cat /proc/"$tpid"/task/*/children 2>/dev/null) $(for c in $(cat /proc/"$tpid"/task/*/children 2>/dev/null); do cat /proc/"$c"/task/*/children 2>/dev/null; done)"
      for k in $kids; do
        echo "--- stacks of pid $k ($(tr '\0' ' ' </proc/"$k"/cmdline 2>/dev/null | cut -c1-120))" >>"$log.stacks"
        timeout 20 gdb -p "$k" -batch -ex "thread apply all bt 25" >>"$log.stacks" 2>&1
      done
    fi
  fi
  wait "$tpid"
  local rc=$?
  echo "$rc $((SECONDS - t0))"
}
# classify RC LOG SECONDS — pass / skip / fail (rc=N) / hang (...)
classify() {
  local rc=$1 log=$2 secs=$3
  if ((rc == 124 || rc == 137)); then
    local where
    where="$(grep -E '^\[ RUN      \]' "$log" | tail -n 1 | awk '{print $4}')"
    if [[ -n "$where" ]] && grep -qE "^\[ +(OK|FAILED|SKIPPED) +\] ${where//./\\.}( |$)" "$log"; then
      echo "hang after $where had finished: in teardown or exit (no exit within ${secs} s)"
    else
      echo "hang${where:+ in $where} (no exit within ${secs} s)"
    fi
  elif ((rc == 77)); then
    echo "skip: $(grep -m1 -i 'skip' "$log" | cut -c1-160)"
  elif ((rc == 0)); then
    local passed skipped
    passed="$(grep -E '^\[  PASSED  \] [0-9]+ test' "$log" | tail -n 1 | awk '{print $4}')"
    skipped="$(grep -E '^\[  SKIPPED \] [0-9]+ test' "$log" | tail -n 1 | awk '{print $4}')"
    if [[ "${passed:-1}" == 0 && -n "$skipped" ]]; then
      echo "skip: $(grep -m1 -E 'Skipped|skipped' "$log" | cut -c1-160)"
    elif [[ -n "$skipped" ]]; then
      echo "pass ($passed passed, $skipped skipped)"
    else
      echo "pass"
    fi
  else
    echo "fail (rc=$rc)"
  fi
}
# test_once NAME TIMEOUT WORKDIR CMD... — runs, and on fail/hang reruns once with
# CUDA_LAUNCH_BLOCKING=1 CDDP_CUDA_TRACE=1 (only the failed/hung cases when they are named).
# Appends one TSV line to $TSV_OUT.
test_once() {
  local name=$1 secs=$2 wd=$3; shift 3
  local log="$OUTDIR/tests/$name.log"
  read -r rc took < <(STACKS=0 run_one "$name" "$secs" "$log" "$wd" "$@")
  local status detail=""
  status="$(classify "$rc" "$log" "$secs")"
  echo "$name: $status (${took}s)"
  case "$status" in
    hang*|fail*)
      local filter="" cases
      cases="$(grep -E '^\[  FAILED  \] [A-Za-z_0-9]+\.[A-Za-z_0-9/]+' "$log" | awk '{print $4}' | sort -u | paste -sd:)"
      # A hang inside a case: rerun that case. A hang after the last case had finished
      # (teardown, exit): rerun everything.
      [[ "$status" == hang\ in* ]] && cases="$(grep -E '^\[ RUN      \]' "$log" | tail -n 1 | awk '{print $4}')"
      [[ "$status" == hang\ after* ]] && cases=""
      detail="$(grep -m3 -E 'Failure|error|Error|what\(\)' "$log" | tr '\n' ' ' | cut -c1-240)"
      local rerun=("$@")
      if [[ -n "$cases" && "$1" != sh && "$1" != bash ]]; then rerun+=("--gtest_filter=$cases"); fi
      local rs
      rs=$(allow "$RERUN_TIMEOUT" $((MIN_TRAIN_S + MIN_BENCH_S + MIN_REPORT_S)))
      echo "$name: rerun with CUDA_LAUNCH_BLOCKING=1 CDDP_CUDA_TRACE=1 ${cases:+(--gtest_filter=$cases) }(${rs}s)"
      local rlog="$OUTDIR/tests/$name.rerun.log" rrc rtook
      read -r rrc rtook < <(CUDA_LAUNCH_BLOCKING=1 CDDP_CUDA_TRACE=1 STACKS=1 \
        run_one "$name" "$rs" "$rlog" "$wd" "${rerun[@]}")
      local rstatus last
      rstatus="$(classify "$rrc" "$rlog" "$rs")"
      last="$(grep -E '^cddp-cuda: ' "$rlog" | tail -n 1)"
      echo "$name: rerun: $rstatus (${rtook}s); last CUDA call logged: ${last:-none}"
      [[ -s "$rlog.stacks" ]] && echo "$name: stacks of the hung rerun in $(basename "$rlog").stacks"
      detail="$detail | rerun (CUDA_LAUNCH_BLOCKING=1): $rstatus; last CUDA call: ${last:-none logged}"
      ;;
  esac
  printf '%s\t%s\t%s\t%s\n' "$name" "$(tsv_clean "$status")" "$took" "$(tsv_clean "$detail")" >>"$TSV_OUT"
}

timeout_for() {  # per-test timeout: CDDP_CHECK_TIMEOUT_<name> or the defaults
  local v="CDDP_CHECK_TIMEOUT_$1"
  if [[ -n "${!v:-}" ]]; then echo "${!v}"; return; fi
  case "$1" in
    topk_cuda_test) echo $((TEST_TIMEOUT > 90 ? TEST_TIMEOUT : 90)) ;;  # 2^31-element case
    *) echo "$TEST_TIMEOUT" ;;
  esac
}

TESTS_END=$(( $(elapsed) + $(allow $PHASE_TESTS_S $((MIN_TRAIN_S + MIN_BENCH_S + MIN_REPORT_S))) ))
TSV_OUT="$TESTS_TSV"
for want in topk_cuda_test compressed_sgd_cuda_test; do
  printf '%s\n' "${GPU_TESTS[@]}" | grep -q "^$want"$'\t' ||
    printf '%s\t%s\t\t%s\n' "$want" "not run: $(
      [[ "$has_cuda" == ON ]] && echo "not built (build failed?)" || echo "not built: no CUDA LibTorch")" "" >>"$TESTS_TSV"
done
for line in "${GPU_TESTS[@]}"; do
  name="$(cut -f1 <<<"$line")"; wd="$(cut -f2 <<<"$line")"
  mapfile -t cmd < <(cut -f3 <<<"$line" | "$PY" -c 'import shlex,sys; print("\n".join(shlex.split(sys.stdin.read())))')
  room=$((TESTS_END - $(elapsed)))
  secs=$(timeout_for "$name")
  ((secs > room)) && secs=$room
  if ((secs < 5)); then
    printf '%s\t%s\t\t%s\n' "$name" "not run: the tests phase budget was spent" "" >>"$TESTS_TSV"
    continue
  fi
  if [[ ! -x "${cmd[0]}" && "${cmd[0]}" != sh ]]; then
    printf '%s\t%s\t\t%s\n' "$name" "not run: not built" "${cmd[0]}" >>"$TESTS_TSV"
    continue
  fi
  test_once "$name" "$secs" "$wd" "${cmd[@]}"
done
if ((${#GPU_TESTS[@]} == 0)); then echo "no gpu-labelled tests in $BUILD"; fi
if grep -qE $'\t(fail|hang|not run: not built \\(build)' "$TESTS_TSV"; then
  record "gpu tests" FAIL "$(cut -f1,2 "$TESTS_TSV" | tr '\t\n' ': ' | cut -c1-300)"
elif grep -qE $'\t(skip|not run)' "$TESTS_TSV"; then
  record "gpu tests" "$(skip_or_fail)" "$(cut -f1,2 "$TESTS_TSV" | tr '\t\n' ': ' | cut -c1-300)"
else
  record "gpu tests" PASS "$(cut -f1,2 "$TESTS_TSV" | tr '\t\n' ': ' | cut -c1-300)"
fi

if [[ "$DRY" == 1 ]]; then
  # Self-test of the hang path: a "test" that logs a CUDA call the way the trace does, then
  # never exits. It must come out as a named hang, rerun, with that call as the last one.
  TSV_OUT="$SELFTEST_TSV"
  fake='echo "[ RUN      ] SelfTest.HangsAfterALaunch"; echo "cddp-cuda: > k_selftest<hang> grid=1 block=32 smem=0 stream=0"; exec sleep 300'
  RERUN_TIMEOUT_SAVED=$RERUN_TIMEOUT; RERUN_TIMEOUT=3
  test_once selftest_hang 3 "$OUTDIR" bash -c "$fake"
  test_once selftest_fail 5 "$OUTDIR" bash -c 'echo "cddp-cuda: < k_selftest<fail>: invalid argument"; exit 3'
  RERUN_TIMEOUT=$RERUN_TIMEOUT_SAVED
  if grep -qE $'^selftest_hang\thang in SelfTest.HangsAfterALaunch \\(no exit within 3 s\\)\t.*last CUDA call: cddp-cuda: > k_selftest<hang>' "$SELFTEST_TSV" &&
     grep -qE $'^selftest_fail\tfail \\(rc=3\\)\t.*last CUDA call: cddp-cuda: < k_selftest<fail>: invalid argument' "$SELFTEST_TSV"; then
    record "self-test: hang, rerun" PASS "a hang and a failure were named, rerun, their last CUDA call logged"
  else
    record "self-test: hang, rerun" FAIL "$(tr '\t\n' '  ' <"$SELFTEST_TSV" | cut -c1-300)"
  fi
fi

# ---------------------------------------------------------------------------------------------
step "6/8 training (cddp-train, configs/gpu_check.toml)"
TRAIN_BIN="$BUILD/bin/cddp-train"
RUNS=("simple_cnn 1 nccl" "resnet18 1 nccl" "simple_cnn 2 gloo" "resnet18 2 gloo")
TRAIN_END=$(( $(elapsed) + $(allow $PHASE_TRAIN_S $((MIN_BENCH_S + MIN_REPORT_S))) ))
# train_run MODEL WORLD BACKEND DEVICE STEPS SECS TSV — one cddp-train run; appends a TSV row.
train_run() {
  local model=$1 world=$2 backend=$3 device=$4 steps=$5 secs=$6 tsv=$7
  local dir="$OUTDIR/train/$model-w$world-$backend-$device"
  rm -rf "$dir"; mkdir -p "$dir"
  local log="$dir/train.log" t0=$SECONDS
  local sets=(--set "model.name=$model" --set "distributed.backend=$backend"
              --set "run.device=$device" --set "run.max_steps=$steps"
              --set "run.output_dir=$dir" --set "distributed.timeout_s=20" --nproc-per-node "$world")
  [[ "$device" == cpu ]] && sets+=(--set "run.log_every=2" --set "run.threads=1")
  echo "--- $model, world size $world, $backend, $device, $steps steps (timeout ${secs}s)"
  # The launcher picks a free port itself. distributed.timeout_s bounds every collective and
  # the launcher's grace before SIGKILL, so a stuck run ends within secs + 25 s.
  timeout -k 25 "$secs" "$TRAIN_BIN" train \
    --config "$ROOT/configs/gpu_check.toml" "${sets[@]}" >"$log" 2>&1
  local rc=$? status
  case $rc in
    0) status="ok" ;;
    124|137) status="timeout after ${secs} s" ;;
    *) status="rc=$rc: $(grep -m2 -iE 'error|failed|refus' "$log" | tr '\n' ' ' | cut -c1-200)" ;;
  esac
  echo "    $status ($((SECONDS - t0)) s); last lines:"; tail -n 3 "$log" | sed 's/^/      /'
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$model" "$world" "$backend" "$rc" "$dir/metrics.jsonl" \
    "$(tsv_clean "$status")" "$((SECONDS - t0))" >>"$tsv"
}
if [[ "${CDDP_CHECK_SKIP_TRAIN:-0}" == 1 ]]; then
  for r in "${RUNS[@]}"; do read -r m w b <<<"$r"
    printf '%s\t%s\t%s\t\t\t%s\t\n' "$m" "$w" "$b" "not run: CDDP_CHECK_SKIP_TRAIN=1" >>"$TRAIN_TSV"; done
  record training SKIP "CDDP_CHECK_SKIP_TRAIN=1"
elif [[ ! -x "$TRAIN_BIN" ]]; then
  for r in "${RUNS[@]}"; do read -r m w b <<<"$r"
    printf '%s\t%s\t%s\t\t\t%s\t\n' "$m" "$w" "$b" "not run: cddp-train not built" >>"$TRAIN_TSV"; done
  record training "$(skip_or_fail)" "cddp-train not built ($configured tree)"
elif [[ "$TORCH_CUDA" != True ]]; then
  for r in "${RUNS[@]}"; do read -r m w b <<<"$r"
    printf '%s\t%s\t%s\t\t\t%s\t\n' "$m" "$w" "$b" "not run: no CUDA device (dry run)" >>"$TRAIN_TSV"; done
  # Plumbing only: the same commands on the CPU for a few steps (gloo: nccl needs CUDA), into
  # their own report under $OUT — their numbers are CPU numbers and never go into docs/.
  : >"$OUTDIR/training-cpu.tsv"
  for r in "${RUNS[@]}"; do read -r m w b <<<"$r"
    room=$((TRAIN_END - $(elapsed))); ((room < 10)) && break
    train_run "$m" "$w" gloo cpu 4 $((room < 60 ? room : 60)) "$OUTDIR/training-cpu.tsv"
  done
  "$PY" "$ROOT/tools/gpu/check_report.py" --training "$OUTDIR/training-cpu.tsv" \
    --commit "$COMMIT" --device "cpu (dry-run plumbing; not GPU numbers)" --torch "$TORCH_VERSION" \
    --dry-run --out-json "$OUTDIR/dry-run-cpu-plumbing.json" --out-md "$OUTDIR/dry-run-cpu-plumbing.md"
  ok_runs=$(awk -F'\t' '$4 == "0"' "$OUTDIR/training-cpu.tsv" | wc -l)
  with_numbers=$("$PY" -c 'import json,sys; print(sum(1 for t in json.load(open(sys.argv[1]))["training"] if t["step_ms"] is not None))' "$OUTDIR/dry-run-cpu-plumbing.json" 2>/dev/null || echo 0)
  if ((ok_runs == ${#RUNS[@]} && with_numbers == ${#RUNS[@]})); then
    record "training (cpu plumbing)" PASS "4 runs on the CPU, metrics parsed: $OUTDIR/dry-run-cpu-plumbing.md"
  else
    record "training (cpu plumbing)" FAIL "$ok_runs/${#RUNS[@]} CPU runs ok, $with_numbers parsed (see $OUTDIR/train)"
  fi
else
  for r in "${RUNS[@]}"; do read -r m w b <<<"$r"
    room=$((TRAIN_END - $(elapsed)))
    if ((room < 10)); then
      printf '%s\t%s\t%s\t\t\t%s\t\n' "$m" "$w" "$b" "not run: the training phase budget was spent" >>"$TRAIN_TSV"
      continue
    fi
    train_run "$m" "$w" "$b" cuda "$TRAIN_STEPS" $((room < TRAIN_TIMEOUT ? room : TRAIN_TIMEOUT)) "$TRAIN_TSV"
  done
  ok_runs=$(awk -F'\t' '$4 == "0"' "$TRAIN_TSV" | wc -l)
  record training "$([[ $ok_runs == "${#RUNS[@]}" ]] && echo PASS || echo FAIL)" "$ok_runs/${#RUNS[@]} runs ok"
fi

# ---------------------------------------------------------------------------------------------
step "7/8 bench_topk_cuda"
if [[ "${CDDP_CHECK_SKIP_BENCH:-0}" == 1 ]]; then
  BENCH_STATUS="not run: CDDP_CHECK_SKIP_BENCH=1"
  record bench_topk_cuda SKIP "$BENCH_STATUS"
elif [[ -x "$BUILD/bin/bench_topk_cuda" && "$TORCH_CUDA" == True ]]; then
  bt=$(allow $PHASE_BENCH_S $MIN_REPORT_S)
  timeout -k 5 "$bt" "$BUILD/bin/bench_topk_cuda" --md "$OUTDIR/bench_topk_cuda.md" \
    --json "$OUTDIR/bench_topk_cuda.json" >"$OUTDIR/bench.log" 2>&1
  brc=$?
  cat "$OUTDIR/bench.log"
  if ((brc == 0)) && [[ -s "$OUTDIR/bench_topk_cuda.json" ]]; then
    BENCH_STATUS="measured"
    record bench_topk_cuda PASS "$(grep -E 'targets' "$OUTDIR/bench.log" | tail -n 1)"
  else
    rm -f "$OUTDIR/bench_topk_cuda.json"  # a partial file is no measurement
    BENCH_STATUS="not run: bench_topk_cuda rc=$brc$( ((brc == 124 || brc == 137)) && echo " (timeout ${bt} s)")"
    record bench_topk_cuda FAIL "$BENCH_STATUS"
  fi
else
  if [[ -x "$BUILD/bin/bench_topk_cuda" ]]; then BENCH_STATUS="not run: no CUDA device"
  else BENCH_STATUS="not run: bench_topk_cuda not built$([[ "$has_cuda" != ON ]] && echo " (no CUDA LibTorch)")"; fi
  record bench_topk_cuda "$(skip_or_fail)" "$BENCH_STATUS"
fi

# ---------------------------------------------------------------------------------------------
step "8/8 report"
write_report
