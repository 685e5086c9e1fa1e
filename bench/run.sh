#!/usr/bin/env bash
# make bench: this balancer next to HAProxy and nginx, same wrk load, same run, one table.
#
# Drives ../shared/bench/lb_bench.sh (BENCH_HARNESS to override): it starts 3 nginx backends on
# 127.0.0.1:8001-8003, the reference balancers, and ours via --cmd, runs wrk interleaved
# (A B C A B C ...), and records CPU per request. bench/compare.py then prints ratios to HAProxy.
# Environment: REPS (3), DURATION (10 s), ANCHORS (haproxy-uri,nginx-hash), PIN=1 for the pinned
# mode (balancers on CPU 0, wrk and backends on CPU 1), LB_ARGS (extra balancer flags),
# LABEL (results folder label), FLOOR=1 to add bench/floor.py (a uvloop byte copier: what the
# event loop and syscalls cost before any of our code), SHARED=1 to add a second chlb in shared
# mode (its state in a redis-server this script starts: the data path must not notice),
# BASELINE=<git rev> to add that revision's balancer (checked out in a temporary worktree with
# its own venv) to the same run, for before/after ratios. Traffic goes to 127.0.0.1 only; every
# run is bounded by DURATION.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HARNESS=${BENCH_HARNESS:-$REPO/../shared/bench}
REPS=${REPS:-3}
DURATION=${DURATION:-10}
ANCHORS=${ANCHORS:-haproxy-uri,nginx-hash}
LABEL=${LABEL:-$([ "${PIN:-0}" = 1 ] && echo pinned || echo shared)}
OUT=${OUT:-$REPO/bench/results/$(date -u +%Y%m%dT%H%M%SZ)-$LABEL}

[ -x "$HARNESS/lb_bench.sh" ] || { echo "benchmark harness not found at $HARNESS" >&2; exit 1; }
missing=()
for tool in wrk haproxy nginx; do command -v $tool >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    wrk haproxy nginx curl iproute2 util-linux procps
fi

# The harness records the command; keep it relative to the harness folder.
lb_bin=$(python3 -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' \
  "$REPO/.venv/bin/lb-balancer" "$HARNESS")
cmd="$lb_bin --host 127.0.0.1 --port {PORT} --backends {BACKENDS} --log-level WARNING ${LB_ARGS:-}"
pin=(); [ "${PIN:-0}" = 1 ] && pin=(--pin)
redis_pid="" redis_dir="" base_dir=""
cleanup() {
  if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
  [ -z "$redis_dir" ] || rm -rf "$redis_dir"
  if [ -n "$base_dir" ]; then
    git -C "$REPO" worktree remove --force "$base_dir/src" 2>/dev/null || true
    rm -rf "$base_dir"
  fi
}
trap cleanup EXIT
extra=()
if [ "${FLOOR:-0}" = 1 ]; then
  py=$(python3 -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' \
    "$REPO/.venv/bin/python" "$HARNESS")
  floor=$(python3 -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' \
    "$REPO/bench/floor.py" "$HARNESS")
  extra=(--cmd uvloop-floor 9400 "$py $floor {PORT} {BACKENDS}")
fi
if [ "${SHARED:-0}" = 1 ]; then
  command -v redis-server >/dev/null || { echo "SHARED=1 needs redis-server" >&2; exit 1; }
  redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis_dir=$(mktemp -d)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$redis_dir" \
    --daemonize no >"$redis_dir/log" 2>&1 &
  redis_pid=$!
  extra+=(--cmd chlb-shared 9500 "$cmd --redis-url redis://127.0.0.1:$redis_port/0 --instance-id bench")
fi
if [ -n "${BASELINE:-}" ]; then
  base_dir=$(mktemp -d)
  git -C "$REPO" worktree add --detach -q "$base_dir/src" "$BASELINE"
  python3 -m venv "$base_dir/venv"
  "$base_dir/venv/bin/pip" install -q "$base_dir/src"
  base_bin=$(python3 -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' \
    "$base_dir/venv/bin/lb-balancer" "$HARNESS")
  rev=$(git -C "$REPO" rev-parse --short "$BASELINE")
  extra+=(--cmd "chlb-$rev" 9600 "$base_bin --host 127.0.0.1 --port {PORT} --backends {BACKENDS} --log-level WARNING ${LB_ARGS:-}")
fi
mkdir -p "$OUT"
(cd "$HARNESS" && ./lb_bench.sh "${pin[@]}" --anchors "$ANCHORS" --reps "$REPS" \
  --duration "$DURATION" --label "$LABEL" --out "$OUT" --cmd chlb 9300 "$cmd" "${extra[@]}") \
  > "$OUT/harness.log" 2>&1 || { tail -30 "$OUT/harness.log" >&2; exit 1; }
"$REPO/.venv/bin/python" "$REPO/bench/compare.py" "$OUT" | tee "$OUT/compare.md"
