#!/usr/bin/env bash
# Make sure a Docker daemon answers on this machine, and the tools the Docker deployment needs are
# installed. Idempotent: installs only what is missing (Debian packages docker.io, docker-compose,
# debootstrap), starts dockerd only if `docker info` fails, and waits (bounded) until it answers.
#
#   infra/docker/ensure-docker.sh          # CI and `make up-offline` call it
#
# Environment:
#   DOCKER_HOST      daemon socket (default unix:///var/run/docker.sock, where dockerd listens)
#   DOCKERD_LOG      where a dockerd started here logs (default /tmp/dockerd.log)
#   DOCKERD_ARGS     extra dockerd flags, e.g. "--storage-driver=vfs" where overlayfs is missing
#   DOCKERD_WAIT_S   how long to wait for the daemon to answer (default 60)
#
# The daemon is the one from docker.io (/usr/sbin/dockerd). The client used here is
# /usr/bin/docker from the same package; any other `docker` on PATH (e.g. a newer
# /usr/local/bin/docker) talks to the same socket and negotiates the API version down.
set -euo pipefail

export DOCKER_HOST="${DOCKER_HOST:-unix:///var/run/docker.sock}"
DOCKERD=/usr/sbin/dockerd
DOCKER=/usr/bin/docker
LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"
WAIT_S="${DOCKERD_WAIT_S:-60}"
PIDFILE=/var/run/docker.pid

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

say() { printf 'ensure-docker: %s\n' "$*" >&2; }

# A dockerd process that runs: not gone and not a zombie (where PID 1 does not reap orphans, as
# in some sandboxes, a killed daemon stays a zombie and `kill -0` still succeeds).
alive() {
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)"
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
dockerd_alive() { alive "$1" && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = dockerd ]; }

# --- 1. packages -------------------------------------------------------------------------------
need=()
[ -x "$DOCKERD" ] && [ -x "$DOCKER" ] || need+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  $SUDO apt-get update -q
  # With recommends: debootstrap's debian-archive-keyring/gnupg, docker.io's cgroupfs-mount.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi

# --- 2. daemon ---------------------------------------------------------------------------------
if "$DOCKER" info >/dev/null 2>&1; then
  say "daemon answers at $DOCKER_HOST"
  exit 0
fi

case "$DOCKER_HOST" in
  unix:///var/run/docker.sock | unix:///run/docker.sock) ;;
  *)
    say "no daemon answers at DOCKER_HOST=$DOCKER_HOST, and this script only starts the local one"
    exit 1
    ;;
esac

deadline=$((SECONDS + WAIT_S))
pid=""  # the daemon (or sudo) process to watch while waiting
start_daemon() {
  # Without systemd nothing may have mounted the cgroup hierarchies dockerd needs.
  if ! grep -q ' cgroup2\? ' /proc/mounts && command -v cgroupfs-mount >/dev/null 2>&1; then
    say "mounting cgroups (cgroupfs-mount)"
    $SUDO cgroupfs-mount || true
  fi
  if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && command -v systemctl >/dev/null 2>&1; then
    say "starting docker.service"
    $SUDO systemctl start docker.service && return 0
  fi
  # A daemon that died leaves its pid file behind, and dockerd refuses to start over it.
  if [ -f "$PIDFILE" ] && ! dockerd_alive "$(cat "$PIDFILE")"; then
    say "removing stale $PIDFILE"
    $SUDO rm -f "$PIDFILE"
  fi
  if [ -f "$PIDFILE" ]; then
    pid="$(cat "$PIDFILE")"
    say "dockerd already running (pid $pid); waiting for it"
  else
    say "starting $DOCKERD (log: $LOG)"
    # shellcheck disable=SC2086  # DOCKERD_ARGS is a list of flags
    $SUDO setsid "$DOCKERD" -H unix:///var/run/docker.sock ${DOCKERD_ARGS:-} \
      >>"$LOG" 2>&1 </dev/null &
    pid=$!
  fi
}

# Two attempts: right after a daemon was killed (kill -9), the containerd it managed can still be
# shutting down and the first new daemon gives up on it ("timeout waiting for containerd").
for attempt in 1 2; do
  start_daemon
  until "$DOCKER" info >/dev/null 2>&1; do
    if [ -n "$pid" ] && ! alive "$pid"; then
      say "dockerd exited (attempt $attempt); last lines of $LOG:"
      tail -n 5 "$LOG" >&2 2>/dev/null || true
      [ "$attempt" = 1 ] && [ "$SECONDS" -lt "$deadline" ] && { sleep 1; continue 2; }
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "dockerd did not answer within ${WAIT_S}s; last lines of $LOG:"
      tail -n 30 "$LOG" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.5
  done
  break
done
say "daemon answers at $DOCKER_HOST ($("$DOCKER" info --format '{{.ServerVersion}}, storage {{.Driver}}, cgroup v{{.CgroupVersion}}' 2>/dev/null))"
