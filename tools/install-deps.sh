#!/usr/bin/env bash
# install-deps.sh — installs, with apt-get, only the Debian packages that compressed-ddp needs
# and that are missing, under the names of the release it runs on: Debian 12 (bookworm,
# LibTorch 1.13) or Debian 13 (trixie, LibTorch 2.6), the two tested platforms.
# Idempotent: a second run installs nothing and takes a second.
# It does not build anything and never touches pip; it needs root (or sudo) only when
# something is actually missing.
set -euo pipefail

codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
case "$codename" in
  bookworm) boost=libboost1.81-dev ;;  # Boost.DLL with std::filesystem (BOOST_DLL_USE_STD_FS)
  trixie) boost=libboost1.83-dev ;;
  *)
    echo "install-deps: this is '${codename:-an unknown release}' (/etc/os-release); the tested platforms" \
         "are Debian 12 (bookworm) and Debian 13 (trixie)" >&2
    exit 1
    ;;
esac

packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev libgloo-dev
  "$boost" libtomlplusplus-dev libspdlog-dev libcli11-dev
  libgtest-dev libbenchmark-dev zlib1g-dev libprotobuf-dev protobuf-compiler
  libopenblas0-openmp
  dataset-fashion-mnist python3-torch python3-matplotlib
  iproute2
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages for $codename already installed"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
