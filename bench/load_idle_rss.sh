#!/usr/bin/env bash
# Server RSS per idle session: a fresh server per row, N WebSocket sessions connected and held (with nothing, or
# with the StreamDERPMaps and Coordinate streams an agent keeps open), VmRSS from /proc before the first connect and
# at the end. agentwire against the Go reference server.
#
#   bench/load_idle_rss.sh        (SIZES="1000 10000" SECONDS_PER_RUN=5; 50000 needs more file descriptors than
#                                   this machine allows, see the note it writes)
source "$(dirname "${BASH_SOURCE[0]}")/load_lib.sh"
SIZES="${SIZES:-1000 10000 50000}"
SECS="${SECONDS_PER_RUN:-5}"
# Sessions over this many use several loopback source addresses (one address has ~28k ephemeral ports).
PORTS_PER_IP=25000
build

hard_nofile="$(ulimit -Hn)"
dir="$(mktemp -d)"
db="sqlite://$dir/agentwire.db?mode=rwc"
max_size=0
for n in $SIZES; do ((n > max_size)) && max_size=$n; done
rm -f "$OUT/rss-50k.note"

fits() { # fits N: both the server and the loadgen need one descriptor per session, plus a margin.
    local n="$1"
    [[ "$hard_nofile" == unlimited ]] || ((n + 512 <= hard_nofile))
}

tokens_for=0
for n in $SIZES; do
    if fits "$n"; then tokens_for=$n; fi
done
start_agentwire rss-setup "$db" "$(free_port)"
token_file="$(tokens "$db" "$AW_ADDR" "$tokens_for")"
stop_pid "$AW_PID"

for n in $SIZES; do
    if ! fits "$n"; then
        echo "not measured: the file-descriptor hard limit here is $hard_nofile (RLIMIT_NOFILE; raising it needs" \
            "CAP_SYS_RESOURCE, which this container does not grant even to root: setrlimit and ulimit -Hn return" \
            "EPERM), and one server process needs a descriptor per session, so at most ~$((hard_nofile - 512))" \
            "sessions fit in one server process. $n sessions need a machine or container with a higher hard limit;" \
            "the loadgen spreads them over source addresses (--source-ips $(((n + PORTS_PER_IP - 1) / PORTS_PER_IP)))" \
            "and asks for the limit itself (--nofile)." >"$OUT/rss-50k.note"
        cat "$OUT/rss-50k.note" >&2
        continue
    fi
    ips=$(((n + PORTS_PER_IP - 1) / PORTS_PER_IP))
    for streams in none streams; do
        hold=()
        [[ "$streams" == streams ]] && hold=(--hold-streams)
        start_agentwire "rss-$n-$streams" "$db" "$(free_port)" --max-sessions "$((n + 100))"
        loadgen --url "ws://$AW_ADDR" --tokens-file "$token_file" --agents "$n" --mode idle "${hold[@]}" \
            --duration "$SECS" --source-ips "$ips" --server-pid "$AW_PID" \
            --report "$OUT/rss-agentwire-$n-$streams.json" >/dev/null
        stop_pid "$AW_PID"
        if [[ -n "$GO" ]]; then
            start_go "rss-go-$n-$streams" ws "$(free_port)"
            loadgen --url "ws://$GO_ADDR" --any-token --agents "$n" --mode idle "${hold[@]}" --duration "$SECS" \
                --source-ips "$ips" --server-pid "$GO_PID" --report "$OUT/rss-go-$n-$streams.json" >/dev/null
            stop_pid "$GO_PID"
        fi
    done
done
rm -rf "$dir"
finish rss
