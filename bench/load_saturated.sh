#!/usr/bin/env bash
# Saturated unary RPC/s and server CPU per call: every session runs CONCURRENCY UpdateStats calls back to back
# (closed loop) for SECONDS, against agentwire and against the Go reference server, over WebSocket and plain TCP.
# The loadgen shares the machine's cores with the server, so the figure is what one box does end to end; the
# server's own CPU per call is the part that does not depend on the client.
#
#   bench/load_saturated.sh        (AGENTS=4 CONCURRENCY=16 SECONDS=10)
source "$(dirname "${BASH_SOURCE[0]}")/load_lib.sh"
AGENTS="${AGENTS:-4}"
CONCURRENCY="${CONCURRENCY:-16}"
SECS="${SECONDS_PER_RUN:-10}"
build

dir="$(mktemp -d)"
db="sqlite://$dir/agentwire.db?mode=rwc"
port="$(free_port)"
tcp_port="$(free_port)"
# The plain-TCP listener serves one agent; create it first with a short-lived server.
start_agentwire saturated-setup "$db" "$port"
tcp_token="$(head -1 "$(tokens "$db" "$AW_ADDR" "$AGENTS")")"
token_file="$OUT/tokens-$AGENTS"
stop_pid "$AW_PID"

start_agentwire saturated "$db" "$port" --tcp-listen "127.0.0.1:$tcp_port" --tcp-agent-token "$tcp_token" \
    --max-sessions-per-agent 1000
run=(--agents "$AGENTS" --mode saturating --rpc update-stats --concurrency "$CONCURRENCY" --duration "$SECS")
loadgen --url "ws://$AW_ADDR" --tokens-file "$token_file" "${run[@]}" --server-pid "$AW_PID" \
    --report "$OUT/saturated-agentwire-ws.json" --plot "$OUT/saturated-agentwire-ws.svg" >/dev/null
loadgen --tcp "127.0.0.1:$tcp_port" "${run[@]}" --server-pid "$AW_PID" \
    --report "$OUT/saturated-agentwire-tcp.json" >/dev/null
stop_pid "$AW_PID"

if [[ -n "$GO" ]]; then
    start_go saturated-go-ws ws "$(free_port)"
    loadgen --url "ws://$GO_ADDR" --any-token "${run[@]}" --server-pid "$GO_PID" \
        --report "$OUT/saturated-go-ws.json" --plot "$OUT/saturated-go-ws.svg" >/dev/null
    stop_pid "$GO_PID"
    start_go saturated-go-tcp tcp "$(free_port)"
    loadgen --tcp "$GO_ADDR" "${run[@]}" --server-pid "$GO_PID" --report "$OUT/saturated-go-tcp.json" >/dev/null
    stop_pid "$GO_PID"
fi
rm -rf "$dir"
finish saturated
