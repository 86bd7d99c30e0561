#!/usr/bin/env bash
# cargo-fuzz targets of the dRPC layer (fuzz/), of the WebSocket adapter (fuzz/ws/), of the Agent RPC handlers on
# an in-memory SQLite store (fuzz/agentapi/) and of the DERP relay's frame decoder (fuzz/derp/).
#
#   scripts/fuzz.sh build                 build every target (libFuzzer + ASan, release with debug assertions)
#   scripts/fuzz.sh run SECONDS [TARGET…]  run each target (default: all) for SECONDS, one after another, from a
#                                         temporary copy of fuzz/seeds/TARGET; prints each target's executions;
#                                         exits non-zero if any target crashed (the reproducer is left in
#                                         fuzz/artifacts/TARGET/, fuzz/ws/artifacts/TARGET/,
#                                         fuzz/agentapi/artifacts/TARGET/ or fuzz/derp/artifacts/TARGET/)
#   scripts/fuzz.sh replay                replay every seed and fuzz/regressions/ input without libFuzzer
#                                         (plain `cargo test`, stable toolchain)
#   scripts/fuzz.sh seed                  regenerate fuzz/seeds/ from tests/fixtures/go-wire (python3)
#   scripts/fuzz.sh list                  list the targets
#
# Needs cargo-fuzz (installed with `cargo install cargo-fuzz --locked` when missing) and a nightly toolchain; without
# one (or with FUZZ_TOOLCHAIN=stable), the stable toolchain is used with RUSTC_BOOTSTRAP=1. FUZZ_ARGS adds libFuzzer
# flags to `run` (e.g. FUZZ_ARGS="-max_len=8192").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DRPC_TARGETS=(drpc_frame drpc_packet drpc_conn drpc_conn_client)
WS_TARGETS=(ws_bytes)
AGENTAPI_TARGETS=(agentapi_requests)
DERP_TARGETS=(derp_frames)
ALL_TARGETS=("${DRPC_TARGETS[@]}" "${WS_TARGETS[@]}" "${AGENTAPI_TARGETS[@]}" "${DERP_TARGETS[@]}")

log() { echo "fuzz.sh: $*" >&2; }

fuzz_dir() {
    case "$1" in
        ws_*) echo fuzz/ws ;;
        agentapi_*) echo fuzz/agentapi ;;
        derp_*) echo fuzz/derp ;;
        drpc_*) echo fuzz ;;
        *) log "unknown target $1 (targets: ${ALL_TARGETS[*]})"; exit 2 ;;
    esac
}

setup() {
    if ! cargo fuzz --version >/dev/null 2>&1; then
        log "installing cargo-fuzz"
        cargo install cargo-fuzz --locked >&2
    fi
    local toolchains
    toolchains="$(rustup toolchain list 2>/dev/null || true)"
    if [ "${FUZZ_TOOLCHAIN:-auto}" != stable ] && grep -q '^nightly' <<<"$toolchains"; then
        CARGO=(cargo +nightly)
    else
        log "no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1"
        export RUSTC_BOOTSTRAP=1
        CARGO=(cargo)
    fi
}

build() {
    setup
    for dir in fuzz fuzz/ws fuzz/agentapi fuzz/derp; do
        log "building targets in $dir"
        "${CARGO[@]}" fuzz build --fuzz-dir "$dir" >&2
    done
}

run_target() {
    local target="$1" seconds="$2" dir corpus logfile status=0
    dir="$(fuzz_dir "$target")"
    corpus="$(mktemp -d "${TMPDIR:-/tmp}/agentwire-fuzz-$target.XXXXXX")"
    logfile="$corpus.log"
    cp fuzz/seeds/"$target"/* "$corpus"/
    local seeds
    seeds="$(find "$corpus" -type f | wc -l)"
    log "$target: ${seconds}s from $seeds seeds"
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    "${CARGO[@]}" fuzz run --fuzz-dir "$dir" "$target" "$corpus" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=20 ${FUZZ_ARGS:-} >"$logfile" 2>&1 || status=$?
    local done_line execs rate rss
    done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$logfile" | tail -n 1 || true)"
    execs="$(sed -n 's/^stat::number_of_executed_units:[[:space:]]*//p' "$logfile" | tail -n 1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec:[[:space:]]*//p' "$logfile" | tail -n 1)"
    rss="$(sed -n 's/^stat::peak_rss_mb:[[:space:]]*//p' "$logfile" | tail -n 1)"
    echo "$target: ${done_line:-no DONE line}"
    echo "$target: stat::number_of_executed_units=${execs:-?} stat::average_exec_per_sec=${rate:-?} peak_rss_mb=${rss:-?} corpus_files=$(find "$corpus" -type f | wc -l)"
    if [ "$status" -ne 0 ]; then
        echo "$target: FAILED (exit $status); full log: $logfile"
        # The panic (or sanitizer report) and the reproducer; the Debug dump of the input is in the log.
        grep -E -A 12 "panicked at|ERROR: (AddressSanitizer|libFuzzer)|^SUMMARY" "$logfile" | head -n 60 || true
        grep -E "Test unit written to|^Reproduce with|cargo fuzz run" "$logfile" | head -n 4 || true
        ls -1 "$dir/artifacts/$target" 2>/dev/null | sed "s|^|$target: artifact $dir/artifacts/$target/|" || true
        rm -rf "$corpus"
        return 1
    fi
    rm -rf "$corpus" "$logfile"
}

run() {
    local seconds="${1:-}"
    if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
        log "usage: scripts/fuzz.sh run SECONDS [TARGET...]"
        exit 2
    fi
    shift
    local targets=("$@")
    [ "${#targets[@]}" -gt 0 ] || targets=("${ALL_TARGETS[@]}")
    for t in "${targets[@]}"; do fuzz_dir "$t" >/dev/null; done
    build
    local failed=()
    for t in "${targets[@]}"; do
        run_target "$t" "$seconds" || failed+=("$t")
    done
    if [ "${#failed[@]}" -gt 0 ]; then
        echo "fuzz: crashes in ${failed[*]}"
        exit 1
    fi
    echo "fuzz: ${#targets[@]} targets ran ${seconds}s each, no crash"
}

case "${1:-}" in
    build) build ;;
    run) shift; run "$@" ;;
    replay)
        (cd fuzz && cargo test --workspace)
        ;;
    seed) python3 fuzz/gen_seeds.py ;;
    list) printf '%s\n' "${ALL_TARGETS[@]}" ;;
    *)
        sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
