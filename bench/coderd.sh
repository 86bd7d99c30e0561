#!/usr/bin/env bash
# Measured against coderd itself: N agents at Coder's default intervals (`agentwire loadgen --mode realistic`),
# first served by a real coderd v2.30 (its own `me/rpc`), then by `agentwire serve --coder-db` on the same database
# with that coderd running beside it, idle. One PostgreSQL with pg_stat_statements, everything on 127.0.0.1.
# Each run: the same warm-up, then a window in which server CPU and RSS (/proc), database statements and write
# transactions (pg_stat_statements, pg_stat_database, transaction ids) are read, then a reconnect storm (the serving
# process killed and started again with every agent connected). bench/coderd_report.py turns it into figures and
# rewrites BENCHMARKS.md's section between its markers.
#
#   bench/coderd.sh [--agents N] [--duration S] [--warmup S] [--storm S] [--mix S] [--idle S] [--relay]
#                   [--short] [--no-write]
#
#   --agents N     workspaces, each with one agent (default 1000)
#   --duration S   the measured window of each run, seconds (default 60)
#   --warmup S     seconds from the loadgen's start to the window; covers the connect ramp and each session's first
#                  calls (manifest, banners, monitoring configuration) (default 30)
#   --storm S      seconds the storm may take before the run ends anyway (default 30)
#   --mix S        then, per run, a window of the real agent's whole idle mix (`loadgen --mode fixed-rate --rpc mix`
#                  at its 22 calls a minute per agent), which the steady window misses part of: as the real agent's,
#                  the realistic mode's banner refresh comes 2 minutes and its first resource push 200 s after the
#                  connect (default 30; 0: none)
#   --idle S       seconds each server is measured with no agent first, the baseline per-agent figures are net of
#                  (default 10)
#   --short        the CI variant: --idle 5 --warmup 10 --duration 30 --storm 15 --mix 0 unless given, a debug
#                  agentwire is fine, BENCHMARKS.md is left alone, and counts are asserted (never times): every agent
#                  served without an error, no agent row read by agentwire after connect, its statements in the
#                  window no more than its batchers' flushes account for, and per agent call under half coderd's
#   --no-write     leave BENCHMARKS.md alone
#   --relay        a third run: agentwire with --coderd-url (relayed coordination: each agent session also holds one
#                  on coderd's own endpoint for its Coordinate and DERP map streams), to measure what that costs coderd
#
# PROFILE=1 records the serving process with perf over each window (OUT/NAME.perf.data).
#
# Binaries: AGENTWIRE_BIN (default target/release/agentwire, built unless given), INTEROP_BIN (default
# target/go-interop/interop, built by scripts/build-go-interop.sh unless given), coderd from scripts/coderd.sh
# (scripts/build-coder.sh server, cached). Output: BENCH_OUT (default target/bench-coderd): logs, JSON reports,
# samples, the chart (coderd.svg) and the markdown. AGENTWIRE_SERVE_ARGS: more `agentwire serve` flags (split on
# spaces), e.g. to measure another --coder-coordination.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$PATH:/usr/local/go/bin"

AGENTS=1000
DURATION=""
WARMUP=""
STORM=""
IDLE=""
MIX=""
SHORT=""
RELAY=""
WRITE=1
while [[ $# -gt 0 ]]; do
    case "$1" in
    --agents) AGENTS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --storm) STORM="$2"; shift 2 ;;
    --idle) IDLE="$2"; shift 2 ;;
    --mix) MIX="$2"; shift 2 ;;
    --short) SHORT=1; WRITE=""; shift ;;
    --no-write) WRITE=""; shift ;;
    --relay) RELAY=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "coderd.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
if [[ -n "$SHORT" ]]; then
    DURATION="${DURATION:-30}" WARMUP="${WARMUP:-10}" STORM="${STORM:-15}" IDLE="${IDLE:-5}" MIX="${MIX:-0}"
fi
DURATION="${DURATION:-60}" WARMUP="${WARMUP:-30}" STORM="${STORM:-30}" IDLE="${IDLE:-10}" MIX="${MIX:-30}"
read -r -a SERVE_ARGS <<<"${AGENTWIRE_SERVE_ARGS:-}"
for v in "$AGENTS" "$DURATION" "$WARMUP" "$STORM" "$IDLE" "$MIX"; do
    [[ "$v" =~ ^[0-9]+$ ]] || { echo "coderd.sh: '$v' is not a number" >&2; exit 2; }
done
# Bounded: the loadgen's own caps are 100k agents and an hour; these keep one run of this script well inside both.
if ((AGENTS < 1 || AGENTS > 20000 || DURATION < 10 || DURATION > 1800 || WARMUP < 5 || WARMUP > 600 ||
    STORM < 10 || STORM > 600 || IDLE < 1 || IDLE > 600 || MIX > 600)); then
    echo "coderd.sh: --agents 1..20000, --duration 10..1800, --warmup 5..600, --storm 10..600, --idle 1..600," \
        "--mix 0..600" >&2
    exit 2
fi

OUT="${BENCH_OUT:-$ROOT/target/bench-coderd}"
# The previous run's output goes; a directory that is not one is left alone.
if [[ -d "$OUT" && -n "$(ls -A "$OUT")" && ! -f "$OUT/tokens" ]]; then
    echo "coderd.sh: $OUT holds something other than this script's output; set BENCH_OUT" >&2
    exit 2
fi
rm -rf "$OUT"
mkdir -p "$OUT"
LOAD_AT_START="$(cut -d' ' -f1 /proc/loadavg)"
now_ms() { date +%s%3N; }
log() { echo "coderd.sh: $*" >&2; }

# Every process started here is ended here, by its own id.
PIDS=()
PGDATA_DIR=""
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n "$PGDATA_DIR" && -f "$PGDATA_DIR/postmaster.pid" ]]; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null 2>&1 || true
    fi
    [[ -n "${PGTMP:-}" ]] && rm -rf "$PGTMP"
}
trap cleanup EXIT
# A signal ends the script through the EXIT trap, so what it started is stopped too.
trap 'exit 143' TERM INT

# --- binaries -------------------------------------------------------------------------------------------------------
AW="${AGENTWIRE_BIN:-}"
if [[ -z "$AW" ]]; then
    log "cargo build --release"
    cargo build --release -q -p agentwire-cli
    AW="$ROOT/target/release/agentwire"
fi
INTEROP="${INTEROP_BIN:-}"
if [[ -z "$INTEROP" ]]; then
    scripts/build-go-interop.sh >/dev/null
    INTEROP="$ROOT/target/go-interop/interop"
fi
# coderd.sh builds coderd on first use; building here keeps that time out of the server's start.
CODER="$(scripts/build-coder.sh server)"
for bin in "$AW" "$INTEROP" "$CODER"; do
    [[ -x "$bin" ]] || { echo "coderd.sh: no executable $bin" >&2; exit 1; }
done

# Each server holds a socket per agent, the loadgen two per agent (it raises its own limit).
want_nofile=$((AGENTS * 2 + 4096))
if (($(ulimit -n) < want_nofile)); then
    ulimit -n "$want_nofile" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
if (($(ulimit -n) < AGENTS + 1024)); then
    echo "coderd.sh: ulimit -n is $(ulimit -n); $AGENTS agents need at least $((AGENTS + 1024))" >&2
    exit 1
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- PostgreSQL -----------------------------------------------------------------------------------------------------
# As scripts/with-postgres.sh starts one (Debian's package, as the postgres user when root), but with
# pg_stat_statements preloaded and three roles, so that statements split by who ran them: coderd (the database's
# owner, as coderd's --postgres-url user), agentwire (a member of coderd, so it reaches the same tables) and benchmon
# (this script's sampler, left out of every count). fsync stays on, as on a deployment.
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r | head -1)"
if [[ -z "$PGBIN" ]]; then
    if [[ "$(id -u)" -eq 0 ]]; then
        log "installing PostgreSQL (Debian's package)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update >&2 && apt-get install -y postgresql >&2
        PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r | head -1)"
    fi
    [[ -n "$PGBIN" ]] || { echo "coderd.sh: no PostgreSQL under /usr/lib/postgresql/*/bin" >&2; exit 1; }
fi
as_pg() {
    if [[ "$(id -u)" -eq 0 ]]; then su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; else "$@"; fi
}
PGTMP="$(mktemp -d /tmp/agentwire-bench-pg.XXXXXX)"
[[ "$(id -u)" -eq 0 ]] && chown postgres "$PGTMP"
PGDATA_DIR="$PGTMP/data"
as_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -A trust -U postgres -E UTF8 --no-locale >"$OUT/initdb.log" 2>&1
PGPORT="$(free_port)"
as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGTMP/postgres.log" -w -t 60 -o "-p $PGPORT -k $PGTMP \
    -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_preload_libraries=pg_stat_statements \
    -c pg_stat_statements.max=10000 -c pg_stat_statements.track=top -c track_io_timing=off" start >/dev/null
POSTMASTER_PID="$(head -1 "$PGDATA_DIR/postmaster.pid")"
psql_as() { # psql_as ROLE DB SQL
    "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U "$1" -d "$2" -c "$3"
}
psql_as postgres postgres "CREATE ROLE coderd LOGIN"
psql_as postgres postgres "CREATE DATABASE coder OWNER coderd"
psql_as postgres postgres "CREATE ROLE agentwire LOGIN IN ROLE coderd"
psql_as postgres postgres "CREATE ROLE benchmon LOGIN IN ROLE pg_read_all_stats"
psql_as postgres coder "CREATE EXTENSION pg_stat_statements;"
PG_CODERD="postgres://coderd@127.0.0.1:$PGPORT/coder?sslmode=disable"
PG_AGENTWIRE="postgres://agentwire@127.0.0.1:$PGPORT/coder?sslmode=disable"
log "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGPORT"

# --- coderd ---------------------------------------------------------------------------------------------------------
CODERD_PORT="$(free_port)"
CODERD_ADDR="127.0.0.1:$CODERD_PORT"
CODERD_URL="http://$CODERD_ADDR"
CODERD_PID=""
start_coderd() { # start_coderd LOGNAME: coderd in the background, until it answers; CODERD_PID is coderd itself
    scripts/coderd.sh --postgres-url "$PG_CODERD" --http-address "$CODERD_ADDR" --access-url "$CODERD_URL" \
        --dir "$OUT/coderd" >"$OUT/$1.log" 2>&1 &
    CODERD_PID=$!
    SPAWNED_MS="$(now_ms)"
    PIDS+=("$CODERD_PID")
    echo "$CODERD_PID" >"$OUT/coderd.pid"
    local i
    for ((i = 0; i < 3000; i++)); do
        curl -fsS -o /dev/null "$CODERD_URL/api/v2/buildinfo" 2>/dev/null && return 0
        kill -0 "$CODERD_PID" 2>/dev/null || { cat "$OUT/$1.log" >&2; echo "coderd.sh: coderd exited" >&2; exit 1; }
        sleep 0.1
    done
    echo "coderd.sh: coderd did not answer in 300 s" >&2
    exit 1
}
t="$(now_ms)"
start_coderd coderd-start
log "coderd (migrated the database) answered after $(( ($(now_ms) - t) / 1000 )) s"

# --- the deployment: N workspaces made with Coder's own fixtures ---------------------------------------------------
t="$(now_ms)"
"$INTEROP" coderdb bulk --postgres-url "$PG_CODERD" --workspaces "$AGENTS" --tokens-file "$OUT/tokens" \
    >"$OUT/bulk.json" 2>"$OUT/bulk.log" || { cat "$OUT/bulk.log" "$OUT/bulk.json" >&2; exit 1; }
log "coderdb bulk: $AGENTS workspaces in $(( ($(now_ms) - t) / 1000 )) s"

# --- agentwire ------------------------------------------------------------------------------------------------------
AW_PORT="$(free_port)"
AW_ADDR="127.0.0.1:$AW_PORT"
AW_PID=""
AW_MODE_ARGS=()
start_agentwire() { # start_agentwire LOGNAME
    "$AW" serve --coder-db "$PG_AGENTWIRE" --access-url "$CODERD_URL" --listen "$AW_ADDR" \
        --max-sessions "$((AGENTS + 1000))" "${AW_MODE_ARGS[@]}" "${SERVE_ARGS[@]}" >"$OUT/$1.log" 2>&1 &
    AW_PID=$!
    SPAWNED_MS="$(now_ms)"
    PIDS+=("$AW_PID")
    echo "$AW_PID" >"$OUT/agentwire.pid"
    local i
    for ((i = 0; i < 600; i++)); do
        grep -q "listening on" "$OUT/$1.log" 2>/dev/null && return 0
        kill -0 "$AW_PID" 2>/dev/null || { cat "$OUT/$1.log" >&2; echo "coderd.sh: agentwire exited" >&2; exit 1; }
        sleep 0.1
    done
    echo "coderd.sh: agentwire did not listen in 60 s" >&2
    exit 1
}
metrics_json() { # metrics_json FILE: agentwire's /metrics counters by name and labels, as JSON
    curl -fsS "http://$AW_ADDR/metrics" | python3 -c '
import json, sys
out = {}
for line in sys.stdin:
    if line.startswith("#") or not line.strip():
        continue
    name, _, value = line.rpartition(" ")
    try:
        out[name] = float(value)
    except ValueError:
        pass
json.dump(out, sys.stdout)' >"$1"
}

# --- sampling -------------------------------------------------------------------------------------------------------
SAMPLER_PID=""
start_sampler() { # start_sampler RUN
    python3 "$ROOT/bench/coderd_sample.py" --out "$OUT/$1.samples.jsonl" --psql "$PGBIN/psql" --port "$PGPORT" \
        --postmaster "$POSTMASTER_PID" --pid-file "coderd=$OUT/coderd.pid" --pid-file "agentwire=$OUT/agentwire.pid" \
        >"$OUT/$1.sampler.log" 2>&1 &
    SAMPLER_PID=$!
    PIDS+=("$SAMPLER_PID")
}
stop_sampler() {
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
}
statements_json() { # statements_json FILE: pg_stat_statements by role and statement, the sampler's left out
    psql_as benchmon coder "SELECT coalesce(json_agg(s), '[]') FROM (
        SELECT r.rolname AS role, p.queryid::text AS queryid, p.calls, p.rows, p.total_exec_time,
               left(p.query, 400) AS query
        FROM pg_stat_statements p JOIN pg_roles r ON r.oid = p.userid
        WHERE r.rolname IN ('coderd', 'agentwire')) s" >"$1"
}
db_json() { # db_json FILE: the database's commits and the next transaction id (write transactions between two reads)
    psql_as benchmon coder "SELECT json_build_object('unix_ms', (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
        'xact_commit', (SELECT xact_commit FROM pg_stat_database WHERE datname = 'coder'),
        'next_xid', pg_snapshot_xmax(pg_current_snapshot())::text::bigint)" >"$1"
}
# Each window's edges: statements, database counters, the servers' CPU and RSS, agentwire's /metrics.
mark() { # mark RUN EDGE
    statements_json "$OUT/$1.$2.statements.json"
    db_json "$OUT/$1.$2.db.json"
    python3 "$ROOT/bench/coderd_sample.py" --once --postmaster "$POSTMASTER_PID" \
        --pid-file "coderd=$OUT/coderd.pid" --pid-file "agentwire=$OUT/agentwire.pid" >"$OUT/$1.$2.proc.json"
    if [[ -s "$OUT/agentwire.pid" ]] && kill -0 "$(cat "$OUT/agentwire.pid")" 2>/dev/null; then
        metrics_json "$OUT/$1.$2.metrics.json"
    fi
}

# --- one run --------------------------------------------------------------------------------------------------------
# run NAME URL PID_FILE: an idle baseline (no agents), then the steady loadgen (warm-up, then the window between the
# marks w0 and w1), then a second loadgen for the storm: once every agent is connected again, the serving process
# is killed (SIGKILL, as a crash) and started again. Two loadgens, so that the storm's reconnects do not enter the
# steady run's latencies.
sleep_until() { # sleep_until UNIX_MS
    local d
    d="$(awk -v t="$1" -v n="$(now_ms)" 'BEGIN { d = (t - n) / 1000; print (d > 0 ? d : 0) }')"
    sleep "$d"
}
loadgen() { # loadgen NAME URL PID_FILE SECONDS: in the background, LG_PID
    # --already-started: the agents are ones the server finds running (as after a restart, or when agentwire takes
    # over from coderd), so both runs send the same calls: the session's own (manifest, banner, the two streams)
    # and the periodic reports, not a start-up in one run and none in the other.
    # --source-ips: agents come from many addresses, as real ones do; from one, coderd's per-address API rate limit
    # (512 requests a minute) refuses most of their connects with 429.
    "$AW" loadgen --url "$2" --tokens-file "$OUT/tokens" --agents "$AGENTS" --mode realistic --source-ips 254 \
        --already-started --duration "$4" --server-pid "$(cat "$3")" --ramp-timeout 120 \
        --report "$OUT/$1.json" --plot "$OUT/$1.loadgen.svg" >"$OUT/$1.loadgen.log" 2>&1 &
    LG_PID=$!
    PIDS+=("$LG_PID")
}
# until_measuring NAME: until the loadgen's progress line (every 5 s) shows its measured phase, which starts once
# every agent has connected (bounded by its ramp timeout), then 2 s more.
until_measuring() {
    local i
    for ((i = 0; i < 1300; i++)); do
        grep -q "measured *sessions $AGENTS/$AGENTS" "$OUT/$1.loadgen.log" 2>/dev/null && break
        sleep 0.1
    done
    sleep 2
}
wait_loadgen() { # wait_loadgen NAME
    wait "$LG_PID" || { cat "$OUT/$1.loadgen.log" >&2; echo "coderd.sh: the loadgen ($1) failed" >&2; exit 1; }
}
# The previous run's agents leave work behind (disconnects, coderd's batches); a baseline taken during it would be
# no baseline. Waits (at most 60 s) until 5 s pass with fewer than 20 statements.
settle_db() {
    local i a b
    for ((i = 0; i < 12; i++)); do
        a="$(psql_as benchmon coder "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements")"
        sleep 5
        b="$(psql_as benchmon coder "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements")"
        (( ${b%.*} - ${a%.*} < 20 )) && return 0
    done
    log "the database did not settle in 60 s; the baseline includes what was still running"
}
run() {
    local name="$1" url="$2" pid_file="$3"
    settle_db
    log "$name: idle ${IDLE} s, then $AGENTS agents: warm-up ${WARMUP} s, window ${DURATION} s; then a storm"
    psql_as postgres coder "SELECT pg_stat_statements_reset()" >/dev/null
    start_sampler "$name"
    mark "$name" idle0
    sleep "$IDLE"
    mark "$name" idle1
    local started
    started="$(now_ms)"
    loadgen "$name" "$url" "$pid_file" "$((WARMUP + DURATION))"
    sleep_until "$((started + WARMUP * 1000))"
    mark "$name" w0
    # PROFILE=1: the serving process's call graphs over the window (perf at 99 Hz; it costs CPU, so not for the
    # recorded figures).
    if [[ -n "${PROFILE:-}" ]] && command -v perf >/dev/null; then
        perf record -F 99 -g -p "$(cat "$pid_file")" -o "$OUT/$name.perf.data" -- sleep "$DURATION" \
            >"$OUT/$name.perf.log" 2>&1 &
        PIDS+=("$!")
    fi
    sleep_until "$((started + (WARMUP + DURATION) * 1000))"
    mark "$name" w1
    wait_loadgen "$name"

    # The real agent's whole idle mix, PushResourcesMonitoringUsage and GetAnnouncementBanners included, at its rate
    # (22 calls a minute per agent), on fresh sessions that hold no streams. The window: MIX seconds once all are
    # connected.
    if ((MIX > 0)); then
        "$AW" loadgen --url "$url" --tokens-file "$OUT/tokens" --agents "$AGENTS" --mode fixed-rate --rpc mix \
            --rate "$(awk -v n="$AGENTS" 'BEGIN { printf "%.2f", n * 22 / 60 }')" --source-ips 254 \
            --duration "$((MIX + 10))" --server-pid "$(cat "$pid_file")" --ramp-timeout 120 \
            --report "$OUT/$name-mix.json" >"$OUT/$name-mix.loadgen.log" 2>&1 &
        LG_PID=$!
        PIDS+=("$LG_PID")
        until_measuring "$name-mix"
        mark "$name" m0
        sleep "$MIX"
        mark "$name" m1
        wait_loadgen "$name-mix"
    fi

    # The storm: once every agent is connected, the kill. The storm loadgen's measured phase: the progress line
    # (every 5 s), the 2 s after it, then the storm itself.
    loadgen "$name-storm" "$url" "$pid_file" "$((STORM + 10))"
    until_measuring "$name-storm"
    mark "$name" storm0
    local victim
    victim="$(cat "$pid_file")"
    kill -9 "$victim"
    wait "$victim" 2>/dev/null || true
    local killed
    killed="$(now_ms)"
    if [[ "$name" == coderd ]]; then start_coderd coderd-restart; else start_agentwire "$name-restart"; fi
    printf '{"kill_unix_ms": %s, "spawn_unix_ms": %s, "ready_unix_ms": %s}\n' "$killed" "$SPAWNED_MS" "$(now_ms)" \
        >"$OUT/$name.storm.json"
    wait_loadgen "$name-storm"
    mark "$name" end
    stop_sampler
    printf '{"started_unix_ms": %s, "agents": %s, "idle": %s, "warmup": %s, "duration": %s, "storm": %s, "mix": %s}\n' \
        "$started" "$AGENTS" "$IDLE" "$WARMUP" "$DURATION" "$STORM" "$MIX" >"$OUT/$name.run.json"
}

# coderd serves its agents: the loadgen straight at coderd's own endpoint. Agent API 2.7 is what coderd v2.30 (and
# agentwire beside it) serve.
RPC_PATH="/api/v2/workspaceagents/me/rpc?version=2.7"
: >"$OUT/agentwire.pid"
run coderd "ws://$CODERD_ADDR$RPC_PATH" "$OUT/coderd.pid"
# agentwire serves them, coderd beside it with nothing routed to it but its own background work.
start_agentwire agentwire-start
run agentwire "ws://$AW_ADDR$RPC_PATH" "$OUT/agentwire.pid"
if [[ -n "$RELAY" ]]; then
    stop="$(cat "$OUT/agentwire.pid")"
    kill "$stop" && wait "$stop" 2>/dev/null || true
    AW_MODE_ARGS=(--coderd-url "$CODERD_URL")
    start_agentwire agentwire-relay-start
    run agentwire-relay "ws://$AW_ADDR$RPC_PATH" "$OUT/agentwire.pid"
fi

# The commit the measured binary was built from, when it lives in a work tree (a worktree's target/ does).
commit="$(git -C "$(dirname "$AW")" rev-parse --short HEAD 2>/dev/null || echo unknown)"
python3 - "$LOAD_AT_START" "$(cut -d' ' -f1 /proc/loadavg)" "$(nproc)" "$commit" "$(date -u +%Y-%m-%d)" "$AW" \
    "$("$PGBIN/postgres" --version | awk '{print $3}')" "$(ulimit -n)" >"$OUT/environment.json" <<'PY'
import json, sys
a = sys.argv[1:]
json.dump({"load_start": float(a[0]), "load_end": float(a[1]), "nproc": int(a[2]), "commit": a[3], "date": a[4],
           "agentwire_bin": a[5], "postgres": a[6], "ulimit_n": int(a[7])}, sys.stdout)
PY

report=(python3 "$ROOT/bench/coderd_report.py" "$OUT")
if [[ -n "$SHORT" ]]; then
    "${report[@]}" --check
elif [[ -n "$WRITE" ]]; then
    "${report[@]}" --write "$ROOT/BENCHMARKS.md"
    log "BENCHMARKS.md: the section between the coderd markers written"
else
    "${report[@]}"
fi
