//go:build linux

package netns

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// RuleReader reads istio-cni's in-pod routing set-up (RoutingRules) of a process's
// network namespace with two rtnetlink dumps (RTM_GETRULE, RTM_GETROUTE; both families)
// from a NETLINK_ROUTE socket created inside that netns, as DiagReader does for
// sock_diag. It needs RulesCapabilities. It is safe for concurrent use.
//
// It reads routing rules only, not the iptables or nft redirect rules themselves: reading
// those needs CAP_NET_ADMIN in the pod's netns. istio-cni installs both together and
// removes both together, so the routing set-up stands for the redirect rules; a flush of
// iptables alone (by hand, by another agent) is not seen.
type RuleReader struct {
	root string
	seq  atomic.Uint32
}

// NewRuleReader returns a reader for the processes of fs's proc root.
func NewRuleReader(fs FS) *RuleReader { return &RuleReader{root: fs.root} }

// rulesCapsHint ends a permission error of RuleReader.
const rulesCapsHint = "rule inspection needs CAP_SYS_ADMIN (setns into the pod's netns) and CAP_SYS_PTRACE (open another process's ns/net)"

// rtnetlink wire constants (include/uapi/linux/rtnetlink.h, fib_rules.h).
const (
	rtmNewRoute = 24 // RTM_NEWROUTE
	rtmGetRoute = 26 // RTM_GETROUTE
	rtmNewRule  = 32 // RTM_NEWRULE
	rtmGetRule  = 34 // RTM_GETRULE
	rtMsgLen    = 12 // struct rtmsg and struct fib_rule_hdr
	rtaDst      = 1  // RTA_DST
	rtaTable    = 15 // RTA_TABLE
	fraFwmark   = 10 // FRA_FWMARK
	fraTable    = 15 // FRA_TABLE
	fraFwmask   = 16 // FRA_FWMASK
	frActToTbl  = 1  // FR_ACT_TO_TBL
	rtnLocal    = 2  // RTN_LOCAL
)

// Rules returns what pid's netns shows of istio-cni's routing set-up. A process that is
// gone: an error wrapping ErrProcessGone.
func (r *RuleReader) Rules(pid int) (RoutingRules, error) {
	var rr RoutingRules
	fd, err := netlinkIn(r.root, pid, unix.NETLINK_ROUTE, rulesCapsHint)
	if err != nil {
		return rr, err
	}
	defer unix.Close(fd)
	bp := netlinkBufs.Get().(*[]byte)
	defer netlinkBufs.Put(bp)
	buf := *bp
	if err := r.dump(fd, rtmGetRule, buf, func(b []byte, seq uint32) (bool, error) { return parseRuleMessages(b, seq, &rr) }); err != nil {
		return RoutingRules{}, fmt.Errorf("pid %d: rtnetlink dump of routing rules: %w", pid, err)
	}
	if err := r.dump(fd, rtmGetRoute, buf, func(b []byte, seq uint32) (bool, error) { return parseRouteMessages(b, seq, &rr) }); err != nil {
		return RoutingRules{}, fmt.Errorf("pid %d: rtnetlink dump of routes: %w", pid, err)
	}
	return rr, nil
}

// dump sends one AF_UNSPEC dump request of type typ (every family) and feeds each reply
// datagram to parse until the dump is done.
func (r *RuleReader) dump(fd int, typ uint16, buf []byte, parse func([]byte, uint32) (bool, error)) error {
	seq := r.seq.Add(1)
	var req [nlmsgHdrLen + rtMsgLen]byte
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], typ)
	ne.PutUint16(req[6:], nlmFRequest|nlmFDump)
	ne.PutUint32(req[8:], seq)
	// The payload (struct rtmsg / fib_rule_hdr) stays zero: family AF_UNSPEC, no filter.
	return netlinkDump(fd, req[:], buf, func(b []byte) (bool, error) { return parse(b, seq) })
}

// parseRuleMessages parses one datagram of an RTM_GETRULE dump reply (walkNetlink's rules:
// RTM_NEWRULE messages, each a struct fib_rule_hdr and its attributes) and sets
// rr.MarkRule4/6 for a rule that sends fwmark InpodMark/InpodMask to table InpodTable,
// whatever its priority.
func parseRuleMessages(b []byte, seq uint32, rr *RoutingRules) (bool, error) {
	return walkNetlink(b, seq, rtmNewRule, func(off int, p []byte) error {
		if len(p) < rtMsgLen {
			return fmt.Errorf("rule message at byte %d: fib_rule_hdr of %d bytes, want %d", off, len(p), rtMsgLen)
		}
		family, action := p[0], p[7]
		table := uint32(p[4])
		var mark, mask uint32
		var hasMark, hasMask bool
		err := walkAttrs(p[rtMsgLen:], func(typ uint16, v []byte) {
			switch {
			case typ == fraTable && len(v) == 4:
				table = binary.NativeEndian.Uint32(v)
			case typ == fraFwmark && len(v) == 4:
				mark, hasMark = binary.NativeEndian.Uint32(v), true
			case typ == fraFwmask && len(v) == 4:
				mask, hasMask = binary.NativeEndian.Uint32(v), true
			}
		})
		if err != nil {
			return fmt.Errorf("rule message at byte %d: %w", off, err)
		}
		if action != frActToTbl || table != InpodTable || !hasMark || mark != InpodMark || !hasMask || mask != InpodMask {
			return nil
		}
		switch family {
		case unix.AF_INET:
			rr.MarkRule4 = true
		case unix.AF_INET6:
			rr.MarkRule6 = true
		}
		return nil
	})
}

// parseRouteMessages parses one datagram of an RTM_GETROUTE dump reply (RTM_NEWROUTE
// messages, each a struct rtmsg and its attributes) and sets rr.LocalRoute4/6 for a
// route of type local to the default destination (prefix length 0) in table InpodTable.
func parseRouteMessages(b []byte, seq uint32, rr *RoutingRules) (bool, error) {
	return walkNetlink(b, seq, rtmNewRoute, func(off int, p []byte) error {
		if len(p) < rtMsgLen {
			return fmt.Errorf("route message at byte %d: rtmsg of %d bytes, want %d", off, len(p), rtMsgLen)
		}
		family, dstLen, typ := p[0], p[1], p[7]
		table := uint32(p[4])
		err := walkAttrs(p[rtMsgLen:], func(t uint16, v []byte) {
			if t == rtaTable && len(v) == 4 {
				table = binary.NativeEndian.Uint32(v)
			}
		})
		if err != nil {
			return fmt.Errorf("route message at byte %d: %w", off, err)
		}
		if typ != rtnLocal || dstLen != 0 || table != InpodTable {
			return nil
		}
		switch family {
		case unix.AF_INET:
			rr.LocalRoute4 = true
		case unix.AF_INET6:
			rr.LocalRoute6 = true
		}
		return nil
	})
}

// walkAttrs calls fn for each struct rtattr in b (include/uapi/linux/rtnetlink.h: u16
// length including the 4-byte header, u16 type, RTA_ALIGN to 4). An attribute whose
// length is below its header or runs past b is an error; the last one may lack padding.
func walkAttrs(b []byte, fn func(typ uint16, v []byte)) error {
	ne := binary.NativeEndian
	for off := 0; off < len(b); {
		if len(b)-off < 4 {
			return fmt.Errorf("attribute at byte %d: %d bytes left, header needs 4", off, len(b)-off)
		}
		l := int(ne.Uint16(b[off:]))
		if l < 4 || l > len(b)-off {
			return fmt.Errorf("attribute at byte %d: length %d outside [4, %d]", off, l, len(b)-off)
		}
		fn(ne.Uint16(b[off+2:])&0x3fff, b[off+4:off+l]) // NLA_TYPE_MASK drops the nested/byte-order flags
		off += min((l+3)&^3, len(b)-off)
	}
	return nil
}
