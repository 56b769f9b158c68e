package podsim

import (
	"bytes"
	"fmt"
	"strings"
)

// istio-cni's in-pod routing objects (istio/istio cni/pkg/config: RouteTableInbound,
// InpodTProxyMark, InpodTProxyMask; the rule priority is set in cni/pkg/iptables/iptables_linux.go,
// forEachInpodMarkIPRule).
const (
	inpodRouteTable = 100
	inpodMark       = 0x111
	inpodMask       = 0xfff
	inpodRulePref   = 32764
)

// inpodRuleSel selects exactly istio-cni's fwmark rule, for `ip rule flush` (a filtered flush
// removes only matching rules and, unlike `ip rule del`, does not fail when none match).
var inpodRuleSel = fmt.Sprintf("fwmark %#x/%#x pref %d table %d", inpodMark, inpodMask, inpodRulePref, inpodRouteTable)

// inpodRuleAdd is istio-cni's `ip rule add fwmark 0x111/0xfff pref 32764 lookup 100`.
var inpodRuleAdd = fmt.Sprintf("rule add fwmark %#x/%#x pref %d lookup %d", inpodMark, inpodMask, inpodRulePref, inpodRouteTable)

// everywhere is the destination of the loopback route per family ("-4" / "-6").
var everywhere = map[string]string{"-4": "0.0.0.0/0", "-6": "::/0"}

// rulesFamilies returns the ip(8) family flags to act on in p's current netns, and whether the
// IPv6 loopback route applies: IPv6 when the netns can open IPv6 sockets (istio-cni's
// EnableIPv6), its route only when lo has IPv6 too (forEachLoopbackRoute reads
// /proc/sys/net/ipv6/conf/lo/disable_ipv6 in the pod's netns).
func rulesFamilies(p *Pod) (fams []string, lo6 bool, err error) {
	var v6 bool
	if err := inNetns(p.PID, func() error { v6, lo6 = hasIPv6(); return nil }); err != nil {
		return nil, false, err
	}
	fams = []string{"-4"}
	if v6 {
		fams = append(fams, "-6")
	}
	return fams, v6 && lo6, nil
}

// ipBatch runs `ip <fam> -batch -` with lines inside p's current netns.
func ipBatch(p *Pod, fam string, lines []string) error {
	ip, err := lookTool("ip")
	if err != nil {
		return err
	}
	batch := bytes.NewBufferString(strings.Join(lines, "\n") + "\n")
	out, err := nsenterNet(p.PID, batch, ip, fam, "-batch", "-")
	if err != nil {
		return fmt.Errorf("ip %s -batch in netns %d: %w: %s (batch: %q)", fam, p.Netns, err, strings.TrimSpace(string(out)), lines)
	}
	return nil
}

// Redirect installs, in p's current netns, the routing objects istio-cni adds to every captured
// pod before its iptables/nftables redirect rules (istio/istio cni/pkg/iptables/iptables.go,
// CreateInpodRules; cni/pkg/iptables/iptables_linux.go, forEachInpodMarkIPRule and
// forEachLoopbackRoute):
//
//	ip rule add fwmark 0x111/0xfff pref 32764 lookup 100          (inet; inet6 too when the netns has IPv6)
//	ip route add local 0.0.0.0/0 dev lo table 100                 (and local ::/0 when lo has IPv6 as well)
//
// It runs one `ip -batch -` per address family through nsenter (a batch line cannot choose a
// rule's family; `ip rule add` without -6 always makes an inet rule), route first, then rule. It
// is idempotent: the route is added with `ip route replace`, and the rule is flushed by an exact
// selector before it is added (`ip rule add` refuses a duplicate with EEXIST, which istio-cni's
// AddInpodMarkIPRule ignores), so a second call leaves one of each. The redirect rules
// themselves (iptables/nftables) are not simulated. Host-network pods are refused: this must
// never touch the host's netns.
func (s *Sim) Redirect(p *Pod) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(p); err != nil {
		return err
	}
	if p.Spec.HostNetwork {
		return fmt.Errorf("pod %s: redirect: refused for a host-network pod", p.UID)
	}
	fams, lo6, err := rulesFamilies(p)
	if err != nil {
		return fmt.Errorf("pod %s: redirect: %w", p.UID, err)
	}
	for _, fam := range fams {
		// Route before rule, as CreateInpodRules orders them.
		var lines []string
		if fam == "-4" || lo6 {
			lines = append(lines, fmt.Sprintf("route replace local %s dev lo table %d", everywhere[fam], inpodRouteTable))
		}
		lines = append(lines, "rule flush "+inpodRuleSel, inpodRuleAdd)
		if err := ipBatch(p, fam, lines); err != nil {
			return fmt.Errorf("pod %s: redirect: %w", p.UID, err)
		}
	}
	return nil
}

// Unredirect removes what Redirect installs from p's current netns, as istio-cni does when a pod
// leaves the mesh (istio/istio cni/pkg/iptables/iptables.go, DeleteInpodRules) — or as a node
// that lost the pod's rules leaves it (istio/istio #56652, when ztunnel's listeners stay). It is
// idempotent: absent rules and routes are not an error (a filtered `ip rule flush`; for the
// routes, `ip route replace` then `del` for IPv4 and `ip -6 route flush ... exact` for IPv6),
// and nothing else in the netns is touched. Host-network pods are refused.
func (s *Sim) Unredirect(p *Pod) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(p); err != nil {
		return err
	}
	if p.Spec.HostNetwork {
		return fmt.Errorf("pod %s: unredirect: refused for a host-network pod", p.UID)
	}
	fams, _, err := rulesFamilies(p)
	if err != nil {
		return fmt.Errorf("pod %s: unredirect: %w", p.UID, err)
	}
	for _, fam := range fams {
		lines := []string{"rule flush " + inpodRuleSel}
		if fam == "-4" {
			// An IPv4 dump or flush of a table that was never created fails ("ipv4: FIB table
			// does not exist"), as in a netns never redirected: replace-then-delete the route
			// instead. No rule points at table 100 any more, so the instant it exists is moot.
			route := fmt.Sprintf("local %s dev lo table %d", everywhere[fam], inpodRouteTable)
			lines = append(lines, "route replace "+route, "route del "+route)
		} else {
			// IPv6 has no such error, and lo may have no IPv6 (a route could not even be added).
			lines = append(lines, fmt.Sprintf("route flush table %d exact %s type local dev lo", inpodRouteTable, everywhere[fam]))
		}
		if err := ipBatch(p, fam, lines); err != nil {
			return fmt.Errorf("pod %s: unredirect: %w", p.UID, err)
		}
	}
	return nil
}
