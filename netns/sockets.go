package netns

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
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
	// Header is true when the first non-blank line is the kernel's header ("sl
	// local_address ..."), as every kernel prints it. A header anywhere else is a
	// malformed row.
	Header bool
	// Bytes is how much of the table was consumed.
	Bytes int64
	// Truncated is true when the read stopped at its byte cap before the table's end; a
	// row cut by the cap is dropped, not counted.
	Truncated bool
}

// AppendSockets parses a whole /proc/net/{tcp,tcp6,udp,udp6} table held in data and appends
// the rows whose state is in want to dst. Malformed rows are skipped and counted; they never
// hide the valid rows around them. Rows filtered out by want are validated only up to their
// state field. Both address widths are accepted in one table.
//
// The layout is the one printed by the kernel's tcp4_seq_show / tcp6_seq_show
// (net/ipv4/tcp_ipv4.c, net/ipv6/tcp_ipv6.c): a header line first, then rows
// "sl: local rem st tx:rx tr:when retr uid timeout inode ...", addresses as %08X words in
// host byte order, ports as %04X.
func AppendSockets(dst []Socket, data []byte, want States) ([]Socket, TableStats) {
	st := TableStats{Bytes: int64(len(data))}
	var rs rowState
	for len(data) > 0 {
		var row []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			row, data = data[:i], data[i+1:]
		} else {
			row, data = data, nil
		}
		dst = rs.add(dst, row, want, &st)
	}
	return dst, st
}

// rowState follows the lines of one table.
type rowState struct {
	line    int  // 1-based number of the last line seen
	started bool // a non-blank line was seen
}

// add parses one line (without its newline).
func (rs *rowState) add(dst []Socket, row []byte, want States, st *TableStats) []Socket {
	rs.line++
	s, keep, res := parseRow(row, want)
	if res == rowBlank {
		return dst
	}
	if res == rowHeader {
		if !rs.started {
			rs.started, st.Header = true, true
			return dst
		}
		res = rowBad // a kernel prints one header, first
	}
	rs.started = true
	switch res {
	case rowBad:
		rs.malformed(st, rs.line)
	case rowOK:
		st.Rows++
		if keep {
			dst = append(dst, s)
		}
	}
	return dst
}

func (rs *rowState) malformed(st *TableStats, line int) {
	rs.started = true
	st.Malformed++
	if st.FirstMalformed == 0 {
		st.FirstMalformed = line
	}
}

// tableBufSize is the working buffer of the streaming parser: memory per table read stays
// at this whatever the table's size, and a row longer than it is skipped as malformed
// (kernel rows are < 300 bytes).
const tableBufSize = 64 << 10

// ParseSocketTable is AppendSockets over a stream, for callers holding an io.Reader. It
// reads in bounded chunks (memory stays at 64 KiB whatever the input) and at most
// DefaultMaxTableBytes (then TableStats.Truncated is set); a single row longer than 64 KiB
// is skipped and counted as malformed.
func ParseSocketTable(r io.Reader, want States, dst []Socket) ([]Socket, TableStats, error) {
	bp := tableBufs.Get().(*[]byte)
	defer tableBufs.Put(bp)
	return scanTable(r, *bp, DefaultMaxTableBytes, want, dst)
}

// tableBufs holds *[]byte of tableBufSize for the io.Reader entry points (ParseSocketTable,
// Listeners.AddTable); ProcReader pools its own with its path buffer.
var tableBufs = sync.Pool{New: func() any { b := make([]byte, tableBufSize); return &b }}

// errNoProgress: a reader that keeps returning no data and no error.
var errNoProgress = errors.New("socket table reader returned no data 100 times in a row")

// scanTable is the one streaming table parser: it reads r through buf (its only working
// memory), consuming at most limit bytes, and appends the rows whose state is in want to
// dst. It is generic so that ProcReader's fdReader is called directly, without an
// interface conversion that would allocate.
func scanTable[R io.Reader](r R, buf []byte, limit int64, want States, dst []Socket) ([]Socket, TableStats, error) {
	var st TableStats
	var rs rowState
	have := 0
	skipping := false // inside an over-long row: drop bytes up to its newline
	empty := 0
	for {
		room := int64(len(buf) - have)
		if left := limit - st.Bytes; left < room {
			room = left
		}
		if room <= 0 {
			// The cap: whatever follows is unseen, and the row in buf[:have] may be cut.
			st.Truncated = true
			return dst, st, nil
		}
		n, err := r.Read(buf[have : have+int(room)])
		if n < 0 || int64(n) > room {
			return dst, st, fmt.Errorf("socket table reader returned %d bytes for a %d-byte buffer", n, room)
		}
		if n == 0 && err == nil {
			if empty++; empty >= 100 {
				return dst, st, errNoProgress
			}
			continue
		}
		empty = 0
		have += n
		st.Bytes += int64(n)
		data := buf[:have]
		for {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				break
			}
			if skipping {
				skipping = false
				rs.line++
			} else {
				dst = rs.add(dst, data[:i], want, &st)
			}
			data = data[i+1:]
		}
		have = copy(buf, data) // keep the partial row
		if have == len(buf) {  // no newline in a full buffer: an over-long row
			if !skipping {
				rs.malformed(&st, rs.line+1)
			}
			skipping, have = true, 0
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return dst, st, err
			}
			if have > 0 && !skipping {
				dst = rs.add(dst, buf[:have], want, &st)
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
	if isHeader(b[i:]) {
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

// isHeader reports whether a line (leading blanks removed) is the header every kernel
// prints first: "sl", blanks, "local_address" (tcp, tcp6, udp and udp6 alike).
func isHeader(b []byte) bool {
	if len(b) < 3 || b[0] != 's' || b[1] != 'l' || (b[2] != ' ' && b[2] != '\t') {
		return false
	}
	return bytes.HasPrefix(b[skipSpace(b, 2):], []byte("local_address"))
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
