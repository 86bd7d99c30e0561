#!/usr/bin/env bash
# The load figures of issue 7, all of them, then the "## Load (issue 7)" section of BENCHMARKS.md rewritten from
# them (other sections untouched). Each script is bounded (tens of seconds to a few minutes) and can run alone.
#
#   bench/load.sh            (ONLY="saturated latency" to run some; NO_WRITE=1 to leave BENCHMARKS.md alone)
source "$(dirname "${BASH_SOURCE[0]}")/load_lib.sh"
ONLY="${ONLY:-saturated latency idle_rss reconnect db_tx}"
build
export SKIP_BUILD=1 BENCH_OUT="$OUT"

{
    echo "Measured $(date -u +%Y-%m-%d) on the working tree at commit $(git rev-parse --short HEAD) with \`bench/load.sh\` (the loadgen:"
    echo "\`agentwire loadgen\`, \`loadgen/\`), release build, $(nproc) cores shared by the server and the loadgen;"
    echo "the Go reference is \`interop reference\` (\`tests/go\`: Coder's drpc, yamux and WebSocket libraries, no"
    echo "database). JSON reports and SVG plots of every run are written to \`target/bench-load/\`."
} >"$OUT/environment.md"

for script in $ONLY; do
    echo "== bench/load_$script.sh" >&2
    "$ROOT/bench/load_$script.sh" >/dev/null
done
if [[ -z "${NO_WRITE:-}" ]]; then
    python3 "$ROOT/bench/load_report.py" section "$OUT" "$ROOT/BENCHMARKS.md"
    echo "BENCHMARKS.md: section \"## Load (issue 7)\" written" >&2
fi
