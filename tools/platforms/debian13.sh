#!/usr/bin/env bash
# debian13.sh — the second tested platform: builds compressed-ddp and runs its whole test suite
# inside a Debian 13 (trixie) root, against Debian 13's LibTorch 2.6, on a Debian 12 host.
#
#   tools/platforms/debian13.sh          # the README's test command, inside the root
#   tools/platforms/debian13.sh main     # the README's main-job command, inside the root
#   tools/platforms/debian13.sh shell    # an interactive shell there, in the checkout
#
# What it does:
#   1. installs debootstrap on the host if it is missing — the only change it makes to the host;
#   2. makes the root with `debootstrap --variant=minbase trixie` in .platforms/debian13 (ignored
#      by git) unless a complete one is there; a half-made root is never reused;
#   3. in a private mount namespace (the mounts vanish when it ends, even on a crash), binds the
#      checkout at /src and .platforms/debian13-build over /src/build, so the two platforms' build
#      trees never mix, and chroots there to run the README's own command: tools/install-deps.sh
#      (which installs, inside the root, only what is missing, under Debian 13's names), then
#      cmake's presets. A second run only rebuilds.
#
# It will not touch the host's packages beyond debootstrap, build for the host, or run as
# anything but root (chroot and mount need it). Environment: CDDP_DEBIAN_MIRROR (default
# http://deb.debian.org/debian), CDDP_DEBIAN13_ROOT (default .platforms/debian13).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
mode=${1:-test}
root=${CDDP_DEBIAN13_ROOT:-$repo/.platforms/debian13}
build=$root-build
mirror=${CDDP_DEBIAN_MIRROR:-http://deb.debian.org/debian}

readme_install_build='tools/install-deps.sh && cmake --preset release && cmake --build --preset release'
case "$mode" in
  test) inside="$readme_install_build && ctest --preset release" ;;
  main) inside="$readme_install_build && build/release/bin/cddp-train train --config configs/fashion_mnist_topk.toml" ;;
  shell) inside="tools/install-deps.sh && exec bash -i" ;;
  *)
    echo "usage: $0 [test|main|shell]" >&2
    exit 2
    ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  echo "debian13.sh: needs root (debootstrap, mount and chroot); run it with sudo" >&2
  exit 1
fi

log() { echo "debian13.sh: $*"; }

# 1. debootstrap on the host.
if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap on the host"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
fi

# 2. The root. Made under a temporary name and renamed when debootstrap succeeded, so an
#    interrupted run leaves nothing that looks complete.
if [ ! -f "$root/.cddp-root-complete" ]; then
  rm -rf "$root.partial"
  mkdir -p "$(dirname "$root")"
  log "making a Debian 13 root in $root (debootstrap, about 30 s)"
  t0=$(date +%s)
  debootstrap --variant=minbase trixie "$root.partial" "$mirror" >"$root.partial.log" 2>&1 || {
    echo "debian13.sh: debootstrap failed; the last lines of $root.partial.log:" >&2
    tail -n 20 "$root.partial.log" >&2
    exit 1
  }
  rm -rf "$root"
  mv "$root.partial" "$root"
  mv "$root.partial.log" "$root.debootstrap.log"
  touch "$root/.cddp-root-complete"
  log "root made in $(( $(date +%s) - t0 )) s"
fi

# apt inside the root behaves as on the host: the same name servers, the same Acquire settings
# (proxies, a snapshot mirror's validity checks). Refreshed on every run; no host file is changed.
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
for f in /etc/apt/apt.conf.d/*; do
  [ -f "$f" ] && grep -q '^[[:space:]]*Acquire::' "$f" && cp "$f" "$root/etc/apt/apt.conf.d/" || true
done
mkdir -p "$root/src" "$build"

# 3. Bind, chroot, run. unshare gives the mounts a namespace of their own: they are gone when
#    this process ends, however it ends, and the host never sees them.
log "running inside the root: $inside"
export CDDP_ROOT="$root" CDDP_REPO="$repo" CDDP_BUILD="$build" CDDP_INSIDE="$inside"
exec unshare --mount --propagation private bash -c '
  set -euo pipefail
  mount --bind "$CDDP_ROOT" "$CDDP_ROOT"          # "/" a mount point: ip -n remounts it rslave
  mount --bind "$CDDP_REPO" "$CDDP_ROOT/src"
  mount --bind "$CDDP_BUILD" "$CDDP_ROOT/src/build"
  mount -t proc proc "$CDDP_ROOT/proc"
  mount --rbind /dev "$CDDP_ROOT/dev"
  mount --rbind /sys "$CDDP_ROOT/sys"             # ip netns (the study test) needs sysfs
  mount -t tmpfs tmpfs "$CDDP_ROOT/run"           # and a /run of its own for /run/netns
  mount -t tmpfs -o size=4g tmpfs "$CDDP_ROOT/dev/shm"
  mount -t tmpfs tmpfs "$CDDP_ROOT/tmp"
  exec chroot "$CDDP_ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" CI="${CI:-}" \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash -c "cd /src && git config --global --add safe.directory /src 2>/dev/null; $CDDP_INSIDE"
'
