#!/usr/bin/env bash
# Build the local control plane binaries from the pinned Go tool modules under tools/.
#
# The binaries are cached outside the repository, keyed by a hash of every go.mod/go.sum,
# this script and the Go version, so a warm machine skips all work. Each build goes to a
# temporary folder that is moved into place only when every binary built, so an
# interrupted build never leaves a half-filled cache.
#
# Prints the cache folder on stdout (last line); progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tools=$here/tools
K8S_VERSION=v1.36.3
K8S_MINOR=36
HELM_VERSION=v3.21.4
ETCD_VERSION=v3.6.14
KWOK_VERSION=v0.8.0
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok helm)

export CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off GOFLAGS="-buildvcs=false -mod=readonly"

kv=k8s.io/component-base/version
cv=k8s.io/client-go/pkg/version
k8s_ldflags="-s -w -X $kv.gitVersion=$K8S_VERSION -X $kv.gitMajor=1 -X $kv.gitMinor=$K8S_MINOR -X $kv.gitTreeState=clean"
k8s_ldflags+=" -X $cv.gitVersion=$K8S_VERSION -X $cv.gitMajor=1 -X $cv.gitMinor=$K8S_MINOR -X $cv.gitTreeState=clean"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
helm_ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$K8S_MINOR"
kwok_ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"

# The key covers everything that decides the bytes of the binaries (modules, Go, flags,
# stamped versions) but not this script's comments or logging, so editing those does not
# throw away a 10-minute build.
recipe="${BINARIES[*]} | $GOFLAGS | $CGO_ENABLED | $k8s_ldflags | $helm_ldflags | $kwok_ldflags | -trimpath"
key=$( { cat "$tools"/*/go.mod "$tools"/*/go.sum; go version; echo "$recipe"; } | sha256sum | cut -c1-16)
cache_root=${SOVEREIGN_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sovereign-operator/bin}
dest=$cache_root/$key

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

all_built() {  # all_built DIR: every binary is present and executable
  local b
  for b in "${BINARIES[@]}"; do [[ -x $1/$b ]] || return 1; done
}

if all_built "$dest"; then
  log "binaries cached in $dest"
  echo "$dest"
  exit 0
fi

free_gb=$(df -Pk "$(dirname "$cache_root")" 2>/dev/null | awk 'NR==2 {print int($4/1048576)}' || echo 99)
if (( ${free_gb:-99} < 8 )); then
  log "warning: only ${free_gb} GiB free; a cold build needs about 8 GiB of Go caches"
fi

mkdir -p "$cache_root"
tmp=$(mktemp -d "$cache_root/.build-$key-XXXXXX")
chmod 755 "$tmp"  # mktemp makes it 0700; a shared CI cache should stay readable
trap 'rm -rf "$tmp"' EXIT

build() {  # build MODULE_DIR LDFLAGS OUTPUT PACKAGE...  (OUTPUT: a file, or a folder ending in /)
  local dir=$1 ldflags=$2 out=$3; shift 3
  log "downloading modules for $(basename "$dir")"
  (cd "$dir" && for attempt in 1 2 3; do
     go mod download && exit 0
     log "go mod download failed (attempt $attempt of 3)"; sleep 5
   done; exit 1)
  log "compiling $* (this is the slow part on a cold machine)"
  (cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$out" "$@")
}

start=$SECONDS
# etcd's main package path ends in /v3, so name the output explicitly.
build "$tools/etcd" "-s -w" "$tmp/etcd" go.etcd.io/etcd/server/v3
build "$tools/kwok" "$kwok_ldflags" "$tmp/" sigs.k8s.io/kwok/cmd/kwok
build "$tools/helm" "$helm_ldflags" "$tmp/" helm.sh/helm/v3/cmd/helm
build "$tools/k8s" "$k8s_ldflags" "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl

all_built "$tmp" || { log "a binary is missing after the build: ls $tmp"; ls "$tmp" >&2; exit 1; }
for b in kube-apiserver etcd kwok; do log "$b: $("$tmp/$b" --version 2>&1 | head -1)"; done
log "kubectl: $("$tmp/kubectl" version --client 2>&1 | head -1)"
log "helm: $("$tmp/helm" version --short 2>&1)"
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
log "built ${#BINARIES[@]} binaries in $((SECONDS - start)) s into $dest"
echo "$dest"
