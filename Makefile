# meshmedic — build, test and demo targets. `make test` is the command CI runs.
SHELL     := /bin/bash
GO        ?= go
BIN       ?= bin/meshmedic
# The release version lives in one place, the VERSION file: the image tag (kustomize newTag,
# Helm appVersion), the chart version, the krew manifest and the release workflow all read it
# (deploy/release_test.go checks that they agree). Builds from a work tree say what git says.
RELEASE   := $(shell cat VERSION)
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v$(RELEASE)-devel)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
FUZZTIME  ?= 10s
PKGS      := ./...

.PHONY: build install test lint unit fuzz e2e e2e-sim e2e-realcni controlplane istiocni tools demo demo-down bench clean docs dist release-check

DEMO_STATE ?= /tmp/meshmedic-sandbox

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./frontends/meshmedic

# `kubectl meshmedic ...`: the same binary under the plugin name, on PATH.
PREFIX ?= /usr/local
install: build
	install -m 0755 $(BIN) $(PREFIX)/bin/meshmedic
	ln -sf meshmedic $(PREFIX)/bin/kubectl-meshmedic

# The whole test suite: formatting and vet (all build tags), unit tests with the race
# detector (privileged netns/cgroup tests run when root), short fuzz runs of every parser,
# and the sandbox end-to-end tier (real control plane + real-kernel node; root).
test: lint unit fuzz e2e

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags kind $(PKGS)
	$(GO) vet -tags sandbox $(PKGS)

unit:
	$(GO) test -race -count=1 $(PKGS)

# Every Fuzz target, briefly (seed corpora also run in `unit`). FUZZTIME=5m for a real run.
# On a failure the script prints the fuzzer's own output and the failing input.
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) .ci/fuzz-all.sh

# The local sandbox's control plane, built from the Go module proxy and cached by version
# outside the repo (~10 min cold, seconds warm).
controlplane:
	e2e/controlplane/build.sh >/dev/null

# The real istio-cni (install-cni, the istio-cni plugin) and meshmedic's ZDS ztunnel stand-in,
# built from the Go module proxy and cached next to the control plane (~15 min cold, seconds warm).
istiocni:
	e2e/istiocni/build.sh >/dev/null

# helm (pinned) for the deploy/ chart checks of the sandbox tier, cached like the control plane.
tools:
	e2e/tools/build-helm.sh >/dev/null

# The sandbox tier, both suites: TestSandbox/<scenario> (istio-cni and ztunnel simulated) and
# TestSandboxIstioCNI/<scenario> (the real istio-cni and CNI chain, the ZDS stand-in), each against
# a real kube-apiserver, etcd, controller-manager and scheduler on 127.0.0.1.
e2e: e2e-sim e2e-realcni

e2e-sim: controlplane tools
	$(GO) test -tags sandbox -count=1 -timeout 45m -v -run '^(TestSandbox|TestControlPlane.*)$$' ./e2e/...

# Needs Debian's containernetworking-plugins, iptables, nftables and ipset (.ci/run installs them).
e2e-realcni: controlplane tools istiocni
	$(GO) test -tags sandbox -count=1 -timeout 30m -v -run '^TestSandboxIstioCNI$$' ./e2e/

# The README's first command: a sandbox with broken ambient pods, and meshmedic on it.
# REALCNI=1 runs the real istio-cni over a real CNI chain on the node (make istiocni; needs
# Debian's containernetworking-plugins, iptables, nftables, ipset).
REALCNI ?=
demo: build controlplane $(if $(REALCNI),istiocni)
	@[ "$$(id -u)" = 0 ] || { echo "make demo needs root: the sandbox creates network namespaces and cgroups (sudo make demo)"; exit 2; }
	$(GO) build -o bin/meshmedic-sandbox ./e2e/sandbox/cmd/meshmedic-sandbox
	@mkdir -p $(DEMO_STATE); rm -f $(DEMO_STATE)/ready
	@nohup bin/meshmedic-sandbox up --state $(DEMO_STATE) $(if $(REALCNI),--real-cni) > $(DEMO_STATE)/sandbox.log 2>&1 &
	@for i in $$(seq 1 600); do [ -f $(DEMO_STATE)/ready ] && break; \
	  if ! pgrep -f 'bin/meshmedic-sandbox up' >/dev/null; then cat $(DEMO_STATE)/sandbox.log; exit 2; fi; sleep 0.5; done
	@[ -f $(DEMO_STATE)/ready ] || { cat $(DEMO_STATE)/sandbox.log; echo "sandbox did not become ready"; exit 2; }
	@cat $(DEMO_STATE)/sandbox.log
	@echo; echo "export KUBECONFIG=$(DEMO_STATE)/kubeconfig   # the sandbox stays up: make demo-down removes it"; echo
	@echo "\$$ meshmedic scan -A --prober node-local --node $$(cat $(DEMO_STATE)/ready)"
	@KUBECONFIG=$(DEMO_STATE)/kubeconfig $(BIN) scan -A --prober node-local --node $$(cat $(DEMO_STATE)/ready); \
	  rc=$$?; echo; echo "exit code $$rc (1 = findings: the broken pods above)"; [ $$rc -le 1 ]
	@echo; echo "next: KUBECONFIG=$(DEMO_STATE)/kubeconfig $(BIN) repair -n shop --prober node-local --node $$(cat $(DEMO_STATE)/ready)   # dry run; add --yes to heal"

demo-down:
	@[ -x bin/meshmedic-sandbox ] || $(GO) build -o bin/meshmedic-sandbox ./e2e/sandbox/cmd/meshmedic-sandbox
	bin/meshmedic-sandbox down --state $(DEMO_STATE)

# docs/cli.md from the command tree in frontends/cli (go test ./frontends/cli fails when it is stale).
docs:
	$(GO) run ./frontends/cli/gendocs

# Release archives: one tar.gz per platform holding the static binary (also the krew plugin's
# archive), their SHA-256 sums, and the krew manifest with the version and sums filled in. The
# release workflow runs this on a tag; `make dist` works anywhere.
PLATFORMS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64
DIST      ?= dist
dist:
	@rm -rf $(DIST); mkdir -p $(DIST)
	@set -e; for p in $(PLATFORMS); do os=$${p%/*}; arch=$${p#*/}; d=$(DIST)/meshmedic_$${os}_$${arch}; \
	  mkdir -p $$d; echo "build $$os/$$arch"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$d/meshmedic ./frontends/meshmedic; \
	  tar -C $$d -czf $(DIST)/meshmedic_$(VERSION)_$${os}_$${arch}.tar.gz meshmedic; rm -rf $$d; done
	@cd $(DIST) && sha256sum meshmedic_*.tar.gz > checksums.txt && cat checksums.txt
	@set -e; m=$$(sed 's/{{VERSION}}/$(VERSION)/g' deploy/krew/meshmedic.yaml); \
	  for p in $(PLATFORMS); do os=$${p%/*}; arch=$${p#*/}; \
	    sum=$$(grep "_$${os}_$${arch}.tar.gz" $(DIST)/checksums.txt | cut -d' ' -f1); \
	    m=$$(printf '%s\n' "$$m" | sed "s/{{SHA256_$${os}_$${arch}}}/$$sum/"); done; \
	  printf '%s\n' "$$m" > $(DIST)/meshmedic.yaml
	@! grep -n '{{' $(DIST)/meshmedic.yaml

# The version in VERSION, Chart.yaml, the kustomize image tag and the krew manifest agree, and
# the release workflow and ko config are what the tests expect.
release-check:
	$(GO) test -count=1 -run 'TestRelease|TestKrew|TestVersion' ./deploy/

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

clean:
	rm -rf bin $(DIST)
