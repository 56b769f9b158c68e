#!/usr/bin/env bash
# Builds the sandbox control plane (kube-apiserver, kube-controller-manager, kube-scheduler, etcd)
# and kubectl (same k8s.io/kubernetes version; the deploy/ manifests are validated with it) from
# the Go module proxy into a versioned cache directory and prints that bin directory on stdout.
#
#   e2e/controlplane/build.sh            # build (or reuse) and print the bin dir
#   BIN=$(e2e/controlplane/build.sh)     # what tests and .ci/run do
#
# Environment:
#   MESHMEDIC_CACHE          cache root (default $HOME/.cache/meshmedic)
#   MESHMEDIC_K8S_VERSION    k8s.io/kubernetes version (default v1.37.2)
#   MESHMEDIC_ETCD_VERSION   go.etcd.io/etcd/server/v3 version (default v3.7.3)
#   MESHMEDIC_STAGING_VERSION  version of the k8s.io staging modules (default: v0.<minor>.<patch>
#                            derived from MESHMEDIC_K8S_VERSION)
#   GOCACHE, GOMODCACHE, GOPROXY, GOFLAGS  the usual Go settings; normal caches make rebuilds fast.
#
# Work is skipped when the bin directory for these versions is complete. Nothing is written into
# the repository: the wrapper modules are generated from build/*/go.mod.tmpl into the cache.
# Progress goes to stderr; only the bin dir goes to stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

k8s_version=${MESHMEDIC_K8S_VERSION:-v1.37.2}
etcd_version=${MESHMEDIC_ETCD_VERSION:-v3.7.3}
if [[ ! $k8s_version =~ ^v1\.([0-9]+)\.([0-9]+.*)$ ]]; then
	echo "build.sh: MESHMEDIC_K8S_VERSION=$k8s_version is not of the form v1.MINOR.PATCH" >&2
	exit 2
fi
staging_version=${MESHMEDIC_STAGING_VERSION:-v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}}
k8s_minor=${BASH_REMATCH[1]}

cache_root=${MESHMEDIC_CACHE:-$HOME/.cache/meshmedic}
root=$cache_root/controlplane/k8s-$k8s_version-etcd-$etcd_version
bin=$root/bin
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)

log() { echo "build.sh: $*" >&2; }

complete() {
	local b
	[[ -f $bin/VERSIONS ]] || return 1
	for b in "${binaries[@]}"; do
		[[ -x $bin/$b ]] || return 1
	done
}

if complete; then
	log "control plane already built in $bin"
	echo "$bin"
	exit 0
fi

mkdir -p "$root"
# Serialize concurrent builds of the same versions (parallel test packages, a developer and CI).
exec 9>"$root/.lock"
log "waiting for lock $root/.lock"
flock 9
if complete; then
	log "control plane built by another process in $bin"
	echo "$bin"
	exit 0
fi

# render TEMPLATE OUT: replaces @NAME@ tokens with the values of the exported variables T_NAME;
# a line that is exactly @REPLACES@ becomes the (multi-line) value of T_REPLACES.
render() {
	awk '
		$0 == "@REPLACES@" { print ENVIRON["T_REPLACES"]; next }
		$0 == "@GODEBUG@" { if (ENVIRON["T_GODEBUG"] != "") print "\n" ENVIRON["T_GODEBUG"]; next }
		{
			n = split("GO_VERSION K8S_VERSION STAGING_VERSION ETCD_VERSION", keys, " ")
			for (i = 1; i <= n; i++) gsub("@" keys[i] "@", ENVIRON["T_" keys[i]])
			print
		}' "$1" >"$2.tmp"
	mv "$2.tmp" "$2"
}

# gomod_of MODULE@VERSION: path of that module's go.mod in the module cache (downloads it).
gomod_of() {
	local out
	local path
	out=$(cd "$root" && GOFLAGS='' go mod download -json "$1") || {
		log "go mod download $1 failed: $out"
		return 1
	}
	path=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$out")
	if [[ ! -f $path ]]; then
		log "go mod download $1 named no go.mod: $out"
		return 1
	fi
	echo "$path"
}

# go_line GOMOD: the "go" directive of a go.mod.
go_line() { awk '$1 == "go" { print $2; exit }' "$1"; }

export T_K8S_VERSION=$k8s_version T_STAGING_VERSION=$staging_version T_ETCD_VERSION=$etcd_version

# --- kubernetes -------------------------------------------------------------------------------
k8s_src=$root/src/k8s
mkdir -p "$k8s_src"
log "resolving k8s.io/kubernetes@$k8s_version"
k8s_gomod=$(gomod_of "k8s.io/kubernetes@$k8s_version")
# Each "k8s.io/x => ./staging/src/k8s.io/x" line of kubernetes' replace block becomes
# "k8s.io/x => k8s.io/x $staging_version".
T_REPLACES=$(awk -v v="$staging_version" '
	/^replace[[:space:]]*\(/ { inblock = 1; next }
	inblock && /^\)/ { inblock = 0; next }
	inblock && $2 == "=>" && $3 ~ /^\.\/staging\/src\// { printf "\t%s => %s %s\n", $1, $1, v }
	' "$k8s_gomod")
if [[ -z $T_REPLACES ]]; then
	log "no staging replace directives found in $k8s_gomod"
	exit 1
fi
T_GODEBUG=$(awk '$1 == "godebug"' "$k8s_gomod")
T_GO_VERSION=$(go_line "$k8s_gomod")
export T_REPLACES T_GODEBUG T_GO_VERSION
render "$here/build/k8s/go.mod.tmpl" "$k8s_src/go.mod"
log "generated $k8s_src/go.mod ($(grep -c '=> k8s.io/' "$k8s_src/go.mod") staging replaces)"

# --- etcd -------------------------------------------------------------------------------------
etcd_src=$root/src/etcd
mkdir -p "$etcd_src"
log "resolving go.etcd.io/etcd/server/v3@$etcd_version"
etcd_gomod=$(gomod_of "go.etcd.io/etcd/server/v3@$etcd_version")
T_GO_VERSION=$(go_line "$etcd_gomod")
export T_GO_VERSION
render "$here/build/etcd/go.mod.tmpl" "$etcd_src/go.mod"
log "generated $etcd_src/go.mod"

# --- build ------------------------------------------------------------------------------------
# Build into a fresh directory and rename it into place, so an interrupted build never looks
# complete.
stage=$root/bin.tmp.$$
rm -rf "$stage"
mkdir -p "$stage"
trap 'rm -rf "$stage"' EXIT

export GOFLAGS="-mod=mod${GOFLAGS:+ $GOFLAGS}" CGO_ENABLED=0
vpkg=k8s.io/component-base/version
k8s_ldflags="-s -w -X $vpkg.gitVersion=$k8s_version -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$k8s_minor -X $vpkg.gitTreeState=clean"

start=$SECONDS
log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $k8s_version (GOCACHE=$(go env GOCACHE))"
(cd "$k8s_src" && go build -ldflags "$k8s_ldflags" -o "$stage/" \
	k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kube-scheduler \
	k8s.io/kubernetes/cmd/kubectl) >&2
log "kubernetes built in $((SECONDS - start))s"

start=$SECONDS
log "building etcd $etcd_version"
(cd "$etcd_src" && go build -ldflags "-s -w" -o "$stage/etcd" go.etcd.io/etcd/server/v3) >&2
log "etcd built in $((SECONDS - start))s"

{
	echo "k8s.io/kubernetes $k8s_version"
	echo "k8s.io staging modules $staging_version"
	echo "go.etcd.io/etcd/server/v3 $etcd_version"
	go version
} >"$stage/VERSIONS"

rm -rf "$bin"
mv "$stage" "$bin"
trap - EXIT
log "control plane ready in $bin"
echo "$bin"
