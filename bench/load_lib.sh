# Shared by the bench/load_*.sh scripts (sourced, not run): release binaries, servers on 127.0.0.1 ephemeral ports,
# the loadgen, and cleanup of every process started here.
#
# Environment: BENCH_OUT (default target/bench-load) holds the JSON reports, SVG plots, logs and markdown fragments.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${BENCH_OUT:-$ROOT/target/bench-load}"
mkdir -p "$OUT"
# Overridable, for A/B runs across revisions: AGENTWIRE_BIN serves (and creates its own tokens, so its database is
# migrated by its own schema); LOADGEN_BIN drives the load, so both rows are measured by one load generator.
AW="${AGENTWIRE_BIN:-$ROOT/target/release/agentwire}"
LOADGEN_BIN="${LOADGEN_BIN:-$AW}"
GO="$ROOT/target/go-interop/interop"
# Most seconds any server may take to print its listening line.
START_TIMEOUT=30

STARTED_PIDS=()
cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

build() {
    if [[ -z "${SKIP_BUILD:-}" ]]; then
        cargo build --release -q
        if ! scripts/build-go-interop.sh >/dev/null 2>&1; then
            echo "bench: the Go reference server did not build; Go figures are left out" >&2
        fi
    fi
    # Go's figures need the `reference` subcommand, which the driver's usage lists.
    if ! { [[ -x "$GO" ]] && grep -q reference <<<"$("$GO" 2>&1 || true)"; }; then
        GO=""
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for_line FILE PATTERN: until FILE has a line matching PATTERN (bounded by START_TIMEOUT).
wait_for_line() {
    local i
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench: no '$2' in $1 after ${START_TIMEOUT}s" >&2
    cat "$1" >&2
    return 1
}

# start_agentwire NAME DB PORT [serve flags...]: sets AW_PID and AW_ADDR.
start_agentwire() {
    local name="$1" db="$2" port="$3"
    shift 3
    local log="$OUT/$name.server.log"
    : >"$log"
    "$AW" serve --db "$db" --listen "127.0.0.1:$port" "$@" >"$log" 2>&1 &
    AW_PID=$!
    STARTED_PIDS+=("$AW_PID")
    AW_ADDR="127.0.0.1:$port"
    wait_for_line "$log" "listening on"
}

# start_go NAME TRANSPORT PORT: sets GO_PID and GO_ADDR. stdin is /dev/null: the reference server only watches a
# pipe or socket for EOF.
start_go() {
    local name="$1" transport="$2" port="$3"
    local log="$OUT/$name.server.log"
    : >"$log"
    "$GO" reference --transport "$transport" --listen "127.0.0.1:$port" </dev/null >"$log" 2>&1 &
    GO_PID=$!
    STARTED_PIDS+=("$GO_PID")
    GO_ADDR="127.0.0.1:$port"
    wait_for_line "$log" "LISTENING"
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

loadgen() {
    "$LOADGEN_BIN" loadgen --quiet "$@"
}

# tokens DB ADDR N: a file of N agent tokens in DB (created through the running server's database once, reused).
tokens() {
    local db="$1" addr="$2" n="$3"
    local file="$OUT/tokens-$n"
    if [[ ! -s "$file" || "$(wc -l <"$file")" -lt "$n" || "$(cat "$OUT/tokens-$n.db" 2>/dev/null)" != "$db" ]]; then
        "$AW" loadgen --quiet --url "ws://$addr" --db "$db" --write-tokens "$file" --agents "$n" --mode idle \
            --duration 1 --connect-rate 5000 >/dev/null
        echo "$db" >"$OUT/tokens-$n.db"
    fi
    echo "$file"
}

metric() { # metric ADDR NAME: a counter's value from /metrics (summed over labels)
    curl -fsS "http://$1/metrics" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%d\n", s }'
}

LOAD_AT_START="$(cut -d' ' -f1 /proc/loadavg)"

# finish KIND: the markdown fragment for KIND into $OUT/KIND.md (and stdout), with the machine's load average at
# the script's start and end: other work on the 2 cores shows up in every figure here.
finish() {
    {
        md "$1" "$OUT"
        echo
        echo "Load average (1 min) at the start and end of this script: $LOAD_AT_START / $(cut -d' ' -f1 /proc/loadavg)."
    } | tee "$OUT/$1.md"
}

md() { # md SCRIPT ARGS...: markdown from the JSON reports (bench/load_report.py)
    python3 "$ROOT/bench/load_report.py" "$@"
}
