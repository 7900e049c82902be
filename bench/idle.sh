#!/usr/bin/env bash
# Memory per idle connection: opens COUNT idle keep-alive client connections,
# then COUNT idle WebSocket tunnels, through nginx, HAProxy and sluice (one
# worker each), and reads each proxy's resident memory (all its processes)
# before and after. Per-connection cost = RSS growth / COUNT; medians of
# ROUNDS interleaved rounds.
#
#   bench/idle.sh                  # COUNT=5000 ROUNDS=3
#   COUNT=20000 bench/idle.sh
#
# The kernel's socket buffers are not in any proxy's RSS and are left out.
source "$(dirname "$0")/lib.sh"

COUNT=${COUNT:-5000}
ROUNDS=${ROUNDS:-3}
need_tools nginx:nginx-light haproxy:haproxy python3:python3
build_sluice

# settle PID: waits until the process's RSS stops moving (at most ~3 s).
settle() {
    local last=-1 now
    for _ in $(seq 30); do
        now=$(rss_kib "$1")
        [ "$now" = "$last" ] && return
        last=$now
        sleep 0.1
    done
}

# measure NAME MODE ROUND: appends bytes per connection to $DIR/NAME-MODE.rows.
measure() {
    local name=$1 mode=$2 port before after ready per fifo
    port=$(port_of "$name")
    start_proxy "$name"
    # Warm up: one batch opened and closed, so allocator arenas and the
    # upstream pool exist before the baseline.
    echo | python3 "$BENCH/idle_clients.py" "$port" "$mode" 200 >/dev/null
    settle "$PROXY_PID"
    before=$(rss_kib "$PROXY_PID")
    fifo=$DIR/hold
    rm -f "$fifo"; mkfifo "$fifo"
    python3 "$BENCH/idle_clients.py" "$port" "$mode" "$COUNT" <"$fifo" >"$DIR/ready" &
    local client=$!
    exec 7>"$fifo"
    for _ in $(seq 600); do
        grep -q ready "$DIR/ready" 2>/dev/null && break
        sleep 0.1
    done
    grep -q ready "$DIR/ready" || { echo "$name: clients never got ready" >&2; exit 1; }
    settle "$PROXY_PID"
    after=$(rss_kib "$PROXY_PID")
    exec 7>&-
    wait "$client" || true
    stop_proxy "$PROXY_PID"
    per=$(awk -v b="$before" -v a="$after" -v n="$COUNT" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }')
    echo "round $3 $name $mode: RSS $before -> $after KiB, $per bytes per connection" >&2
    echo "$per" >> "$DIR/$name-$mode.rows"
}

start_backends
for round in $(seq "$ROUNDS"); do
    for name in "${PROXIES[@]}"; do measure "$name" http "$round"; done
done

# WebSocket backends on their own ports.
B1=$((B1 + 10)) B2=$((B2 + 10)) B3=$((B3 + 10))
python3 "$BENCH/ws_backend.py" "$B1" "$B2" "$B3" &
PIDS+=($!)
for port in "$B1" "$B2" "$B3"; do wait_port "$port"; done
for round in $(seq "$ROUNDS"); do
    for name in "${PROXIES[@]}"; do measure "$name" ws "$round"; done
done

echo
echo "$COUNT idle connections, 1 worker, medians of $ROUNDS interleaved rounds; $(machine)"
echo
echo "| proxy | per idle keep-alive client | per idle WebSocket tunnel |"
echo "| --- | ---: | ---: |"
for name in "${PROXIES[@]}"; do
    http=$(median < "$DIR/$name-http.rows")
    ws=$(median < "$DIR/$name-ws.rows")
    awk -v n="$name" -v h="$http" -v w="$ws" 'BEGIN { printf "| %s | %.2f KB | %.2f KB |\n", n, h / 1000, w / 1000 }'
done
