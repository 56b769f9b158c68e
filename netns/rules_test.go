//go:build linux

package netns

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func rtAttr(typ uint16, v []byte) []byte {
	a := make([]byte, 4, 4+len(v)+3)
	binary.NativeEndian.PutUint16(a[0:], uint16(4+len(v)))
	binary.NativeEndian.PutUint16(a[2:], typ)
	a = append(a, v...)
	for len(a)%4 != 0 {
		a = append(a, 0)
	}
	return a
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// ruleMsg is an RTM_NEWRULE payload: fib_rule_hdr (table in the header when < 256, as the
// kernel fills it) and FRA_TABLE, FRA_PRIORITY, FRA_FWMARK/FRA_FWMASK when mark != 0.
func ruleMsg(family uint8, table, prio, mark, mask uint32, action uint8) []byte {
	h := make([]byte, rtMsgLen)
	h[0] = family
	if table < 256 {
		h[4] = uint8(table)
	}
	h[7] = action
	p := append(h, rtAttr(fraTable, u32(table))...)
	p = append(p, rtAttr(6, u32(prio))...) // FRA_PRIORITY
	if mark != 0 {
		p = append(p, rtAttr(fraFwmark, u32(mark))...)
		p = append(p, rtAttr(fraFwmask, u32(mask))...)
	}
	return p
}

// routeMsg is an RTM_NEWROUTE payload: rtmsg plus RTA_TABLE, RTA_OIF and RTA_DST when
// dstLen > 0.
func routeMsg(family, dstLen, typ uint8, table uint32) []byte {
	h := make([]byte, rtMsgLen)
	h[0], h[1], h[7] = family, dstLen, typ
	h[4] = 252 // RT_TABLE_COMPAT when the real table is in RTA_TABLE
	p := append(h, rtAttr(rtaTable, u32(table))...)
	p = append(p, rtAttr(4, u32(1))...) // RTA_OIF lo
	if dstLen > 0 {
		p = append(p, rtAttr(rtaDst, make([]byte, 4))...)
	}
	return p
}

func TestParseRuleMessages(t *testing.T) {
	const seq = 5
	// What `ip rule` shows in a captured pod: the three defaults and istio-cni's rule.
	dgram := cat(
		nlMsg(rtmNewRule, seq, ruleMsg(unix.AF_INET, 255, 0, 0, 0, frActToTbl)),
		nlMsg(rtmNewRule, seq, ruleMsg(unix.AF_INET, InpodTable, 32764, InpodMark, InpodMask, frActToTbl)),
		nlMsg(rtmNewRule, seq, ruleMsg(unix.AF_INET, 254, 32766, 0, 0, frActToTbl)),
		nlMsg(rtmNewRule, seq, ruleMsg(unix.AF_INET6, InpodTable, 32764, InpodMark, InpodMask, frActToTbl)),
		done(seq, 0))
	var rr RoutingRules
	fin, err := parseRuleMessages(dgram, seq, &rr)
	require.NoError(t, err)
	assert.True(t, fin)
	assert.Equal(t, RoutingRules{MarkRule4: true, MarkRule6: true}, rr)

	// Near misses are not istio-cni's rule.
	for name, m := range map[string][]byte{
		"other mark":   ruleMsg(unix.AF_INET, InpodTable, 32764, 0x539, InpodMask, frActToTbl),
		"other mask":   ruleMsg(unix.AF_INET, InpodTable, 32764, InpodMark, 0xffffffff, frActToTbl),
		"other table":  ruleMsg(unix.AF_INET, 101, 32764, InpodMark, InpodMask, frActToTbl),
		"no mark":      ruleMsg(unix.AF_INET, InpodTable, 32764, 0, 0, frActToTbl),
		"not to table": ruleMsg(unix.AF_INET, InpodTable, 32764, InpodMark, InpodMask, 6), // FR_ACT_UNREACHABLE
		"other family": ruleMsg(unix.AF_BRIDGE, InpodTable, 32764, InpodMark, InpodMask, frActToTbl),
	} {
		var rr RoutingRules
		_, err := parseRuleMessages(nlMsg(rtmNewRule, seq, m), seq, &rr)
		require.NoError(t, err, name)
		assert.Equal(t, RoutingRules{}, rr, name)
	}

	// Errors, each with a clear message; nothing is set from a broken datagram's bad message.
	for name, tc := range map[string]struct {
		in   []byte
		want string
	}{
		"short header":   {nlMsg(rtmNewRule, seq, make([]byte, 8)), "fib_rule_hdr of 8 bytes"},
		"attr past end":  {nlMsg(rtmNewRule, seq, append(make([]byte, rtMsgLen), 40, 0, 10, 0, 1, 1, 1, 1)), "attribute at byte 0: length 40"},
		"attr too short": {nlMsg(rtmNewRule, seq, append(make([]byte, rtMsgLen), 2, 0, 10, 0)), "length 2 outside"},
		"wrong type":     {nlMsg(rtmNewRoute, seq, routeMsg(unix.AF_INET, 0, rtnLocal, InpodTable)), "unexpected type 24"},
		"wrong seq":      {nlMsg(rtmNewRule, seq+1, ruleMsg(unix.AF_INET, 254, 1, 0, 0, 1)), "sequence 6, want 5"},
		"dump error":     {done(seq, -int32(unix.EPERM)), "operation not permitted"},
		"netlink error":  {nlMsg(nlmsgError, seq, errPayload(-int32(unix.EINVAL))), "invalid argument"},
		"truncated":      {nlMsg(rtmNewRule, seq, ruleMsg(unix.AF_INET, 254, 1, 0, 0, 1))[:20], "length"},
	} {
		var rr RoutingRules
		_, err := parseRuleMessages(tc.in, seq, &rr)
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), tc.want, name)
	}
}

func TestParseRouteMessages(t *testing.T) {
	const seq = 9
	dgram := cat(
		nlMsg(rtmNewRoute, seq, routeMsg(unix.AF_INET, 0, 1, 254)),                // default via gw (main)
		nlMsg(rtmNewRoute, seq, routeMsg(unix.AF_INET, 32, rtnLocal, 255)),        // local 10.0.0.5 (local)
		nlMsg(rtmNewRoute, seq, routeMsg(unix.AF_INET, 0, rtnLocal, InpodTable)),  // istio-cni's
		nlMsg(rtmNewRoute, seq, routeMsg(unix.AF_INET6, 0, 1, InpodTable)),        // unicast: not it
		nlMsg(rtmNewRoute, seq, routeMsg(unix.AF_INET6, 8, rtnLocal, InpodTable)), // not default
	)
	var rr RoutingRules
	fin, err := parseRouteMessages(dgram, seq, &rr)
	require.NoError(t, err)
	assert.False(t, fin, "no NLMSG_DONE yet: more datagrams follow")
	assert.Equal(t, RoutingRules{LocalRoute4: true}, rr)

	fin, err = parseRouteMessages(cat(nlMsg(rtmNewRoute, seq, routeMsg(unix.AF_INET6, 0, rtnLocal, InpodTable)), done(seq, 0)), seq, &rr)
	require.NoError(t, err)
	assert.True(t, fin)
	assert.Equal(t, RoutingRules{LocalRoute4: true, LocalRoute6: true}, rr)
}

func TestRoutingRulesState(t *testing.T) {
	assert.Equal(t, RulesAbsent, RoutingRules{}.State())
	assert.Equal(t, RulesPresent, RoutingRules{MarkRule4: true, LocalRoute4: true}.State())
	assert.Equal(t, RulesPresent, RoutingRules{MarkRule4: true, LocalRoute4: true, MarkRule6: true, LocalRoute6: true}.State())
	assert.Equal(t, RulesPartial, RoutingRules{LocalRoute4: true}.State())
	assert.Equal(t, RulesPartial, RoutingRules{MarkRule6: true}.State())
	assert.Equal(t, "fwmark 0x111/0xfff rule", RoutingRules{LocalRoute4: true}.Missing())
	assert.Equal(t, "fwmark 0x111/0xfff rule, table 100 local route", RoutingRules{}.Missing())
}

func FuzzParseRules(f *testing.F) {
	const seq = 3
	f.Add(cat(nlMsg(rtmNewRule, seq, ruleMsg(unix.AF_INET, InpodTable, 32764, InpodMark, InpodMask, frActToTbl)), done(seq, 0)), true)
	f.Add(cat(nlMsg(rtmNewRoute, seq, routeMsg(unix.AF_INET6, 0, rtnLocal, InpodTable)), done(seq, 0)), false)
	f.Add(nlMsg(rtmNewRule, seq, append(make([]byte, rtMsgLen), 2, 0)), true)
	f.Add(done(seq, -1), false)
	f.Fuzz(func(t *testing.T, in []byte, rules bool) {
		var rr RoutingRules
		var err error
		if rules {
			_, err = parseRuleMessages(in, seq, &rr)
			if rr.LocalRoute4 || rr.LocalRoute6 {
				t.Fatalf("a rule dump set a route: %+v", rr)
			}
		} else {
			_, err = parseRouteMessages(in, seq, &rr)
			if rr.MarkRule4 || rr.MarkRule6 {
				t.Fatalf("a route dump set a rule: %+v", rr)
			}
		}
		if err == nil && rr != (RoutingRules{}) && len(in) < nlmsgHdrLen+rtMsgLen {
			t.Fatalf("%+v from %d bytes: too few for one message", rr, len(in))
		}
		_ = rr.State()
		_ = walkAttrs(in, func(uint16, []byte) {})
	})
}

func errPayload(errno int32) []byte {
	p := make([]byte, 20) // error code and the request's nlmsghdr
	binary.NativeEndian.PutUint32(p, uint32(errno))
	return p
}

type fakeRuleReader map[int]RoutingRules

func (f fakeRuleReader) Rules(pid int) (RoutingRules, error) {
	if rr, ok := f[pid]; ok {
		return rr, nil
	}
	return RoutingRules{}, ErrProcessGone
}

func TestInspectRules(t *testing.T) {
	rep := NodeReport{Pods: []PodNetns{
		{Sandbox: Sandbox{PodUID: "a", PID: 10}, Capture: Captured},
		{Sandbox: Sandbox{PodUID: "b", PID: 20}, Capture: CaptureNone},
		{Sandbox: Sandbox{PodUID: "h", PID: 30, HostNetwork: true}, Capture: CaptureHostNetwork},
		{Sandbox: Sandbox{PodUID: "u", PID: 40}, Capture: CaptureUnknown},
	}}
	InspectRules(&rep, fakeRuleReader{10: {MarkRule4: true, LocalRoute4: true}, 30: {}, 40: {}})
	require.NotNil(t, rep.Pods[0].Rules)
	assert.Equal(t, RulesPresent, rep.Pods[0].Rules.State())
	assert.Nil(t, rep.Pods[1].Rules)
	assert.ErrorIs(t, rep.Pods[1].RulesErr, ErrProcessGone)
	assert.ErrorContains(t, rep.Pods[1].RulesErr, "pod b pid 20")
	assert.Nil(t, rep.Pods[2].Rules, "a host-network pod's rules would be the host's: never read")
	assert.Nil(t, rep.Pods[3].Rules, "an unreadable pod is not inspected")
}
