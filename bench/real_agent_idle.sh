#!/usr/bin/env bash
# The real `coder agent` (scripts/build-coder.sh agent) at Coder's default intervals against agentwire, with the
# shipped example definition: the time from the agent's start to READY, then its RPC mix while idle (calls per
# minute by method, from the difference of two `/metrics` readings), the figure the performance work uses as "an
# agent at Coder's defaults".
#
#   bench/real_agent_idle.sh [MINUTES]      (default 10; AGENTWIRE_BIN overrides the server binary)
#
# Everything listens on 127.0.0.1; the run is bounded by MINUTES plus the agent's start (at most 120 s).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MINUTES="${1:-10}"
AW="${AGENTWIRE_BIN:-$ROOT/target/release/agentwire}"
OUT="${BENCH_OUT:-$ROOT/target/bench-load}"
mkdir -p "$OUT"
if [[ ! -x "$AW" ]]; then
    echo "real_agent_idle: no server binary at $AW (cargo build --release, or set AGENTWIRE_BIN)" >&2
    exit 1
fi
command -v sqlite3 >/dev/null || { echo "real_agent_idle: sqlite3 is needed to read the agent's row" >&2; exit 1; }
CODER="$(scripts/build-coder.sh agent)"

dir="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
db="sqlite://$dir/agentwire.db?mode=rwc"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
app_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
sed "s/13380/$app_port/g" examples/agent.toml >"$dir/agent.toml"
created="$("$AW" agent create --db "$db" --workspace bench --name main --spec "$dir/agent.toml" --json)"
token="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["token"])' "$created")"
agent_id="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["agent_id"])' "$created")"

"$AW" serve --db "$db" --listen "127.0.0.1:$port" >"$OUT/real-agent.server.log" 2>&1 &
pids+=($!)
for _ in $(seq 150); do grep -q "listening on" "$OUT/real-agent.server.log" && break; sleep 0.2; done
grep -q "listening on" "$OUT/real-agent.server.log" || { echo "real_agent_idle: the server did not start" >&2; exit 1; }

mkdir -p "$dir/tmp"
start_ns="$(date +%s%N)"
TMPDIR="$dir/tmp" CODER_AGENT_URL="http://127.0.0.1:$port" CODER_AGENT_TOKEN="$token" CODER_AGENT_AUTH=token \
    CODER_AGENT_LOG_DIR="$dir/logs" CODER_AGENT_SCRIPT_DATA_DIR="$dir/scripts" \
    CODER_AGENT_DEBUG_ADDRESS=127.0.0.1:0 CODER_AGENT_PPROF_ADDRESS=127.0.0.1:0 \
    CODER_AGENT_PROMETHEUS_ADDRESS=127.0.0.1:0 CODER_AGENT_DEVCONTAINERS_ENABLE=false \
    "$CODER" agent >"$OUT/real-agent.agent.log" 2>&1 &
pids+=($!)

file="$dir/agentwire.db"
ready=""
for _ in $(seq 1200); do
    ready="$(sqlite3 "$file" "SELECT ready_at FROM workspace_agents WHERE id = '$agent_id' AND lifecycle_state = 'ready'" 2>/dev/null || true)"
    [[ -n "$ready" ]] && break
    sleep 0.1
done
[[ -n "$ready" ]] || { echo "real_agent_idle: the agent did not reach READY in 120 s" >&2; exit 1; }
ready_ns="$(date +%s%N)"
started="$(sqlite3 "$file" "SELECT started_at FROM workspace_agents WHERE id = '$agent_id'")"

metrics() { curl -fsS "http://127.0.0.1:$port/metrics" | grep '^agentwire_rpc_total{' || true; }
before="$(metrics)"
sleep "$((MINUTES * 60))"
after="$(metrics)"

python3 - "$MINUTES" "$start_ns" "$ready_ns" "$started" "$ready" <<PY
import re, sys
minutes, start_ns, ready_ns, started_us, ready_us = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def parse(text):
    calls = {}
    for line in text.splitlines():
        m = re.match(r'agentwire_rpc_total\{method="([^"]+)",code="([^"]+)"\} (\d+)', line)
        if m:
            calls[m.group(1)] = calls.get(m.group(1), 0) + int(m.group(3))
    return calls
before, after = parse("""$before"""), parse("""$after""")
print(f"agent process start to READY seen in the database: {(ready_ns - start_ns) / 1e9:.2f} s "
      f"(the agent's own started_at to ready_at: {(ready_us - started_us) / 1e6:.2f} s)")
print(f"\nRPC mix over {minutes} idle minutes (calls per minute):\n")
print("| method | calls/min |")
print("| --- | --- |")
total = 0
for method in sorted(after):
    n = after[method] - before.get(method, 0)
    total += n
    if n:
        print(f"| {method} | {n / minutes:.2f} |")
print(f"| all | {total / minutes:.2f} |")
PY
