#!/usr/bin/env bash
# Builds helm from the Go module proxy (go install, pinned version) into a versioned cache
# directory and prints that bin directory on stdout, like e2e/controlplane/build.sh.
#
#   e2e/tools/build-helm.sh              # build (or reuse) and print the bin dir
#   HELM=$(e2e/tools/build-helm.sh)/helm # what tests do
#
# Environment:
#   MESHMEDIC_CACHE          cache root (default $HOME/.cache/meshmedic)
#   MESHMEDIC_HELM_VERSION   helm.sh/helm/v4 version (default v4.3.1)
#   GOCACHE, GOMODCACHE, GOPROXY  the usual Go settings.
#
# Work is skipped when the bin directory already holds helm for this version. Builds of the
# same version are serialized with flock; an interrupted build never looks complete (the
# binary is installed into a staging directory and renamed into place).
# Progress goes to stderr; only the bin dir goes to stdout.
set -euo pipefail

helm_version=${MESHMEDIC_HELM_VERSION:-v4.3.1}
if [[ ! $helm_version =~ ^v([0-9]+)\.[0-9]+\.[0-9]+ ]]; then
	echo "build-helm.sh: MESHMEDIC_HELM_VERSION=$helm_version is not of the form vMAJOR.MINOR.PATCH" >&2
	exit 2
fi
major=${BASH_REMATCH[1]}
module=helm.sh/helm/v$major
if [[ $major == 3 ]]; then
	module=helm.sh/helm/v3
fi

cache_root=${MESHMEDIC_CACHE:-$HOME/.cache/meshmedic}
root=$cache_root/tools/helm-$helm_version
bin=$root/bin

log() { echo "build-helm.sh: $*" >&2; }

complete() { [[ -x $bin/helm ]]; }

if complete; then
	log "helm $helm_version already built in $bin"
	echo "$bin"
	exit 0
fi

mkdir -p "$root"
exec 9>"$root/.lock"
log "waiting for lock $root/.lock"
flock 9
if complete; then
	log "helm $helm_version built by another process in $bin"
	echo "$bin"
	exit 0
fi

stage=$root/bin.tmp.$$
rm -rf "$stage"
mkdir -p "$stage"
trap 'rm -rf "$stage"' EXIT

# The same version stamp helm's own Makefile sets for a tagged build.
vpkg=$module/internal/version
ldflags="-s -w -X $vpkg.version=$helm_version -X $vpkg.metadata= -X $vpkg.gitTreeState=clean"

start=$SECONDS
log "go install $module/cmd/helm@$helm_version (GOCACHE=$(go env GOCACHE))"
# Run outside any module so the repository's go.mod plays no part.
(cd "$root" && GOFLAGS='' GOBIN="$stage" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" "$module/cmd/helm@$helm_version") >&2
log "helm built in $((SECONDS - start))s"
"$stage/helm" version --short >&2

rm -rf "$bin"
mv "$stage" "$bin"
trap - EXIT
log "helm ready in $bin"
echo "$bin"
