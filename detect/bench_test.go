package detect

import (
	"context"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// BenchmarkScan1000Slow: 1,000 pods, each probe costing 50 ms of real time (an exec
// round trip), concurrency 16. One op is one whole Scan; expect ≈ 1000×50ms/16 ≈ 3.1 s.
func BenchmarkScan1000Slow(b *testing.B) {
	w := newWorld(manyPods(1000)...)
	slow := ProberFunc(func(ctx context.Context, _ *corev1.Pod) (Probe, error) {
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return Probe{}, ctx.Err()
		}
		return Probe{Listeners: listeners(15001, 15006, 15008)}, nil
	})
	e := New(w, w, slow, WithConcurrency(16))
	b.ResetTimer()
	for b.Loop() {
		rep, err := e.Scan(context.Background(), "")
		if err != nil || rep.Checked != 1000 {
			b.Fatal(rep.Checked, err)
		}
	}
}

// BenchmarkEngineOverheadPerPod: the Engine's own cost per pod (list copy, enroll,
// scheduling, classification, sorting) with an instant prober. One op is one ScanPods of
// 1,000 pods; ns/pod and allocs/pod are reported as metrics.
func BenchmarkEngineOverheadPerPod(b *testing.B) {
	const n = 1000
	w := newWorld(manyPods(n)...)
	instant := ProberFunc(func(context.Context, *corev1.Pod) (Probe, error) {
		return Probe{Listeners: listeners(15001, 15006, 15008)}, nil
	})
	e := New(w, w, instant)
	pods, _ := w.ListPods(context.Background(), "")
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.ScanPods(context.Background(), pods); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/pod")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(b.N*n), "allocs/pod")
}
