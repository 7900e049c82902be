#!/usr/bin/env bash
# Instructions per request: each proxy (one worker) runs twice under
# callgrind, serving a warm-up and then CONNS or CONNS + REQUESTS requests
# with h2load over CONNS keep-alive HTTP/1.1 connections; the difference over
# REQUESTS is its cost per request. Instruction counts do not depend on how busy the machine is, so
# this is the steady number to compare builds with.
#
#   bench/callgrind.sh                  # REQUESTS=5000 CONNS=8
#   SLUICE=/tmp/old-sluice bench/callgrind.sh   # a "before" build
source "$(dirname "$0")/lib.sh"

REQUESTS=${REQUESTS:-5000}
CONNS=${CONNS:-8}
# Valgrind starts slowly and lowers the file limit HAProxy may raise.
WAIT_SECONDS=120 MAXCONN=4096
# A forked nginx worker would write its counts over the master's: run one process.
MASTER=off
need_tools nginx:nginx-light haproxy:haproxy h2load:nghttp2-client valgrind:valgrind
build_sluice
start_backends

# run NAME N: total instructions of a proxy's whole life (all its
# processes) when it serves a warm-up and then N more requests.
run() {
    local name=$1 n=$2 port out
    port=$(port_of "$name")
    out=$DIR/cg.$name.$n
    mkdir -p "$out"
    WRAP="valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=$out/%p" start_proxy "$name"
    h2load --h1 -n 500 -c "$CONNS" "http://127.0.0.1:$port/" >/dev/null
    h2load --h1 -n "$n" -c "$CONNS" "http://127.0.0.1:$port/" > "$DIR/h2load.$name"
    grep -q "$n succeeded" "$DIR/h2load.$name" || { cat "$DIR/h2load.$name" >&2; exit 1; }
    stop_proxy "$PROXY_PID"
    cat "$out"/* | awk '/^summary:/ { s += $2 } END { printf "%d", s }'
}

# The difference between two runs that differ only in REQUESTS requests
# leaves start-up, warm-up, connection set-up and shutdown out.
declare -A IR
for name in "${PROXIES[@]}"; do
    small=$(run "$name" "$CONNS")
    large=$(run "$name" $((CONNS + REQUESTS)))
    IR[$name]=$(((large - small) / REQUESTS))
    echo "$name: $small and $large instructions, ${IR[$name]} per request" >&2
done

# The best of the peers measured (with ONLY=sluice: sluice itself).
best=$(for name in nginx haproxy; do if [ -n "${IR[$name]:-}" ]; then echo "${IR[$name]}"; fi; done | sort -g | head -1)
best=${best:-${IR[sluice]}}
echo
echo "callgrind, h2load --h1 -n $REQUESTS -c $CONNS, one worker; $(machine)"
echo
echo "| proxy | instructions/request | vs best peer |"
echo "| --- | ---: | ---: |"
for name in "${PROXIES[@]}"; do
    awk -v n="$name" -v i="${IR[$name]}" -v b="$best" 'BEGIN { printf "| %s | %d | %.2f× |\n", n, i, i / b }'
done
