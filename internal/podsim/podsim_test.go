package podsim

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// newSim makes a Sim for a privileged test and closes it at the end, also on failure.
func newSim(t *testing.T) *Sim {
	t.Helper()
	RequirePrivileged(t)
	s, err := New()
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	return s
}

func readProc(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
	require.NoError(t, err)
	return string(b)
}

// sockRows returns the local_address and st columns of a /proc/<pid>/net/{tcp,tcp6,udp,udp6}
// table, as "ADDR:PORT ST".
func sockRows(t *testing.T, pid int, table string) []string {
	t.Helper()
	var rows []string
	sc := bufio.NewScanner(strings.NewReader(readProc(t, pid, "net/"+table)))
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		require.GreaterOrEqual(t, len(f), 4, sc.Text())
		rows = append(rows, f[1]+" "+f[3])
	}
	return rows
}

const (
	any6  = "00000000000000000000000000000000"
	lo6   = "00000000000000000000000001000000"
	any4  = "00000000"
	lo4   = "0100007F"
	stLis = "0A" // TCP_LISTEN
	stUDP = "07" // TCP_CLOSE: how an unconnected UDP socket shows
)

// cgroupLines maps the hierarchy label of each /proc/<pid>/cgroup line ("" for cgroup2) to its path.
func cgroupLines(t *testing.T, pid int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(readProc(t, pid, "cgroup")), "\n") {
		parts := strings.SplitN(line, ":", 3)
		require.Len(t, parts, 3, line)
		out[parts[1]] = parts[2]
	}
	return out
}

func TestPodCgroupLines(t *testing.T) {
	s := newSim(t)
	type combo struct {
		driver CgroupDriver
		rt     Runtime
		qos    string
		// want is the path below the sim's parent cgroup; {u} is the UID, {u_} the UID with
		// underscores, {id} the sandbox ID.
		want string
	}
	var combos []combo
	for _, rt := range []Runtime{RuntimeContainerd, RuntimeCRIO, RuntimeDocker} {
		scope := map[Runtime]string{RuntimeContainerd: "cri-containerd-{id}.scope", RuntimeCRIO: "crio-{id}.scope", RuntimeDocker: "docker-{id}.scope"}[rt]
		leaf := map[Runtime]string{RuntimeContainerd: "{id}", RuntimeCRIO: "crio-{id}", RuntimeDocker: "{id}"}[rt]
		combos = append(combos,
			combo{DriverSystemd, rt, "burstable", "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u_}.slice/" + scope},
			combo{DriverSystemd, rt, "besteffort", "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u_}.slice/" + scope},
			combo{DriverSystemd, rt, "guaranteed", "kubepods.slice/kubepods-pod{u_}.slice/" + scope},
			combo{DriverCgroupfs, rt, "burstable", "kubepods/burstable/pod{u}/" + leaf},
			combo{DriverCgroupfs, rt, "besteffort", "kubepods/besteffort/pod{u}/" + leaf},
			combo{DriverCgroupfs, rt, "guaranteed", "kubepods/pod{u}/" + leaf},
		)
	}
	for _, c := range combos {
		p, err := s.AddPod(PodSpec{Driver: c.driver, Runtime: c.rt, QoS: c.qos})
		require.NoError(t, err)
		want := "/" + s.Name() + "/" + strings.NewReplacer(
			"{u_}", strings.ReplaceAll(p.UID, "-", "_"), "{u}", p.UID, "{id}", p.SandboxID).Replace(c.want)
		require.Regexp(t, `^[0-9a-f]{64}$`, p.SandboxID)

		lines := cgroupLines(t, p.PID)
		hier := s.CgroupLinePaths(p)
		require.NotEmpty(t, hier)
		for label := range hier {
			got, ok := lines[label]
			require.True(t, ok, "no %q line in /proc/%d/cgroup: %v", label, p.PID, lines)
			assert.True(t, strings.HasSuffix(got, want), "%s/%s/%s hierarchy %q:\n got %s\nwant …%s", c.driver, c.rt, c.qos, label, got, want)
		}
		// Every mounted hierarchy that this host lists is used: v2 and name=systemd included.
		for label := range lines {
			_, ok := hier[label]
			assert.True(t, ok, "hierarchy %q of /proc/%d/cgroup not used by the sim", label, p.PID)
		}
		t.Logf("%s/%s/%s: 0::%s", c.driver, c.rt, c.qos, lines[""])

		// The directories exist, and the sandbox is the only process of its leaf.
		for _, d := range p.Cgroups {
			st, err := os.Stat(d)
			require.NoError(t, err)
			assert.True(t, st.IsDir())
		}
		assert.Equal(t, 2*len(hier), len(p.Cgroups), "pod and sandbox level in each hierarchy")
		for _, d := range p.Cgroups {
			if filepath.Base(d) == filepath.Base(want) {
				assert.Equal(t, fmt.Sprint(p.PID), strings.TrimSpace(readFile(t, filepath.Join(d, "cgroup.procs"))))
			}
		}
		assert.NotEqual(t, hostNetns(t), p.Netns, "pod has its own netns")
	}
	// Show every hierarchy's line once, for the record.
	p := s.pods[0]
	for label, path := range cgroupLines(t, p.PID) {
		t.Logf("line %q: %s", label, path)
	}
}

// hostNetns is the netns of this test process, which host-network pods share. (/proc/1/ns/net
// is the same on a normal host, but may be unreadable even for root in a sandboxed VM.)
func hostNetns(t *testing.T) uint64 {
	t.Helper()
	ns, err := Netns(os.Getpid())
	require.NoError(t, err)
	return ns
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

func TestHostNetworkPod(t *testing.T) {
	s := newSim(t)
	p, err := s.AddPod(PodSpec{HostNetwork: true})
	require.NoError(t, err)
	assert.Equal(t, hostNetns(t), p.Netns, "host-network sandbox stays in our netns")
	if init, err := Netns(1); err != nil {
		t.Logf("cannot compare with /proc/1/ns/net: %v", err)
	} else if self := hostNetns(t); self == init {
		assert.Equal(t, init, p.Netns, "and so shares /proc/1/ns/net")
	} else {
		t.Logf("this test process is not in /proc/1's netns (%d vs %d); compared with our own", self, init)
	}
	assert.Error(t, s.Capture(p, true), "ztunnel never captures host-network pods")
	assert.Error(t, s.Flush(p), "ss -K must never run in the host netns")
	_, err = s.AddPod(PodSpec{HostNetwork: true, IPv4: netip.MustParseAddr("10.0.0.9")})
	assert.Error(t, err)
}

func TestCaptureAndFlush(t *testing.T) {
	s := newSim(t)
	p, err := s.AddPod(PodSpec{IPv4: netip.MustParseAddr("10.244.1.7"), IPv6: netip.MustParseAddr("fd00:10:244::7")})
	require.NoError(t, err)

	// The IPs are local addresses of the pod's netns, not of ours.
	assert.Contains(t, readProc(t, p.PID, "net/fib_trie"), "10.244.1.7")
	assert.Contains(t, readProc(t, p.PID, "net/if_inet6"), "fd000010024400000000000000000007")
	assert.Contains(t, readProc(t, p.PID, "net/if_inet6"), " eth0")
	n, err := SockstatTCP6InUse(p.PID)
	require.NoError(t, err)
	assert.Equal(t, 0, n, "fresh netns")

	require.NoError(t, s.Capture(p, true))
	tcp6 := sockRows(t, p.PID, "tcp6")
	for _, port := range []string{"3A99", "3A9E", "3AA0"} {
		assert.Contains(t, tcp6, any6+":"+port+" "+stLis, "[::]:%s LISTEN in tcp6", port)
	}
	assert.Contains(t, tcp6, lo6+":3ACD "+stLis, "[::1]:15053 LISTEN")
	assert.Equal(t, []string{lo4 + ":3ACD " + stLis}, sockRows(t, p.PID, "tcp"), "only 127.0.0.1:15053 in tcp")
	assert.Equal(t, []string{lo4 + ":3ACD " + stUDP}, sockRows(t, p.PID, "udp"))
	assert.Equal(t, []string{lo6 + ":3ACD " + stUDP}, sockRows(t, p.PID, "udp6"))
	n, err = SockstatTCP6InUse(p.PID)
	require.NoError(t, err)
	assert.Equal(t, 4, n)
	// Nothing leaked into our own netns.
	self, err := Netns(os.Getpid())
	require.NoError(t, err)
	require.NotEqual(t, self, p.Netns)

	// Flush one port: only it disappears.
	require.NoError(t, s.Flush(p, PortOutbound))
	tcp6 = sockRows(t, p.PID, "tcp6")
	assert.NotContains(t, tcp6, any6+":3A99 "+stLis)
	assert.Contains(t, tcp6, any6+":3A9E "+stLis)
	assert.Contains(t, tcp6, any6+":3AA0 "+stLis)
	assert.Contains(t, tcp6, lo6+":3ACD "+stLis)
	n, err = SockstatTCP6InUse(p.PID)
	require.NoError(t, err)
	assert.Equal(t, 3, n)

	// Flush the rest (default: all ztunnel ports).
	require.NoError(t, s.Flush(p))
	assert.Empty(t, sockRows(t, p.PID, "tcp6"))
	assert.Empty(t, sockRows(t, p.PID, "tcp"))
	assert.Empty(t, sockRows(t, p.PID, "udp"))
	assert.Empty(t, sockRows(t, p.PID, "udp6"))
	n, err = SockstatTCP6InUse(p.PID)
	require.NoError(t, err)
	assert.Equal(t, 0, n)
	s.mu.Lock()
	assert.Empty(t, p.listeners, "flushed sockets' descriptors are closed")
	s.mu.Unlock()

	// Capture again: a new ztunnel takes the pod back.
	require.NoError(t, s.Capture(p, false))
	assert.Len(t, sockRows(t, p.PID, "tcp6"), 3)
}

func TestFlushLeavesOtherListeners(t *testing.T) {
	s := newSim(t)
	p, err := s.AddPod(PodSpec{})
	require.NoError(t, err)
	require.NoError(t, s.Capture(p, false))
	_, err = s.Listen(p, netip.MustParseAddrPort("127.0.0.1:8080"))
	require.NoError(t, err)
	require.NoError(t, s.Flush(p))
	assert.Empty(t, sockRows(t, p.PID, "tcp6"))
	assert.Equal(t, []string{lo4 + ":1F90 " + stLis}, sockRows(t, p.PID, "tcp"), "the app's 8080 stays")
	s.mu.Lock()
	assert.Len(t, p.listeners, 1)
	s.mu.Unlock()
}

func TestCaptureWithoutIPv6OnLo(t *testing.T) {
	s := newSim(t)
	p, err := s.AddPod(PodSpec{NoIPv6Lo: true})
	require.NoError(t, err)
	require.NoError(t, s.Capture(p, true))
	tcp6 := sockRows(t, p.PID, "tcp6")
	assert.ElementsMatch(t, []string{any6 + ":3A99 " + stLis, any6 + ":3A9E " + stLis, any6 + ":3AA0 " + stLis}, tcp6, "no [::1]:15053")
	assert.Equal(t, []string{lo4 + ":3ACD " + stLis}, sockRows(t, p.PID, "tcp"))
	assert.Empty(t, sockRows(t, p.PID, "udp6"))
	assert.NotContains(t, readProc(t, p.PID, "net/if_inet6"), "00000000000000000000000000000001")
}

func TestListenOptions(t *testing.T) {
	s := newSim(t)
	p, err := s.AddPod(PodSpec{})
	require.NoError(t, err)

	// Without SO_REUSEPORT a second bind fails; with it on both, both listen.
	a, err := s.Listen(p, netip.MustParseAddrPort("[::]:15001"))
	require.NoError(t, err)
	_, err = s.Listen(p, netip.MustParseAddrPort("[::]:15001"))
	require.ErrorIs(t, err, syscall.EADDRINUSE)
	require.NoError(t, a.Close())
	require.NoError(t, a.Close(), "Close is idempotent")
	assert.Empty(t, sockRows(t, p.PID, "tcp6"))
	for i := 0; i < 2; i++ {
		_, err = s.Listen(p, netip.MustParseAddrPort("[::]:15001"), ReusePort())
		require.NoError(t, err)
	}
	assert.Equal(t, []string{any6 + ":3A99 " + stLis, any6 + ":3A99 " + stLis}, sockRows(t, p.PID, "tcp6"))

	// V6Only: the [::] socket refuses IPv4; the default takes it.
	for _, tt := range []struct {
		opts []ListenOption
		want int
	}{{nil, 0}, {[]ListenOption{V6Only()}, 1}} {
		c, err := s.Listen(p, netip.MustParseAddrPort("[::]:0"), tt.opts...)
		require.NoError(t, err)
		l := c.(*Listener)
		assert.NotZero(t, l.Addr().Port())
		assert.Equal(t, p.Netns, l.Netns())
		assert.Equal(t, "tcp", l.Network())
		var v int
		rc, err := l.f.SyscallConn()
		require.NoError(t, err)
		require.NoError(t, rc.Control(func(fd uintptr) { v, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY) }))
		require.NoError(t, err)
		assert.Equal(t, tt.want, v)
	}

	// An IPv4 socket shows in tcp, a UDP one in udp.
	_, err = s.Listen(p, netip.MustParseAddrPort("127.0.0.1:15008"))
	require.NoError(t, err)
	assert.Contains(t, sockRows(t, p.PID, "tcp"), lo4+":3AA0 "+stLis)
	u, err := s.ListenUDP(p, netip.MustParseAddrPort("0.0.0.0:15053"))
	require.NoError(t, err)
	assert.Equal(t, []string{any4 + ":3ACD " + stUDP}, sockRows(t, p.PID, "udp"))
	require.NoError(t, u.Close())
	assert.Empty(t, sockRows(t, p.PID, "udp"))

	// No thread of this process was left in the pod's netns.
	require.NoError(t, ThreadsHome())
}

func TestAddProcessAndForeign(t *testing.T) {
	s := newSim(t)
	p, err := s.AddPod(PodSpec{Driver: DriverCgroupfs, QoS: "besteffort"})
	require.NoError(t, err)
	podStart, err := startTime(p.PID)
	require.NoError(t, err)
	podDir := "/" + s.Name() + "/kubepods/besteffort/pod" + p.UID + "/"

	app, err := s.AddProcess(p)
	require.NoError(t, err)
	ns, err := Netns(app)
	require.NoError(t, err)
	assert.Equal(t, p.Netns, ns, "app shares the pod's netns")
	appStart, err := startTime(app)
	require.NoError(t, err)
	assert.Greater(t, appStart, podStart, "app is strictly younger than the sandbox")
	appLine := cgroupLines(t, app)[""]
	assert.Contains(t, appLine, podDir)
	assert.NotEqual(t, cgroupLines(t, p.PID)[""], appLine, "own container cgroup")

	foreign, err := s.AddForeignProcess(p)
	require.NoError(t, err)
	fns, err := Netns(foreign)
	require.NoError(t, err)
	assert.NotEqual(t, p.Netns, fns, "foreign process is in another netns")
	assert.NotEqual(t, hostNetns(t), fns, "and not in the host's")
	fStart, err := startTime(foreign)
	require.NoError(t, err)
	assert.Greater(t, fStart, podStart)
	for label, path := range cgroupLines(t, foreign) {
		if _, ok := s.CgroupLinePaths(p)[label]; ok {
			assert.Contains(t, path, "/pod"+p.UID+"/", "hierarchy %q", label)
		}
	}
	assert.Equal(t, []int{p.PID, app, foreign}, s.PIDs(p))
	require.NoError(t, ThreadsHome())
}

func TestReplaceNetns(t *testing.T) {
	s := newSim(t)
	p, err := s.AddPod(PodSpec{IPv4: netip.MustParseAddr("10.244.2.9")})
	require.NoError(t, err)
	require.NoError(t, s.Capture(p, true))
	app, err := s.AddProcess(p)
	require.NoError(t, err)
	oldPID, oldNetns, uid := p.PID, p.Netns, p.UID
	oldLine := cgroupLines(t, p.PID)[""]
	oldCgroups := append([]string(nil), p.Cgroups...)

	require.NoError(t, s.ReplaceNetns(p))
	assert.NotEqual(t, oldPID, p.PID)
	assert.NotEqual(t, oldNetns, p.Netns)
	ns, err := Netns(p.PID)
	require.NoError(t, err)
	assert.Equal(t, p.Netns, ns)
	assert.Equal(t, uid, p.UID)
	assert.Equal(t, oldLine, cgroupLines(t, p.PID)[""], "same sandbox cgroup")
	assert.Subset(t, oldCgroups, p.Cgroups)
	assert.Equal(t, []int{p.PID}, s.PIDs(p), "old sandbox and app are gone")
	assertGone(t, oldPID)
	assertGone(t, app)

	// The new netns has no listeners but has the pod IP again; the old listeners stay open in
	// the old netns, as a stale ztunnel's would.
	assert.Empty(t, sockRows(t, p.PID, "tcp6"))
	assert.Empty(t, sockRows(t, p.PID, "tcp"))
	n, err := SockstatTCP6InUse(p.PID)
	require.NoError(t, err)
	assert.Equal(t, 0, n)
	assert.Contains(t, readProc(t, p.PID, "net/fib_trie"), "10.244.2.9")
	s.mu.Lock()
	for _, l := range p.listeners {
		assert.Equal(t, oldNetns, l.Netns())
		assert.False(t, l.closed)
	}
	s.mu.Unlock()

	// Capture and Flush work on the new netns.
	require.NoError(t, s.Capture(p, false))
	assert.Len(t, sockRows(t, p.PID, "tcp6"), 3)
	require.NoError(t, s.Flush(p))
	assert.Empty(t, sockRows(t, p.PID, "tcp6"))
}

func TestStopAndStartSandbox(t *testing.T) {
	s := newSim(t)
	p, err := s.AddPod(PodSpec{IPv4: netip.MustParseAddr("10.244.2.10")})
	require.NoError(t, err)
	app, err := s.AddProcess(p)
	require.NoError(t, err)
	oldPID, oldNetns := p.PID, p.Netns
	oldLine := cgroupLines(t, p.PID)[""]

	require.NoError(t, s.StopSandbox(p))
	assert.Zero(t, p.PID)
	assert.Zero(t, p.Netns)
	assert.Empty(t, s.PIDs(p), "no process of the pod is left")
	assertGone(t, oldPID)
	assertGone(t, app)
	assert.NoError(t, s.StopSandbox(p), "stopping twice is harmless")

	require.NoError(t, s.StartSandbox(p))
	assert.NotZero(t, p.PID)
	assert.NotEqual(t, oldNetns, p.Netns, "a fresh netns")
	assert.Equal(t, oldLine, cgroupLines(t, p.PID)[""], "same sandbox cgroup")
	assert.Contains(t, readProc(t, p.PID, "net/fib_trie"), "10.244.2.10")
	assert.ErrorContains(t, s.StartSandbox(p), "is running", "a running sandbox is not started twice")
	require.NoError(t, s.RemovePod(p))
	assert.ErrorIs(t, s.StartSandbox(p), ErrRemoved)
}

// assertGone checks that pid no longer names a process this test started (it is reaped, or the
// number was reused by a process that started later).
func assertGone(t *testing.T, pid int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	require.NoError(t, err)
	assert.NotContains(t, string(b), "2147483647", "pid %d still runs our sleeper", pid)
}

func TestRemovePod(t *testing.T) {
	s := newSim(t)
	p, err := s.AddPod(PodSpec{})
	require.NoError(t, err)
	keep, err := s.AddPod(PodSpec{})
	require.NoError(t, err)
	require.NoError(t, s.Capture(p, true))
	l, err := s.Listen(p, netip.MustParseAddrPort("[::]:9000"))
	require.NoError(t, err)
	app, err := s.AddProcess(p)
	require.NoError(t, err)
	pids, dirs := s.PIDs(p), append([]string(nil), p.Cgroups...)

	require.NoError(t, s.RemovePod(p))
	for _, pid := range append(pids, app) {
		assertGone(t, pid)
	}
	for _, d := range dirs {
		assert.NoDirExists(t, d)
	}
	assert.True(t, l.(*Listener).closed)
	require.NoError(t, l.Close())
	assert.ErrorIs(t, s.RemovePod(p), ErrRemoved)
	assert.ErrorIs(t, s.Capture(p, false), ErrRemoved)
	_, err = s.AddProcess(p)
	assert.ErrorIs(t, err, ErrRemoved)

	// The other pod is untouched.
	ns, err := Netns(keep.PID)
	require.NoError(t, err)
	assert.Equal(t, keep.Netns, ns)
	for _, d := range keep.Cgroups {
		assert.DirExists(t, d)
	}
}

func TestCloseLeavesNothing(t *testing.T) {
	RequirePrivileged(t)
	s, err := New()
	require.NoError(t, err)
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = s.Close()
		}
	})
	var pids []int
	var dirs []string
	for _, spec := range []PodSpec{
		{}, {Driver: DriverCgroupfs, Runtime: RuntimeDocker}, {QoS: "guaranteed", Runtime: RuntimeCRIO},
		{HostNetwork: true}, {IPv4: netip.MustParseAddr("10.1.1.1"), IPv6: netip.MustParseAddr("fd00::1:1")},
	} {
		p, err := s.AddPod(spec)
		require.NoError(t, err)
		if !spec.HostNetwork {
			require.NoError(t, s.Capture(p, true))
			_, err = s.AddForeignProcess(p)
			require.NoError(t, err)
		}
		_, err = s.AddProcess(p)
		require.NoError(t, err)
		pids = append(pids, s.PIDs(p)...)
		dirs = append(dirs, p.Cgroups...)
	}
	require.NoError(t, s.ReplaceNetns(s.pods[0]))
	pids = append(pids, s.pods[0].PID)
	roots := s.CgroupRoots()
	for _, r := range roots {
		require.DirExists(t, r)
	}

	require.NoError(t, s.Close())
	closed = true
	for _, pid := range pids {
		assertGone(t, pid)
	}
	for _, d := range append(dirs, roots...) {
		assert.NoDirExists(t, d)
	}
	for _, r := range roots {
		entries, err := os.ReadDir(filepath.Dir(r))
		require.NoError(t, err)
		for _, e := range entries {
			assert.NotEqual(t, filepath.Base(r), e.Name())
		}
	}
	require.NoError(t, s.Close(), "Close is idempotent")
	_, err = s.AddPod(PodSpec{})
	assert.ErrorIs(t, err, ErrClosed)
	require.NoError(t, ThreadsHome())
}

func TestCleanupStale(t *testing.T) {
	s := newSim(t)
	live, err := s.AddPod(PodSpec{})
	require.NoError(t, err)
	hs, err := cgroupHierarchies()
	require.NoError(t, err)
	// A crashed sim's leftovers: empty dirs, owner pid beyond pid_max.
	stale := simPrefix + "999999999-" + randHex(4)
	var staleDirs []string
	for _, h := range hs {
		for _, rel := range []string{stale, stale + "/kubepods.slice", stale + "/kubepods.slice/kubepods-besteffort.slice"} {
			_, err := mkdirCgroup(h, rel)
			require.NoError(t, err)
			staleDirs = append(staleDirs, h.dir(rel))
		}
	}
	t.Cleanup(func() {
		for i := len(staleDirs) - 1; i >= 0; i-- {
			_ = rmdirCgroup(staleDirs[i])
		}
	})

	require.NoError(t, CleanupStale())
	for _, d := range staleDirs {
		assert.NoDirExists(t, d)
	}
	for _, r := range s.CgroupRoots() {
		assert.DirExists(t, r, "a live sim is left alone")
	}
	for _, d := range live.Cgroups {
		assert.DirExists(t, d)
	}
}

func TestMethodsRefuseForeignPods(t *testing.T) {
	a := newSim(t)
	b := newSim(t)
	p, err := a.AddPod(PodSpec{})
	require.NoError(t, err)
	assert.ErrorIs(t, b.Capture(p, false), ErrRemoved)
	assert.ErrorIs(t, b.ReplaceNetns(p), ErrRemoved)
	_, err = a.AddPod(PodSpec{UID: p.UID})
	assert.Error(t, err, "UID already in this sim")
}

// crashChildEnv makes this test binary act as a test that crashes after making pods.
const crashChildEnv = "PODSIM_TEST_CRASH_CHILD"

// TestCrashLeavesNoProcess runs a child test process that makes pods with listeners and exits
// without Close, as a crashed test would: its sandboxes and apps must die with it (Pdeathsig),
// and CleanupStale must then remove the empty cgroup tree it left.
func TestCrashLeavesNoProcess(t *testing.T) {
	if os.Getenv(crashChildEnv) == "1" {
		crashChild()
		return
	}
	RequirePrivileged(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashLeavesNoProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"=1")
	out, err := cmd.Output()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "child must exit non-zero, as a crash; output:\n%s", out)
	require.Equal(t, 3, ee.ExitCode(), "child output:\n%s\n%s", out, ee.Stderr)

	var name string
	var pids []int
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "sim "); ok {
			name = v
		}
		if v, ok := strings.CutPrefix(line, "pid "); ok {
			pid, err := strconv.Atoi(v)
			require.NoError(t, err)
			pids = append(pids, pid)
		}
	}
	require.NotEmpty(t, name, "child output:\n%s", out)
	require.Len(t, pids, 6, "child output:\n%s", out)
	for _, pid := range pids {
		waitDead(t, pid)
	}
	hs, err := cgroupHierarchies()
	require.NoError(t, err)
	for _, h := range hs {
		assert.DirExists(t, h.dir(name), "a crash leaves the cgroup tree")
	}
	require.NoError(t, CleanupStale())
	for _, h := range hs {
		assert.NoDirExists(t, h.dir(name))
	}
}

func crashChild() {
	s, err := New()
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	fmt.Println("sim", s.Name())
	for _, spec := range []PodSpec{{}, {Driver: DriverCgroupfs, IPv4: netip.MustParseAddr("10.3.3.3")}} {
		p, err := s.AddPod(spec)
		if err == nil {
			err = s.Capture(p, true)
		}
		if err == nil {
			_, err = s.AddProcess(p)
		}
		if err == nil {
			_, err = s.AddForeignProcess(p)
		}
		if err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		for _, pid := range s.PIDs(p) {
			fmt.Println("pid", pid)
		}
	}
	os.Exit(3) // no Close: the crash
}

// waitDead waits until pid is no longer a live sleeper of ours: gone, a zombie, or reused.
// Pdeathsig's SIGKILL is asynchronous, so this polls, with a generous bound.
func waitDead(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if errors.Is(err, fs.ErrNotExist) {
			return
		}
		require.NoError(t, err)
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		i := strings.LastIndexByte(string(stat), ')')
		if i > 0 && strings.HasPrefix(string(stat[i:]), ") Z") || !strings.Contains(string(cmdline), "2147483647") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d of the crashed sim is still alive: %s", pid, stat)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConcurrentUse(t *testing.T) {
	s := newSim(t)
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func() {
			p, err := s.AddPod(PodSpec{Driver: []CgroupDriver{DriverSystemd, DriverCgroupfs}[i%2]})
			if err == nil {
				err = s.Redirect(p)
			}
			if err == nil {
				err = s.Capture(p, true)
			}
			if err == nil {
				_, err = s.AddProcess(p)
			}
			if err == nil {
				err = s.Flush(p, PortHBONE)
			}
			if err == nil && i%2 == 1 {
				err = s.Unredirect(p)
			}
			if err == nil && i%2 == 0 {
				err = s.ReplaceNetns(p)
			}
			if err == nil && i < 2 {
				err = s.RemovePod(p)
			}
			errs <- err
		}()
	}
	for i := 0; i < 4; i++ {
		assert.NoError(t, <-errs)
	}
	assert.Len(t, s.pods, 2)
	require.NoError(t, ThreadsHome())
}

// AddProcessAs runs the app process as the given uid with the given environment, in the
// pod's netns and its own container cgroup.
func TestAddProcessAs(t *testing.T) {
	s := newSim(t)
	p, err := s.AddPod(PodSpec{})
	require.NoError(t, err)
	app, err := s.AddProcessAs(p, 65532, 65532, []string{"DB_PASSWORD=hunter2"})
	require.NoError(t, err)
	ns, err := Netns(app)
	require.NoError(t, err)
	assert.Equal(t, p.Netns, ns)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", app))
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^Uid:\s+65532\s+65532\s+65532\s+65532$`, string(status))
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", app))
	require.NoError(t, err)
	assert.Equal(t, "DB_PASSWORD=hunter2\x00", string(env))
	assert.Contains(t, s.PIDs(p), app)
}
