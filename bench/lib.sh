# Shared by the bench scripts: tools, a scratch directory, the three nginx
# backends and one function per proxy to start it. Source it; it sets
# `set -euo pipefail` and a cleanup trap.
#
# Environment: WORKERS (1) workers/threads per proxy, SLUICE (a prebuilt
# binary; default: cargo build --release), SLUICE_BEFORE (an older sluice
# binary measured beside it as "before"), CEILING (bench/ceiling's binary,
# the least a tokio and httparse proxy does, measured beside them), ONLY (a space-separated subset of
# nginx haproxy sluice, e.g. ONLY=sluice while iterating), B1..B3 and P_*
# ports.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BENCH=$ROOT/bench
WORKERS=${WORKERS:-1}
SLUICE=${SLUICE:-$ROOT/target/release/sluice}
B1=${B1:-19101} B2=${B2:-19102} B3=${B3:-19103}
P_SLUICE=${P_SLUICE:-18081} P_NGINX=${P_NGINX:-18082} P_HAPROXY=${P_HAPROXY:-18083}
P_BEFORE=${P_BEFORE:-18084} P_CEILING=${P_CEILING:-18085}
read -ra PROXIES <<< "${ONLY:-nginx haproxy sluice}"
if [ -n "${SLUICE_BEFORE:-}" ]; then PROXIES+=(before); fi
if [ -n "${CEILING:-}" ]; then PROXIES+=(ceiling); fi
HZ=$(getconf CLK_TCK)
# Thousands of connections (bench/idle.sh) and HAProxy's maxconn need fds.
ulimit -n "$(ulimit -Hn)"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# need_tools COMMAND:PACKAGE... installs the packages of missing commands.
need_tools() {
    local need=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
    done
    if [ "${#need[@]}" -gt 0 ]; then
        echo "installing ${need[*]}" >&2
        as_root apt-get update >&2
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y --no-install-recommends "${need[@]}" >&2
    fi
}

build_sluice() {
    if [ "$SLUICE" = "$ROOT/target/release/sluice" ]; then
        cargo build --release --locked >&2
    fi
}

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
        -e "s|@PORT@|${3:-0}|g" -e "s|@BALANCE@|${4:-round_robin}|g" \
        -e "s|@WORKERS@|$WORKERS|g" -e "s|@MAXCONN@|${MAXCONN:-9000}|g" -e "s|@MASTER@|${MASTER:-on}|g" "$BENCH/$1" > "$DIR/$2"
}

# wait_port PORT: up to WAIT_SECONDS (10; more under valgrind).
wait_port() {
    for _ in $(seq $((${WAIT_SECONDS:-10} * 20))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# The process and its children (nginx's workers).
process_tree() {
    echo "$1"
    pgrep -P "$1" || true
}

# "utime stime", in clock ticks, of a process and its children.
cpu_ticks_split() {
    local user=0 sys=0 pid stat
    for pid in $(process_tree "$1"); do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        # Fields after the command name (which may hold spaces): state is
        # field 3, utime 14, stime 15.
        stat=${stat##*) }
        set -- $stat
        user=$((user + ${12}))
        sys=$((sys + ${13}))
    done
    echo "$user $sys"
}


# Resident memory in KiB of a process and its children.
rss_kib() {
    local total=0 pid kib
    for pid in $(process_tree "$1"); do
        kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || continue
        total=$((total + ${kib:-0}))
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

# median of the numbers on stdin, one per line.
median() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

start_backends() {
    render backends.nginx.conf backends.conf
    nginx -p "$DIR" -c "$DIR/backends.conf" 2>"$DIR/backends.stderr" &
    PIDS+=($!)
    for port in "$B1" "$B2" "$B3"; do wait_port "$port"; done
}

port_of() {
    case $1 in
        nginx) echo "$P_NGINX" ;;
        haproxy) echo "$P_HAPROXY" ;;
        sluice) echo "$P_SLUICE" ;;
        before) echo "$P_BEFORE" ;;
        ceiling) echo "$P_CEILING" ;;
    esac
}

# start_proxy NAME: starts it in front of the backends, waits for its port
# and sets PROXY_PID. Under a WRAP command (valgrind, strace) when given.
start_proxy() {
    local name=$1 port
    port=$(port_of "$name")
    case $name in
        nginx)
            render proxy.nginx.conf nginx.conf "$port"
            ${WRAP:-} nginx -p "$DIR" -c "$DIR/nginx.conf" 2>"$DIR/nginx.stderr" &
            ;;
        haproxy)
            render haproxy.cfg haproxy.cfg "$port"
            ${WRAP:-} haproxy -db -f "$DIR/haproxy.cfg" 2>"$DIR/haproxy.stderr" &
            ;;
        sluice)
            render sluice.toml sluice.toml "$port"
            ${WRAP:-} "$SLUICE" run -c "$DIR/sluice.toml" 2>"$DIR/sluice.stderr" &
            ;;
        before)
            render sluice.toml before.toml "$port"
            ${WRAP:-} "$SLUICE_BEFORE" run -c "$DIR/before.toml" 2>"$DIR/before.stderr" &
            ;;
        ceiling)
            ${WRAP:-} "$CEILING" "127.0.0.1:$port" "127.0.0.1:$B1" "127.0.0.1:$B2" "127.0.0.1:$B3" \
                2>"$DIR/ceiling.stderr" &
            ;;
    esac
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_port "$port"
}

stop_proxy() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

machine() {
    echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -sr), nginx $(nginx -v 2>&1 | sed 's|.*/||'), HAProxy $(haproxy -v | awk 'NR == 1 {print $3}'), sluice binary $SLUICE (tree at $(git -C "$ROOT" rev-parse --short HEAD))"
}
