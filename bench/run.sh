#!/usr/bin/env bash
# Side-by-side benchmark: wrk against sluice, nginx and HAProxy, each with one
# worker, each in front of the same three nginx backends with keep-alive
# upstream pooling. Prints a markdown table: requests/s, p50/p99 latency and
# the proxy's CPU time per request, with ratios against nginx.
#
#   bench/run.sh                      # defaults: wrk -t2 -c50 -d10s
#   DURATION=30s CONNS=100 bench/run.sh
#
# Installs nginx-light, haproxy and wrk with apt when missing (needs root or
# sudo) and builds sluice in release mode.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=$ROOT/bench
THREADS=${THREADS:-2}
CONNS=${CONNS:-50}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
SLUICE=${SLUICE:-$ROOT/target/release/sluice}
# Ports: three backends, then one per proxy.
B1=${B1:-19101} B2=${B2:-19102} B3=${B3:-19103}
P_SLUICE=18081 P_NGINX=18082 P_HAPROXY=18083

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
if [ "${#need[@]}" -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    as_root apt-get update >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y --no-install-recommends "${need[@]}" >&2
fi
if [ "${SLUICE}" = "$ROOT/target/release/sluice" ]; then
    cargo build --release --locked >&2
fi

DIR=$(mktemp -d /tmp/sluice-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

# render TEMPLATE OUT [PORT] [BALANCE]
render() {
    sed -e "s|@DIR@|$DIR|g" -e "s|@B1@|$B1|g" -e "s|@B2@|$B2|g" -e "s|@B3@|$B3|g" \
        -e "s|@PORT@|${3:-0}|g" -e "s|@BALANCE@|${4:-round_robin}|g" "$BENCH/$1" > "$DIR/$2"
}

wait_port() {
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# utime + stime, in clock ticks, of a process and its children (nginx workers).
cpu_ticks() {
    local total=0 pid stat
    for pid in "$1" $(pgrep -P "$1" || true); do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        # Fields after the command name (which may hold spaces): state is
        # field 3, utime 14, stime 15.
        stat=${stat##*) }
        set -- $stat
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}

# wrk latency value (e.g. 812.00us, 1.20ms, 1.01s) in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000
        printf "%.2f", n }'
}

HZ=$(getconf CLK_TCK)
RESULTS=()

# measure NAME PID PORT
measure() {
    local name=$1 pid=$2 port=$3 out before after requests rps p50 p99 cpu_us
    wait_port "$port"
    wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "http://127.0.0.1:$port/" >/dev/null
    before=$(cpu_ticks "$pid")
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$port/")
    after=$(cpu_ticks "$pid")
    if echo "$out" | grep -q "Non-2xx"; then
        echo "$name answered with errors:" >&2
        echo "$out" >&2
    fi
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/^Requests\/sec/ {printf "%d", $2}')
    p50=$(to_ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")
    p99=$(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
    cpu_us=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$requests" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
    echo "$name: $rps req/s, p50 $p50 ms, p99 $p99 ms, $cpu_us us CPU/request" >&2
    RESULTS+=("$name|$rps|$p50|$p99|$cpu_us")
}

stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

render backends.nginx.conf backends.conf
nginx -p "$DIR" -c "$DIR/backends.conf" 2>"$DIR/backends.stderr" &
PIDS+=($!)
for port in "$B1" "$B2" "$B3"; do wait_port "$port"; done

render proxy.nginx.conf nginx.conf "$P_NGINX"
nginx -p "$DIR" -c "$DIR/nginx.conf" 2>"$DIR/nginx.stderr" &
pid=$!
PIDS+=("$pid")
measure "nginx" "$pid" "$P_NGINX"
stop "$pid"

render haproxy.cfg haproxy.cfg "$P_HAPROXY"
haproxy -db -f "$DIR/haproxy.cfg" 2>"$DIR/haproxy.stderr" &
pid=$!
PIDS+=("$pid")
measure "HAProxy" "$pid" "$P_HAPROXY"
stop "$pid"

for balance in round_robin least_conn ip_hash; do
    render sluice.toml "sluice-$balance.toml" "$P_SLUICE" "$balance"
    if "$SLUICE" check -c "$DIR/sluice-$balance.toml" | grep -q "no effect yet.*$balance"; then
        echo "note: this build does not implement $balance yet; it runs round-robin" >&2
    fi
    "$SLUICE" run -c "$DIR/sluice-$balance.toml" 2>"$DIR/sluice-$balance.stderr" &
    pid=$!
    PIDS+=("$pid")
    measure "sluice ($balance)" "$pid" "$P_SLUICE"
    stop "$pid"
done

nginx_rps=$(echo "${RESULTS[0]}" | cut -d'|' -f2)
nginx_cpu=$(echo "${RESULTS[0]}" | cut -d'|' -f5)
echo
echo "wrk -t$THREADS -c$CONNS -d$DURATION, $(nproc) CPUs, $(uname -sr)"
echo
echo "| proxy | requests/s | vs nginx | p50 ms | p99 ms | CPU µs/request | vs nginx |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for row in "${RESULTS[@]}"; do
    IFS='|' read -r name rps p50 p99 cpu <<<"$row"
    awk -v name="$name" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v cpu="$cpu" \
        -v nrps="$nginx_rps" -v ncpu="$nginx_cpu" \
        'BEGIN { printf "| %s | %d | %.2f× | %s | %s | %s | %.2f× |\n", name, rps, rps / nrps, p50, p99, cpu, cpu / ncpu }'
done
