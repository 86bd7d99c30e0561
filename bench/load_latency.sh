#!/usr/bin/env bash
# p50/p99 at fixed offered rates (open loop, latency from the intended send time) and server CPU per call at each
# rate, against agentwire and the Go reference server, over WebSocket.
#
#   bench/load_latency.sh        (AGENTS=100 SECONDS_PER_RUN=10 RATES="1000 3000 10000")
source "$(dirname "${BASH_SOURCE[0]}")/load_lib.sh"
AGENTS="${AGENTS:-100}"
SECS="${SECONDS_PER_RUN:-10}"
RATES="${RATES:-1000 3000 10000}"
build

dir="$(mktemp -d)"
db="sqlite://$dir/agentwire.db?mode=rwc"
start_agentwire latency "$db" "$(free_port)"
token_file="$(tokens "$db" "$AW_ADDR" "$AGENTS")"
for rate in $RATES; do
    loadgen --url "ws://$AW_ADDR" --tokens-file "$token_file" --agents "$AGENTS" --mode fixed-rate --rate "$rate" \
        --rpc update-stats --duration "$SECS" --server-pid "$AW_PID" \
        --report "$OUT/latency-agentwire-$rate.json" --plot "$OUT/latency-agentwire-$rate.svg" >/dev/null
done
stop_pid "$AW_PID"

if [[ -n "$GO" ]]; then
    start_go latency-go ws "$(free_port)"
    for rate in $RATES; do
        loadgen --url "ws://$GO_ADDR" --any-token --agents "$AGENTS" --mode fixed-rate --rate "$rate" \
            --rpc update-stats --duration "$SECS" --server-pid "$GO_PID" \
            --report "$OUT/latency-go-$rate.json" --plot "$OUT/latency-go-$rate.svg" >/dev/null
    done
    stop_pid "$GO_PID"
fi
rm -rf "$dir"
finish latency
