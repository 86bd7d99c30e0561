#!/usr/bin/env bash
# Runs deploy/nginx/beside-coderd.conf in a private nginx, in the foreground: the front that sends the agents' RPC
# endpoint to agentwire and everything else to coderd, as an operator would deploy it.
#
#   scripts/front-nginx.sh --agentwire HOST:PORT --coderd HOST:PORT --listen 127.0.0.1:PORT [--dir DIR]
#
# Each flag may come from the environment instead: AGENTWIRE_ADDR, CODERD_ADDR, FRONT_LISTEN, FRONT_DIR.
# The front listens on 127.0.0.1 only. DIR (default: a new temp dir, printed on stderr) receives the rendered config,
# nginx.conf, the pid file, temp paths, error.log and access.log; access.log has one line per request:
#
#   METHOD URI STATUS UPSTREAM_ADDR
#
# so a test can tell which server answered what. nginx runs as the current user and stays in the foreground
# (`daemon off`, exec'd): kill this process to stop it. Debian's nginx package is installed when missing (as root);
# without it this fails, it never skips.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
agentwire="${AGENTWIRE_ADDR:-}"
coderd="${CODERD_ADDR:-}"
listen="${FRONT_LISTEN:-}"
dir="${FRONT_DIR:-}"

usage() {
	echo "usage: $0 --agentwire HOST:PORT --coderd HOST:PORT --listen 127.0.0.1:PORT [--dir DIR]" >&2
	exit 2
}
while [ "$#" -gt 0 ]; do
	case "$1" in
	--agentwire) agentwire="${2:-}"; shift 2 ;;
	--coderd) coderd="${2:-}"; shift 2 ;;
	--listen) listen="${2:-}"; shift 2 ;;
	--dir) dir="${2:-}"; shift 2 ;;
	-h | --help) usage ;;
	*) echo "front-nginx: unknown argument '$1'" >&2; usage ;;
	esac
done
if [ -z "$agentwire" ] || [ -z "$coderd" ] || [ -z "$listen" ]; then
	usage
fi
case "$listen" in
127.0.0.1:[0-9]*) ;;
*)
	echo "front-nginx: ERROR: --listen must be 127.0.0.1:PORT (this front is for tests); got '$listen'" >&2
	exit 2
	;;
esac

find_nginx() {
	local n
	for n in "$(command -v nginx 2>/dev/null || true)" /usr/sbin/nginx; do
		if [ -n "$n" ] && [ -x "$n" ]; then
			echo "$n"
			return 0
		fi
	done
	return 1
}
NGINX="$(find_nginx || true)"
if [ -z "$NGINX" ]; then
	if [ "$(id -u)" -eq 0 ]; then
		echo "front-nginx: nginx not found; installing the nginx package" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get update >&2 && apt-get install -y nginx >&2
		NGINX="$(find_nginx || true)"
	fi
	if [ -z "$NGINX" ]; then
		echo "front-nginx: FATAL: nginx is not installed" >&2
		echo "front-nginx: install the Debian 'nginx' package (or run as root)" >&2
		exit 1
	fi
fi
if ! command -v envsubst >/dev/null 2>&1; then
	echo "front-nginx: FATAL: envsubst not found (Debian package gettext-base)" >&2
	exit 1
fi

if [ -z "$dir" ]; then
	dir="$(mktemp -d /tmp/agentwire-front.XXXXXX)"
	echo "front-nginx: files in $dir" >&2
fi
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
for t in client_body proxy fastcgi uwsgi scgi; do
	mkdir -p "$dir/tmp/$t"
done

# Only our three placeholders: nginx's own $variables stay as they are.
AGENTWIRE_ADDR="$agentwire" CODERD_ADDR="$coderd" FRONT_LISTEN="$listen" \
	envsubst '${AGENTWIRE_ADDR} ${CODERD_ADDR} ${FRONT_LISTEN}' \
	<"$repo/deploy/nginx/beside-coderd.conf" >"$dir/beside-coderd.conf"

# One process (master_process off): the pid the caller holds is the one that serves, so killing it (even with
# SIGKILL) leaves no orphaned worker holding the port.
cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process off;
pid $dir/nginx.pid;
error_log $dir/error.log info;

events {
    worker_connections 1024;
}

http {
    log_format front '\$request_method \$uri \$status \$upstream_addr';
    access_log $dir/access.log front;
    client_body_temp_path $dir/tmp/client_body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    include $dir/beside-coderd.conf;
}
CONF

# -e: the compiled-in error log (/var/log/nginx) is opened before the config is read, and may not be writable.
"$NGINX" -t -q -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
echo "front-nginx: http://$listen -> me/rpc: $agentwire, the rest: $coderd" >&2
exec "$NGINX" -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
