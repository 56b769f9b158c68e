package detect

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshmedic/meshmedic/netns"
	"github.com/meshmedic/meshmedic/netns/netnstest"
)

func TestNodeLocalProber(t *testing.T) {
	const uidA, uidB, uidC = "aaaaaaaa-0000-0000-0000-000000000001", "bbbbbbbb-0000-0000-0000-000000000002", "cccccccc-0000-0000-0000-000000000003"
	tree := netnstest.NewTree(t)
	tree.Add(netnstest.Proc{PID: 100, Cgroup: netnstest.KubepodsCgroup(uidA), Start: 100, Netns: 4026532201,
		TCP6: netnstest.Ptr(netnstest.TCP6(netnstest.Ztunnel(true, 10)...)), TCP: netnstest.Ptr(netnstest.TCP())})
	tree.Add(netnstest.Proc{PID: 200, Cgroup: netnstest.KubepodsCgroup(uidB), Start: 200, Netns: 4026532202,
		TCP6: netnstest.Ptr(netnstest.TCP6()), TCP: netnstest.Ptr(netnstest.TCP())})
	fs, err := netns.NewFS(tree.Root)
	require.NoError(t, err)

	a := enabledPod("shop", "a")
	a.UID = uidA
	b := enabledPod("shop", "b")
	b.UID = uidB
	c := enabledPod("shop", "c")
	c.UID = uidC

	p := NewNodeLocalProber(fs, netns.NewProcReader(fs))
	ctx := context.Background()
	pa, err := p.Probe(ctx, &a)
	require.NoError(t, err)
	assert.Equal(t, []uint16{15001, 15006, 15008, 15053}, pa.Listeners.Ports)
	assert.Equal(t, uint64(4026532201), pa.Netns)
	assert.Equal(t, netns.TableOK, pa.Listeners.TCP.Status, "Full by default")
	assert.Equal(t, SourceNode, pa.Source)

	assert.Equal(t, 1, p.gen, "first probe walks")
	_, err = p.Probe(ctx, &a)
	require.NoError(t, err)
	assert.Equal(t, 1, p.gen, "a cached, revalidated sandbox needs no walk")
	_, err = p.Probe(ctx, &c)
	assert.ErrorIs(t, err, ErrNoSandbox)
	assert.Equal(t, 2, p.gen, "an unknown pod walks once per Probe call")

	// C starts later: the cache misses, one walk finds it.
	tree.Add(netnstest.Proc{PID: 300, Cgroup: netnstest.KubepodsCgroup(uidC), Start: 300, Netns: 4026532203,
		TCP6: netnstest.Ptr(netnstest.TCP6(netnstest.Ztunnel(false, 20)...)), TCP: netnstest.Ptr(netnstest.TCP())})
	pc, err := p.Probe(ctx, &c)
	require.NoError(t, err)
	assert.Equal(t, 3, p.gen)
	assert.Equal(t, uint64(4026532203), pc.Netns)

	// A's sandbox is recreated (new pid, new netns, nothing listening); the engine,
	// which saw the old inode, calls it netns-replaced.
	w := newWorld(a, b)
	e := New(w, w, p, WithClock(clocktesting.NewFakeClock(t0)))
	rep, err := e.Scan(ctx, "")
	require.NoError(t, err)
	got := byName(rep)
	assert.Equal(t, ClassCaptured, got["a"].Class)
	assert.Equal(t, ClassOrphaned, got["b"].Class)

	tree.Remove(100)
	tree.Add(netnstest.Proc{PID: 150, Cgroup: netnstest.KubepodsCgroup(uidA), Start: 150, Netns: 4026532299,
		TCP6: netnstest.Ptr(netnstest.TCP6()), TCP: netnstest.Ptr(netnstest.TCP())})
	rep, err = e.Scan(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, ClassNetnsReplaced, byName(rep)["a"].Class)
	assert.Equal(t, uint64(4026532299), byName(rep)["a"].Netns)

	// A host-network sandbox is never read.
	const uidH = "dddddddd-0000-0000-0000-000000000004"
	tree.Add(netnstest.Proc{PID: 400, Cgroup: netnstest.KubepodsCgroup(uidH), Start: 400, Netns: netnstest.HostNetns})
	h := enabledPod("shop", "h")
	h.UID = types.UID(uidH)
	_, err = p.Probe(ctx, &h)
	assert.ErrorIs(t, err, ErrHostNetwork)
}

type fakeRules map[int]netns.RoutingRules

func (f fakeRules) Rules(pid int) (netns.RoutingRules, error) {
	rr, ok := f[pid]
	if !ok {
		return rr, fmt.Errorf("pid %d: %w", pid, netns.ErrProcessGone)
	}
	return rr, nil
}

func TestNodeLocalProberRuleInspection(t *testing.T) {
	const uidA, uidB = "aaaaaaaa-0000-0000-0000-000000000001", "bbbbbbbb-0000-0000-0000-000000000002"
	tree := netnstest.NewTree(t)
	tree.Add(netnstest.Proc{PID: 100, Cgroup: netnstest.KubepodsCgroup(uidA), Start: 100, Netns: 4026532201,
		TCP6: netnstest.Ptr(netnstest.TCP6(netnstest.Ztunnel(false, 10)...)), TCP: netnstest.Ptr(netnstest.TCP())})
	tree.Add(netnstest.Proc{PID: 200, Cgroup: netnstest.KubepodsCgroup(uidB), Start: 200, Netns: 4026532202,
		TCP6: netnstest.Ptr(netnstest.TCP6(netnstest.Ztunnel(false, 20)...)), TCP: netnstest.Ptr(netnstest.TCP())})
	fs, err := netns.NewFS(tree.Root)
	require.NoError(t, err)
	a, b := enabledPod("shop", "a"), enabledPod("shop", "b")
	a.UID, b.UID = uidA, uidB

	p := NewNodeLocalProber(fs, netns.NewProcReader(fs), WithRuleInspection(fakeRules{100: {MarkRule4: true, LocalRoute4: true}}))
	pa, err := p.Probe(context.Background(), &a)
	require.NoError(t, err)
	require.NotNil(t, pa.Rules)
	assert.Equal(t, netns.RulesPresent, pa.Rules.State())
	pb, err := p.Probe(context.Background(), &b)
	require.NoError(t, err, "a failed rule read does not fail the probe")
	assert.Nil(t, pb.Rules)
	assert.ErrorIs(t, pb.RulesErr, netns.ErrProcessGone)
	assert.ErrorContains(t, pb.RulesErr, "pod shop/b pid 200")

	pa, err = NewNodeLocalProber(fs, netns.NewProcReader(fs)).Probe(context.Background(), &a)
	require.NoError(t, err)
	assert.Nil(t, pa.Rules, "no inspection unless asked")
	assert.NoError(t, pa.RulesErr)
}
