//go:build linux

package netns_test

import (
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshmedic/meshmedic/internal/podsim"
	"github.com/meshmedic/meshmedic/netns"
)

// ipIn runs `ip <line>` for each line inside pid's netns (never the host's).
func ipIn(t *testing.T, pid int, lines ...string) {
	t.Helper()
	nsenter, err := exec.LookPath("nsenter")
	require.NoError(t, err, "nsenter (util-linux) is needed")
	for _, l := range lines {
		out, err := exec.Command(nsenter, append([]string{"--net=/proc/" + strconv.Itoa(pid) + "/ns/net", "--", "ip"}, strings.Fields(l)...)...).CombinedOutput()
		require.NoError(t, err, "ip %s in netns of %d: %s", l, pid, out)
	}
}

// istio-cni's in-pod routing set-up as `ip` commands (cni/pkg/iptables/iptables_linux.go).
var (
	markRule4   = "rule add fwmark 0x111/0xfff pref 32764 lookup 100"
	localRoute4 = "route add local 0.0.0.0/0 dev lo table 100"
	markRule6   = "-6 rule add fwmark 0x111/0xfff pref 32764 lookup 100"
	localRoute6 = "-6 route add local ::/0 dev lo table 100"
)

// TestKernelRuleReader reads real routing rules and routes that `ip` put into podsim
// netns, and checks RuleReader against what `ip` itself shows there, through every state.
func TestKernelRuleReader(t *testing.T) {
	sim := newSim(t)
	fs := procFS(t)
	r := netns.NewRuleReader(fs)
	p, err := sim.AddPod(podsim.PodSpec{IPv4: netip.MustParseAddr("10.250.0.7"), IPv6: netip.MustParseAddr("fd00:250::7")})
	require.NoError(t, err)
	hostRules := ipShow(t, 0, "rule show")

	read := func() netns.RoutingRules {
		t.Helper()
		rr, err := r.Rules(p.PID)
		require.NoError(t, err)
		// Cross-check with iproute2's own view of the same netns.
		assert.Equal(t, rr.MarkRule4, strings.Contains(ipShow(t, p.PID, "-4 rule show"), "fwmark 0x111/0xfff lookup 100"), "v4 rule vs ip")
		assert.Equal(t, rr.LocalRoute4, strings.Contains(ipShow(t, p.PID, "-4 route show table 100"), "local default dev lo"), "v4 route vs ip")
		assert.Equal(t, rr.MarkRule6, strings.Contains(ipShow(t, p.PID, "-6 rule show"), "fwmark 0x111/0xfff lookup 100"), "v6 rule vs ip")
		assert.Equal(t, rr.LocalRoute6, strings.Contains(ipShow(t, p.PID, "-6 route show table 100"), "local default dev lo"), "v6 route vs ip")
		return rr
	}

	assert.Equal(t, netns.RulesAbsent, read().State(), "a fresh sandbox has none")
	ipIn(t, p.PID, localRoute4)
	assert.Equal(t, netns.RoutingRules{LocalRoute4: true}, read())
	assert.Equal(t, netns.RulesPartial, read().State(), "route without rule: set-up stopped half-way")
	ipIn(t, p.PID, markRule4)
	assert.Equal(t, netns.RulesPresent, read().State())
	ipIn(t, p.PID, markRule6, localRoute6)
	assert.Equal(t, netns.RoutingRules{MarkRule4: true, LocalRoute4: true, MarkRule6: true, LocalRoute6: true}, read())
	// A lookalike with another mark does not count.
	ipIn(t, p.PID, "rule del fwmark 0x111/0xfff pref 32764 lookup 100", "rule add fwmark 0x539/0xfff pref 32765 lookup 100")
	assert.Equal(t, netns.RulesPartial, read().State())
	// Everything gone, as DeleteInpodRules leaves it.
	ipIn(t, p.PID, "route del local 0.0.0.0/0 dev lo table 100", "-6 rule del fwmark 0x111/0xfff pref 32764 lookup 100", "-6 route del local ::/0 dev lo table 100")
	assert.Equal(t, netns.RulesAbsent, read().State())

	assert.Equal(t, hostRules, ipShow(t, 0, "rule show"), "the host's rules are untouched")
	require.NoError(t, podsim.ThreadsHome(), "every thread is back in its own netns")
}

// TestKernelRuleReaderConcurrent reads many pods from many goroutines (run under -race).
func TestKernelRuleReaderConcurrent(t *testing.T) {
	sim := newSim(t)
	r := netns.NewRuleReader(procFS(t))
	var pids []int
	for i := range 4 {
		p, err := sim.AddPod(podsim.PodSpec{})
		require.NoError(t, err)
		if i%2 == 0 {
			ipIn(t, p.PID, localRoute4, markRule4)
		}
		pids = append(pids, p.PID)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for j := range 20 {
				i := (g + j) % len(pids)
				rr, err := r.Rules(pids[i])
				if assert.NoError(t, err) {
					want := netns.RulesAbsent
					if i%2 == 0 {
						want = netns.RulesPresent
					}
					assert.Equal(t, want, rr.State(), "pod %d", i)
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, podsim.ThreadsHome())
}

func TestKernelRuleReaderProcessGone(t *testing.T) {
	cmd := exec.Command("true")
	require.NoError(t, cmd.Run())
	_, err := netns.NewRuleReader(procFS(t)).Rules(cmd.Process.Pid)
	require.ErrorIs(t, err, netns.ErrProcessGone)
	assert.ErrorContains(t, err, "pid "+strconv.Itoa(cmd.Process.Pid))
}

// TestKernelRuleReaderCapabilities: without capabilities the read fails with a permission
// error that names them; with RulesCapabilities only (no CAP_NET_ADMIN) it works.
func TestKernelRuleReaderCapabilities(t *testing.T) {
	sim := newSim(t)
	p, err := sim.AddPod(podsim.PodSpec{})
	require.NoError(t, err)
	ipIn(t, p.PID, localRoute4, markRule4)
	env := []string{childRulesEnv + "=1"}

	res := runChild(t, p.PID, env, "--inh-caps=-all", "--bounding-set=-all")
	assert.Equal(t, "0000000000000000", res.CapEff)
	assert.True(t, res.Permission, "error wraps fs.ErrPermission: %s", res.Err)
	assert.Contains(t, res.Err, "CAP_SYS_ADMIN")
	assert.Contains(t, res.Err, "CAP_SYS_PTRACE")

	res = runChild(t, p.PID, env, "--inh-caps=-all", "--bounding-set=-all,+sys_admin,+sys_ptrace")
	assert.Empty(t, res.Err)
	assert.Equal(t, "present", res.Rules)
	assert.Equal(t, []string{"CAP_SYS_ADMIN", "CAP_SYS_PTRACE"}, netns.RulesCapabilities)
}

// ipShow runs `ip <args>` in pid's netns (pid 0: this process's own netns) and returns
// its output.
func ipShow(t *testing.T, pid int, args string) string {
	t.Helper()
	ip, err := exec.LookPath("ip")
	require.NoError(t, err)
	argv := strings.Fields(args)
	var cmd *exec.Cmd
	if pid == 0 {
		cmd = exec.Command(ip, argv...)
	} else {
		cmd = exec.Command("nsenter", append([]string{"--net=/proc/" + strconv.Itoa(pid) + "/ns/net", "--", ip}, argv...)...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil && strings.Contains(string(out), "FIB table does not exist") {
		return "" // `ip route show table 100` before anything was put there
	}
	require.NoError(t, err, "ip %s: %s", args, out)
	return string(out)
}

// BenchmarkKernelRuleReader measures one rule inspection (an RTM_GETRULE and an
// RTM_GETROUTE dump inside the pod's netns) on a pod with istio-cni's routing set-up and
// an IPv4 and IPv6 address, beside one DiagReader listener read of the same pod: rule
// inspection adds its cost to every check.
func BenchmarkKernelRuleReader(b *testing.B) {
	podsim.RequirePrivileged(b)
	sim, err := podsim.New()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := sim.Close(); err != nil {
			b.Error(err)
		}
	})
	p, err := sim.AddPod(podsim.PodSpec{IPv4: netip.MustParseAddr("10.250.0.9"), IPv6: netip.MustParseAddr("fd00:250::9")})
	if err != nil {
		b.Fatal(err)
	}
	if err := sim.Capture(p, true); err != nil {
		b.Fatal(err)
	}
	nsenter := func(args ...string) {
		out, err := exec.Command("nsenter", append([]string{"--net=/proc/" + strconv.Itoa(p.PID) + "/ns/net", "--", "ip"}, args...)...).CombinedOutput()
		if err != nil {
			b.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	nsenter(strings.Fields(localRoute4)...)
	nsenter(strings.Fields(markRule4)...)
	nsenter(strings.Fields(markRule6)...)
	nsenter(strings.Fields(localRoute6)...)
	fs, err := netns.NewFS("/proc")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("rules", func(b *testing.B) {
		r := netns.NewRuleReader(fs)
		b.ReportAllocs()
		for b.Loop() {
			rr, err := r.Rules(p.PID)
			if err != nil || rr.State() != netns.RulesPresent {
				b.Fatal(err, rr)
			}
		}
	})
	b.Run("diag-fast", func(b *testing.B) {
		r := netns.NewDiagReader(fs)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.Listeners(p.PID, netns.ReadOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
