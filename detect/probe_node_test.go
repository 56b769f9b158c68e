package detect

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
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

// Evidence that cannot lie, end to end through the NodeLocalProber and the Engine: a
// socket table a kernel would never print, malformed rows where a listener should be, a
// FIFO, /dev/zero, a directory, a table cut at the byte cap and an unknowable host netns
// all give class unknown, never an actionable class. A proven orphan beside them shows
// the same path still finds orphans.
func TestNodeLocalProberEvidenceIsUnknown(t *testing.T) {
	hdr6, hdr4 := netnstest.TCP6(), netnstest.TCP()
	two6 := netnstest.TCP6(netnstest.Listen("[::]:15001", 1), netnstest.Listen("[::]:15006", 2))
	rows := func(s string) string { return s[strings.IndexByte(s, '\n')+1:] }
	filler := make([]netnstest.Sock, 0, 200)
	for i := range 200 {
		filler = append(filler, netnstest.Established(fmt.Sprintf("[fd00::%x]:80", i+1), uint64(100+i)))
	}
	type pod struct {
		name       string
		tcp6, tcp  string
		special    func(tree *netnstest.Tree, pid int) // replaces tcp6
		want       Class
		errHas     string
		actionable bool
	}
	pods := []pod{
		{name: "orphan", tcp6: hdr6, tcp: hdr4, want: ClassOrphaned, actionable: true},
		{name: "partial", tcp6: two6, tcp: hdr4, want: ClassPartial, actionable: true},
		{name: "empty", tcp6: "", tcp: "", want: ClassUnknown},
		{name: "header-only-tcp6-empty-tcp", tcp6: hdr6, tcp: "", want: ClassUnknown},
		{name: "headerless", tcp6: rows(two6), tcp: hdr4, want: ClassUnknown},
		{name: "malformed", tcp6: two6 + "   2: 00000000000000000000000000000000:3AZ0 garbage\n", tcp: hdr4, want: ClassUnknown},
		{name: "over-cap", tcp6: netnstest.TCP6(append(filler, netnstest.Listen("[::]:15008", 3))...), tcp: hdr4, want: ClassUnknown},
		{name: "fifo", tcp: hdr4, special: func(tree *netnstest.Tree, pid int) { tree.Fifo(pid, "net/tcp6") }, want: ClassUnknown},
		{name: "devzero", tcp: hdr4, special: func(tree *netnstest.Tree, pid int) { tree.Symlink(pid, "net/tcp6", "/dev/zero") }, want: ClassUnknown},
		{name: "dir", tcp: hdr4, special: func(tree *netnstest.Tree, pid int) { tree.Dir(pid, "net/tcp6") }, want: ClassUnknown},
	}
	tree := netnstest.NewTree(t)
	var api []corev1.Pod
	for i, p := range pods {
		uid := fmt.Sprintf("eeeeeeee-0000-0000-0000-%012d", i+1)
		pid := 100 + i
		tree.Add(netnstest.Proc{PID: pid, Cgroup: netnstest.KubepodsCgroup(uid), Start: uint64(pid), Netns: uint64(4026532300 + i),
			TCP6: netnstest.Ptr(p.tcp6), TCP: netnstest.Ptr(p.tcp)})
		if p.special != nil {
			p.special(tree, pid)
		}
		ap := enabledPod("shop", p.name)
		ap.UID = types.UID(uid)
		api = append(api, ap)
	}
	fs, err := netns.NewFS(tree.Root)
	require.NoError(t, err)
	// A cap that cuts the over-cap table (200 filler rows, ~30 KiB) and no other.
	prober := NewNodeLocalProber(fs, netns.NewProcReader(fs), WithNodeReadOptions(netns.ReadOptions{Full: true, MaxTableBytes: 8 << 10}))
	w := newWorld(api...)
	e := New(w, w, prober, WithClock(clocktesting.NewFakeClock(t0)))
	var rep Report
	done := make(chan struct{})
	go func() {
		defer close(done)
		rep, err = e.Scan(context.Background(), "")
	}()
	select {
	case <-done: // liveness bound, not a timing assertion: a FIFO must not block the scan
	case <-time.After(10 * time.Second):
		t.Fatal("Scan has not returned after 10 s")
	}
	require.NoError(t, err)
	got := byName(rep)
	for _, p := range pods {
		f := got[p.name]
		assert.Equal(t, p.want, f.Class, "%s: %+v", p.name, f)
		assert.Equal(t, p.actionable, f.Class.Actionable(), p.name)
	}
	assert.Equal(t, []uint16{15001, 15006}, got["malformed"].Present, "presence still counts")

	// The host netns becomes unknowable: every pod is unknown, the orphan included, and
	// the error says why.
	require.NoError(t, os.Remove(tree.Root+"/1/ns/net"))
	prober = NewNodeLocalProber(fs, netns.NewProcReader(fs))
	rep, err = New(w, w, prober, WithClock(clocktesting.NewFakeClock(t0))).Scan(context.Background(), "")
	require.NoError(t, err)
	for _, f := range rep.Findings {
		assert.Equal(t, ClassUnknown, f.Class, f.Name)
		assert.ErrorIs(t, f.Err, netns.ErrHostNetnsUnknown, f.Name)
	}
}
