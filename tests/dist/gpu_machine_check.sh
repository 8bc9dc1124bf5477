#!/usr/bin/env bash
# gpu_machine_check.sh — the dist tests against LibTorch 2.x, run ON THE GPU MACHINE from the
# repository root (its python3 holds a CUDA LibTorch 2.x with NCCL):
#   1. unpack .gpu-debs/*.deb (tools/gpu/fetch-debs.sh; Boost, GTest, gloo headers...) into a
#      private prefix, never into /;
#   2. configure a reduced tree (core, plugins, tools/launch, tools/bench, tests/dist) in /tmp
#      with that LibTorch and nccl.h from the nvidia-nccl wheel (USE_C10D_NCCL);
#   3. build the dist targets, run `ctest -L dist` (incl. the NCCL case of dist_env_test),
#      then bench_exchange.
# Logs go to ${OUT:-/tmp/dist-check}. It will not install anything system-wide or change the
# GPU's settings. Device call: run(command="bash tests/dist/gpu_machine_check.sh",
#   carry=[".gpu-debs"], timeout_s=560)
set -uo pipefail
T0=$(date +%s)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUTDIR="${OUT:-/tmp/dist-check}"
mkdir -p "$OUTDIR"
exec > >(tee -a "$OUTDIR/dist-check.log") 2>&1
step() { echo; echo "=== [$(($(date +%s) - T0))s] $*"; }
MA=x86_64-linux-gnu
PREFIX=/tmp/cddp-dist-prefix
SRC=/tmp/cddp-dist-src
BUILD=/tmp/cddp-dist-build

step "1 unpack .gpu-debs"
rm -rf "$PREFIX"; mkdir -p "$PREFIX"
for f in "$ROOT"/.gpu-debs/*.deb; do
  if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$f" "$PREFIX"
  else t=$(mktemp -d); (cd "$t" && ar x "$f" && tar -xf data.tar.* -C "$PREFIX"); rm -rf "$t"; fi
done
if [[ -L "$PREFIX/usr/lib/$MA/libz.so" && -f "$PREFIX/lib/$MA/libz.so.1.2.13" ]]; then
  ln -sf "$PREFIX/lib/$MA/libz.so.1.2.13" "$PREFIX/usr/lib/$MA/libz.so"
fi
export LD_LIBRARY_PATH="$PREFIX/usr/lib/$MA${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ls "$PREFIX/usr/include" | head -n 30

step "2 configure"
read -r TV TP ABI < <(python3 -c 'import torch; print(torch.__version__, torch.utils.cmake_prefix_path, int(torch._C._GLIBCXX_USE_CXX11_ABI))')
NCCL_INC=$(python3 - <<'EOF'
import glob, os, site
c = []
for d in site.getsitepackages():
    c += glob.glob(os.path.join(d, "nvidia", "**", "nccl.h"), recursive=True)
print(os.path.dirname(c[0]) if c else "")
EOF
)
echo "torch $TV (cxx11 abi $ABI) at $TP; nccl.h in '${NCCL_INC}'"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
[[ -d /usr/local/cuda/bin ]] && export PATH="/usr/local/cuda/bin:$PATH"
NVCC=$(command -v nvcc || true)
GTEST_PREFIX=""
if [[ "$ABI" == 0 ]]; then  # Debian's libgtest.a has the new ABI: rebuild it
  GTEST_PREFIX=/tmp/cddp-dist-gtest
  cmake -S "$PREFIX/usr/src/googletest" -B /tmp/cddp-dist-gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$GTEST_PREFIX" -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
    -DCMAKE_CXX_FLAGS="-D_GLIBCXX_USE_CXX11_ABI=0" >/dev/null && cmake --build /tmp/cddp-dist-gtest-build >/dev/null &&
    cmake --install /tmp/cddp-dist-gtest-build >/dev/null
fi
rm -rf "$SRC" "$BUILD"; mkdir -p "$SRC/tests" "$SRC/tools"
for d in CMakeLists.txt cmake core plugins examples; do ln -s "$ROOT/$d" "$SRC/$d"; done
for d in launch bench; do ln -s "$ROOT/tools/$d" "$SRC/tools/$d"; done
for d in CMakeLists.txt dist support; do ln -s "$ROOT/tests/$d" "$SRC/tests/$d"; done
export CMAKE_POLICY_VERSION_MINIMUM=3.5 TORCH_CUDA_ARCH_LIST=9.0
args=(-G Ninja -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=$TP;${GTEST_PREFIX:+$GTEST_PREFIX;}$PREFIX/usr;$PREFIX/usr/lib/$MA"
  "-DCMAKE_LIBRARY_PATH=$PREFIX/usr/lib/$MA" "-DCMAKE_INCLUDE_PATH=$PREFIX/usr/include"
  -DCMAKE_CUDA_ARCHITECTURES=90 -DCDDP_BUILD_TRAINER=OFF -DCDDP_BUILD_BENCH=ON "-DCDDP_NCCL_INCLUDE_DIR=$NCCL_INC")
[[ -n "$NVCC" ]] && args+=("-DCMAKE_CUDA_COMPILER=$NVCC" "-DCUDAToolkit_ROOT=$(dirname "$(dirname "$NVCC")")")
if ! timeout 240 cmake -S "$SRC" -B "$BUILD" "${args[@]}" >"$OUTDIR/configure.log" 2>&1; then
  tail -n 40 "$OUTDIR/configure.log"
  echo "configure with the bench failed; retrying without it"
  rm -rf "$BUILD"
  args+=(-DCDDP_BUILD_BENCH=OFF)
  timeout 200 cmake -S "$SRC" -B "$BUILD" "${args[@]}" >"$OUTDIR/configure.log" 2>&1 || { tail -n 60 "$OUTDIR/configure.log"; exit 1; }
fi
grep -E "^-- cddp" "$OUTDIR/configure.log"

step "3 build"
targets=(cddp_core cddp-launch dist_worker dist_env_test dist_launcher_test dist_training_test dist_failure_test
  cddp_plugin_topk cddp_plugin_randomk)
ninja -C "$BUILD" -t query bench_exchange >/dev/null 2>&1 && targets+=(bench_exchange)
if ! timeout 300 ninja -C "$BUILD" -j "$(nproc)" -k 0 "${targets[@]}" >"$OUTDIR/build.log" 2>&1; then
  grep -E "error|FAILED" -A3 "$OUTDIR/build.log" | head -n 80
fi
grep -c "warning" "$OUTDIR/build.log" | sed 's/^/warnings: /'

step "4 ctest -L dist"
timeout 240 ctest --test-dir "$BUILD" -L dist --output-on-failure --timeout 200 -j 4 >"$OUTDIR/ctest-dist.log" 2>&1
echo "ctest rc=$?"
grep -E "Test +#|tests passed|tests failed|Total Test" "$OUTDIR/ctest-dist.log"
"$BUILD/bin/dist_env_test" --gtest_filter='*Nccl*:*TwoThreads*' 2>&1 | tail -n 12
"$BUILD/bin/dist_training_test" --gtest_filter='*Training*' 2>&1 | grep -E "difference|OK|FAIL" | head -n 20

step "5 bench_exchange"
if [[ -x "$BUILD/bin/bench_exchange" ]]; then
  timeout 120 "$BUILD/bin/bench_exchange" --iters 11 2>&1 | tail -n 20
fi
step "done"
