#!/usr/bin/env bash
# Reconnect storm: AGENTS idle WebSocket sessions (each holding both streams), then the server is killed with
# SIGKILL and started again at once on the same port (agentwire: on the same SQLite file); the loadgen reports how
# long until every agent was connected again. agentwire against the Go reference server.
#
#   bench/load_reconnect.sh        (AGENTS=10000 SECONDS_PER_RUN=20)
source "$(dirname "${BASH_SOURCE[0]}")/load_lib.sh"
AGENTS="${AGENTS:-10000}"
SECS="${SECONDS_PER_RUN:-20}"
# Seconds to wait for all sessions before the kill.
CONNECT_WAIT=60
build

now_ms() { date +%s%3N; }

dir="$(mktemp -d)"
db="sqlite://$dir/agentwire.db?mode=rwc"
port="$(free_port)"
start_agentwire reconnect-setup "$db" "$port"
token_file="$(tokens "$db" "$AW_ADDR" "$AGENTS")"
stop_pid "$AW_PID"

run=(--agents "$AGENTS" --mode idle --hold-streams --duration "$SECS")
serve=(--max-sessions "$((AGENTS + 100))")
start_agentwire reconnect "$db" "$port" "${serve[@]}"
loadgen --url "ws://$AW_ADDR" --tokens-file "$token_file" "${run[@]}" --report "$OUT/reconnect-agentwire.json" \
    >/dev/null &
lg=$!
STARTED_PIDS+=("$lg")
for ((i = 0; i < CONNECT_WAIT * 10; i++)); do
    [[ "$(metric "$AW_ADDR" agentwire_sessions_active)" -ge "$AGENTS" ]] && break
    sleep 0.1
done
sleep 2
kill -9 "$AW_PID"
wait "$AW_PID" 2>/dev/null || true
restart="$(now_ms)"
start_agentwire reconnect-restarted "$db" "$port" "${serve[@]}"
wait "$lg"
echo "{\"restart_unix_ms\": $restart}" >"$OUT/reconnect-agentwire-restart.json"
stop_pid "$AW_PID"

if [[ -n "$GO" ]]; then
    port="$(free_port)"
    start_go reconnect-go ws "$port"
    loadgen --url "ws://$GO_ADDR" --any-token "${run[@]}" --report "$OUT/reconnect-go.json" >/dev/null &
    lg=$!
    STARTED_PIDS+=("$lg")
    # No session gauge on the reference server: wait out the connect ramp (2000/s) and a margin.
    sleep "$((AGENTS / 2000 + 4))"
    kill -9 "$GO_PID"
    wait "$GO_PID" 2>/dev/null || true
    restart="$(now_ms)"
    start_go reconnect-go-restarted ws "$port"
    wait "$lg"
    echo "{\"restart_unix_ms\": $restart}" >"$OUT/reconnect-go-restart.json"
    stop_pid "$GO_PID"
fi
rm -rf "$dir"
finish reconnect
