#!/usr/bin/env bash
# check.sh — the one-shot GPU check, run ON THE GPU MACHINE from the repository root:
#   1. unpack .gpu-debs/*.deb (made here by tools/gpu/fetch-debs.sh) with dpkg -x into a
#      private prefix (never into /);
#   2. configure with the machine's CUDA LibTorch (python3's torch) + that prefix;
#   3. build only what the check needs: the ctest `gpu` tests, bench_topk_cuda, the plugins;
#   4. run `ctest -L gpu`, then the benchmark (even when a test failed);
#   5. write logs and results to ${OUT:-./gpu-results} and a summary at the end of stdout.
# Exit status: 0 only when every stage passed. Budget: everything inside ~7.5 minutes
# (CDDP_CHECK_BUDGET_S, default 450 s); each stage gets what is left, minus a reserve for the
# stages after it, so the benchmark and the summary always get their turn.
#
# Device call (from the lead's machine):
#   run(command="bash tools/gpu/check.sh", carry=[".gpu-debs"], timeout_s=540)
#
# Knobs (environment): OUT, CDDP_CHECK_BUDGET_S, CDDP_CHECK_JOBS (default: nproc),
#   PYTHON (default python3), CDDP_PREFIX (default /tmp/cddp-prefix),
#   CDDP_CHECK_ALLOW_NO_CUDA=1 (dry run on a machine without a CUDA LibTorch: plumbing only),
#   CDDP_CHECK_FORCE_MINIMAL=1 (go straight to the minimal-project fallback of step 3).
set -euo pipefail

T0=$(date +%s)
BUDGET=${CDDP_CHECK_BUDGET_S:-450}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUTDIR="${OUT:-$ROOT/gpu-results}"
mkdir -p "$OUTDIR"
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

elapsed() { echo $(($(date +%s) - T0)); }
left() { echo $((BUDGET - $(elapsed))); }
step() { echo; echo "=== [$(elapsed)s] STEP $*"; }
# Seconds a stage may take: what is left minus the reserve for the later stages, at least 20.
allow() { local a=$(($(left) - $1)); ((a < 20)) && a=20; echo "$a"; }

declare -a RESULTS=()
FAILED=0
record() {  # record NAME STATUS [detail]
  RESULTS+=("$(printf '%-28s %s %s' "$1" "$2" "${3:-}")")
  [[ "$2" == PASS || "$2" == SKIP ]] || FAILED=1
}

finish() {
  local rc=$?
  set +e
  step "summary (exit trap, rc=$rc)"
  {
    echo "cddp GPU check — $(date -u +%FT%TZ) — $(elapsed)s"
    for r in "${RESULTS[@]}"; do echo "  $r"; done
    if [[ -f "$OUTDIR/bench_topk_cuda.md" ]]; then echo; cat "$OUTDIR/bench_topk_cuda.md"; fi
    if [[ -f "$OUTDIR/ctest-gpu.log" ]]; then
      echo; echo "ctest -L gpu (tail):"; tail -n 25 "$OUTDIR/ctest-gpu.log"
    fi
  } >"$OUTDIR/summary.txt"
  cat "$OUTDIR/summary.txt"
  # Keep every returned file under the 16 MiB limit.
  for f in "$OUTDIR"/*.log; do
    [[ -f "$f" ]] || continue
    if (($(stat -c %s "$f") > 8 * 1024 * 1024)); then
      tail -c $((8 * 1024 * 1024)) "$f" >"$f.tmp" && mv "$f.tmp" "$f"
    fi
  done
  if ((FAILED)) || ((rc != 0)); then
    echo "=== cddp GPU check: FAILED (see $OUTDIR)"
    exec 1>&- 2>&-; wait "$TEE_PID" 2>/dev/null
    exit 1
  fi
  echo "=== cddp GPU check: PASSED"
  exec 1>&- 2>&-; wait "$TEE_PID" 2>/dev/null
  exit 0
}
trap finish EXIT

# ---------------------------------------------------------------------------------------------
step "1/6 environment"
env_report() {
  local -
  set +e +o pipefail
  echo "host: $(uname -a)"
  echo "nproc: $(nproc)  jobs: $JOBS  budget: ${BUDGET}s"
  if command -v nvidia-smi >/dev/null; then nvidia-smi -L; else echo "nvidia-smi: not found"; fi
  echo "nvcc: ${NVCC:-NOT FOUND}"
  if [[ -n "$NVCC" ]]; then "$NVCC" --version | tail -n 2; fi
  echo "cmake: $(cmake --version | head -n 1)"
  echo "ninja: $(ninja --version)"
  echo "c++: $(c++ --version | head -n 1)"
  echo "glibc: $(ldd --version 2>&1 | head -n 1)"
  return 0
}
if [[ -d /usr/local/cuda/bin ]]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
NVCC="${CUDACXX:-$(command -v nvcc || true)}"
env_report >"$OUTDIR/env.txt" 2>&1 || true
cat "$OUTDIR/env.txt"

read -r TORCH_VERSION TORCH_PREFIX TORCH_ABI TORCH_CUDA TORCH_CUDA_VER < <(
  "$PY" - <<'PYEOF' 2>/dev/null || echo "none none 1 False none"
import torch
print(torch.__version__, torch.utils.cmake_prefix_path, int(torch._C._GLIBCXX_USE_CXX11_ABI),
      torch.cuda.is_available(), torch.version.cuda)
PYEOF
)
echo "torch: $TORCH_VERSION  cuda available: $TORCH_CUDA  torch cuda: $TORCH_CUDA_VER  cxx11 abi: $TORCH_ABI" | tee -a "$OUTDIR/env.txt"
echo "torch cmake prefix: $TORCH_PREFIX" | tee -a "$OUTDIR/env.txt"
if [[ "$TORCH_VERSION" == none ]]; then
  record environment FAIL "python3 cannot import torch"
  exit 1
fi
if [[ "$TORCH_CUDA" != True && "${CDDP_CHECK_ALLOW_NO_CUDA:-0}" != 1 ]]; then
  record environment FAIL "torch.cuda.is_available() is False"
  exit 1
fi
record environment PASS "torch $TORCH_VERSION, nvcc ${NVCC:-none}"

# ---------------------------------------------------------------------------------------------
step "2/6 unpack .gpu-debs into $PREFIX"
shopt -s nullglob
debs=("$ROOT"/.gpu-debs/*.deb)
if ((${#debs[@]} == 0)); then
  echo "no .gpu-debs/*.deb: run tools/gpu/fetch-debs.sh on the dev machine and carry .gpu-debs"
  record unpack FAIL "no .deb files"
  exit 1
fi
rm -rf "$PREFIX"; mkdir -p "$PREFIX"
for f in "${debs[@]}"; do
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$f" "$PREFIX"
  else  # no dpkg: a .deb is an ar archive holding data.tar.*
    tmp="$(mktemp -d)"; (cd "$tmp" && ar x "$f")
    tar -xf "$tmp"/data.tar.* -C "$PREFIX"; rm -rf "$tmp"
  fi
done
# zlib1g-dev's libz.so points at /lib/$MULTIARCH/libz.so.1.2.13: point it into the prefix.
if [[ -L "$PREFIX/usr/lib/$MULTIARCH/libz.so" && -f "$PREFIX/lib/$MULTIARCH/libz.so.1.2.13" ]]; then
  ln -sf "$PREFIX/lib/$MULTIARCH/libz.so.1.2.13" "$PREFIX/usr/lib/$MULTIARCH/libz.so"
fi
# Debian's runtime libs (protoc's libprotoc, libfmt, libspdlog...) for tools run at build time.
# Only the prefix's usr/lib: its lib/ holds just zlib, which the machine has already.
export LD_LIBRARY_PATH="$PREFIX/usr/lib/$MULTIARCH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$PATH:$PREFIX/usr/bin"
for h in boost/dll.hpp gtest/gtest.h fmt/core.h spdlog/spdlog.h CLI/CLI.hpp toml++/toml.h zlib.h; do
  [[ -e "$PREFIX/usr/include/$h" ]] || echo "warning: $PREFIX/usr/include/$h missing"
done
echo "unpacked ${#debs[@]} packages ($(du -sh "$PREFIX" | cut -f1))"
record unpack PASS "${#debs[@]} .deb"

# GoogleTest: Debian's libgtest.a uses the new C++ ABI. A LibTorch built with the old one
# (_GLIBCXX_USE_CXX11_ABI=0) needs gtest rebuilt from the shipped sources with that ABI.
GTEST_PREFIX=""
if [[ "$TORCH_ABI" == 0 ]]; then
  step "2b/6 rebuild GoogleTest with _GLIBCXX_USE_CXX11_ABI=0"
  GTEST_PREFIX=/tmp/cddp-gtest
  if cmake -S "$PREFIX/usr/src/googletest" -B /tmp/cddp-gtest-build -G Ninja \
       -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$GTEST_PREFIX" -DBUILD_GMOCK=ON \
       -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_CXX_FLAGS="-D_GLIBCXX_USE_CXX11_ABI=0" \
       >/tmp/cddp-gtest.log 2>&1 &&
     cmake --build /tmp/cddp-gtest-build -j "$JOBS" >>/tmp/cddp-gtest.log 2>&1 &&
     cmake --install /tmp/cddp-gtest-build >>/tmp/cddp-gtest.log 2>&1; then
    record gtest-old-abi PASS
  else
    tail -n 30 /tmp/cddp-gtest.log; record gtest-old-abi FAIL; GTEST_PREFIX=""
  fi
  echo "note: old-ABI LibTorch: targets that link Debian's compiled fmt/spdlog (the trainer)"
  echo "      will not link; this check builds only the gpu tests and the benchmark."
fi

# ---------------------------------------------------------------------------------------------
step "3/6 configure"
export CMAKE_POLICY_VERSION_MINIMUM=3.5   # CMake 4 and old package files
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
[[ -n "$NVCC" ]] && export CUDACXX="$NVCC"
prefix_path="$TORCH_PREFIX"
[[ -n "$GTEST_PREFIX" ]] && prefix_path="$prefix_path;$GTEST_PREFIX"
prefix_path="$prefix_path;$PREFIX/usr;$PREFIX/usr/lib/$MULTIARCH"
common_args=(-G Ninja -DCMAKE_BUILD_TYPE=Release
  "-DCMAKE_PREFIX_PATH=$prefix_path"
  "-DCMAKE_LIBRARY_PATH=$PREFIX/usr/lib/$MULTIARCH"
  "-DCMAKE_INCLUDE_PATH=$PREFIX/usr/include"
  -DCMAKE_CUDA_ARCHITECTURES=90 -DCDDP_BUILD_TESTS=ON)
[[ -n "$NVCC" ]] && common_args+=("-DCMAKE_CUDA_COMPILER=$NVCC")
# CUDAToolkit for LibTorch's own CMake files.
if [[ -n "$NVCC" ]]; then common_args+=("-DCUDAToolkit_ROOT=$(dirname "$(dirname "$NVCC")")"); fi

configure() {  # configure LABEL SRC [extra args]
  local label=$1 src=$2; shift 2
  echo "--- configure ($label): cmake -S $src -B $BUILD ${common_args[*]} $*"
  rm -rf "$BUILD"
  timeout "$(allow 330)" cmake -S "$src" -B "$BUILD" "${common_args[@]}" "$@" \
    >>"$OUTDIR/build.log" 2>&1
}
: >"$OUTDIR/build.log"
configured=""
force_minimal="${CDDP_CHECK_FORCE_MINIMAL:-0}"  # testing the fallback
if [[ "$force_minimal" != 1 ]] && configure full "$ROOT"; then
  configured=full
elif [[ "$force_minimal" != 1 ]] &&
     configure "no trainer/bench" "$ROOT" -DCDDP_BUILD_TRAINER=OFF -DCDDP_BUILD_BENCH=OFF; then
  configured=reduced
else
  # Last resort: a minimal project over the same sources — core, the CUDA top-k library and
  # tests/gpu — so that the kernels still get their GPU run when the rest of the tree does not
  # configure on this machine.
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
    + "add_subdirectory(core)\nadd_subdirectory(plugins/topk/cuda)\n"
    + tests + "\nadd_subdirectory(tests/gpu)\n")
PYEOF
  if configure minimal "$MINI"; then configured=minimal; fi
fi
grep -E "^-- cddp|CUDA compiler|Torch|nvcc not found|CMake Error" "$OUTDIR/build.log" | head -n 40 || true
if [[ -z "$configured" ]]; then
  tail -n 60 "$OUTDIR/build.log"
  record configure FAIL "all three attempts failed (build.log)"
  exit 1
fi
has_cuda=OFF
if grep -q "cddp: LibTorch .*(CUDA: ON)" "$OUTDIR/build.log"; then has_cuda=ON; fi
record configure PASS "$configured tree, LibTorch CUDA: ${has_cuda:-?}"
if [[ "${has_cuda:-}" != ON && "${CDDP_CHECK_ALLOW_NO_CUDA:-0}" != 1 ]]; then
  record cuda-libtorch FAIL "CDDP_TORCH_HAS_CUDA is not ON: nothing CUDA gets built"
fi

# ---------------------------------------------------------------------------------------------
step "4/6 build (gpu tests, bench_topk_cuda, plugins)"
mapfile -t ninja_targets < <(ninja -C "$BUILD" -t targets all 2>/dev/null | cut -d: -f1 | sort -u)
have_target() { printf '%s\n' "${ninja_targets[@]}" | grep -qx "$1" || ninja -C "$BUILD" -t query "$1" >/dev/null 2>&1; }
targets=()
while read -r exe; do
  [[ -n "$exe" ]] && have_target "$exe" && targets+=("$exe")
done < <(ctest --test-dir "$BUILD" -L gpu --show-only=json-v1 2>/dev/null | "$PY" -c '
import json, os, sys
for t in json.load(sys.stdin).get("tests", []):
    cmd = t.get("command") or []
    if cmd: print(os.path.basename(cmd[0]))
' || true)
for t in topk_cuda_test compressed_sgd_cuda_test bench_topk_cuda cddp_topk_cuda cddp_core; do have_target "$t" && targets+=("$t"); done
while read -r t; do targets+=("$t"); done < <(printf '%s\n' "${ninja_targets[@]}" | grep -E '^cddp_plugin_[a-z0-9_]+$' || true)
mapfile -t targets < <(printf '%s\n' "${targets[@]}" | grep -v '^$' | sort -u)
echo "targets: ${targets[*]:-none}"
if ((${#targets[@]} == 0)); then
  record build "$([[ "${CDDP_CHECK_ALLOW_NO_CUDA:-0}" == 1 ]] && echo SKIP || echo FAIL)" \
    "no targets to build"
else
  bt=$(allow 150)
  echo "ninja -j$JOBS -k 0 (timeout ${bt}s)"
  if timeout "$bt" ninja -C "$BUILD" -j "$JOBS" -k 0 "${targets[@]}" >>"$OUTDIR/build.log" 2>&1; then
    record build PASS "${#targets[@]} targets"
  else
    grep -E "error|FAILED" "$OUTDIR/build.log" | head -n 40 || true
    record build FAIL "see build.log (continuing with what was built)"
  fi
fi

# ---------------------------------------------------------------------------------------------
step "5/6 ctest -L gpu"
tt=$(allow 80)
set +e
timeout "$tt" ctest --test-dir "$BUILD" -L gpu --output-on-failure --timeout "$tt" \
  --output-junit "$OUTDIR/ctest-gpu.xml" >"$OUTDIR/ctest-gpu.log" 2>&1
crc=$?
set -e
tail -n 40 "$OUTDIR/ctest-gpu.log"
if ((crc == 0)); then
  record "ctest -L gpu" PASS "$(grep -E 'tests passed' "$OUTDIR/ctest-gpu.log" | tail -n 1)"
else
  record "ctest -L gpu" FAIL "rc=$crc $(grep -E 'tests passed|tests failed' "$OUTDIR/ctest-gpu.log" | tail -n 1)"
fi
if grep -q "topk_cuda_test.*Skipped" "$OUTDIR/ctest-gpu.log"; then
  record topk_cuda_test SKIP "placeholder ran: no CUDA build (see ctest-gpu.log)"
  [[ "${CDDP_CHECK_ALLOW_NO_CUDA:-0}" == 1 ]] || FAILED=1
fi

# ---------------------------------------------------------------------------------------------
step "6/6 bench_topk_cuda"
if [[ -x "$BUILD/bin/bench_topk_cuda" ]]; then
  bt=$(allow 5)
  set +e
  timeout "$bt" "$BUILD/bin/bench_topk_cuda" "$OUTDIR/bench_topk_cuda.md" \
    >"$OUTDIR/bench.log" 2>&1
  brc=$?
  set -e
  cat "$OUTDIR/bench.log"
  if ((brc == 0)); then
    record bench_topk_cuda PASS "$(grep -E 'targets' "$OUTDIR/bench.log" | tail -n 1)"
  else
    record bench_topk_cuda FAIL "rc=$brc"
  fi
else
  record bench_topk_cuda "$([[ "${CDDP_CHECK_ALLOW_NO_CUDA:-0}" == 1 ]] && echo SKIP || echo FAIL)" \
    "not built"
fi
