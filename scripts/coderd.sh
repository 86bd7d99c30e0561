#!/usr/bin/env bash
# Runs a real coderd (Coder's AGPL server at the version tests/go/go.mod pins, built by scripts/build-coder.sh server)
# on a given PostgreSQL database, in the foreground: the coderd that agentwire runs beside.
#
#   scripts/coderd.sh --postgres-url URL --http-address 127.0.0.1:PORT --access-url URL --dir DIR [-- EXTRA...]
#
# Each flag may come from the environment instead: CODERD_POSTGRES_URL, CODERD_HTTP_ADDRESS, CODERD_ACCESS_URL,
# CODERD_DIR. EXTRA arguments go to `coder server` as they are.
#
# --access-url is the URL agents and clients are given, so beside agentwire it is the front's URL
# (scripts/front-nginx.sh), never coderd's own address. coderd migrates the database on start. It runs the
# in-process echo provisioner only, with telemetry, update checks, STUN and the default GitHub login off (no
# outbound network), listens on 127.0.0.1 only, and keeps its cache (DIR/cache), global config (DIR/config) and log
# (DIR/coderd.log) in DIR. It trusts X-Forwarded-For from 127.0.0.1, where the front runs. The process is coderd
# itself (exec'd): kill it to stop it. A coderd that cannot be built fails this script.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pg="${CODERD_POSTGRES_URL:-}"
http="${CODERD_HTTP_ADDRESS:-}"
access="${CODERD_ACCESS_URL:-}"
dir="${CODERD_DIR:-}"

usage() {
	echo "usage: $0 --postgres-url URL --http-address 127.0.0.1:PORT --access-url URL --dir DIR [-- EXTRA...]" >&2
	exit 2
}
while [ "$#" -gt 0 ]; do
	case "$1" in
	--postgres-url) pg="${2:-}"; shift 2 ;;
	--http-address) http="${2:-}"; shift 2 ;;
	--access-url) access="${2:-}"; shift 2 ;;
	--dir) dir="${2:-}"; shift 2 ;;
	--) shift; break ;;
	-h | --help) usage ;;
	*) echo "coderd: unknown argument '$1'" >&2; usage ;;
	esac
done
if [ -z "$pg" ] || [ -z "$http" ] || [ -z "$access" ] || [ -z "$dir" ]; then
	usage
fi
case "$http" in
127.0.0.1:[0-9]*) ;;
*)
	echo "coderd: ERROR: --http-address must be 127.0.0.1:PORT; got '$http'" >&2
	exit 2
	;;
esac

coder="$("$repo/scripts/build-coder.sh" server)"
mkdir -p "$dir/cache" "$dir/config"

echo "coderd: $coder on $http, access URL $access, log $dir/coderd.log" >&2
exec "$coder" --global-config "$dir/config" server \
	--postgres-url "$pg" \
	--http-address "$http" \
	--access-url "$access" \
	--provisioner-types echo \
	--telemetry=false \
	--update-check=false \
	--derp-server-stun-addresses disable \
	--oauth2-github-default-provider-enable=false \
	--proxy-trusted-headers X-Forwarded-For \
	--proxy-trusted-origins 127.0.0.1/32 \
	--cache-dir "$dir/cache" \
	--log-human "$dir/coderd.log" \
	"$@"
