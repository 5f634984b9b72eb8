#!/usr/bin/env bash
# Build the real Kubernetes control plane the tests run against, from source, through the Go
# module proxy: kube-apiserver, kube-controller-manager and kube-scheduler at one pinned release,
# kwok (fake nodes and kubelets) and etcd. Binaries are cached by version outside the checkout:
#
#   ${DROVER_K8S_CACHE:-~/.cache/drover/k8s}/v$K8S_VERSION/bin/
#
# and rebuilt only when a pin below changes. Prints the bin directory on its last line.
#
#   tools/k8s/build.sh            # build what is missing, print the directory
#   tools/k8s/build.sh --check    # exit 0 if every binary is cached, 1 otherwise; builds nothing
#
# Why from source: no package registry reachable here ships kube-apiserver, but the Go module
# proxy serves Kubernetes' source. Building k8s.io/kubernetes as a dependency needs every
# k8s.io/* staging module pinned to the matching v0.x release (the main module's own `replace`
# lines point into its staging/ tree, which a dependency does not see) — hence the `replace`
# block generated below from the release's own go.mod.
set -euo pipefail

# Pins: Kubernetes at the release k8s-openapi's `latest` feature targets (v1_37 in
# k8s-openapi 0.29); etcd as Kubernetes 1.37 is tested with (3.6: Debian's 3.4 is older than
# the client Kubernetes ships); kwok for fake nodes and kubelets.
# shellcheck source=versions.env
. "$(dirname "$0")/versions.env"

cache_root=${DROVER_K8S_CACHE:-$HOME/.cache/drover/k8s}
out="$cache_root/v$K8S_VERSION-kwok$KWOK_VERSION-etcd$ETCD_VERSION"
bin="$out/bin"
want=(kube-apiserver kube-controller-manager kube-scheduler kwok etcd kwok-stages.yaml)

missing=()
for b in "${want[@]}"; do [ -e "$bin/$b" ] || missing+=("$b"); done
if [ "${1:-}" = "--check" ]; then
  ((${#missing[@]} == 0)) && { echo "$bin"; exit 0; } || exit 1
fi
if ((${#missing[@]} == 0)); then
  echo "$bin"
  exit 0
fi
log() { echo "[k8s build $(date +%H:%M:%S)] $*" >&2; }

# Go: the one on PATH if it is 1.26 or newer, else the pinned toolchain from the module proxy,
# unpacked once into the cache.
go_new_enough() {
  local v
  v=$(go env GOVERSION 2>/dev/null) || return 1
  v=${v#go}
  [ "$(printf '%s\n1.26\n' "${v%%[-+ ]*}" | sort -V | head -n1)" = "1.26" ]
}
if ! command -v go >/dev/null || ! go_new_enough; then
  goroot="$cache_root/go$GO_VERSION"
  if [ ! -x "$goroot/bin/go" ]; then
    proxy=$(printf '%s' "${GOPROXY:-https://proxy.golang.org}" | cut -d, -f1)
    [ "$proxy" = direct ] && proxy=https://proxy.golang.org
    arch=$(uname -m); case "$arch" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
    zip="golang.org/toolchain/@v/v0.0.1-go$GO_VERSION.linux-$arch.zip"
    log "go $GO_VERSION: fetching $proxy/$zip (no Go 1.26+ on PATH)"
    command -v unzip >/dev/null || { echo "unzip is needed to unpack the Go toolchain (apt-get install unzip)" >&2; exit 1; }
    mkdir -p "$cache_root"
    tmp=$(mktemp -d "$cache_root/go-fetch.XXXXXX")
    curl -fsSL --retry 3 -o "$tmp/go.zip" "$proxy/$zip"
    unzip -q "$tmp/go.zip" -d "$tmp"
    mv "$tmp/golang.org/toolchain@v0.0.1-go$GO_VERSION.linux-$arch" "$goroot"
    rm -rf "$tmp"
  fi
  export PATH="$goroot/bin:$PATH" GOROOT="$goroot"
  go_new_enough || { echo "the Go toolchain in $goroot does not run (go env GOVERSION failed)" >&2; exit 1; }
  log "using $(go env GOVERSION) from $goroot"
fi

mkdir -p "$bin"
work=$(mktemp -d "$out/build.XXXXXX")
# A build cache of its own, removed afterwards: it is large and useless once the binaries exist.
export GOCACHE="$work/gocache" GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOTOOLCHAIN=local
trap 'rm -rf "$work"' EXIT

need() { for b in "$@"; do [[ " ${missing[*]} " == *" $b "* ]] && return 0; done; return 1; }

if need kube-apiserver kube-controller-manager kube-scheduler; then
  log "kubernetes v$K8S_VERSION: resolving modules"
  mkdir -p "$work/k8s" && cd "$work/k8s"
  go mod init drover.invalid/k8s-build >/dev/null 2>&1
  # Every staging module the release replaces with ./staging/src/k8s.io/X → the matching v0.x.
  curl -fsSL "$(go env GOPROXY | cut -d, -f1)/k8s.io/kubernetes/@v/v$K8S_VERSION.mod" >upstream.mod
  staging=$(sed -n 's#^\s*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\1#p' upstream.mod)
  [ -n "$staging" ] || { echo "no staging replace lines found in k8s.io/kubernetes v$K8S_VERSION's go.mod" >&2; exit 1; }
  {
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo "replace ("
    for m in $staging; do echo "	$m => $m v0.${K8S_VERSION#1.}"; done
    echo ")"
  } >>go.mod
  go mod edit -go="$(sed -n 's/^go //p' upstream.mod)"
  pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler)
  go get "${pkgs[@]/%/@v$K8S_VERSION}" >/dev/null
  minor=${K8S_VERSION#1.}; minor=${minor%%.*}
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  log "kubernetes v$K8S_VERSION: building ${pkgs[*]##*/} (takes 10-20 minutes on 2 cores)"
  go build -trimpath -tags providerless -ldflags "$ldflags" -o "$work/out/" "${pkgs[@]}"
  mv "$work/out/"* "$bin/"
fi

if need kwok kwok-stages.yaml; then
  log "kwok v$KWOK_VERSION: building"
  GOBIN="$work/out-kwok" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
  mv "$work/out-kwok/kwok" "$bin/"
  # kwok's own stages (nodes become Ready and keep a lease, pods run and become Ready), from
  # its module as `go install` downloaded it: the `kwok` binary starts only with stages.
  src=$(go env GOMODCACHE)/sigs.k8s.io/kwok@v$KWOK_VERSION/kustomize/stage
  for f in "$src"/node/fast/*.yaml "$src"/node/heartbeat-with-lease/*.yaml "$src"/pod/fast/*.yaml; do
    case "$f" in */kustomization.yaml) continue ;; esac
    printf -- '---\n'; cat "$f"
  done >"$bin/kwok-stages.yaml"
fi

if need etcd; then
  log "etcd v$ETCD_VERSION: building"
  mkdir -p "$work/etcd" && cd "$work/etcd"
  go mod init drover.invalid/etcd-build >/dev/null 2>&1
  cat >main.go <<'GO'
// The etcd server, built from its module for the tests' control plane.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null
  go mod tidy >/dev/null
  go build -trimpath -ldflags "-s -w" -o "$bin/etcd" .
fi

cd /
log "done: $(ls "$bin" | tr '\n' ' ')"
echo "$bin"
