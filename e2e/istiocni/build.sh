#!/usr/bin/env bash
# Builds the real istio-cni (install-cni: installer and node agent; istio-cni: the CNI plugin) from
# the Go module proxy, and meshmedic's ztunnel stand-in against the same istio packages, into a
# versioned cache directory next to the control plane's, and prints that bin directory on stdout.
#
#   e2e/istiocni/build.sh            # build (or reuse) and print the bin dir
#   BIN=$(e2e/istiocni/build.sh)     # what tests and .ci/run do
#
# Environment:
#   MESHMEDIC_CACHE          cache root (default $HOME/.cache/meshmedic)
#   MESHMEDIC_ISTIO_VERSION  istio.io/istio version (default: the newest the proxy served when
#                            this was written, a snapshot of the 1.31 line; see docs/architecture.md)
#   GOCACHE, GOMODCACHE, GOPROXY, GOFLAGS  the usual Go settings; normal caches make rebuilds fast.
#
# The istio binaries are built once per version. The stand-in (e2e/istiocni/ztunnel, a directory
# with its own go.mod so the main module never imports istio) is copied into the wrapper module,
# vetted, unit-tested and rebuilt whenever its sources change; it needs only istio's pkg/zdsapi,
# so that is seconds. Nothing is written into the repository: the wrapper module is generated from
# build/go.mod.tmpl into the cache. Progress goes to stderr; only the bin dir goes to stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

istio_version=${MESHMEDIC_ISTIO_VERSION:-v0.0.0-20260827124520-eed52ebb66ad}
if [[ ! $istio_version =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]]; then
	echo "build.sh: MESHMEDIC_ISTIO_VERSION=$istio_version is not a module version" >&2
	exit 2
fi

cache_root=${MESHMEDIC_CACHE:-$HOME/.cache/meshmedic}
root=$cache_root/istio-cni/$istio_version
bin=$root/bin
binaries=(install-cni istio-cni)
standin=ztunnel-standin

log() { echo "istiocni/build.sh: $*" >&2; }

# standin_sum: a digest of the stand-in's sources and the Go toolchain that builds them.
standin_sum() {
	(
		cd "$here/ztunnel"
		sha256sum -- *.go go.mod
		go version
	) | sha256sum | cut -d' ' -f1
}

istio_complete() {
	local b
	[[ -f $bin/VERSIONS ]] || return 1
	for b in "${binaries[@]}"; do
		[[ -x $bin/$b ]] || return 1
	done
}

complete() {
	istio_complete || return 1
	[[ -x $bin/$standin && -f $bin/$standin.sum && $(cat "$bin/$standin.sum") == "$(standin_sum)" ]]
}

if complete; then
	log "istio-cni and the ztunnel stand-in already built in $bin"
	echo "$bin"
	exit 0
fi

mkdir -p "$root"
# Serialize concurrent builds of the same version (parallel test packages, a developer and CI).
exec 9>"$root/.lock"
log "waiting for lock $root/.lock"
flock 9
if complete; then
	log "built by another process in $bin"
	echo "$bin"
	exit 0
fi

# render TEMPLATE OUT: replaces @NAME@ tokens with the values of the exported variables T_NAME;
# a line that is exactly @GODEBUG@ becomes the godebug lines of istio's go.mod (if any).
render() {
	awk '
		$0 == "@GODEBUG@" { if (ENVIRON["T_GODEBUG"] != "") print "\n" ENVIRON["T_GODEBUG"]; next }
		{
			n = split("GO_VERSION ISTIO_VERSION", keys, " ")
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

src=$root/src
mkdir -p "$src"
if [[ ! -f $src/go.mod ]] || ! grep -q "^require istio.io/istio $istio_version\$" "$src/go.mod"; then
	log "resolving istio.io/istio@$istio_version"
	istio_gomod=$(gomod_of "istio.io/istio@$istio_version")
	if grep -q '^replace' "$istio_gomod"; then
		# A replace in istio's go.mod would not apply to a module that requires it.
		log "istio.io/istio@$istio_version has replace directives; the wrapper does not carry them"
		exit 1
	fi
	T_GO_VERSION=$(awk '$1 == "go" { print $2; exit }' "$istio_gomod")
	T_GODEBUG=$(awk '$1 == "godebug"' "$istio_gomod")
	T_ISTIO_VERSION=$istio_version
	export T_GO_VERSION T_GODEBUG T_ISTIO_VERSION
	render "$here/build/go.mod.tmpl" "$src/go.mod"
	log "generated $src/go.mod"
fi

export GOFLAGS="-mod=mod${GOFLAGS:+ $GOFLAGS}" CGO_ENABLED=0
mkdir -p "$bin"

# --- istio-cni ----------------------------------------------------------------------------------
if ! istio_complete; then
	# Build into a fresh directory and move the results into place, so an interrupted build never
	# looks complete.
	stage=$root/bin.tmp.$$
	rm -rf "$stage"
	mkdir -p "$stage"
	trap 'rm -rf "$stage"' EXIT
	istio_line=$(cd "$src" && go list -m -f '{{.Dir}}' istio.io/istio | xargs -I{} cat {}/VERSION)
	vpkg=istio.io/istio/pkg/version
	ldflags="-s -w -X $vpkg.buildVersion=$istio_line-$istio_version -X $vpkg.buildGitRevision=$istio_version -X $vpkg.buildStatus=Clean -X $vpkg.buildTag=$istio_line -X $vpkg.buildOS=linux -X $vpkg.buildArch=$(go env GOARCH)"
	start=$SECONDS
	log "building install-cni and istio-cni from istio.io/istio@$istio_version (release line $istio_line; GOCACHE=$(go env GOCACHE))"
	(cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$stage/" \
		istio.io/istio/cni/cmd/install-cni \
		istio.io/istio/cni/cmd/istio-cni) >&2
	log "istio-cni built in $((SECONDS - start))s"
	{
		echo "istio.io/istio $istio_version"
		echo "release line $istio_line"
		(cd "$src" && go list -m istio.io/api istio.io/client-go k8s.io/client-go github.com/containernetworking/cni)
		go version
	} >"$stage/VERSIONS"
	for b in "${binaries[@]}"; do mv "$stage/$b" "$bin/$b"; done
	mv "$stage/VERSIONS" "$bin/VERSIONS"
	rm -rf "$stage"
	trap - EXIT
fi

# --- the ztunnel stand-in -----------------------------------------------------------------------
sum=$(standin_sum)
rm -rf "$src/ztunnel"
mkdir -p "$src/ztunnel"
cp "$here"/ztunnel/*.go "$src/ztunnel/"
start=$SECONDS
log "vetting, testing and building the ztunnel stand-in"
(cd "$src" && go vet ./ztunnel && go test -count=1 ./ztunnel && go build -trimpath -ldflags "-s -w" -o "$bin/$standin.tmp" ./ztunnel) >&2
mv "$bin/$standin.tmp" "$bin/$standin"
echo "$sum" >"$bin/$standin.sum"
log "stand-in built in $((SECONDS - start))s"

log "istio-cni ready in $bin"
echo "$bin"
