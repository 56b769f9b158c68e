package netns

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// State is a socket state as the kernel prints it in /proc/net/tcp* (include/net/tcp_states.h).
type State uint8

// StateListen is TCP_LISTEN. Unconnected UDP sockets print TCP_CLOSE (StateClose).
const (
	StateEstablished State = 0x01
	StateClose       State = 0x07
	StateListen      State = 0x0A
)

// States is a set of socket states 0..31 (the kernel's TCP states stop at 0x0D); the zero
// value means every state.
type States uint32

// StatesOf builds a set of states; states above 31 cannot be members.
func StatesOf(s ...State) States {
	var m States
	for _, x := range s {
		if x < 32 {
			m |= 1 << x
		}
	}
	return m
}

// Has reports whether s is in the set (the empty set holds every state).
func (m States) Has(s State) bool { return m == 0 || (s < 32 && m&(1<<s) != 0) }

// Socket is one row of a /proc/net/{tcp,tcp6,udp,udp6} table.
type Socket struct {
	Addr  netip.Addr // local address; IPv4 for tcp/udp, IPv6 (possibly v4-mapped) for tcp6/udp6
	Port  uint16     // local port
	State State
	UID   uint32
	Inode uint64
}

func (s Socket) String() string {
	return fmt.Sprintf("%s st=%02X inode=%d", netip.AddrPortFrom(s.Addr, s.Port), uint8(s.State), s.Inode)
}

// TableStats describes one parse of a socket table.
type TableStats struct {
	Rows           int // well-formed rows seen (kept or filtered out)
	Malformed      int // non-empty rows that could not be parsed and were skipped
	FirstMalformed int // 1-based line number of the first malformed row; 0 when none
	Header         bool
}

// AppendSockets parses a whole /proc/net/{tcp,tcp6,udp,udp6} table held in data and appends
// the rows whose state is in want to dst. Malformed rows are skipped and counted; they never
// hide the valid rows around them. Rows filtered out by want are validated only up to their
// state field. Both address widths are accepted in one table.
//
// The layout is the one printed by the kernel's tcp4_seq_show / tcp6_seq_show
// (net/ipv4/tcp_ipv4.c, net/ipv6/tcp_ipv6.c): "sl: local rem st tx:rx tr:when retr uid timeout inode ...",
// addresses as %08X words in host byte order, ports as %04X.
func AppendSockets(dst []Socket, data []byte, want States) ([]Socket, TableStats) {
	var st TableStats
	line := 0
	for len(data) > 0 {
		var row []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			row, data = data[:i], data[i+1:]
		} else {
			row, data = data, nil
		}
		line++
		dst = appendRow(dst, row, want, &st, line)
	}
	return dst, st
}

func appendRow(dst []Socket, row []byte, want States, st *TableStats, line int) []Socket {
	s, keep, res := parseRow(row, want)
	switch res {
	case rowBlank:
	case rowHeader:
		st.Header = true
	case rowBad:
		st.Malformed++
		if st.FirstMalformed == 0 {
			st.FirstMalformed = line
		}
	case rowOK:
		st.Rows++
		if keep {
			dst = append(dst, s)
		}
	}
	return dst
}

// ParseSocketTable is AppendSockets over a stream, for callers holding an io.Reader. It
// reads in bounded chunks (memory stays at 64 KiB whatever the input); a single row longer
// than that is skipped and counted as malformed.
func ParseSocketTable(r io.Reader, want States, dst []Socket) ([]Socket, TableStats, error) {
	const max = 64 << 10
	back := make([]byte, max)
	var st TableStats
	line, have := 0, 0
	skipping := false // inside an over-long row: drop bytes up to its newline
	for {
		n, err := r.Read(back[have:])
		have += n
		data := back[:have]
		for {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				break
			}
			line++
			if skipping {
				skipping = false
			} else {
				dst = appendRow(dst, data[:i], want, &st, line)
			}
			data = data[i+1:]
		}
		have = copy(back, data) // keep the partial row
		if have == max {        // no newline in a full buffer: an over-long row
			if !skipping {
				st.Malformed++
				if st.FirstMalformed == 0 {
					st.FirstMalformed = line + 1
				}
			}
			skipping, have = true, 0
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return dst, st, err
			}
			if have > 0 && !skipping {
				line++
				dst = appendRow(dst, back[:have], want, &st, line)
			}
			return dst, st, nil
		}
	}
}

type rowResult uint8

const (
	rowBlank rowResult = iota
	rowHeader
	rowBad
	rowOK
)

func parseRow(b []byte, want States) (s Socket, keep bool, res rowResult) {
	i := skipSpace(b, 0)
	if i == len(b) {
		return s, false, rowBlank
	}
	if b[i] == 's' && i+1 < len(b) && b[i+1] == 'l' {
		return s, false, rowHeader
	}
	// "sl:" slot number.
	j := i
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	if j == i || j >= len(b) || b[j] != ':' {
		return s, false, rowBad
	}
	i = skipSpace(b, j+1)
	addr, port, n, ok := parseAddrPort(b[i:])
	if !ok {
		return s, false, rowBad
	}
	i = skipSpace(b, i+n)
	if _, _, n, ok = parseAddrPort(b[i:]); !ok {
		return s, false, rowBad
	}
	i = skipSpace(b, i+n)
	if i+2 > len(b) || !isHex(b[i]) || !isHex(b[i+1]) || (i+2 < len(b) && b[i+2] != ' ') {
		return s, false, rowBad
	}
	state := State(unhex(b[i])<<4 | unhex(b[i+1]))
	if !want.Has(state) {
		return s, false, rowOK
	}
	i = skipSpace(b, i+2)
	// tx_queue:rx_queue, tr:tm->when, retrnsmt.
	for k := 0; k < 3; k++ {
		e := tokenEnd(b, i)
		if e == i {
			return s, false, rowBad
		}
		i = skipSpace(b, e)
	}
	uid, e, ok := parseDec(b, i)
	if !ok || uid > 1<<32-1 {
		return s, false, rowBad
	}
	i = skipSpace(b, e)
	if e = tokenEnd(b, i); e == i { // timeout
		return s, false, rowBad
	}
	i = skipSpace(b, e)
	inode, _, ok := parseDec(b, i)
	if !ok {
		return s, false, rowBad
	}
	return Socket{Addr: addr, Port: port, State: state, UID: uint32(uid), Inode: inode}, true, rowOK
}

// parseAddrPort parses "HHHHHHHH:PPPP" or "32×H:PPPP" and returns the bytes consumed.
func parseAddrPort(b []byte) (netip.Addr, uint16, int, bool) {
	n := 0
	for n < len(b) && b[n] != ':' {
		if !isHex(b[n]) {
			return netip.Addr{}, 0, 0, false
		}
		n++
	}
	if n >= len(b) || n+5 > len(b) {
		return netip.Addr{}, 0, 0, false
	}
	var addr netip.Addr
	switch n {
	case 8:
		var a [4]byte
		binary.NativeEndian.PutUint32(a[:], hex32(b[:8]))
		addr = netip.AddrFrom4(a)
	case 32:
		var a [16]byte
		for w := 0; w < 4; w++ {
			binary.NativeEndian.PutUint32(a[w*4:], hex32(b[w*8:w*8+8]))
		}
		addr = netip.AddrFrom16(a)
	default:
		return netip.Addr{}, 0, 0, false
	}
	p := b[n+1 : n+5]
	if !isHex(p[0]) || !isHex(p[1]) || !isHex(p[2]) || !isHex(p[3]) {
		return netip.Addr{}, 0, 0, false
	}
	if n+5 < len(b) && b[n+5] != ' ' {
		return netip.Addr{}, 0, 0, false
	}
	port := uint16(unhex(p[0]))<<12 | uint16(unhex(p[1]))<<8 | uint16(unhex(p[2]))<<4 | uint16(unhex(p[3]))
	return addr, port, n + 5, true
}

func hex32(b []byte) uint32 {
	var v uint32
	for _, c := range b {
		v = v<<4 | uint32(unhex(c))
	}
	return v
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

func tokenEnd(b []byte, i int) int {
	for i < len(b) && b[i] != ' ' && b[i] != '\t' && b[i] != '\r' {
		i++
	}
	return i
}

func parseDec(b []byte, i int) (uint64, int, bool) {
	start := i
	var v uint64
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		if v > (1<<64-1)/10 {
			return 0, i, false
		}
		v = v*10 + uint64(b[i]-'0')
		i++
	}
	if i == start || (i < len(b) && b[i] != ' ' && b[i] != '\t' && b[i] != '\r') {
		return 0, i, false
	}
	return v, i, true
}
