package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshmedic/meshmedic/enroll"
	nt "github.com/meshmedic/meshmedic/netns/netnstest"
)

// benchNode is an agent over a synthetic node of 50,000 processes and 250 ambient pods
// (netnstest.WriteSyntheticNode: 4 processes per pod, CRI-O-style conmon in the host
// netns), each pod's sandbox with ztunnel's listeners in net/tcp6 and its socket counters.
func benchNode(b *testing.B) (*Agent, *clocktesting.FakeClock, context.Context) {
	b.Helper()
	root := filepath.Join(os.TempDir(), fmt.Sprintf("meshmedic-bench-agent-%d", os.Getpid()))
	b.Cleanup(func() { os.RemoveAll(root) })
	uids, err := nt.WriteSyntheticNode(root, 50000, 250)
	if err != nil {
		b.Fatal(err)
	}
	tcp6 := nt.TCP6(nt.Ztunnel(false, 1)...)
	objs := []runtime.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop",
		Labels: map[string]string{enroll.LabelDataplaneMode: "ambient"}}}}
	for i, uid := range uids {
		pause := filepath.Join(root, strconv.Itoa(3+4*i)) // the oldest process in the pod's netns
		for name, content := range map[string]string{"net/tcp6": tcp6, "net/tcp": nt.TCP(),
			"net/sockstat": "sockets: used 9\nTCP: inuse 0 orphan 0 tw 0 alloc 0 mem 0\n", "net/sockstat6": "TCP6: inuse 3\nUDP6: inuse 0\n"} {
			if err := os.MkdirAll(filepath.Join(pause, "net"), 0o755); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(pause, name), []byte(content), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		p := ambientPod(fmt.Sprintf("p%d", i), uid)
		p.Spec.NodeName = "n1"
		objs = append(objs, p)
	}
	cs := fake.NewClientset(objs...)
	cs.PrependReactor("patch", "pods", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, nil })
	cs.PrependReactor("create", "events", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, nil })
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	a, err := New(cs, Config{NodeName: "n1", ProcRoot: root, Confirm: 10 * time.Second, FullRecheck: time.Minute,
		Settings: enroll.DefaultSettings()}, WithClock(clk))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	a.informerStart(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), a.synced...) {
		b.Fatal("informers did not sync")
	}
	if err := a.RunOnce(ctx); err != nil { // first sweep: walk, place, publish
		b.Fatal(err)
	}
	if len(a.sched.state) != 250 {
		b.Fatalf("expected 250 pods tracked, have %d", len(a.sched.state))
	}
	return a, clk, ctx
}

// BenchmarkSweepCached is the agent's full re-check of 250 pods on a 50k-process node:
// every pod placed from the cached pod→PID map (three small reads to revalidate), its
// tables read, classified, and nothing published (no change).
func BenchmarkSweepCached(b *testing.B) {
	a, clk, ctx := benchNode(b)
	b.ReportAllocs()
	for b.Loop() {
		clk.Step(time.Minute) // the full re-check is due
		if err := a.RunOnce(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(a.prober.Stats().Walks), "walks")
}

// BenchmarkSweepFullWalk is the same sweep starting from an empty cache every time: one
// walk of all 50,000 /proc/<pid>/cgroup files per sweep, as a naive agent does.
func BenchmarkSweepFullWalk(b *testing.B) {
	a, clk, ctx := benchNode(b)
	b.ReportAllocs()
	for b.Loop() {
		clk.Step(time.Minute)
		a.newEngine()
		if err := a.RunOnce(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSweepTick is a tick between full re-checks when nothing changed: only each
// captured pod's socket counters are read (250 pods).
func BenchmarkSweepTick(b *testing.B) {
	a, clk, ctx := benchNode(b)
	b.ReportAllocs()
	for b.Loop() {
		clk.Step(time.Millisecond)
		if err := a.RunOnce(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
