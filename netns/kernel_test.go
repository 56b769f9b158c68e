package netns_test

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshmedic/meshmedic/internal/podsim"
	"github.com/meshmedic/meshmedic/netns"
	nt "github.com/meshmedic/meshmedic/netns/netnstest"
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

// The capability-free agent cannot read a pod's ns/net link; FS then names each netns by the
// inode of its net/dev entry. Both identities must group processes the same way.
func TestKernelProcNetIdentity(t *testing.T) {
	sim := newSim(t)
	nsfs := procFS(t).WithIdentity(netns.IdentityNsfs)
	pnet := nsfs.WithIdentity(netns.IdentityProcNet)
	a, err := sim.AddPod(podsim.PodSpec{})
	require.NoError(t, err)
	b, err := sim.AddPod(podsim.PodSpec{Runtime: podsim.RuntimeCRIO})
	require.NoError(t, err)
	host, err := sim.AddPod(podsim.PodSpec{HostNetwork: true})
	require.NoError(t, err)
	_, err = sim.AddProcess(a) // same netns as a's sandbox
	require.NoError(t, err)

	byUID := func(fs netns.FS) map[string]netns.Sandbox {
		sc, err := fs.Sandboxes()
		require.NoError(t, err)
		out := map[string]netns.Sandbox{}
		for _, s := range sc.Sandboxes {
			out[s.PodUID] = s
		}
		return out
	}
	n, p := byUID(nsfs), byUID(pnet)
	ids := map[uint64]uint64{} // nsfs → proc-net: must be a bijection
	for _, pod := range []*podsim.Pod{a, b, host} {
		require.Contains(t, p, pod.UID)
		assert.Equal(t, n[pod.UID].PID, p[pod.UID].PID)
		assert.Equal(t, n[pod.UID].HostNetwork, p[pod.UID].HostNetwork)
		assert.Equal(t, n[pod.UID].Processes, p[pod.UID].Processes)
		assert.NotZero(t, p[pod.UID].Netns)
		if prev, ok := ids[n[pod.UID].Netns]; ok {
			assert.Equal(t, prev, p[pod.UID].Netns)
		}
		ids[n[pod.UID].Netns] = p[pod.UID].Netns
	}
	assert.NotEqual(t, p[a.UID].Netns, p[b.UID].Netns)
	assert.True(t, p[host.UID].HostNetwork)
	hostID, err := pnet.HostNetns()
	require.NoError(t, err)
	assert.Equal(t, hostID, p[host.UID].Netns)

	// A replaced netns gets a new identity; Revalidate reports the old process gone.
	before := p[b.UID]
	require.NoError(t, sim.ReplaceNetns(b))
	_, err = pnet.Revalidate(before)
	assert.ErrorIs(t, err, netns.ErrProcessGone)
	after := byUID(pnet)[b.UID]
	assert.NotEqual(t, before.Netns, after.Netns)
	ino, err := pnet.Revalidate(after)
	require.NoError(t, err)
	assert.Equal(t, after.Netns, ino)
}

// TestKernelCapabilityFree runs the walk and the listener read in a child process with no
// capabilities at all, as uid 65532 (the DaemonSet's securityContext): NewFS must pick the
// proc-net identity and still place and read every pod.
func TestKernelCapabilityFree(t *testing.T) {
	if os.Getenv("MESHMEDIC_CAPFREE_CHILD") == "1" {
		capFreeChild(t)
		return
	}
	sim := newSim(t)
	setpriv, err := exec.LookPath("setpriv")
	require.NoError(t, err, "setpriv (util-linux) is needed to drop capabilities")
	a, err := sim.AddPod(podsim.PodSpec{})
	require.NoError(t, err)
	require.NoError(t, sim.Capture(a, true))
	b, err := sim.AddPod(podsim.PodSpec{})
	require.NoError(t, err)
	require.NoError(t, sim.Capture(b, false))
	require.NoError(t, sim.Flush(b, podsim.PortHBONE))

	cmd := exec.Command(setpriv, "--reuid=65532", "--regid=65532", "--clear-groups",
		"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
		os.Args[0], "-test.run=^TestKernelCapabilityFree$", "-test.v")
	cmd.Env = append(os.Environ(), "MESHMEDIC_CAPFREE_CHILD=1",
		"MESHMEDIC_CAPFREE_PODS="+a.UID+"=captured,"+b.UID+"=partial")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "capability-free child:\n%s", out)
	assert.Contains(t, string(out), "capfree-ok")
}

func capFreeChild(t *testing.T) {
	status, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	require.Contains(t, string(status), "CapEff:\t0000000000000000", "the child must run without capabilities")
	fs, err := netns.NewFS("/proc")
	require.NoError(t, err)
	require.Equal(t, netns.IdentityProcNet, fs.Identity(), "ns/net of PID 1 is unreadable without capabilities")
	got := inspect(t, fs)
	for _, kv := range strings.Split(os.Getenv("MESHMEDIC_CAPFREE_PODS"), ",") {
		uid, want, _ := strings.Cut(kv, "=")
		require.Contains(t, got, uid)
		assert.NoError(t, got[uid].Err)
		assert.Equal(t, netns.Capture(want), got[uid].Capture, "pod %s", uid)
	}
	c, err := fs.SocketsInUse(got[strings.Split(os.Getenv("MESHMEDIC_CAPFREE_PODS"), "=")[0]].PID)
	require.NoError(t, err)
	assert.Positive(t, c.TCP6)
	if !t.Failed() {
		fmt.Println("capfree-ok")
	}
}

// A real table larger than the 64 KiB working buffer streams across reads, and a real
// table cut at the byte cap proves presence only: ztunnel's listeners plus 1,000 app
// listeners in one pod's netns (~150 KiB of tcp6).
func TestKernelTableStreamingAndCap(t *testing.T) {
	sim := newSim(t)
	fs := procFS(t)
	p, err := sim.AddPod(podsim.PodSpec{})
	require.NoError(t, err)
	require.NoError(t, sim.Capture(p, false))
	for i := 0; i < 1000; i++ {
		_, err := sim.Listen(p, netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(20000+i)))
		require.NoError(t, err)
	}
	r := netns.NewProcReader(fs)
	l, err := r.Listeners(p.PID, netns.ReadOptions{Full: true})
	require.NoError(t, err)
	assert.Equal(t, netns.TableOK, l.TCP6.Status, "%v", l.TCP6.Err)
	assert.Greater(t, l.TCP6.Stats.Bytes, int64(64<<10), "the table spans several reads")
	assert.Equal(t, 1003, l.TCP6.Stats.Rows)
	assert.Len(t, l.Sockets, 1003)
	assert.Equal(t, netns.Captured, l.Capture(nil))

	// Cut at 16 KiB: what is shown is present, nothing is proven absent.
	cut := netns.ReadOptions{Full: true, MaxTableBytes: 16 << 10}
	l, err = r.Listeners(p.PID, cut)
	require.NoError(t, err)
	assert.Equal(t, netns.TableIncomplete, l.TCP6.Status)
	assert.True(t, l.TCP6.Stats.Truncated)
	assert.Equal(t, int64(16<<10), l.TCP6.Stats.Bytes)
	assert.Contains(t, []netns.Capture{netns.Captured, netns.CaptureUnknown}, l.Capture(nil))

	// The orphan: proven by the whole table, unknown from the cut one.
	require.NoError(t, sim.Flush(p))
	l, err = r.Listeners(p.PID, netns.ReadOptions{Full: true})
	require.NoError(t, err)
	assert.Equal(t, netns.CaptureNone, l.Capture(nil))
	assert.Equal(t, 1000, l.TCP6.Stats.Rows)
	l, err = r.Listeners(p.PID, cut)
	require.NoError(t, err)
	assert.Equal(t, netns.CaptureUnknown, l.Capture(nil))
	assert.ErrorContains(t, l.Err(), "cut at the 16384-byte read limit")
}

// A fixture tree may link its tables to real proc files: openat follows the link, and the
// opened file (S_IFREG, size 0) passes the type check.
func TestKernelFixtureLinksToRealProc(t *testing.T) {
	sim := newSim(t)
	p, err := sim.AddPod(podsim.PodSpec{})
	require.NoError(t, err)
	require.NoError(t, sim.Capture(p, false))
	tree := nt.NewTree(t)
	const uid = "00000000-0000-0000-0000-0000000000aa"
	tree.Add(nt.Proc{PID: 10, Cgroup: nt.KubepodsCgroup(uid), Start: 10, Netns: 4026532999})
	for _, name := range []string{"tcp6", "tcp"} {
		tree.Symlink(10, "net/"+name, fmt.Sprintf("/proc/%d/net/%s", p.PID, name))
	}
	fs, err := netns.NewFS(tree.Root)
	require.NoError(t, err)
	rep, err := netns.InspectNode(fs, netns.NewProcReader(fs), netns.ReadOptions{Full: true})
	require.NoError(t, err)
	require.Len(t, rep.Pods, 1)
	assert.Equal(t, netns.Captured, rep.Pods[0].Capture, "%v", rep.Pods[0].Err)
	assert.Equal(t, netns.TableOK, rep.Pods[0].Listeners.TCP.Status)
}

// TestKernelHostNetnsWithoutKthreadd reproduces a capability-free reader in a PID namespace
// that has no kthreadd (a nested node): PID 1 (a root shell) keeps its ns/net link closed,
// and PID 2 is the reader itself. The nsfs identity cannot name the host netns there, so
// NewFS picks proc-net, which can (1/net/dev); forced to nsfs, the walk fails with
// ErrHostNetnsUnknown instead of judging pods from processes that may be the host's.
func TestKernelHostNetnsWithoutKthreadd(t *testing.T) {
	if os.Getenv("MESHMEDIC_NOKTHREADD_CHILD") == "1" {
		noKthreaddChild(t)
		return
	}
	podsim.RequirePrivileged(t)
	setpriv, err := exec.LookPath("setpriv")
	require.NoError(t, err, "setpriv (util-linux) is needed to drop capabilities")
	unshare, err := exec.LookPath("unshare")
	require.NoError(t, err, "unshare (util-linux) is needed for a PID namespace")
	child := strings.Join([]string{setpriv, "--reuid=65532", "--regid=65532", "--clear-groups",
		"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
		os.Args[0], "-test.run=^TestKernelHostNetnsWithoutKthreadd$", "-test.v"}, " ")
	// The shell stays PID 1 (the child runs in the background, then wait): a root process
	// whose ns/net the child may not read.
	cmd := exec.Command(unshare, "--pid", "--fork", "--mount-proc", "sh", "-c", child+" & wait $!")
	cmd.Env = append(os.Environ(), "MESHMEDIC_NOKTHREADD_CHILD=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "child in a PID namespace:\n%s", out)
	assert.Contains(t, string(out), "nokthreadd-ok")
}

func noKthreaddChild(t *testing.T) {
	status, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	require.Contains(t, string(status), "CapEff:\t0000000000000000", "the child must run without capabilities")
	_, err = os.Readlink("/proc/1/ns/net")
	require.ErrorIs(t, err, os.ErrPermission, "PID 1's ns/net must be closed to the child")
	comm, err := os.ReadFile("/proc/2/comm")
	require.NoError(t, err)
	require.NotEqual(t, "kthreadd\n", string(comm), "no kthreadd in this PID namespace")

	fs, err := netns.NewFS("/proc")
	require.NoError(t, err)
	assert.Equal(t, netns.IdentityProcNet, fs.Identity())
	host, err := fs.HostNetns()
	require.NoError(t, err)
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat("/proc/self/net/dev", &st))
	assert.Equal(t, st.Ino, host, "PID 1 shares this process's netns")
	_, err = fs.Sandboxes()
	require.NoError(t, err)

	nsfs := fs.WithIdentity(netns.IdentityNsfs)
	_, err = nsfs.HostNetns()
	assert.ErrorIs(t, err, netns.ErrHostNetnsUnknown)
	_, err = nsfs.Sandboxes()
	assert.ErrorIs(t, err, netns.ErrHostNetnsUnknown)
	_, err = netns.InspectNode(nsfs, netns.NewProcReader(nsfs), netns.ReadOptions{})
	assert.ErrorIs(t, err, netns.ErrHostNetnsUnknown)
	if !t.Failed() {
		fmt.Println("nokthreadd-ok")
	}
}
