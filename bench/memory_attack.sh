#!/usr/bin/env bash
# Issue 15's memory attack against a release server, with server RSS from /proc: one session over plain TCP opens
# STREAMS streams and sends each the start of a dRPC Invoke declaring ~4 MiB, never finishing it
# (examples/memory_attack.rs), then holds the session until the server ends it (at most 30 s); then the same attack
# once more on the same server. Per row: VmRSS before, VmHWM (the peak), VmRSS 3 s after the first and the second
# session ended (equal figures: the allocator reuses what it kept; growing ones would be a leak), the bytes the
# server took, and how the session ended. One row, the default limits; `row LABEL VAR=VALUE…` below adds rows run
# with other environments (AGENTWIRE_* limits, glibc's MALLOC_* tunables).
#
#   bench/memory_attack.sh            (STREAMS=500; SKIP_BUILD=1 reuses the release binaries)
#
# Prints a markdown table (also $OUT/memory-attack.md) for BENCHMARKS.md.
source "$(dirname "${BASH_SOURCE[0]}")/load_lib.sh"
STREAMS="${STREAMS:-500}"
if [[ -z "${SKIP_BUILD:-}" ]]; then
    cargo build --release -q --bin agentwire --example memory_attack
fi
ATTACK="$ROOT/target/release/examples/memory_attack"

kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }

row() { # row LABEL [env assignments...]: one fresh server, one attack
    local label="$1"
    shift
    local dir db port tcp_port token log
    dir="$(mktemp -d)"
    db="sqlite://$dir/agentwire.db?mode=rwc"
    token="$("$AW" agent create --db "$db" --workspace attack --name main --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
    port="$(free_port)"
    tcp_port="$(free_port)"
    log="$OUT/memory-attack-$label.server.log"
    : >"$log"
    env "$@" "$AW" serve --db "$db" --listen "127.0.0.1:$port" --tcp-listen "127.0.0.1:$tcp_port" \
        --tcp-agent-token "$token" >"$log" 2>&1 &
    AW_PID=$!
    STARTED_PIDS+=("$AW_PID")
    wait_for_line "$log" "listening on"
    sleep 1
    local before peak after again result
    before="$(kib "$AW_PID" VmRSS)"
    result="$("$ATTACK" --addr "127.0.0.1:$tcp_port" --streams "$STREAMS" --seconds 30)"
    sleep 3
    after="$(kib "$AW_PID" VmRSS)"
    "$ATTACK" --addr "127.0.0.1:$tcp_port" --streams "$STREAMS" --seconds 30 >/dev/null
    sleep 3
    again="$(kib "$AW_PID" VmRSS)"
    peak="$(kib "$AW_PID" VmHWM)"
    local evictions
    evictions="$(metric "127.0.0.1:$port" agentwire_memory_budget_evictions_total)"
    stop_pid "$AW_PID"
    rm -rf "$dir"
    python3 - "$label" "$before" "$peak" "$after" "$again" "$evictions" "$result" <<'EOF'
import json, sys
label, before, peak, after, again, evictions, result = sys.argv[1:]
r = json.loads(result)
mib = lambda kib: f"{int(kib) / 1024:.1f}"
ended = f"GoAway({','.join(map(str, r['go_aways']))})" if r["go_aways"] else ("open" if r["session_open"] else "closed")
print(f"| {label} | {r['streams_opened']} | {r['sent_bytes'] / 2**20:.1f} | {mib(before)} | {mib(peak)} | "
      f"{mib(after)} | {mib(again)} | {ended} after {r['seconds']:.1f} s | {evictions} |")
EOF
}

{
    echo "| server | streams opened | MiB the server took | RSS before (MiB) | peak RSS (MiB) | RSS 3 s after (MiB) | RSS after a second attack (MiB) | first session | evictions (both) |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    row default
    echo
    echo "\`STREAMS=$STREAMS bench/memory_attack.sh\` at $(git rev-parse --short HEAD); load average $LOAD_AT_START at the start."
} | tee "$OUT/memory-attack.md"
