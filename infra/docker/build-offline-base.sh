#!/usr/bin/env bash
# Build the offline base image `chlb-base:offline` without pulling anything from a registry:
# a Debian (bookworm) minbase root file system made by debootstrap from the SAME apt mirror this
# machine uses, with python3, python3-venv, ca-certificates and redis-server, imported with
# `docker import`. It is the base of the replica and balancer images in the offline path
# (LB_BASE_IMAGE=chlb-base:offline) and doubles as the Redis image (REDIS_IMAGE=chlb-base:offline).
#
#   infra/docker/build-offline-base.sh            # no-op when the image already exists
#   FORCE=1 infra/docker/build-offline-base.sh    # rebuild the root fs and re-import
#
# Environment:
#   IMAGE      image to create (default chlb-base:offline)
#   SUITE      Debian suite (default: this machine's VERSION_CODENAME, i.e. bookworm)
#   MIRROR     apt mirror (default: the one in /etc/apt/sources.list{,.d/*} serving SUITE)
#   CACHE_DIR  where the .deb files and the root fs tarball are kept between runs
#              (default ${XDG_CACHE_HOME:-~/.cache}/chlb)
#   FORCE=1    rebuild even if the image exists, and ignore the cached root fs tarball
#   TIMEOUT_S  upper bound for debootstrap (default 900)
#
# Needs root (debootstrap chroots), debootstrap and a running daemon (ensure-docker.sh).
set -euo pipefail

IMAGE="${IMAGE:-chlb-base:offline}"
SUITE="${SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}"
CACHE_DIR="${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/chlb}"
FORCE="${FORCE:-0}"
TIMEOUT_S="${TIMEOUT_S:-900}"
PACKAGES="python3,python3-venv,ca-certificates,redis-server"
DOCKER="${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}"
export DOCKER_HOST="${DOCKER_HOST:-unix:///var/run/docker.sock}"
# Bump when the root fs recipe below changes, so a cached tarball of the old recipe is not reused.
RECIPE=1

say() { printf 'build-offline-base: %s\n' "$*" >&2; }

if [ "$FORCE" != 1 ] && "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  say "$IMAGE exists (FORCE=1 rebuilds it)"
  exit 0
fi

# --- the mirror apt uses on this machine --------------------------------------------------------
# Prints "URI SUITE" for every enabled `deb` entry, from one-line (.list) and deb822 (.sources)
# files alike.
apt_entries() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" {
           i = 2
           if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
           print $i, $(i + 1)
         }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'function flush(   n, m, u, s, a, b) {
           if (types ~ /(^| )deb( |$)/ && tolower(enabled) != "no") {
             n = split(uris, u, " "); m = split(suites, s, " ")
             for (a = 1; a <= n; a++) for (b = 1; b <= m; b++) print u[a], s[b]
           }
           types = uris = suites = ""; enabled = "yes"
         }
         BEGIN { enabled = "yes" }
         /^[[:space:]]*#/ { next }
         /^[[:space:]]*$/ { flush(); next }
         {
           key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "")
           if (key == "types") types = $0
           else if (key == "uris") uris = $0
           else if (key == "suites") suites = $0
           else if (key == "enabled") enabled = $0
         }
         END { flush() }' "$f"
  done
}

mirror_for() { apt_entries | awk -v s="$1" '$2 == s { sub(/\/+$/, "", $1); print $1; exit }'; }

MIRROR="${MIRROR:-$(mirror_for "$SUITE")}"
if [ -z "$MIRROR" ]; then
  say "no apt source for suite $SUITE in /etc/apt/sources.list{,.d/*}; set MIRROR=..."
  exit 1
fi
UPDATES_MIRROR="$(mirror_for "$SUITE-updates")"
SECURITY_MIRROR="$(mirror_for "$SUITE-security")"
say "suite $SUITE from $MIRROR${SECURITY_MIRROR:+ (security: $SECURITY_MIRROR)}"

# --- root fs tarball (cached) -------------------------------------------------------------------
key="$(printf '%s\n' "$RECIPE" "$SUITE" "$MIRROR" "$UPDATES_MIRROR" "$SECURITY_MIRROR" \
  "$PACKAGES" | sha256sum | cut -c1-12)"
TARBALL="$CACHE_DIR/rootfs-$SUITE-$key.tar"
mkdir -p "$CACHE_DIR/debs"

if [ "$FORCE" = 1 ] || [ ! -s "$TARBALL" ]; then
  started=$SECONDS
  work="$(mktemp -d "${TMPDIR:-/tmp}/chlb-rootfs.XXXXXX")"
  rootfs="$work/rootfs"
  cleanup() {
    # debootstrap mounts /proc and /sys in the chroot; never leave them behind (or rm into them).
    local m
    for m in "$rootfs/proc" "$rootfs/sys" "$rootfs/dev/pts"; do
      if mountpoint -q "$m" 2>/dev/null; then umount -l "$m" || true; fi
    done
    rm -rf --one-file-system "$work"
  }
  trap cleanup EXIT

  say "debootstrap --variant=minbase $SUITE (packages: $PACKAGES)"
  timeout "$TIMEOUT_S" debootstrap --variant=minbase --include="$PACKAGES" \
    --cache-dir="$CACHE_DIR/debs" "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
    say "debootstrap failed; last lines of its log:"
    tail -n 40 "$work/debootstrap.log" >&2
    tail -n 40 "$rootfs/debootstrap/debootstrap.log" >&2 2>/dev/null || true
    exit 1
  }

  # Point apt in the image at the same mirrors, and take the point release's updates and
  # security fixes when the machine has those sources too.
  {
    echo "deb $MIRROR $SUITE main"
    [ -z "$UPDATES_MIRROR" ] || echo "deb $UPDATES_MIRROR $SUITE-updates main"
    [ -z "$SECURITY_MIRROR" ] || echo "deb $SECURITY_MIRROR $SUITE-security main"
  } >"$rootfs/etc/apt/sources.list"
  if [ -n "$UPDATES_MIRROR$SECURITY_MIRROR" ]; then
    # Check-Valid-Until off: the mirror may be a dated snapshot (signatures are still checked).
    say "apt-get upgrade in the root fs"
    mount -t proc proc "$rootfs/proc"
    timeout "$TIMEOUT_S" chroot "$rootfs" /bin/sh -c \
      'export DEBIAN_FRONTEND=noninteractive
       apt-get -o Acquire::Check-Valid-Until=false update -q && apt-get -y -q upgrade' \
      >"$work/upgrade.log" 2>&1 || {
      say "apt-get upgrade failed; last lines:"
      tail -n 30 "$work/upgrade.log" >&2
      exit 1
    }
    umount "$rootfs/proc"
  fi
  # Slim it down: caches, indexes, docs; /data is where redis-server keeps its files (the same
  # directory as in the official redis image).
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/tmp/* "$rootfs"/debootstrap
  mkdir -p "$rootfs/data"
  : >"$rootfs/etc/machine-id" 2>/dev/null || true

  tar --numeric-owner --xattrs -C "$rootfs" \
    --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' \
    -cf "$TARBALL.$$.tmp" .
  mv "$TARBALL.$$.tmp" "$TARBALL"
  # Older tarballs of other recipes or mirrors are dead weight.
  find "$CACHE_DIR" -maxdepth 1 -name "rootfs-*.tar" ! -path "$TARBALL" -delete
  say "root fs ready in $((SECONDS - started))s: $TARBALL ($(du -h "$TARBALL" | cut -f1))"
else
  say "using cached root fs $TARBALL"
fi

# --- import -------------------------------------------------------------------------------------
"$DOCKER" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "debootstrap --variant=minbase $SUITE from $MIRROR + $PACKAGES" \
  "$TARBALL" "$IMAGE" >/dev/null
say "imported $IMAGE ($("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=iec))"
