#!/usr/bin/env bash
# Build versitygw, the S3-compatible server the S3 fetch tests run on loopback, from the
# pinned Go tool module in e2e/tools/versitygw/.
#
# versitygw (Apache-2.0) is a real S3 gateway that stores objects in a local folder; it does
# multipart uploads, ranged GETs and SigV4 like the stores organisations run in-house. MinIO
# would do the same job but is AGPL.
#
# Cached like e2e/cluster/build.sh: keyed by go.mod/go.sum, the Go version and the build
# recipe, under the same cache root, built into a temporary folder and moved into place only
# when the binary exists. The module lives outside e2e/cluster/tools/ on purpose: build.sh keys
# the control plane's cache on every go.mod there, and this one must not invalidate it.
#
# Prints the binary's path on stdout (last line); progress goes to stderr.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
module=$repo/e2e/tools/versitygw
export CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off GOFLAGS="-buildvcs=false -mod=readonly"
recipe="versitygw | $GOFLAGS | $CGO_ENABLED | -trimpath -ldflags=-s -w"
key=$( { cat "$module/go.mod" "$module/go.sum"; go version; echo "$recipe"; } | sha256sum | cut -c1-16)
cache_root=${SOVEREIGN_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sovereign-operator/bin}
dest=$cache_root/versitygw-$key

log() { printf '[versitygw %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ -x $dest/versitygw ]]; then
  log "cached in $dest"
  echo "$dest/versitygw"
  exit 0
fi

mkdir -p "$cache_root"
tmp=$(mktemp -d "$cache_root/.build-versitygw-$key-XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT

start=$SECONDS
log "downloading modules"
(cd "$module" && for attempt in 1 2 3; do
   go mod download && exit 0
   log "go mod download failed (attempt $attempt of 3)"; sleep 5
 done; exit 1)
log "compiling (a few minutes on a cold machine)"
(cd "$module" && go build -trimpath -ldflags "-s -w" -o "$tmp/versitygw" \
  github.com/versity/versitygw/cmd/versitygw)
[[ -x $tmp/versitygw ]] || { log "no binary after the build"; exit 1; }
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
log "built in $((SECONDS - start)) s into $dest"
echo "$dest/versitygw"
