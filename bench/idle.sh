#!/usr/bin/env bash
# Memory per idle connection: opens COUNT idle keep-alive client connections
# and then 2 x COUNT more, then the same with idle WebSocket tunnels, through
# nginx, HAProxy and sluice (one worker each), and reads each proxy's
# resident memory (all its processes) before, between and after. Per
# connection: RSS growth over the first COUNT / COUNT, and over the next
# 2 x COUNT / (2 x COUNT), the steadier number (no warm-up in it); medians of
# ROUNDS interleaved rounds. Tunnels take two descriptors each in the
# proxy, so WS_COUNT (COUNT / 2 unless given) is used for them. 3 x COUNT
# connections must fit HAProxy's maxconn (9000) and a 20 000 descriptor
# limit: COUNT up to 2800 or so.
#
#   bench/idle.sh                  # COUNT=2500 WS_COUNT=1250 ROUNDS=3
#
# The kernel's socket buffers are not in any proxy's RSS and are left out.
source "$(dirname "$0")/lib.sh"

# 3 x COUNT connections at once: HAProxy's maxconn (9000 here) must hold
# them, and its descriptors (two per connection) stay under a 20 000 limit.
COUNT=${COUNT:-2500}
# Tunnels take two descriptors each in the proxy.
WS_COUNT=${WS_COUNT:-$((COUNT / 2))}
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

# hold NAME MODE N TAG: opens N idle connections of MODE through the proxy
# and keeps them open (until fd 7 or 8 closes: TAG 7 or 8) once all are idle.
hold() {
    local port=$1 mode=$2 n=$3 tag=$4 fifo=$DIR/hold.$4
    rm -f "$fifo" "$DIR/ready.$tag"; mkfifo "$fifo"
    python3 "$BENCH/idle_clients.py" "$port" "$mode" "$n" <"$fifo" >"$DIR/ready.$tag" &
    HELD+=($!)
    # Killed on the way out too: a client left waiting (a proxy that failed
    # under the load) would otherwise hold the caller's pipes open.
    PIDS+=($!)
    eval "exec $tag>\"\$fifo\""
    for _ in $(seq 600); do
        grep -q ready "$DIR/ready.$tag" 2>/dev/null && break
        sleep 0.1
    done
    grep -q ready "$DIR/ready.$tag" || { echo "clients never got ready" >&2; exit 1; }
}

# measure NAME MODE ROUND: opens COUNT idle connections, then 2 x COUNT more,
# and appends bytes per connection to $DIR/NAME-MODE.rows (growth over the
# first COUNT) and $DIR/NAME-MODE.slope (growth over the next 2 x COUNT:
# nothing of it is warm-up, allocator arenas or free lists filling).
measure() {
    local name=$1 mode=$2 port before mid after per slope count=$COUNT
    [ "$mode" = ws ] && count=$WS_COUNT
    port=$(port_of "$name")
    start_proxy "$name"
    # Warm up: one batch opened and closed, so allocator arenas and the
    # upstream pool exist before the baseline.
    echo | python3 "$BENCH/idle_clients.py" "$port" "$mode" 200 >/dev/null
    settle "$PROXY_PID"
    before=$(rss_kib "$PROXY_PID")
    HELD=()
    hold "$port" "$mode" "$count" 7
    settle "$PROXY_PID"
    mid=$(rss_kib "$PROXY_PID")
    hold "$port" "$mode" $((2 * count)) 8
    settle "$PROXY_PID"
    after=$(rss_kib "$PROXY_PID")
    exec 7>&- 8>&-
    wait "${HELD[@]}" || true
    stop_proxy "$PROXY_PID"
    per=$(awk -v b="$before" -v a="$mid" -v n="$count" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }')
    slope=$(awk -v b="$mid" -v a="$after" -v n="$count" 'BEGIN { printf "%.0f", (a - b) * 1024 / (2 * n) }')
    echo "round $3 $name $mode: RSS $before -> $mid -> $after KiB, $per bytes per connection, then $slope" >&2
    echo "$per" >> "$DIR/$name-$mode.rows"
    echo "$slope" >> "$DIR/$name-$mode.slope"
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
echo "idle connections opened in two steps, 1 worker, medians of $ROUNDS interleaved rounds; $(machine)"
echo
echo "| proxy | keep-alive client: first $COUNT | next $((2 * COUNT)) | WebSocket tunnel: first $WS_COUNT | next $((2 * WS_COUNT)) |"
echo "| --- | ---: | ---: | ---: | ---: |"
for name in "${PROXIES[@]}"; do
    http=$(median < "$DIR/$name-http.rows")
    http_slope=$(median < "$DIR/$name-http.slope")
    ws=$(median < "$DIR/$name-ws.rows")
    ws_slope=$(median < "$DIR/$name-ws.slope")
    awk -v n="$name" -v h="$http" -v hs="$http_slope" -v w="$ws" -v ws="$ws_slope" \
        'BEGIN { printf "| %s | %.2f KB | %.2f KB | %.2f KB | %.2f KB |\n", n, h / 1000, hs / 1000, w / 1000, ws / 1000 }'
done
