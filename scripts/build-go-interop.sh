#!/usr/bin/env bash
# Builds the Go interop driver (tests/go, see tests/go/README.md) that the
# Rust integration tests run against agentwire.
#
#   scripts/build-go-interop.sh [OUTPUT]   (default: target/go-interop/interop)
#
# Needs Go (>= the version in tests/go/go.mod) and the Go module proxy, or a
# module cache that already holds the pinned dependencies.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$repo/target/go-interop/interop}"

# /usr/local/go/bin is where the official tarball installs; it is often not on
# PATH in non-login shells (CI, cargo test).
go_bin="$(command -v go || true)"
if [[ -z "$go_bin" && -x /usr/local/go/bin/go ]]; then
	go_bin=/usr/local/go/bin/go
fi
if [[ -z "$go_bin" ]]; then
	echo "build-go-interop: ERROR: 'go' not found on PATH or at /usr/local/go/bin/go;" \
		"install Go to build the interop driver" >&2
	exit 1
fi

case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
mkdir -p "$(dirname "$out")"

cd "$repo/tests/go"
# -mod=readonly: a go.mod/go.sum that is out of date fails here instead of
# being silently rewritten.
if ! "$go_bin" build -mod=readonly -trimpath -o "$out" ./cmd/interop; then
	echo "build-go-interop: ERROR: go build failed (see above)" >&2
	exit 1
fi
echo "build-go-interop: built $out" >&2
