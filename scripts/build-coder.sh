#!/usr/bin/env bash
# Builds Coder itself, at the version tests/go/go.mod pins, from the Go module proxy: the peers and referees of the
# tests that run the real `coder agent` (and, later, a real coderd) against agentwire.
#
#   scripts/build-coder.sh agent     the agent-only CLI Coder ships into workspaces (-tags slim)
#   scripts/build-coder.sh server    the AGPL server and CLI (coderd)
#
# Prints the binary's path on stdout. Builds are cached under target/coder/ by version and kind, so only the first
# run pays (about 3 minutes each on 2 cores). A proxy that refuses the module, or a build that fails, fails loudly.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kind="${1:-agent}"
case "$kind" in
agent) tags=(-tags slim) ;;
server) tags=() ;;
*)
	echo "build-coder: ERROR: unknown kind '$kind' (agent or server)" >&2
	exit 2
	;;
esac

go_bin="$(command -v go || true)"
if [[ -z "$go_bin" && -x /usr/local/go/bin/go ]]; then
	go_bin=/usr/local/go/bin/go
fi
if [[ -z "$go_bin" ]]; then
	echo "build-coder: ERROR: 'go' not found on PATH or at /usr/local/go/bin/go" >&2
	exit 1
fi

# One pin for the whole project: the version our Go test peers already build against.
version="$(awk '$1 == "github.com/coder/coder/v2" { print $2; exit }' "$repo/tests/go/go.mod")"
if [[ -z "$version" ]]; then
	echo "build-coder: ERROR: tests/go/go.mod does not require github.com/coder/coder/v2" >&2
	exit 1
fi

cache="$repo/target/coder"
out="$cache/coder-$version-$kind"
if [[ -x "$out" ]]; then
	echo "$out"
	exit 0
fi
mkdir -p "$cache"
# Tests run in parallel and each may ask for the build: one builds, the others wait for it and find it cached.
exec 9>"$cache/.lock"
if ! flock -w 1800 9; then
	echo "build-coder: ERROR: waited 30 minutes for another build of coder to finish" >&2
	exit 1
fi
if [[ -x "$out" ]]; then
	echo "$out"
	exit 0
fi

# The module's own go.mod carries `replace` lines (Coder's tailscale fork among them) that apply only when the
# module is the main module, so the build runs inside a writable copy of it.
src="$cache/src-$version"
if [[ ! -f "$src/go.mod" ]]; then
	if ! dir="$(GOFLAGS=-mod=mod "$go_bin" mod download -json "github.com/coder/coder/v2@$version" |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"; then
		echo "build-coder: ERROR: the Go module proxy did not serve github.com/coder/coder/v2@$version" >&2
		exit 1
	fi
	# A copy left by a run that was killed: the module cache's files are read-only until chmod.
	if [[ -e "$src.tmp" ]]; then
		chmod -R u+w "$src.tmp"
		rm -rf "$src.tmp"
	fi
	cp -r "$dir" "$src.tmp"
	chmod -R u+w "$src.tmp"
	mv "$src.tmp" "$src"
fi

echo "build-coder: building coder $version ($kind) into $out" >&2
cd "$src"
if ! GOFLAGS=-mod=mod GONOSUMDB='*' GONOSUMCHECK=1 GOSUMDB=off \
	"$go_bin" build "${tags[@]}" -trimpath -o "$out.tmp" ./cmd/coder; then
	echo "build-coder: ERROR: go build of coder $version ($kind) failed (see above)" >&2
	exit 1
fi
mv "$out.tmp" "$out"
echo "$out"
