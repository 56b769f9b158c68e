//go:build sandbox

package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// BenchmarkAgentOnNode measures the real agent binary, built and run as the DaemonSet runs
// it (static, stripped; uid 65532, no capabilities) with its default --tick 2s, --full-recheck 1m and --confirm 10s,
// on a sandbox node with 250 ambient pods (real netns, cgroups, sandbox processes and
// in-pod listeners):
//   - detect-s: from a pod's listeners being flushed to its condition published False
//     (one flush per iteration);
//   - rss-MiB / hwm-MiB: the agent's resident memory (VmRSS, VmHWM) after the iterations,
//     and of it anon-MiB (heap, stacks) and file-MiB (the binary's pages);
//   - cpu-ms/min: the agent's user+system CPU per minute while nothing changes (ticks and
//     one full re-check), measured over 65 s.
//
// Run with -benchtime 5x.
func BenchmarkAgentOnNode(b *testing.B) {
	podsim.RequirePrivileged(b)
	bins, err := controlplane.FindBinaries()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{BinDir: bins})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cp.Stop() })
	cs, err := kubernetes.NewForConfig(cp.RESTConfig)
	if err != nil {
		b.Fatal(err)
	}
	node, err := sandbox.StartNode(ctx, cs, sandbox.Options{DNS: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = node.Stop() })
	const ns, pods = "bench", 250
	if err := sandbox.CreateWorkloads(ctx, cs, map[string]map[string]string{ns: {"istio.io/dataplane-mode": "ambient"}},
		[]sandbox.Workload{{Namespace: ns, Name: "many", Replicas: pods}}); err != nil {
		b.Fatal(err)
	}
	bin, err := BuildBinary(ctx, b.TempDir(), "-trimpath", "-ldflags=-s -w") // as deploy/Dockerfile builds it
	if err != nil {
		b.Fatal(err)
	}
	e := &env{cp: cp, cs: cs, node: node, bin: bin}
	list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	// As the DaemonSet runs it: the manifests' uid, no capabilities, its namespace there for
	// the heartbeat Lease.
	_, _, proc := startAgent(ctx, b, e, agentRun{capFree: true, uid: manifestUID(b), defaults: true})
	waitCondition(ctx, b, e, ns, list.Items, corev1.ConditionTrue, 5*time.Minute)

	b.ResetTimer()
	var total time.Duration
	i := 0
	for b.Loop() {
		victim := list.Items[i]
		i++
		flushed := time.Now()
		if err := node.Flush(ns, victim.Name); err != nil {
			b.Fatal(err)
		}
		total += waitCondition(ctx, b, e, ns, []corev1.Pod{victim}, corev1.ConditionFalse, 3*time.Minute).Sub(flushed)
	}
	b.StopTimer()
	b.ReportMetric(total.Seconds()/float64(i), "detect-s")

	cpu := func() time.Duration {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", proc.Pid))
		if err != nil {
			b.Fatal(err)
		}
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
		ut, _ := strconv.Atoi(f[11])                        // utime, field 14
		st, _ := strconv.Atoi(f[12])                        // stime, field 15
		return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ 100
	}
	c0 := cpu()
	time.Sleep(65 * time.Second)
	b.ReportMetric(float64((cpu()-c0).Milliseconds())*60/65, "cpu-ms/min")
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", proc.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		for key, unit := range map[string]string{"VmRSS:": "rss-MiB", "VmHWM:": "hwm-MiB", "RssAnon:": "anon-MiB", "RssFile:": "file-MiB"} {
			if rest, ok := strings.CutPrefix(l, key); ok {
				kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
				b.ReportMetric(float64(kb)/1024, unit)
			}
		}
	}
}
