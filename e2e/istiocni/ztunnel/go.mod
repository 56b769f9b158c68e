// This directory is not built as part of github.com/meshmedic/meshmedic: its own go.mod keeps
// the main module's go vet, go test and go mod tidy from needing istio.io/istio. The sources are
// copied into the wrapper module that e2e/istiocni/build.sh renders, and built and vetted there.
module meshmedic.local/istiocni/ztunnel

go 1.26
