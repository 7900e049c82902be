#!/usr/bin/env bash
# Chaos benchmark: wrk (GET, 32 connections, 30 s) through sluice, nginx and
# HAProxy in turn, each in front of three nginx backends, while
#   - every 5 s one backend is killed with SIGKILL and restarted 2 s later,
#   - every 2 s the proxy's config is reloaded with changed weights.
# Each proxy is set up for passive failure handling and retries as its users
# would (see the configs next to this script). Prints a markdown table of
# requests, error responses (status >= 400) and socket errors per proxy.
#
#   bench/chaos/run.sh
#   DURATION=60 CONNS=64 bench/chaos/run.sh
#   PROXIES=sluice SLUICE=/path/to/sluice bench/chaos/run.sh   # one proxy, a prebuilt binary
#
# Needs nginx, haproxy and wrk (bench/run.sh installs them) and builds
# sluice in release mode.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
CHAOS=$ROOT/bench/chaos
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
DURATION=${DURATION:-30}
PROXIES=${PROXIES:-sluice nginx haproxy}
SLUICE=${SLUICE:-$ROOT/target/release/sluice}
B1=${B1:-19201} B2=${B2:-19202} B3=${B3:-19203}
P_SLUICE=18091 P_NGINX=18092 P_HAPROXY=18093
BACKENDS=("$B1" "$B2" "$B3")
# The weights each reload cycles through.
WEIGHTS=("1 2 3" "3 1 2" "2 3 1")

for tool in nginx haproxy wrk; do
    command -v "$tool" >/dev/null || { echo "needs $tool (bench/run.sh installs it)" >&2; exit 1; }
done
if [ "$SLUICE" = "$ROOT/target/release/sluice" ]; then
    cargo build --release --locked >&2
fi

DIR=$(mktemp -d /tmp/sluice-chaos.XXXXXX)
declare -A BACKEND_PID=()
PROXY_PID=
cleanup() {
    for pid in "${BACKEND_PID[@]}" $PROXY_PID; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

# render TEMPLATE OUT PORT [WEIGHTS]
render() {
    local w=(${4:-1 1 1})
    sed -e "s|@DIR@|$DIR|g" -e "s|@B1@|$B1|g" -e "s|@B2@|$B2|g" -e "s|@B3@|$B3|g" \
        -e "s|@PORT@|$3|g" -e "s|@W1@|${w[0]}|g" -e "s|@W2@|${w[1]}|g" -e "s|@W3@|${w[2]}|g" \
        "$CHAOS/$1" > "$DIR/$2.tmp"
    # Renamed into place, as editors and deploy tools do.
    mv "$DIR/$2.tmp" "$DIR/$2"
}

wait_port() {
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

start_backend() {
    render backend.nginx.conf "backend-$1.conf" "$1"
    nginx -p "$DIR" -c "$DIR/backend-$1.conf" 2>>"$DIR/backends.stderr" &
    BACKEND_PID[$1]=$!
}

kill_backend() {
    kill -9 "${BACKEND_PID[$1]}" 2>/dev/null || true
    wait "${BACKEND_PID[$1]}" 2>/dev/null || true
}

# reload NAME WEIGHTS: rewrite the proxy's config and make it reload.
reload() {
    case $1 in
    sluice)
        render sluice.toml sluice.toml "$P_SLUICE" "$2"
        kill -HUP "$PROXY_PID"
        ;;
    nginx)
        render nginx.conf nginx.conf "$P_NGINX" "$2"
        nginx -p "$DIR" -c "$DIR/nginx.conf" -s reload 2>>"$DIR/nginx.stderr"
        ;;
    haproxy)
        render haproxy.cfg haproxy.cfg "$P_HAPROXY" "$2"
        kill -USR2 "$PROXY_PID"
        ;;
    esac
}

start_proxy() {
    case $1 in
    sluice)
        render sluice.toml sluice.toml "$P_SLUICE"
        "$SLUICE" run -c "$DIR/sluice.toml" 2>"$DIR/sluice.stderr" &
        ;;
    nginx)
        render nginx.conf nginx.conf "$P_NGINX"
        nginx -p "$DIR" -c "$DIR/nginx.conf" 2>"$DIR/nginx.stderr" &
        ;;
    haproxy)
        render haproxy.cfg haproxy.cfg "$P_HAPROXY"
        haproxy -W -db -f "$DIR/haproxy.cfg" 2>"$DIR/haproxy.stderr" &
        ;;
    esac
    PROXY_PID=$!
}

RESULTS=()

# run NAME PORT: one proxy through the whole schedule.
run() {
    local name=$1 port=$2 out line second victim
    for b in "${BACKENDS[@]}"; do start_backend "$b"; done
    for b in "${BACKENDS[@]}"; do wait_port "$b"; done
    start_proxy "$name"
    wait_port "$port"
    wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" -s "$CHAOS/count.lua" \
        "http://127.0.0.1:$port/" > "$DIR/wrk-$name.out" &
    local wrk_pid=$!
    for second in $(seq 1 $((DURATION - 1))); do
        sleep 1
        if [ $((second % 5)) -eq 0 ]; then
            victim=${BACKENDS[$(((second / 5 - 1) % 3))]}
            kill_backend "$victim"
        fi
        if [ $((second % 5)) -eq 2 ] && [ "$second" -gt 5 ]; then
            victim=${BACKENDS[$(((second / 5 - 1) % 3))]}
            start_backend "$victim"
        fi
        if [ $((second % 2)) -eq 0 ]; then
            reload "$name" "${WEIGHTS[$(((second / 2) % 3))]}"
        fi
    done
    wait "$wrk_pid"
    line=$(grep '^CHAOS' "$DIR/wrk-$name.out")
    echo "$name: $line" >&2
    RESULTS+=("$name $line")
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
    PROXY_PID=
    for b in "${BACKENDS[@]}"; do kill_backend "$b"; done
}

for proxy in $PROXIES; do
    case $proxy in
    sluice) run sluice "$P_SLUICE" ;;
    nginx) run nginx "$P_NGINX" ;;
    haproxy) run haproxy "$P_HAPROXY" ;;
    *) echo "unknown proxy $proxy" >&2; exit 1 ;;
    esac
done

echo
echo "wrk -t$THREADS -c$CONNS -d${DURATION}s; a backend killed every 5 s (back 2 s later), a reload every 2 s; $(nproc) CPUs, $(uname -sr)"
echo
echo "| proxy | requests | error responses | socket errors (connect/read/write/timeout) |"
echo "| --- | ---: | ---: | --- |"
for row in "${RESULTS[@]}"; do
    set -- $row
    name=$1
    shift 2
    declare -A f=()
    for kv in "$@"; do f[${kv%%=*}]=${kv#*=}; done
    errors=$((f[connect] + f[read] + f[write] + f[timeout]))
    echo "| $name | ${f[requests]} | ${f[non2xx]} | $errors (${f[connect]}/${f[read]}/${f[write]}/${f[timeout]}) |"
done
