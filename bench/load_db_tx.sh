#!/usr/bin/env bash
# Database write transactions per second for AGENTS agents at Coder's default intervals (loadgen realistic mode)
# against agentwire on SQLite with its default batchers: the store's counters on /metrics, read twice over
# WINDOW seconds of steady state (after the connect ramp and SETTLE seconds of startup calls).
#
#   bench/load_db_tx.sh        (AGENTS=10000 SETTLE=10 WINDOW=30)
source "$(dirname "${BASH_SOURCE[0]}")/load_lib.sh"
AGENTS="${AGENTS:-10000}"
SETTLE="${SETTLE:-10}"
WINDOW="${WINDOW:-30}"
# Seconds to wait for all sessions.
CONNECT_WAIT=60
build

now_ms() { date +%s%3N; }
sample() { # sample PREFIX: the counters as JSON members
    printf '"tx_%s": %s, "queries_%s": %s, "rpcs_%s": %s' \
        "$1" "$(metric "$AW_ADDR" agentwire_db_transactions_total)" \
        "$1" "$(metric "$AW_ADDR" agentwire_db_queries_total)" \
        "$1" "$(metric "$AW_ADDR" agentwire_rpc_total)"
}

dir="$(mktemp -d)"
db="sqlite://$dir/agentwire.db?mode=rwc"
start_agentwire dbtx-setup "$db" "$(free_port)"
token_file="$(tokens "$db" "$AW_ADDR" "$AGENTS")"
stop_pid "$AW_PID"

# case NAME [loadgen flags]: one realistic run on a fresh server process, counters sampled over the window.
case_run() {
    local name="$1"
    shift
    start_agentwire "$name" "$db" "$(free_port)" --max-sessions "$((AGENTS + 100))"
    # The loadgen's measured phase covers the settle time, the window and a margin.
    loadgen --url "ws://$AW_ADDR" --tokens-file "$token_file" --agents "$AGENTS" --mode realistic \
        --duration "$((SETTLE + WINDOW + 5))" --server-pid "$AW_PID" "$@" \
        --report "$OUT/$name-agentwire.json" --plot "$OUT/$name-agentwire.svg" >/dev/null &
    local lg=$!
    STARTED_PIDS+=("$lg")
    for ((i = 0; i < CONNECT_WAIT * 10; i++)); do
        [[ "$(metric "$AW_ADDR" agentwire_sessions_active)" -ge "$AGENTS" ]] && break
        sleep 0.1
    done
    sleep "$SETTLE"
    local t0 t1 before after
    t0="$(now_ms)"
    before="$(sample before)"
    sleep "$WINDOW"
    t1="$(now_ms)"
    after="$(sample after)"
    echo "{\"seconds\": $(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1000 }'), $before, $after}" \
        >"$OUT/$name-metrics.json"
    wait "$lg"
    stop_pid "$AW_PID"
}

# Steady state: agents already ready (as after a restart), so only the periodic reports write.
case_run dbtx --already-started
# Every agent starting at once: lifecycle starting and ready, startup and logs are one write each.
case_run dbtx-startup
rm -rf "$dir"
finish dbtx
