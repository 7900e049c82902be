#!/usr/bin/env bash
# Side-by-side throughput: wrk against nginx, HAProxy and sluice, each with
# WORKERS workers in front of the same three nginx backends, in ROUNDS
# interleaved rounds (nginx, HAProxy, sluice, nginx, ...), so a noisy machine
# hurts all three alike. Prints each round and a markdown table of medians:
# requests/s, p50/p99 latency and the proxy's CPU time per request (and
# how much of it the kernel's: system time), with ratios against the better
# of nginx and HAProxy.
#
#   bench/run.sh                                 # wrk -t2 -c64 -d10s, 5 rounds, 1 worker
#   ROUNDS=7 DURATION=20s CONNS=100 bench/run.sh
#   WORKERS=2 bench/run.sh                       # nginx worker_processes 2, HAProxy nbthread 2
#   SLUICE=/path/to/sluice bench/run.sh          # a prebuilt binary
source "$(dirname "$0")/lib.sh"

THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-5}

need_tools nginx:nginx-light haproxy:haproxy wrk:wrk
build_sluice
start_backends

# measure NAME ROUND: one wrk run against a freshly started proxy; appends
# "rps p50 p99 cpu_us sys_us" to $DIR/NAME.rows.
measure() {
    local name=$1 port out before after requests rps p50 p99 cpu_us sys_us
    port=$(port_of "$name")
    start_proxy "$name"
    wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "http://127.0.0.1:$port/" >/dev/null
    before=$(cpu_ticks_split "$PROXY_PID")
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$port/")
    after=$(cpu_ticks_split "$PROXY_PID")
    stop_proxy "$PROXY_PID"
    if echo "$out" | grep -qE "Non-2xx|Socket errors"; then
        echo "$name answered with errors:" >&2
        echo "$out" >&2
    fi
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/^Requests\/sec/ {printf "%d", $2}')
    p50=$(to_ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")
    p99=$(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
    local sys=$((${after#* } - ${before#* }))
    local total=$((${after% *} - ${before% *} + sys))
    cpu_us=$(awk -v t="$total" -v hz="$HZ" -v n="$requests" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
    sys_us=$(awk -v t="$sys" -v hz="$HZ" -v n="$requests" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
    echo "round $2 $name: $rps req/s, p50 $p50 ms, p99 $p99 ms, $cpu_us us CPU/request ($sys_us in the kernel)" >&2
    echo "$rps $p50 $p99 $cpu_us $sys_us" >> "$DIR/$name.rows"
}

for round in $(seq "$ROUNDS"); do
    for name in "${PROXIES[@]}"; do measure "$name" "$round"; done
done

col() { awk -v c="$2" '{print $c}' "$DIR/$1.rows" | median; }
declare -A RPS P50 P99 CPU SYS
for name in "${PROXIES[@]}"; do
    RPS[$name]=$(col "$name" 1); P50[$name]=$(col "$name" 2)
    P99[$name]=$(col "$name" 3); CPU[$name]=$(col "$name" 4)
    SYS[$name]=$(col "$name" 5)
done
# The better of the peers measured (with neither, the first proxy measured).
peers=()
for name in nginx haproxy; do
    if [ -n "${RPS[$name]:-}" ]; then peers+=("$name"); fi
done
if [ "${#peers[@]}" -eq 0 ]; then peers=("${PROXIES[0]}"); fi
best_rps=$(for name in "${peers[@]}"; do echo "${RPS[$name]}"; done | sort -g | tail -1)
best_cpu=$(for name in "${peers[@]}"; do echo "${CPU[$name]}"; done | sort -g | head -1)

echo
echo "wrk -t$THREADS -c$CONNS -d$DURATION, $WORKERS worker(s), medians of $ROUNDS interleaved rounds; $(machine)"
echo
echo "| proxy | requests/s | vs best peer | p50 ms | p99 ms | CPU µs/request | vs best peer | of it kernel µs |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for name in "${PROXIES[@]}"; do
    awk -v name="$name" -v rps="${RPS[$name]}" -v p50="${P50[$name]}" -v p99="${P99[$name]}" \
        -v cpu="${CPU[$name]}" -v sys="${SYS[$name]}" -v brps="$best_rps" -v bcpu="$best_cpu" \
        'BEGIN { printf "| %s | %d | %.2f× | %s | %s | %s | %.2f× | %s |\n", name, rps, rps / brps, p50, p99, cpu, cpu / bcpu, sys }'
done
