#!/usr/bin/env bash
# Server CPU per unary call: our dRPC server against the Go reference (storj drpc + hashicorp yamux), the same
# Rust client load against each, CPU read from /proc/PID/stat before and after.
#
#   bench/unary_cpu.sh [CALLS] [CONCURRENCY] [SESSIONS]
#
# Prints one line per server with calls/s, latency percentiles and server CPU microseconds per call.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CALLS="${1:-200000}"
CONCURRENCY="${2:-64}"
SESSIONS="${3:-4}"

cargo build --release -q -p agentwire-transport --features testing --example bench_server --example bench_client
scripts/build-go-interop.sh target/go-interop/interop >/dev/null 2>&1
TICKS=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

measure() {
    local name="$1"; shift
    local fifo; fifo=$(mktemp -u); mkfifo "$fifo"
    "$@" >"$fifo" 2>/dev/null &
    local pid=$!
    local line; read -r line <"$fifo"
    local addr; addr=$(echo "$line" | awk '{print $3}')
    # warm up, then measure
    target/release/examples/bench_client "$addr" 2000 "$CONCURRENCY" "$SESSIONS" >/dev/null
    local before; before=$(cpu_ticks "$pid")
    local result; result=$(target/release/examples/bench_client "$addr" "$CALLS" "$CONCURRENCY" "$SESSIONS")
    local after; after=$(cpu_ticks "$pid")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$fifo"
    local calls; calls=$(echo "$result" | sed 's/.*"calls":\([0-9]*\).*/\1/')
    local us_per_call; us_per_call=$(awk -v d="$((after - before))" -v t="$TICKS" -v c="$calls" 'BEGIN { printf "%.1f", d / t * 1e6 / c }')
    echo "$name $result server_cpu_us_per_call=$us_per_call"
}

measure agentwire target/release/examples/bench_server 127.0.0.1:0
measure go-reference target/go-interop/interop serve --transport tcp --listen 127.0.0.1:0
