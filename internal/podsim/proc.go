package podsim

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// errNotFound is returned by the parsers when the input lacks the field asked for.
var errNotFound = errors.New("field not found")

// Netns returns the inode of the network namespace of process pid (readlink /proc/<pid>/ns/net).
func Netns(pid int) (uint64, error) {
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return 0, fmt.Errorf("netns of pid %d: %w", pid, err)
	}
	ino, err := parseNetnsLink(link)
	if err != nil {
		return 0, fmt.Errorf("netns of pid %d: %w", pid, err)
	}
	return ino, nil
}

// parseNetnsLink parses the target of a /proc/<pid>/ns/net link, "net:[4026531833]".
func parseNetnsLink(link string) (uint64, error) {
	rest, ok := strings.CutPrefix(link, "net:[")
	if !ok {
		return 0, fmt.Errorf("netns link %q: not of the form net:[inode]", link)
	}
	num, ok := strings.CutSuffix(rest, "]")
	if !ok {
		return 0, fmt.Errorf("netns link %q: not of the form net:[inode]", link)
	}
	ino, err := strconv.ParseUint(num, 10, 64)
	if err != nil || ino == 0 {
		return 0, fmt.Errorf("netns link %q: bad inode", link)
	}
	return ino, nil
}

// SockstatTCP6InUse returns "TCP6: inuse N" from /proc/<pid>/net/sockstat6: the number of
// TCPv6 sockets of that process's network namespace, counted by the kernel without walking any
// socket table. It is a test helper (see DESIGN.md "Agent" for why it matters).
func SockstatTCP6InUse(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/sockstat6", pid))
	if err != nil {
		return 0, fmt.Errorf("sockstat6 of pid %d: %w", pid, err)
	}
	defer f.Close()
	n, err := parseSockstatInUse(f, "TCP6")
	if err != nil {
		return 0, fmt.Errorf("sockstat6 of pid %d: %w", pid, err)
	}
	return n, nil
}

// parseSockstatInUse returns the "inuse" count of the line for protocol proto ("TCP6", "TCP",
// "UDP6", ...) in a sockstat file: lines of the form "TCP6: inuse 3" or
// "TCP: inuse 5 orphan 0 tw 0 alloc 7 mem 1".
func parseSockstatInUse(r io.Reader, proto string) (int, error) {
	sc := bufio.NewScanner(r)
	prefix := []byte(proto + ":")
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), prefix)
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			if string(f[i]) != "inuse" {
				continue
			}
			n, err := strconv.Atoi(string(f[i+1]))
			if err != nil || n < 0 {
				return 0, fmt.Errorf("sockstat %s inuse %q: not a count", proto, f[i+1])
			}
			return n, nil
		}
		return 0, fmt.Errorf("sockstat line %s: no inuse: %w", proto, errNotFound)
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading sockstat: %w", err)
	}
	return 0, fmt.Errorf("sockstat has no %s line: %w", proto, errNotFound)
}

// parseStatStartTime returns field 22 (starttime, clock ticks since boot) of a /proc/<pid>/stat
// line. The command name (field 2) may hold spaces and parentheses, so fields are counted from
// the last ')'.
func parseStatStartTime(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command name")
	}
	// After ") " come fields 3, 4, ...: starttime (22) is the 20th of them.
	f := bytes.Fields(b[i+1:])
	const idx = 22 - 3
	if len(f) <= idx {
		return 0, fmt.Errorf("stat: %d fields after the command name: %w", len(f), errNotFound)
	}
	v, err := strconv.ParseUint(string(f[idx]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat starttime %q: %w", f[idx], err)
	}
	return v, nil
}

// userHZ is the unit of /proc/<pid>/stat times; Linux fixes it at 100 for user space.
const userHZ = 100

// parseUptimeTicks returns the first number of /proc/uptime ("12345.67 2345.01") in clock ticks
// (1/100 s), without going through floating point.
func parseUptimeTicks(b []byte) (uint64, error) {
	f := bytes.Fields(b)
	if len(f) == 0 {
		return 0, fmt.Errorf("uptime: empty: %w", errNotFound)
	}
	intPart, frac, _ := bytes.Cut(f[0], []byte("."))
	sec, err := strconv.ParseUint(string(intPart), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("uptime %q: %w", f[0], err)
	}
	if sec > (1<<64-1)/userHZ-userHZ {
		return 0, fmt.Errorf("uptime %q: out of range", f[0])
	}
	var cs uint64
	for i := 0; i < 2; i++ {
		cs *= 10
		if i < len(frac) {
			c := frac[i]
			if c < '0' || c > '9' {
				return 0, fmt.Errorf("uptime %q: bad fraction", f[0])
			}
			cs += uint64(c - '0')
		}
	}
	return sec*userHZ + cs, nil
}

// startTime returns the start time of pid in clock ticks since boot.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("start time of pid %d: %w", pid, err)
	}
	v, err := parseStatStartTime(b)
	if err != nil {
		return 0, fmt.Errorf("start time of pid %d: %w", pid, err)
	}
	return v, nil
}

// uptimeTicks returns the time since boot in clock ticks, on the clock /proc/<pid>/stat uses.
func uptimeTicks() (uint64, error) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, fmt.Errorf("reading uptime: %w", err)
	}
	return parseUptimeTicks(b)
}
