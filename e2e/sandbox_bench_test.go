//go:build sandbox

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/meshmedic/meshmedic/e2e/controlplane"
	"github.com/meshmedic/meshmedic/e2e/sandbox"
	"github.com/meshmedic/meshmedic/internal/podsim"
)

// BenchmarkSandboxBringUp measures the sandbox for docs/benchmarks.md: the time to start
// the control plane and the node (start-s), and to bring up 100 ambient pods — scheduled,
// given a netns/cgroup/sandbox process, Running, captured and annotated (100pods-s).
// Run with -benchtime 1x.
func BenchmarkSandboxBringUp(b *testing.B) {
	podsim.RequirePrivileged(b)
	bins, err := controlplane.FindBinaries()
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		t0 := time.Now()
		cp, err := controlplane.Start(ctx, controlplane.Options{BinDir: bins})
		if err != nil {
			b.Fatal(err)
		}
		cs, err := kubernetes.NewForConfig(cp.RESTConfig)
		if err != nil {
			b.Fatal(err)
		}
		node, err := sandbox.StartNode(ctx, cs, sandbox.Options{DNS: true})
		if err != nil {
			b.Fatal(err)
		}
		started := time.Since(t0)
		t1 := time.Now()
		ns := fmt.Sprintf("bench%d", i)
		err = sandbox.CreateWorkloads(ctx, cs, map[string]map[string]string{ns: {"istio.io/dataplane-mode": "ambient"}},
			[]sandbox.Workload{{Namespace: ns, Name: "many", Replicas: 100}})
		up := time.Since(t1)
		b.ReportMetric(started.Seconds(), "start-s")
		b.ReportMetric(up.Seconds(), "100pods-s")
		if serr := node.Stop(); serr != nil {
			b.Error(serr)
		}
		if serr := cp.Stop(); serr != nil {
			b.Error(serr)
		}
		cancel()
		if err != nil {
			b.Fatal(err)
		}
	}
}
