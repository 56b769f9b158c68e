package netns

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// SocketCounts are a netns's own socket counters from net/sockstat and net/sockstat6.
// Reading them costs no walk of the kernel's socket hash tables, so they are a cheap
// change signal: a count that drops, or falls below the expected listeners, means the
// listener tables are worth reading.
type SocketCounts struct {
	TCP, TCP6 int // sockets in use (any state)
	UDP, UDP6 int
}

// errBadSockstat is wrapped by SocketsInUse for a sockstat file without a readable TCP line.
var errBadSockstat = errors.New("malformed sockstat file")

// SocketsInUse reads process pid's netns socket counters. A missing sockstat6 (no IPv6)
// leaves the v6 counts at zero; a process that is gone is ErrProcessGone.
//
// It is a targeted reader, not prometheus/procfs (which the first version used): the agent
// reads it for every captured pod on every tick, and procfs's general parser allocated
// ~12 KB per pod for the two "inuse" numbers we need (docs/benchmarks.md, SocketsInUse).
func (f FS) SocketsInUse(pid int) (SocketCounts, error) {
	var arr [512]byte
	buf := arr[:0]
	path := make([]byte, 0, len(f.root)+32)
	path = append(strconv.AppendInt(append(append(path, f.root...), '/'), int64(pid), 10), "/net/sockstat\x00"...)
	var c SocketCounts
	data, err := readSmall(path, buf, maxSockstatBytes)
	if err != nil {
		if gone(err) && !exists(f.root+"/"+strconv.Itoa(pid)) {
			return c, fmt.Errorf("pid %d: %w", pid, ErrProcessGone)
		}
		return c, fmt.Errorf("pid %d: sockstat: %w", pid, err)
	}
	if !parseInUse(data, &c) {
		return c, fmt.Errorf("pid %d: sockstat: %w", pid, errBadSockstat)
	}
	path = append(path[:len(path)-1], "6\x00"...)
	data, err = readSmall(path, buf[:0], maxSockstatBytes)
	if err != nil {
		if gone(err) {
			return c, nil // no IPv6 in this kernel (or the process just exited: the v4 read stands)
		}
		return c, fmt.Errorf("pid %d: sockstat6: %w", pid, err)
	}
	if !parseInUse(data, &c) {
		return c, fmt.Errorf("pid %d: sockstat6: %w", pid, errBadSockstat)
	}
	return c, nil
}

// parseInUse adds the "inuse" counts of the TCP, UDP, TCP6 and UDP6 lines of a sockstat or
// sockstat6 file ("TCP: inuse 3 orphan 0 tw 0 alloc 4 mem 1", "TCP6: inuse 2") to c. It
// reports whether a TCP or TCP6 line with a count was found; other lines and malformed
// lines are ignored.
func parseInUse(data []byte, c *SocketCounts) bool {
	found := false
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		name, rest, ok := bytes.Cut(line, []byte(": "))
		if !ok {
			continue
		}
		var dst *int
		switch string(name) {
		case "TCP":
			dst = &c.TCP
		case "TCP6":
			dst = &c.TCP6
		case "UDP":
			dst = &c.UDP
		case "UDP6":
			dst = &c.UDP6
		default:
			continue
		}
		num, ok := bytes.CutPrefix(rest, []byte("inuse "))
		if !ok {
			continue
		}
		if i := bytes.IndexByte(num, ' '); i >= 0 {
			num = num[:i]
		}
		n, err := strconv.Atoi(string(num))
		if err != nil || n < 0 {
			continue
		}
		*dst = n
		if dst == &c.TCP || dst == &c.TCP6 {
			found = true
		}
	}
	return found
}
