//go:build linux

package netns_test

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/meshmedic/meshmedic/internal/podsim"
	"github.com/meshmedic/meshmedic/netns"
)

// These tests compare the netlink sock_diag backend (DiagReader) with the /proc backend
// (ProcReader) on real kernel objects made by podsim, and find out which capabilities the
// netlink backend needs. They need root; with MESHMEDIC_REQUIRE_PRIVILEGED=1 they fail
// instead of skipping.

func sortedSockets(s []netns.Socket) []netns.Socket {
	s = slices.Clone(s)
	slices.SortFunc(s, func(a, b netns.Socket) int {
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Inode, b.Inode))
	})
	return s
}

// assertSameListeners checks that the two backends saw the same thing in one netns.
func assertSameListeners(t *testing.T, proc, diag netns.Listeners, msg string) {
	t.Helper()
	assert.Equal(t, proc.Ports, diag.Ports, "%s: ports", msg)
	assert.Equal(t, proc.Capture(nil), diag.Capture(nil), "%s: capture", msg)
	withDNS := append(slices.Clone(netns.CorePorts), netns.PortDNS)
	assert.Equal(t, proc.Capture(withDNS), diag.Capture(withDNS), "%s: capture with DNS", msg)
	assert.Equal(t, sortedSockets(proc.Sockets), sortedSockets(diag.Sockets), "%s: LISTEN sockets", msg)
	assert.Equal(t, proc.TCP6.Status, diag.TCP6.Status, "%s: tcp6 status", msg)
	assert.Equal(t, proc.TCP.Status, diag.TCP.Status, "%s: tcp status", msg)
	assert.Equal(t, "tcp6", diag.TCP6.Name)
	assert.Equal(t, "tcp", diag.TCP.Name)
	assert.Equal(t, len(diag.Sockets), diag.TCP6.Stats.Rows+diag.TCP.Stats.Rows, "%s: rows are the LISTEN sockets", msg)
}

// inPodNetns runs fn on a thread inside the netns of pid (the test's own setns dance:
// the thread is dropped if it cannot come back).
func inPodNetns(t testing.TB, pid int, fn func() error) {
	t.Helper()
	target, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/net")
	require.NoError(t, err)
	defer target.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- errors.Join(ferr, err) // stays locked: the thread dies
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	require.NoError(t, <-done)
}

// connect makes n ESTABLISHED TCP connections to to inside the netns of pid (the
// server side stays in the listener's accept queue, ESTABLISHED too) and closes them at
// cleanup.
func connect(t testing.TB, pid int, to netip.AddrPort, n int) {
	t.Helper()
	fds := make([]int, 0, n)
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	inPodNetns(t, pid, func() error {
		for range n {
			var family int
			var sa unix.Sockaddr
			if to.Addr().Is4() {
				family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(to.Port()), Addr: to.Addr().As4()}
			} else {
				family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(to.Port()), Addr: to.Addr().As16()}
			}
			fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			fds = append(fds, fd)
			if err := unix.Connect(fd, sa); err != nil {
				return fmt.Errorf("connect %s: %w", to, err)
			}
		}
		return nil
	})
}

func TestKernelDiagMatchesProc(t *testing.T) {
	sim := newSim(t)
	fs := procFS(t)
	type pod struct {
		name string
		p    *podsim.Pod
	}
	var pods []pod
	add := func(name string, spec podsim.PodSpec, setup func(p *podsim.Pod)) {
		p, err := sim.AddPod(spec)
		require.NoError(t, err)
		setup(p)
		pods = append(pods, pod{name, p})
	}
	listen := func(p *podsim.Pod, addrs ...string) {
		for _, a := range addrs {
			_, err := sim.Listen(p, netip.MustParseAddrPort(a))
			require.NoError(t, err)
		}
	}
	add("captured", podsim.PodSpec{IPv4: netip.MustParseAddr("10.250.1.5")}, func(p *podsim.Pod) {
		require.NoError(t, sim.Capture(p, true))
	})
	add("captured-during-ztunnel-restart", podsim.PodSpec{}, func(p *podsim.Pod) {
		require.NoError(t, sim.Capture(p, true))
		require.NoError(t, sim.Capture(p, true)) // SO_REUSEPORT: two sockets per port
	})
	add("partial", podsim.PodSpec{Driver: podsim.DriverCgroupfs}, func(p *podsim.Pod) {
		require.NoError(t, sim.Capture(p, true))
		require.NoError(t, sim.Flush(p, podsim.PortHBONE, podsim.PortInbound))
	})
	add("orphan", podsim.PodSpec{}, func(p *podsim.Pod) {
		require.NoError(t, sim.Capture(p, true))
		require.NoError(t, sim.Flush(p))
	})
	add("app-with-connections", podsim.PodSpec{}, func(p *podsim.Pod) {
		require.NoError(t, sim.Capture(p, true))
		listen(p, "127.0.0.1:8080", "[::]:9090")
		// ESTABLISHED connections, also to ztunnel's ports: never returned.
		connect(t, p.PID, netip.MustParseAddrPort("127.0.0.1:8080"), 5)
		connect(t, p.PID, netip.MustParseAddrPort("[::1]:15008"), 3)
		connect(t, p.PID, netip.MustParseAddrPort("127.0.0.1:15001"), 2)
	})
	add("app-on-ztunnel-ports", podsim.PodSpec{IPv4: netip.MustParseAddr("10.250.1.6")}, func(p *podsim.Pod) {
		// ztunnel's ports, but not ztunnel's address: not capture.
		listen(p, "127.0.0.1:15008", "[::1]:15001", "10.250.1.6:15006")
	})
	add("dns-only-ipv4-loopback", podsim.PodSpec{}, func(p *podsim.Pod) {
		listen(p, "127.0.0.1:15053")
	})
	add("captured-no-ipv6-on-lo", podsim.PodSpec{NoIPv6Lo: true}, func(p *podsim.Pod) {
		require.NoError(t, sim.Capture(p, true)) // [::]:1500x + 127.0.0.1:15053 only
	})
	add("ipv4-wildcard-ztunnel", podsim.PodSpec{}, func(p *podsim.Pod) {
		listen(p, "0.0.0.0:15001", "0.0.0.0:15006", "0.0.0.0:15008")
	})
	add("v6only-listeners", podsim.PodSpec{}, func(p *podsim.Pod) {
		for _, a := range []string{"[::]:15001", "[::]:15006"} {
			_, err := sim.Listen(p, netip.MustParseAddrPort(a), podsim.V6Only())
			require.NoError(t, err)
		}
	})
	add("empty", podsim.PodSpec{}, func(*podsim.Pod) {})

	procR, diagR := netns.NewProcReader(fs), netns.NewDiagReader(fs)
	for _, pc := range pods {
		for _, opt := range []netns.ReadOptions{{Full: true}, {}, {Required: []uint16{15001, 15053}}} {
			msg := fmt.Sprintf("%s %+v", pc.name, opt)
			want, err := procR.Listeners(pc.p.PID, opt)
			require.NoError(t, err, msg)
			got, err := diagR.Listeners(pc.p.PID, opt)
			require.NoError(t, err, msg)
			assertSameListeners(t, want, got, msg)
		}
	}

	// Spot checks that the comparison is not vacuous.
	byName := map[string]*podsim.Pod{}
	for _, pc := range pods {
		byName[pc.name] = pc.p
	}
	read := func(name string, opt netns.ReadOptions) netns.Listeners {
		l, err := diagR.Listeners(byName[name].PID, opt)
		require.NoError(t, err, name)
		return l
	}
	full := netns.ReadOptions{Full: true}
	l := read("captured", full)
	assert.Equal(t, []uint16{15001, 15006, 15008, 15053}, l.Ports)
	assert.Equal(t, netns.Captured, l.Capture(nil))
	assert.Len(t, l.Sockets, 5, "[::]:15001/15006/15008, 127.0.0.1:15053, [::1]:15053")
	l = read("captured", netns.ReadOptions{})
	assert.Equal(t, netns.TableSkipped, l.TCP.Status, "tcp6 shows every listener: tcp is skipped")
	assert.Equal(t, []uint16{15001, 15006, 15008, 15053}, l.Ports, "[::1]:15053 is in tcp6")
	assert.Len(t, read("captured-during-ztunnel-restart", full).Sockets, 10)
	l = read("partial", full)
	assert.Equal(t, netns.CapturePartial, l.Capture(nil))
	assert.Equal(t, []uint16{15001, 15053}, l.Ports)
	l = read("orphan", full)
	assert.Equal(t, netns.CaptureNone, l.Capture(nil))
	assert.Empty(t, l.Sockets)
	l = read("app-with-connections", full)
	assert.Equal(t, netns.Captured, l.Capture(nil))
	assert.Len(t, l.Sockets, 7, "5 ztunnel + 2 app listeners, no connection")
	for _, s := range l.Sockets {
		assert.Equal(t, netns.StateListen, s.State)
	}
	l = read("app-on-ztunnel-ports", full)
	assert.Len(t, l.Sockets, 3)
	assert.Empty(t, l.Ports)
	l = read("dns-only-ipv4-loopback", netns.ReadOptions{})
	assert.Equal(t, netns.TableOK, l.TCP.Status, "tcp6 lacks the listeners: tcp is read")
	assert.Equal(t, []uint16{15053}, l.Ports)
	assert.Equal(t, []uint16{15001, 15006, 15008, 15053}, read("captured-no-ipv6-on-lo", full).Ports)
	assert.Equal(t, netns.Captured, read("ipv4-wildcard-ztunnel", full).Capture(nil))
	assert.Equal(t, netns.CapturePartial, read("v6only-listeners", full).Capture(nil))
	assert.Equal(t, netns.CaptureNone, read("empty", full).Capture(nil))

	// Through InspectNode, both backends judge every pod alike.
	a, err := netns.InspectNode(fs, procR, netns.ReadOptions{Full: true})
	require.NoError(t, err)
	b, err := netns.InspectNode(fs, diagR, netns.ReadOptions{Full: true})
	require.NoError(t, err)
	byUID := map[string]netns.PodNetns{}
	for _, p := range b.Pods {
		byUID[p.PodUID] = p
	}
	for _, p := range a.Pods {
		q, ok := byUID[p.PodUID]
		if !assert.True(t, ok, p.PodUID) {
			continue
		}
		assert.Equal(t, p.Capture, q.Capture, p.PodUID)
		assert.Equal(t, p.Listeners.Ports, q.Listeners.Ports, p.PodUID)
	}
	for _, pc := range pods {
		assert.Contains(t, byUID, pc.p.UID, pc.name)
	}

	// Listeners flushed later are gone from the next read: nothing is cached.
	require.NoError(t, sim.Flush(byName["captured"]))
	l = read("captured", full)
	assert.Equal(t, netns.CaptureNone, l.Capture(nil))
	assert.Empty(t, l.Sockets)
	require.NoError(t, podsim.ThreadsHome())
}

func TestKernelDiagConcurrent(t *testing.T) {
	sim := newSim(t)
	fs := procFS(t)
	var pods []*podsim.Pod
	for i := range 4 {
		p, err := sim.AddPod(podsim.PodSpec{})
		require.NoError(t, err)
		if i%2 == 0 {
			require.NoError(t, sim.Capture(p, true))
		}
		pods = append(pods, p)
	}
	r := netns.NewDiagReader(fs)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				p := pods[(g+i)%len(pods)]
				l, err := r.Listeners(p.PID, netns.ReadOptions{Full: i%2 == 0})
				if err != nil {
					errs <- err
					return
				}
				want := netns.CaptureNone
				if (g+i)%len(pods)%2 == 0 {
					want = netns.Captured
				}
				if got := l.Capture(nil); got != want {
					errs <- fmt.Errorf("pod %d: %s, want %s (%v)", (g+i)%len(pods), got, want, l.Sockets)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	require.NoError(t, podsim.ThreadsHome())
}

func TestKernelDiagProcessGone(t *testing.T) {
	// Unprivileged: the pid is gone before anything needs a capability.
	cmd := exec.Command("true")
	require.NoError(t, cmd.Run())
	fs := procFS(t)
	l, err := netns.NewDiagReader(fs).Listeners(cmd.Process.Pid, netns.ReadOptions{})
	require.ErrorIs(t, err, netns.ErrProcessGone)
	assert.ErrorContains(t, err, "pid "+strconv.Itoa(cmd.Process.Pid))
	assert.Empty(t, l.Sockets)
	assert.Equal(t, netns.CaptureUnknown, l.Capture(nil))
}

// diagChildEnv makes this test binary act as a netlink reader of the given pid, run by the
// capability tests below under setpriv; it prints one JSON line.
const diagChildEnv = "MESHMEDIC_DIAG_CHILD_PID"

type childResult struct {
	Ports      []uint16 `json:"ports"`
	Capture    string   `json:"capture"`
	Err        string   `json:"err"`
	Permission bool     `json:"permission"`
	Gone       bool     `json:"gone"`
	CapEff     string   `json:"capEff"`
	Rules      string   `json:"rules"`
}

// childRulesEnv makes the child read the pod's routing rules (RuleReader) instead of its
// sockets.
const childRulesEnv = "MESHMEDIC_DIAG_CHILD_RULES"

// TestKernelDiagChild is the child's side; without diagChildEnv it checks nothing.
func TestKernelDiagChild(t *testing.T) {
	v := os.Getenv(diagChildEnv)
	if v == "" {
		return
	}
	pid, err := strconv.Atoi(v)
	require.NoError(t, err)
	var res childResult
	if status, err := os.ReadFile("/proc/self/status"); err == nil {
		for line := range strings.Lines(string(status)) {
			if c, ok := strings.CutPrefix(line, "CapEff:"); ok {
				res.CapEff = strings.TrimSpace(c)
			}
		}
	}
	if os.Getenv(childRulesEnv) != "" {
		var rr netns.RoutingRules
		rr, err = netns.NewRuleReader(procFS(t)).Rules(pid)
		res.Rules = string(rr.State())
	} else {
		var l netns.Listeners
		l, err = netns.NewDiagReader(procFS(t)).Listeners(pid, netns.ReadOptions{Full: true})
		res.Ports, res.Capture = l.Ports, string(l.Capture(nil))
	}
	if err != nil {
		res.Err = err.Error()
		res.Permission = errors.Is(err, fs.ErrPermission)
		res.Gone = errors.Is(err, netns.ErrProcessGone)
	}
	out, err := json.Marshal(res)
	require.NoError(t, err)
	fmt.Printf("DIAGCHILD %s\n", out)
}

// runDiagChild runs TestKernelDiagChild against pid under setpriv with the given
// arguments (bounding set, uids), and returns what it printed.
func runDiagChild(t *testing.T, pid int, setprivArgs ...string) childResult {
	t.Helper()
	return runChild(t, pid, nil, setprivArgs...)
}

// runChild is runDiagChild with extra environment for the child.
func runChild(t *testing.T, pid int, env []string, setprivArgs ...string) childResult {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	require.NoError(t, err, "setpriv (util-linux) is needed")
	args := append(slices.Clone(setprivArgs), "--", os.Args[0], "-test.run=^TestKernelDiagChild$", "-test.count=1", "-test.v")
	cmd := exec.Command(setpriv, args...)
	cmd.Env = append(append(os.Environ(), diagChildEnv+"="+strconv.Itoa(pid)), env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "setpriv %v:\n%s", setprivArgs, out)
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if j, ok := strings.CutPrefix(sc.Text(), "DIAGCHILD "); ok {
			var res childResult
			require.NoError(t, json.Unmarshal([]byte(j), &res))
			return res
		}
	}
	t.Fatalf("child printed no result:\n%s", out)
	return childResult{}
}

func TestKernelDiagNoCapabilities(t *testing.T) {
	sim := newSim(t)
	p, err := sim.AddPod(podsim.PodSpec{})
	require.NoError(t, err)
	require.NoError(t, sim.Capture(p, false))

	// Sanity: with every capability the child reads the pod.
	res := runDiagChild(t, p.PID, "--inh-caps=-all")
	require.Empty(t, res.Err)
	assert.Equal(t, "captured", res.Capture)

	res = runDiagChild(t, p.PID, "--inh-caps=-all", "--bounding-set=-all")
	assert.Equal(t, "0000000000000000", res.CapEff, "the child runs with no capability")
	assert.True(t, res.Permission, "error wraps fs.ErrPermission: %s", res.Err)
	assert.False(t, res.Gone)
	assert.Contains(t, res.Err, "CAP_SYS_ADMIN")
	assert.Contains(t, res.Err, "CAP_SYS_PTRACE")
	assert.Contains(t, res.Err, "pid "+strconv.Itoa(p.PID))
	assert.Equal(t, "unknown", res.Capture, "no verdict without the sockets")
}

// TestKernelDiagCapabilities finds out which capabilities the netlink backend needs, for a
// reader running as root (uid 0) with a reduced capability set, against three kinds of
// sandbox process: a podsim sandbox (uid 0, every capability), a pause-like process
// (uid 65535, no capability, the Kubernetes pause image's user), and a root process without
// capabilities.
func TestKernelDiagCapabilities(t *testing.T) {
	sim := newSim(t)
	p, err := sim.AddPod(podsim.PodSpec{})
	require.NoError(t, err)
	require.NoError(t, sim.Capture(p, false))
	pause := startInNewNetns(t, &syscall.Credential{Uid: 65535, Gid: 65535}, false)
	rootNoCaps := startInNewNetns(t, nil, true)

	type target struct {
		name string
		pid  int
	}
	targets := []target{{"podsim sandbox (uid 0, all caps)", p.PID}, {"pause-like (uid 65535, no caps)", pause}, {"uid 0, no caps", rootNoCaps}}
	cases := []struct {
		caps string // setpriv --bounding-set
		want []bool // per target: the read succeeds
	}{
		{"-all", []bool{false, false, false}},
		{"-all,+net_admin", []bool{false, false, false}},
		{"-all,+sys_admin,+net_admin", []bool{false, false, true}},
		{"-all,+sys_admin", []bool{false, false, true}},
		{"-all,+sys_ptrace", []bool{false, false, false}},
		{"-all,+sys_admin,+sys_ptrace", []bool{true, true, true}},
	}
	for _, c := range cases {
		for i, tg := range targets {
			res := runDiagChild(t, tg.pid, "--inh-caps=-all", "--bounding-set="+c.caps)
			t.Logf("bounding %-28s target %-34s -> capEff %s err=%q", c.caps, tg.name, res.CapEff, res.Err)
			if c.want[i] {
				assert.Empty(t, res.Err, "%s on %s", c.caps, tg.name)
				continue
			}
			assert.True(t, res.Permission, "%s on %s: want a permission error, got %q", c.caps, tg.name, res.Err)
		}
	}
}

// startInNewNetns starts a sleeping process in a new netns (with lo down: no sockets
// needed), optionally as another user or as root with every capability dropped, and kills
// it at cleanup.
func startInNewNetns(t *testing.T, cred *syscall.Credential, dropCaps bool) int {
	t.Helper()
	argv := []string{"sleep", "2147483647"}
	if dropCaps {
		setpriv, err := exec.LookPath("setpriv")
		require.NoError(t, err)
		argv = append([]string{setpriv, "--inh-caps=-all", "--bounding-set=-all", "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Credential: cred, Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	pid := cmd.Process.Pid
	// Wait until it runs sleep (setpriv has exec'd), so that its credentials are final.
	for range 1000 {
		if comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); err == nil && strings.TrimSpace(string(comm)) == "sleep" {
			return pid
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("pid %d never became sleep", pid)
	return 0
}
