package detect

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshmedic/meshmedic/netns"
	nt "github.com/meshmedic/meshmedic/netns/netnstest"
)

// BenchmarkNodeSweep is the pod -> sandbox part of an agent sweep over a synthetic node
// of 50,000 processes and 250 pods: every pod probed once. "cached" reuses one
// NodeLocalProber across sweeps (each pod revalidated with three small reads); "full-walk"
// starts from an empty cache every sweep (one /proc walk, then lookups), as a naive agent
// that walks /proc on every sweep would. The fixture has no socket tables, so socket reads
// cost only the failed opens; see netns's KernelPodRead for those.
func BenchmarkNodeSweep(b *testing.B) {
	root := filepath.Join(os.TempDir(), fmt.Sprintf("meshmedic-bench-sweep-%d", os.Getpid()))
	b.Cleanup(func() { os.RemoveAll(root) })
	uids, err := nt.WriteSyntheticNode(root, 50000, 250)
	if err != nil {
		b.Fatal(err)
	}
	fs, err := netns.NewFS(root)
	if err != nil {
		b.Fatal(err)
	}
	pods := make([]*corev1.Pod, len(uids))
	for i, u := range uids {
		pods[i] = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: fmt.Sprintf("p%d", i), UID: types.UID(u)}}
	}
	ctx := context.Background()
	sweep := func(b *testing.B, p *NodeLocalProber) {
		for _, pod := range pods {
			if _, err := p.Probe(ctx, pod); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("cached", func(b *testing.B) {
		p := NewNodeLocalProber(fs, netns.NewProcReader(fs))
		sweep(b, p) // fill the cache
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			sweep(b, p)
		}
	})
	b.Run("full-walk", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sweep(b, NewNodeLocalProber(fs, netns.NewProcReader(fs)))
		}
	})
}
