#!/usr/bin/env bash
# System calls per request: strace counts the calls of each proxy (one
# worker) while h2load sends REQUESTS requests over CONNS keep-alive HTTP/1.1
# connections. Prints the total per request and the five most frequent calls.
#
#   bench/syscalls.sh                   # REQUESTS=20000 CONNS=8
source "$(dirname "$0")/lib.sh"

REQUESTS=${REQUESTS:-20000}
CONNS=${CONNS:-8}
need_tools nginx:nginx-light haproxy:haproxy h2load:nghttp2-client strace:strace
build_sluice
start_backends

declare -A TOTAL TOP
for name in "${PROXIES[@]}"; do
    port=$(port_of "$name")
    start_proxy "$name"
    h2load --h1 -n 500 -c "$CONNS" "http://127.0.0.1:$port/" >/dev/null
    pids=$(process_tree "$PROXY_PID" | sed 's/^/-p /' | tr '\n' ' ')
    strace -f -c -o "$DIR/strace.$name" $pids &
    tracer=$!
    sleep 1   # strace attaches asynchronously; nothing to poll for
    h2load --h1 -n "$REQUESTS" -c "$CONNS" "http://127.0.0.1:$port/" > "$DIR/h2load.$name"
    grep -q "$REQUESTS succeeded" "$DIR/h2load.$name" || { cat "$DIR/h2load.$name" >&2; exit 1; }
    kill -INT "$tracer"; wait "$tracer" || true
    stop_proxy "$PROXY_PID"
    TOTAL[$name]=$(awk '$NF == "total" {print $4}' "$DIR/strace.$name")
    TOP[$name]=$(awk 'NR > 2 && $1 ~ /^[0-9.]+$/ && $NF != "total" {print $4, $NF}' "$DIR/strace.$name" \
        | sort -rn | head -5 | awk -v n="$REQUESTS" '{ printf "%s %.2f, ", $2, $1 / n }' | sed 's/, $//')
done

echo
echo "strace -c, h2load --h1 -n $REQUESTS -c $CONNS, one worker; $(machine)"
echo
echo "| proxy | syscalls/request | most frequent (per request) |"
echo "| --- | ---: | --- |"
for name in "${PROXIES[@]}"; do
    awk -v n="$name" -v t="${TOTAL[$name]}" -v r="$REQUESTS" -v top="${TOP[$name]}" \
        'BEGIN { printf "| %s | %.2f | %s |\n", n, t / r, top }'
done
