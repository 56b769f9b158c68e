package netns_test

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshmedic/meshmedic/internal/podsim"
	"github.com/meshmedic/meshmedic/netns"
)

// These tests read real kernel objects through the real /proc: network namespaces,
// cgroups and sandbox processes made by podsim, LISTEN sockets opened inside the pods'
// netns the way ztunnel opens them, and listeners destroyed with `ss -K` the way orphans
// lose them. They need root; with MESHMEDIC_REQUIRE_PRIVILEGED=1 they fail instead of
// skipping.

func newSim(t *testing.T) *podsim.Sim {
	t.Helper()
	podsim.RequirePrivileged(t)
	sim, err := podsim.New()
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, sim.Close()) })
	return sim
}

func procFS(t *testing.T) netns.FS {
	t.Helper()
	fs, err := netns.NewFS("/proc")
	require.NoError(t, err)
	return fs
}

func inspect(t *testing.T, fs netns.FS) map[string]netns.PodNetns {
	t.Helper()
	rep, err := netns.InspectNode(fs, netns.NewProcReader(fs), netns.ReadOptions{Full: true})
	require.NoError(t, err)
	out := map[string]netns.PodNetns{}
	for _, p := range rep.Pods {
		out[p.PodUID] = p
	}
	return out
}

func TestKernelSandboxesAndCapture(t *testing.T) {
	sim := newSim(t)
	fs := procFS(t)
	captured, err := sim.AddPod(podsim.PodSpec{IPv4: netip.MustParseAddr("10.250.0.5")})
	require.NoError(t, err)
	require.NoError(t, sim.Capture(captured, true))
	partial, err := sim.AddPod(podsim.PodSpec{Driver: podsim.DriverCgroupfs, Runtime: podsim.RuntimeCRIO, QoS: "besteffort"})
	require.NoError(t, err)
	require.NoError(t, sim.Capture(partial, false))
	require.NoError(t, sim.Flush(partial, podsim.PortHBONE))
	bare, err := sim.AddPod(podsim.PodSpec{Runtime: podsim.RuntimeDocker, QoS: "guaranteed"})
	require.NoError(t, err)
	// An app's own 127.0.0.1:15008 and [::]:8080 in an uncaptured pod are not capture.
	_, err = sim.Listen(bare, netip.MustParseAddrPort("127.0.0.1:15008"))
	require.NoError(t, err)
	_, err = sim.Listen(bare, netip.MustParseAddrPort("[::]:8080"))
	require.NoError(t, err)
	host, err := sim.AddPod(podsim.PodSpec{HostNetwork: true})
	require.NoError(t, err)
	// A younger app process in the same netns and a younger foreign process in another
	// netns: the sandbox (oldest) must win.
	_, err = sim.AddProcess(captured)
	require.NoError(t, err)
	_, err = sim.AddForeignProcess(captured)
	require.NoError(t, err)

	hostNS, err := fs.HostNetns()
	require.NoError(t, err)
	sc, err := fs.Sandboxes()
	require.NoError(t, err)
	sbs := map[string]netns.Sandbox{}
	for _, s := range sc.Sandboxes {
		sbs[s.PodUID] = s
	}
	for _, p := range []*podsim.Pod{captured, partial, bare} {
		s, ok := sbs[p.UID]
		require.True(t, ok, "pod %s not found", p.UID)
		assert.Equal(t, p.PID, s.PID, "pod %s: oldest process", p.UID)
		assert.Equal(t, p.Netns, s.Netns)
		assert.False(t, s.HostNetwork)
	}
	assert.Equal(t, 3, sbs[captured.UID].Processes)
	assert.Len(t, sbs[captured.UID].OtherNetns, 1)
	require.Contains(t, sbs, host.UID)
	assert.True(t, sbs[host.UID].HostNetwork)
	assert.Equal(t, hostNS, sbs[host.UID].Netns)

	got := inspect(t, fs)
	assert.Equal(t, netns.Captured, got[captured.UID].Capture)
	assert.Equal(t, []uint16{15001, 15006, 15008, 15053}, got[captured.UID].Listeners.Ports)
	assert.Equal(t, netns.CapturePartial, got[partial.UID].Capture)
	assert.Equal(t, []uint16{15001, 15006}, got[partial.UID].Listeners.Ports)
	assert.Equal(t, netns.CaptureNone, got[bare.UID].Capture)
	assert.Empty(t, got[bare.UID].Listeners.Ports)
	assert.Len(t, got[bare.UID].Listeners.Sockets, 2, "the app's own LISTEN sockets are read")
	assert.Equal(t, netns.CaptureHostNetwork, got[host.UID].Capture)

	// The pod IP is in its netns, and not in another pod's.
	ok, err := fs.HoldsAddr(captured.PID, netip.MustParseAddr("10.250.0.5"))
	require.NoError(t, err)
	assert.True(t, ok)
	ok, err = fs.HoldsAddr(partial.PID, netip.MustParseAddr("10.250.0.5"))
	require.NoError(t, err)
	assert.False(t, ok)

	// The fast path: tcp6 shows the wildcard listeners, so tcp is not read.
	l, err := netns.NewProcReader(fs).Listeners(captured.PID, netns.ReadOptions{})
	require.NoError(t, err)
	assert.Equal(t, netns.TableSkipped, l.TCP.Status)
	assert.Equal(t, netns.Captured, l.Capture(nil))

	// The reboot orphan: every listener flushed inside the netns.
	require.NoError(t, sim.Flush(captured))
	got = inspect(t, fs)
	assert.Equal(t, netns.CaptureNone, got[captured.UID].Capture)
	assert.Empty(t, got[captured.UID].Listeners.Ports)
	// ztunnel re-adds it.
	require.NoError(t, sim.Capture(captured, false))
	assert.Equal(t, netns.Captured, inspect(t, fs)[captured.UID].Capture)
}

func TestKernelNetnsReplaced(t *testing.T) {
	sim := newSim(t)
	fs := procFS(t)
	p, err := sim.AddPod(podsim.PodSpec{})
	require.NoError(t, err)
	require.NoError(t, sim.Capture(p, false))
	before := inspect(t, fs)[p.UID]
	require.Equal(t, netns.Captured, before.Capture)

	require.NoError(t, sim.ReplaceNetns(p))
	_, err = fs.Revalidate(before.Sandbox)
	assert.ErrorIs(t, err, netns.ErrProcessGone, "the old sandbox process is gone")
	after := inspect(t, fs)[p.UID]
	assert.Equal(t, p.PID, after.PID)
	assert.NotEqual(t, before.Netns, after.Netns, "new netns inode, same pod UID")
	assert.Equal(t, p.Netns, after.Netns)
	assert.Equal(t, netns.CaptureNone, after.Capture, "the listeners stayed in the old netns")

	ino, err := fs.Revalidate(after.Sandbox)
	require.NoError(t, err)
	assert.Equal(t, after.Netns, ino)
}

func TestKernelSocketsInUse(t *testing.T) {
	sim := newSim(t)
	fs := procFS(t)
	p, err := sim.AddPod(podsim.PodSpec{})
	require.NoError(t, err)
	require.NoError(t, sim.Capture(p, false))
	c, err := fs.SocketsInUse(p.PID)
	require.NoError(t, err)
	assert.Equal(t, 3, c.TCP6)
	require.NoError(t, sim.Flush(p, podsim.PortOutbound))
	c2, err := fs.SocketsInUse(p.PID)
	require.NoError(t, err)
	assert.Equal(t, 2, c2.TCP6, "flushing one listener moves the netns's own counter")
	assert.NotEqual(t, c, c2)
}
