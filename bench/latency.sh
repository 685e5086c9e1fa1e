#!/usr/bin/env bash
# Latency at a fixed offered load: half of HAProxy's saturation rate, measured in this run.
#
# Starts the harness's nginx backends (127.0.0.1:8001-8003) and HAProxy (balance uri, hash-type
# consistent, nbthread 2) from ../shared/bench/lib/configs.sh, and this balancer; measures
# HAProxy's saturation rate with wrk, then runs paced load (bench/paced.lua: each of C
# connections waits 2 ms between requests, C chosen so the offered rate is half the saturation
# rate) against direct (backend 1, no balancer), HAProxy and this balancer, interleaved REPS
# times. Prints achieved req/s, p50, p99, and p99 added over direct. Loopback only; every wrk
# run lasts DURATION seconds; every process started here is stopped by PID on exit.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HARNESS=${BENCH_HARNESS:-$REPO/../shared/bench}
REPS=${REPS:-3}
DURATION=${DURATION:-10}
DELAY_MS=2
# shellcheck source=/dev/null
source "$HARNESS/lib/configs.sh"

for port in 8001 8002 8003 9101 9300; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use: stop what listens there first" >&2; exit 1
  fi
done
RUN=$(mktemp -d /tmp/chlb-latency.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; }
trap cleanup EXIT INT TERM
mkdir -p "$RUN"/tmp/{body,proxy,fastcgi,uwsgi,scgi}
gen_backends_conf "$RUN" 1 8001 8002 8003 >"$RUN/backends.conf"
nginx -c "$RUN/backends.conf" -p "$RUN" -g 'daemon off;' 2>"$RUN/nginx.err" & pids+=($!)
gen_haproxy_cfg "$RUN" 2 9101 "uri whole" "" "" 8001 8002 8003 >"$RUN/haproxy.cfg"
haproxy -db -f "$RUN/haproxy.cfg" >"$RUN/haproxy.out" 2>&1 & pids+=($!)
"$REPO/.venv/bin/lb-balancer" --host 127.0.0.1 --port 9300 --log-level WARNING \
  --backends 127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003 ${LB_ARGS:-} >"$RUN/chlb.out" 2>&1 &
pids+=($!)
for port in 8001 9101 9300; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/home?id=123456" >/dev/null && break; sleep 0.1; done
done

wrk_run() {  # wrk_run URL CONNS [paced] -> "rps p50_ms p99_ms"
  local args=(-t2 -c"$2" -d"${DURATION}s" --timeout 2s --latency)
  if [ "${3:-}" = paced ]; then args+=(-s "$REPO/bench/paced.lua" "$1" -- "$DELAY_MS")
  else args+=(-s "$HARNESS/lib/load.lua" "$1" -- /home); fi
  wrk "${args[@]}" | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /^Requests\/sec/ { rps = $2 }
    END { printf "%.0f %.3f %.3f\n", rps, p50, p99 }'
}

sat=$(wrk_run http://127.0.0.1:9101 64 | cut -d' ' -f1)
target=$((sat / 2))
conns=$(( (target * (DELAY_MS * 1000 + 150) + 999999) / 1000000 ))  # ~150 us of latency
[ "$conns" -lt 2 ] && conns=2
echo "HAProxy saturation: $sat req/s; paced load: $conns connections x ${DELAY_MS} ms pauses" \
  "(offered about $target req/s), $REPS interleaved runs of ${DURATION}s"
declare -A rps p50 p99
for rep in $(seq "$REPS"); do
  for sys in direct:8001 haproxy-uri:9101 chlb:9300; do
    read -r r a b < <(wrk_run "http://127.0.0.1:${sys#*:}" "$conns" paced)
    rps[${sys%%:*}]+="$r "; p50[${sys%%:*}]+="$a "; p99[${sys%%:*}]+="$b "
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
d99=$(echo "${p99[direct]}" | median)
echo
echo "| system | achieved req/s | p50 ms | p99 ms | p99 added over direct ms |"
echo "|---|---:|---:|---:|---:|"
for s in direct haproxy-uri chlb; do
  m99=$(echo "${p99[$s]}" | median)
  printf "| %s | %s | %s | %s | %.3f |\n" "$s" "$(echo "${rps[$s]}" | median)" \
    "$(echo "${p50[$s]}" | median)" "$m99" "$(echo "$m99 - $d99" | bc -l)"
done
