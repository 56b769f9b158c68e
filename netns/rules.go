package netns

import "strings"

// istio-cni's in-pod routing set-up (istio/istio cni/pkg/iptables/iptables_linux.go,
// forEachInpodMarkIPRule and forEachLoopbackRoute; the values are cni/pkg/config's
// InpodTProxyMark, InpodTProxyMask and RouteTableInbound). CreateInpodRules installs them
// in the pod's netns right before its iptables (or, from 1.28 with NATIVE_NFTABLES, nft)
// redirect rules, with every backend, and DeleteInpodRules removes them: a netns that
// lacks them never got, or lost, istio-cni's redirection.
const (
	// InpodMark and InpodMask: `ip rule add fwmark 0x111/0xfff pref 32764 lookup 100`.
	InpodMark uint32 = 0x111
	InpodMask uint32 = 0xfff
	// InpodTable is the routing table that rule looks up, holding `local default dev lo`.
	InpodTable uint32 = 100
)

// RoutingRules is what a pod's netns shows of istio-cni's in-pod routing set-up: the
// fwmark rule and table InpodTable's local default route, per address family. The IPv6
// pair exists only where istio-cni runs with IPv6 enabled (and the route only when the
// pod's lo has IPv6).
type RoutingRules struct {
	MarkRule4   bool `json:"markRule4"`   // ip rule fwmark 0x111/0xfff lookup 100 (inet)
	LocalRoute4 bool `json:"localRoute4"` // ip route local 0.0.0.0/0 dev lo table 100
	MarkRule6   bool `json:"markRule6"`   // ip -6 rule fwmark 0x111/0xfff lookup 100
	LocalRoute6 bool `json:"localRoute6"` // ip -6 route local ::/0 dev lo table 100
}

// RulesState is the verdict on a RoutingRules.
type RulesState string

const (
	// RulesPresent: the IPv4 rule and route are there (istio-cni always installs those).
	RulesPresent RulesState = "present"
	// RulesAbsent: none of the four is there.
	RulesAbsent RulesState = "absent"
	// RulesPartial: some are there but not the IPv4 pair: istio-cni's set-up stopped
	// half-way (it installs the route, then the rule, then the redirect rules) or part of
	// it was removed.
	RulesPartial RulesState = "partial"
)

// State judges r.
func (r RoutingRules) State() RulesState {
	switch {
	case r.MarkRule4 && r.LocalRoute4:
		return RulesPresent
	case !r.MarkRule4 && !r.LocalRoute4 && !r.MarkRule6 && !r.LocalRoute6:
		return RulesAbsent
	}
	return RulesPartial
}

// Missing names the IPv4 pieces r lacks, for messages ("fwmark rule", "table 100 route").
func (r RoutingRules) Missing() string {
	var m []string
	if !r.MarkRule4 {
		m = append(m, "fwmark 0x111/0xfff rule")
	}
	if !r.LocalRoute4 {
		m = append(m, "table 100 local route")
	}
	return strings.Join(m, ", ")
}

// RulesCapabilities are the capabilities RuleReader needs: the same as DiagReader's
// (setns into the pod's netns, and opening another process's ns/net). Dumping routing
// rules and routes needs no CAP_NET_ADMIN.
var RulesCapabilities = DiagCapabilities
