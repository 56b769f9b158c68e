package podsim

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ipOut runs `ip args...` in the netns of pid (pid 0: this process's own netns) and returns
// its output.
func ipOut(t *testing.T, pid int, args ...string) string {
	t.Helper()
	ip, err := lookTool("ip")
	require.NoError(t, err)
	var out []byte
	if pid == 0 {
		out, err = exec.Command(ip, args...).CombinedOutput()
	} else {
		out, err = nsenterNet(pid, nil, append([]string{ip}, args...)...)
	}
	require.NoError(t, err, "ip %v: %s", args, out)
	return string(out)
}

// inpodState counts, in the netns of pid for family ("-4" or "-6"), istio-cni's fwmark rule
// as `ip rule show` prints it, and the `local default dev lo` routes of table 100. Routes are
// read from `table all`: `ip -4 route show table 100` fails while table 100 does not exist.
func inpodState(t *testing.T, pid int, family string) (rules, routes int) {
	t.Helper()
	for _, l := range strings.Split(ipOut(t, pid, family, "rule", "show"), "\n") {
		if strings.TrimSpace(l) == "32764:\tfrom all fwmark 0x111/0xfff lookup 100" {
			rules++
		}
	}
	for _, l := range strings.Split(ipOut(t, pid, family, "route", "show", "table", "all"), "\n") {
		if strings.HasPrefix(l, "local default dev lo table 100 ") {
			routes++
		}
	}
	return rules, routes
}

// hostRouting is this process's netns's rules and table 100, both families, to compare before
// and after: nothing the sim does may change it.
func hostRouting(t *testing.T) string {
	t.Helper()
	ip, err := lookTool("ip")
	require.NoError(t, err)
	var b strings.Builder
	for _, fam := range []string{"-4", "-6"} {
		// An error (no IPv6 on this host) is part of the snapshot, not a failure.
		out, err := exec.Command(ip, fam, "rule", "show").CombinedOutput()
		fmt.Fprintf(&b, "ip %s rule show (err %v):\n%s", fam, err, out)
		out, err = exec.Command(ip, fam, "route", "show", "table", "all").CombinedOutput()
		fmt.Fprintf(&b, "ip %s route show table all | grep 'table 100 ' (err %v):\n", fam, err)
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, " table 100 ") {
				fmt.Fprintln(&b, l)
			}
		}
	}
	return b.String()
}

func TestRedirectAndUnredirect(t *testing.T) {
	s := newSim(t)
	host := hostRouting(t)
	p, err := s.AddPod(PodSpec{IPv4: netip.MustParseAddr("10.244.3.4"), IPv6: netip.MustParseAddr("fd00:10:244::34")})
	require.NoError(t, err)
	other, err := s.AddPod(PodSpec{})
	require.NoError(t, err)
	for _, fam := range []string{"-4", "-6"} {
		rules, routes := inpodState(t, p.PID, fam)
		assert.Zero(t, rules, "fresh sandbox %s", fam)
		assert.Zero(t, routes, "fresh sandbox %s", fam)
	}
	// Someone else's rule and route at the same priority / in the same table must survive.
	ipOut(t, p.PID, "rule", "add", "fwmark", "0x222/0xfff", "pref", "32764", "lookup", "100")
	ipOut(t, p.PID, "route", "add", "local", "10.9.0.0/16", "dev", "lo", "table", "100")
	basics := ipOut(t, p.PID, "rule", "show")

	require.NoError(t, s.Redirect(p))
	v4 := ipOut(t, p.PID, "-4", "rule", "show")
	assert.Contains(t, v4, "32764:\tfrom all fwmark 0x111/0xfff lookup 100")
	assert.Contains(t, ipOut(t, p.PID, "-4", "route", "show", "table", "100"), "local default dev lo scope host")
	assert.Contains(t, ipOut(t, p.PID, "-6", "route", "show", "table", "100"), "local default dev lo ")
	for _, fam := range []string{"-4", "-6"} {
		rules, routes := inpodState(t, p.PID, fam)
		assert.Equal(t, 1, rules, "%s rule", fam)
		assert.Equal(t, 1, routes, "%s route", fam)
	}

	require.NoError(t, s.Redirect(p), "Redirect is idempotent")
	for _, fam := range []string{"-4", "-6"} {
		rules, routes := inpodState(t, p.PID, fam)
		assert.Equal(t, 1, rules, "%s: exactly one rule after a second Redirect", fam)
		assert.Equal(t, 1, routes, "%s route", fam)
	}
	// Only p's netns was touched.
	for _, fam := range []string{"-4", "-6"} {
		rules, routes := inpodState(t, other.PID, fam)
		assert.Zero(t, rules+routes, "other pod %s", fam)
	}
	assert.Equal(t, host, hostRouting(t), "host netns unchanged by Redirect")

	require.NoError(t, s.Unredirect(p))
	for _, fam := range []string{"-4", "-6"} {
		rules, routes := inpodState(t, p.PID, fam)
		assert.Zero(t, rules, "%s rule gone", fam)
		assert.Zero(t, routes, "%s route gone", fam)
	}
	assert.Equal(t, basics, ipOut(t, p.PID, "rule", "show"), "other rules (0x222, main, default) stay")
	assert.Equal(t, "local 10.9.0.0/16 dev lo scope host \n", ipOut(t, p.PID, "-4", "route", "show", "table", "100"), "other routes of table 100 stay")
	require.NoError(t, s.Unredirect(p), "Unredirect is idempotent")
	require.NoError(t, s.Unredirect(other), "Unredirect of a pod never redirected")
	assert.Equal(t, host, hostRouting(t), "host netns unchanged by Unredirect")

	// Listeners and rules are independent: the #56652 bypass (listeners without rules).
	require.NoError(t, s.Capture(p, false))
	require.NoError(t, s.Redirect(p))
	require.NoError(t, s.Unredirect(p))
	assert.Len(t, sockRows(t, p.PID, "tcp6"), 3, "listeners stay")
	require.NoError(t, ThreadsHome())
}

func TestRedirectNoIPv6Lo(t *testing.T) {
	s := newSim(t)
	p, err := s.AddPod(PodSpec{NoIPv6Lo: true})
	require.NoError(t, err)
	require.NoError(t, s.Redirect(p))
	rules, routes := inpodState(t, p.PID, "-4")
	assert.Equal(t, 1, rules)
	assert.Equal(t, 1, routes)
	// istio-cni adds the inet6 rule whenever IPv6 is on, but skips the ::/0 route when lo has
	// no IPv6 (forEachInpodMarkIPRule vs forEachLoopbackRoute).
	rules, routes = inpodState(t, p.PID, "-6")
	assert.Equal(t, 1, rules, "inet6 rule")
	assert.Zero(t, routes, "no ::/0 route without IPv6 on lo")

	require.NoError(t, s.Redirect(p))
	require.NoError(t, s.Unredirect(p))
	require.NoError(t, s.Unredirect(p))
	for _, fam := range []string{"-4", "-6"} {
		rules, routes := inpodState(t, p.PID, fam)
		assert.Zero(t, rules+routes, fam)
	}
}

func TestRedirectRefusesHostNetwork(t *testing.T) {
	s := newSim(t)
	host := hostRouting(t)
	p, err := s.AddPod(PodSpec{HostNetwork: true})
	require.NoError(t, err)
	assert.ErrorContains(t, s.Redirect(p), "host-network")
	assert.ErrorContains(t, s.Unredirect(p), "host-network")
	assert.Equal(t, host, hostRouting(t), "host netns untouched")
}

func TestReplaceNetnsDropsRules(t *testing.T) {
	s := newSim(t)
	p, err := s.AddPod(PodSpec{IPv4: netip.MustParseAddr("10.244.3.5")})
	require.NoError(t, err)
	require.NoError(t, s.Redirect(p))
	old := p.PID
	rules, _ := inpodState(t, old, "-4")
	require.Equal(t, 1, rules)

	require.NoError(t, s.ReplaceNetns(p))
	require.NotEqual(t, old, p.PID)
	for _, fam := range []string{"-4", "-6"} {
		rules, routes := inpodState(t, p.PID, fam)
		assert.Zero(t, rules, "replaced netns %s has no rule", fam)
		assert.Zero(t, routes, "replaced netns %s has no route", fam)
	}
	require.NoError(t, s.Unredirect(p), "Unredirect in a netns never redirected")
	require.NoError(t, s.Redirect(p), "the new netns can be redirected again")
	rules, routes := inpodState(t, p.PID, "-4")
	assert.Equal(t, 1, rules)
	assert.Equal(t, 1, routes)
}

func TestRedirectRefusesRemovedAndClosed(t *testing.T) {
	a := newSim(t)
	b := newSim(t)
	p, err := a.AddPod(PodSpec{})
	require.NoError(t, err)
	assert.ErrorIs(t, b.Redirect(p), ErrRemoved)
	assert.ErrorIs(t, b.Unredirect(p), ErrRemoved)
	require.NoError(t, a.RemovePod(p))
	assert.ErrorIs(t, a.Redirect(p), ErrRemoved)
	assert.ErrorIs(t, a.Unredirect(p), ErrRemoved)
	q, err := b.AddPod(PodSpec{})
	require.NoError(t, err)
	require.NoError(t, b.Close())
	assert.ErrorIs(t, b.Redirect(q), ErrClosed)
	assert.ErrorIs(t, b.Unredirect(q), ErrClosed)
}
