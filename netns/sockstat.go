package netns

import (
	"fmt"
	"strconv"

	"github.com/prometheus/procfs"
)

// SocketCounts are a netns's own socket counters from net/sockstat and net/sockstat6.
// Reading them costs no walk of the kernel's socket hash tables, so they are a cheap
// change signal: a count that drops, or falls below the expected listeners, means the
// listener tables are worth reading.
type SocketCounts struct {
	TCP, TCP6 int // sockets in use (any state)
	UDP, UDP6 int
}

// SocketsInUse reads process pid's netns socket counters (via prometheus/procfs). A
// missing sockstat6 (no IPv6) leaves the v6 counts at zero.
func (f FS) SocketsInUse(pid int) (SocketCounts, error) {
	pfs, err := procfs.NewFS(f.root + "/" + strconv.Itoa(pid))
	if err != nil {
		return SocketCounts{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	var c SocketCounts
	s4, err := pfs.NetSockstat()
	if err != nil {
		if gone(err) && !exists(f.root+"/"+strconv.Itoa(pid)) {
			return c, fmt.Errorf("pid %d: %w", pid, ErrProcessGone)
		}
		return c, fmt.Errorf("pid %d: sockstat: %w", pid, err)
	}
	for _, p := range s4.Protocols {
		switch p.Protocol {
		case "TCP":
			c.TCP = p.InUse
		case "UDP":
			c.UDP = p.InUse
		}
	}
	s6, err := pfs.NetSockstat6()
	if err != nil {
		if gone(err) {
			return c, nil // no IPv6 in this kernel
		}
		return c, fmt.Errorf("pid %d: sockstat6: %w", pid, err)
	}
	for _, p := range s6.Protocols {
		switch p.Protocol {
		case "TCP6":
			c.TCP6 = p.InUse
		case "UDP6":
			c.UDP6 = p.InUse
		}
	}
	return c, nil
}
