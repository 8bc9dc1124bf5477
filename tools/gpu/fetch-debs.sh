#!/usr/bin/env bash
# fetch-debs.sh — run HERE (Debian 12, apt, network to the Debian mirror): downloads into
# .gpu-debs/ the .deb files that tools/gpu/check.sh unpacks (dpkg -x, into a private prefix) on
# the GPU machine, which has CUDA, cmake, ninja and a CUDA LibTorch but no apt and no network.
# Only what the build's find_package() calls need there and the machine may lack: headers,
# CMake package files, and the few shared libraries they point to.
#
# Idempotent: a package whose .deb is already there is not downloaded again; stale versions of
# a package are removed. .gpu-debs/ is git-ignored: the device run must name it in `carry`.
# Usage: tools/gpu/fetch-debs.sh [--update]   (--update: apt-get update first)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="$root/.gpu-debs"
mkdir -p "$dest"

packages=(
  # Boost.DLL (core/): headers + BoostConfig. The one big package (~10 MiB).
  libboost1.81-dev
  # GoogleTest: libgtest.a + GTestConfig (libgtest-dev), and its sources (googletest) so that
  # check.sh can rebuild it when LibTorch uses the old C++ ABI.
  libgtest-dev googletest
  # Google Benchmark (tools/bench/).
  libbenchmark-dev libbenchmark1debian
  # The trainer: toml++, fmt, spdlog, CLI11, zlib.
  libtomlplusplus-dev libtomlplusplus3
  libfmt-dev libfmt9
  libgloo-dev        # c10d's ProcessGroupGloo.hpp includes gloo headers the torch wheel does not ship
  libspdlog-dev libspdlog1.10
  libcli11-dev
  zlib1g-dev zlib1g
)
# Protobuf only once some CMakeLists asks for it.
if grep -rqsE 'find_package\((Protobuf|protobuf)' --include=CMakeLists.txt --include='*.cmake' \
     "$root/CMakeLists.txt" "$root/cmake" "$root/core" "$root/trainer" "$root/models" \
     "$root/plugins" "$root/tools" "$root/tests" 2>/dev/null; then
  packages+=(libprotobuf-dev libprotobuf32 libprotobuf-lite32 protobuf-compiler libprotoc32)
fi

if [[ "${1:-}" == "--update" ]]; then
  echo "fetch-debs: apt-get update"
  apt-get update -qq
fi

missing=()
for p in "${packages[@]}"; do
  ver="$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/{print $2}')"
  if [[ -z "$ver" || "$ver" == "(none)" ]]; then
    echo "fetch-debs: $p has no candidate version (run with --update?)" >&2
    exit 1
  fi
  # apt-get download names files NAME_VERSION_ARCH.deb with ':' in the version as '%3a'.
  fver="${ver//:/%3a}"
  if compgen -G "$dest/${p}_${fver}_*.deb" >/dev/null; then
    continue
  fi
  rm -f "$dest/${p}_"*.deb  # another version
  missing+=("$p")
done

if ((${#missing[@]})); then
  echo "fetch-debs: downloading ${missing[*]}"
  (cd "$dest" && apt-get download "${missing[@]}")
else
  echo "fetch-debs: all ${#packages[@]} packages already in $dest"
fi

# Anything in the folder that is not on the list any more goes.
for f in "$dest"/*.deb; do
  name="$(basename "$f")"; name="${name%%_*}"
  keep=0
  for p in "${packages[@]}"; do [[ "$p" == "$name" ]] && keep=1; done
  ((keep)) || { echo "fetch-debs: removing $(basename "$f") (not needed)"; rm -f "$f"; }
done

size_kib="$(du -sk "$dest" | cut -f1)"
echo "fetch-debs: $(ls "$dest"/*.deb | wc -l) .deb files, $((size_kib / 1024)) MiB in $dest"
if ((size_kib > 50 * 1024)); then
  echo "fetch-debs: WARNING: over 50 MiB; the device run carries at most 64 MiB in all" >&2
fi
