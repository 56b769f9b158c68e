package netns

import (
	"bytes"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Rows read from this project's own test netns on Linux 6.18 (x86_64): ztunnel-like
// listeners on [::]:15001 and 127.0.0.1:15053.
const (
	realTCP6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n" +
		"   0: 00000000000000000000000000000000:3A99 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4113 1 00000000db8471f5 100 0 0 10 0\n"
	realTCP = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     \n" +
		"   0: 0100007F:3ACD 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4114 1 000000002464a8f9 100 0 0 10 0                      \n"
)

func TestAppendSocketsRealRows(t *testing.T) {
	socks, st := AppendSockets(nil, []byte(realTCP6), 0)
	require.Len(t, socks, 1)
	assert.Equal(t, Socket{Addr: netip.IPv6Unspecified(), Port: 15001, State: StateListen, UID: 0, Inode: 4113}, socks[0])
	assert.Equal(t, TableStats{Rows: 1, Header: true, Bytes: int64(len(realTCP6))}, st)

	socks, st = AppendSockets(nil, []byte(realTCP), 0)
	require.Len(t, socks, 1)
	assert.Equal(t, netip.MustParseAddr("127.0.0.1"), socks[0].Addr)
	assert.Equal(t, uint16(15053), socks[0].Port)
	assert.Equal(t, uint64(4114), socks[0].Inode)
	assert.Zero(t, st.Malformed)
}

func TestAppendSocketsAddresses(t *testing.T) {
	rows := "" +
		"   0: 0500000A:1F90 0100000A:D431 01 00000000:00000000 00:00000000 00000000  1000        0 77 1 0 20 4 30 10 -1\n" + // 10.0.0.5:8080 est
		"   1: 00000000000000000000000001000000:3ACD 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 78 1 0 100 0 0 10 0\n" + // [::1]:15053
		"   2: 0000000000000000FFFF00000500000A:3AA0 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 79 1 0 100 0 0 10 0\n" + // [::ffff:10.0.0.5]:15008
		"   3: 000080FE00000000FF01A8C0FE5D0A00:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 80 1 0 100 0 0 10 0\n" // fe80::c0a8:1ff:fe0a:5d00? see below
	socks, st := AppendSockets(nil, []byte(rows), 0)
	require.Equal(t, 4, st.Rows, "%+v", st)
	assert.Equal(t, "10.0.0.5:8080", netip.AddrPortFrom(socks[0].Addr, socks[0].Port).String())
	assert.Equal(t, StateEstablished, socks[0].State)
	assert.Equal(t, uint32(1000), socks[0].UID)
	assert.Equal(t, "[::1]:15053", netip.AddrPortFrom(socks[1].Addr, socks[1].Port).String())
	assert.Equal(t, "[::ffff:10.0.0.5]:15008", netip.AddrPortFrom(socks[2].Addr, socks[2].Port).String())
	assert.True(t, socks[3].Addr.Is6() && socks[3].Addr.IsLinkLocalUnicast(), socks[3].Addr.String())

	only, _ := AppendSockets(nil, []byte(rows), StatesOf(StateListen))
	assert.Len(t, only, 3)
}

func TestAppendSocketsMalformedRowsDoNotHideValidOnes(t *testing.T) {
	in := realTCP6 +
		"garbage line\n" +
		"   1: 00000000000000000000000000000000:3A9E\n" + // truncated
		"   2: 0000000000000000000000000000000:3A9E 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 5 1\n" + // 31 hex
		"   3: 00000000000000000000000000000000:3AA0 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4115 1 0 100 0 0 10 0\n" +
		"   4: 00000000000000000000000000000000:3AZ0 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 6 1\n" +
		"   5: 00000000000000000000000000000000:3A9E 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 notanumber 1\n" +
		"\n\r\n" +
		"   6: 00000000000000000000000000000000:3A9E 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4116 1 0 100 0 0 10 0" // no final newline
	socks, st := AppendSockets(nil, []byte(in), StatesOf(StateListen))
	var ports []uint16
	for _, s := range socks {
		ports = append(ports, s.Port)
	}
	assert.Equal(t, []uint16{15001, 15008, 15006}, ports)
	assert.Equal(t, 5, st.Malformed)
	assert.Equal(t, 3, st.FirstMalformed)
	assert.Equal(t, 3, st.Rows)
}

func TestParseSocketTableMatchesAppendSockets(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 3000; i++ {
		b.WriteString(realTCP6[strings.IndexByte(realTCP6, '\n')+1:])
		if i%97 == 0 {
			b.WriteString("junk\n")
		}
	}
	in := realTCP6 + b.String()
	want, wantSt := AppendSockets(nil, []byte(in), 0)
	for name, r := range map[string]io.Reader{
		"whole":    strings.NewReader(in),
		"one byte": iotest.OneByteReader(strings.NewReader(in)),
		"half":     iotest.HalfReader(strings.NewReader(in)),
	} {
		got, st, err := ParseSocketTable(r, 0, nil)
		require.NoError(t, err, name)
		assert.Equal(t, wantSt, st, name)
		assert.Equal(t, want, got, name)
	}
}

func TestParseSocketTableBoundsLongRows(t *testing.T) {
	long := "   9: " + strings.Repeat("0", 200<<10) + "\n"
	in := realTCP6 + long + realTCP6[strings.IndexByte(realTCP6, '\n')+1:]
	got, st, err := ParseSocketTable(strings.NewReader(in), 0, nil)
	require.NoError(t, err)
	assert.Len(t, got, 2)
	assert.Equal(t, 1, st.Malformed)
	assert.Equal(t, 3, st.FirstMalformed)

	_, _, err = ParseSocketTable(iotest.ErrReader(io.ErrUnexpectedEOF), 0, nil)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func FuzzAppendSockets(f *testing.F) {
	f.Add([]byte(realTCP6))
	f.Add([]byte(realTCP))
	f.Add([]byte("   0: 0500000A:1F90 0100000A:D431 01 00000000:00000000 00:00000000 00000000  1000        0 77 1\n"))
	f.Add([]byte("sl\n\n 1:  :\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		all, st := AppendSockets(nil, in, 0)
		if len(all) != st.Rows {
			t.Fatalf("%d sockets for %d rows", len(all), st.Rows)
		}
		listen, _ := AppendSockets(nil, in, StatesOf(StateListen))
		for _, s := range listen {
			if s.State != StateListen {
				t.Fatalf("state filter let %v through", s)
			}
		}
		// The streaming parser agrees with the buffer parser (rows < 64 KiB).
		if len(in) < 60<<10 {
			got, gst, err := ParseSocketTable(bytes.NewReader(in), 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			if gst != st || len(got) != len(all) {
				t.Fatalf("stream %+v/%d vs buffer %+v/%d", gst, len(got), st, len(all))
			}
		}
	})
}

func TestParseStartTime(t *testing.T) {
	for in, want := range map[string]uint64{
		"1 (systemd) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 42 1000 1 18446744073709551615\n": 42,
		"77 (a b) c)) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 100\n":                123456,
	} {
		got, err := parseStartTime([]byte(in))
		require.NoError(t, err, in)
		assert.Equal(t, want, got)
	}
	for _, in := range []string{"", "1 (x S 1", "1 (x) S 1 2 3", "1 (x) S 1 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 notnum 1"} {
		_, err := parseStartTime([]byte(in))
		assert.Error(t, err, in)
	}
}

func FuzzParseStartTime(f *testing.F) {
	f.Add([]byte("77 (a b) c)) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 100\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		_, _ = parseStartTime(in)
	})
}

// chunkReader hands out data a few bytes at a time and counts what it gave.
type chunkReader struct {
	data  []byte
	chunk int
	given int64
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), c.chunk, len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	c.given += int64(n)
	return n, nil
}

// malformedRow is a line parseRow rejects: neither blank, nor a header, nor a row.
const malformedRow = "  9: zz"

// insertLine inserts line after the k-th line boundary of data (k taken modulo the number
// of boundaries), keeping every other line intact.
func insertLine(data []byte, k int, line string) []byte {
	var bounds []int // offsets where a line may start
	bounds = append(bounds, 0)
	for i, c := range data {
		if c == '\n' {
			bounds = append(bounds, i+1)
		}
	}
	at := bounds[k%len(bounds)]
	out := append([]byte(nil), data[:at]...)
	if at == len(data) && at > 0 && data[at-1] != '\n' {
		out = append(out, '\n')
	}
	out = append(out, line...)
	out = append(out, '\n')
	return append(out, data[at:]...)
}

// FuzzTableEvidence drives the bounded reader and parser with arbitrary bytes, a
// arbitrary byte cap, working buffer and chunking, and checks the evidence rules:
//   - it never panics and never consumes more than the cap, and Stats.Bytes says what
//     it consumed; a table not cut was consumed whole;
//   - the stream parser agrees with the buffer parser when nothing is cut;
//   - the file path (ProcReader: open, type check, fd reads) and the io.Reader path
//     (ListenersFromTables) reach the same Listeners;
//   - monotonic: a malformed row added to tcp6 can never turn the verdict into partial or
//     none, nor an unknown into anything else, nor add a listener.
func FuzzTableEvidence(f *testing.F) {
	f.Add([]byte(realTCP6), []byte(realTCP), uint16(65535), uint8(200), uint8(255), uint16(1))
	f.Add([]byte(""), []byte(""), uint16(100), uint8(3), uint8(0), uint16(0))
	f.Add([]byte(realTCP6[:strings.IndexByte(realTCP6, '\n')+1]), []byte(realTCP), uint16(300), uint8(7), uint8(1), uint16(2))
	f.Add([]byte("garbage\n"+realTCP6), []byte(realTCP[strings.IndexByte(realTCP, '\n')+1:]), uint16(4000), uint8(64), uint8(9), uint16(5))
	f.Add([]byte("\n\n"+realTCP6+realTCP6), []byte(realTCP+"junk"), uint16(200), uint8(1), uint8(2), uint16(3))

	dir := f.TempDir()
	if err := os.MkdirAll(dir+"/7/net", 0o755); err != nil {
		f.Fatal(err)
	}
	fsys := FS{root: dir, ident: IdentityNsfs}
	reader := NewProcReader(fsys)

	f.Fuzz(func(t *testing.T, tcp6, tcp []byte, capSeed uint16, chunk, bufSeed uint8, at uint16) {
		limit := int64(capSeed) + 1
		bufSize := 16 + int(bufSeed)*4

		cr := &chunkReader{data: tcp6, chunk: int(chunk)%61 + 1}
		socks, st, err := scanTable(cr, make([]byte, bufSize), limit, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if cr.given > limit || st.Bytes != cr.given {
			t.Fatalf("consumed %d bytes, stats say %d, cap %d", cr.given, st.Bytes, limit)
		}
		if !st.Truncated && cr.given != int64(len(tcp6)) {
			t.Fatalf("not truncated but %d of %d bytes consumed", cr.given, len(tcp6))
		}
		if st.Truncated && int64(len(tcp6)) < limit {
			t.Fatalf("truncated a %d-byte table under a %d-byte cap", len(tcp6), limit)
		}
		if len(socks) != st.Rows {
			t.Fatalf("%d sockets for %d rows", len(socks), st.Rows)
		}
		longest := 0
		for _, line := range bytes.Split(tcp6, []byte("\n")) {
			longest = max(longest, len(line))
		}
		if !st.Truncated && longest < bufSize {
			all, bst := AppendSockets(nil, tcp6, 0)
			if bst != st || len(all) != len(socks) {
				t.Fatalf("stream %+v/%d vs buffer %+v/%d", st, len(socks), bst, len(all))
			}
		}

		opt := ReadOptions{Full: true, MaxTableBytes: limit}
		l := ListenersFromTables(bytes.NewReader(tcp6), bytes.NewReader(tcp), opt)
		if err := os.WriteFile(dir+"/7/net/tcp6", tcp6, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir+"/7/net/tcp", tcp, 0o644); err != nil {
			t.Fatal(err)
		}
		fl, err := reader.Listeners(7, opt)
		if err != nil {
			t.Fatal(err)
		}
		if fl.TCP6.Status != l.TCP6.Status || fl.TCP.Status != l.TCP.Status || fl.TCP6.Stats != l.TCP6.Stats ||
			fl.TCP.Stats != l.TCP.Stats || !slices.Equal(fl.Ports, l.Ports) || !slices.Equal(fl.Sockets, l.Sockets) {
			t.Fatalf("file path %+v\nreader path %+v", fl, l)
		}

		v1 := l.Capture(nil)
		l2 := ListenersFromTables(bytes.NewReader(insertLine(tcp6, int(at), malformedRow)), bytes.NewReader(tcp), opt)
		v2 := l2.Capture(nil)
		if v2 != Captured && v2 != CaptureUnknown {
			t.Fatalf("a malformed row made %s (was %s): %+v", v2, v1, l2)
		}
		if v1 == CaptureUnknown && v2 != CaptureUnknown {
			t.Fatalf("a malformed row turned unknown into %s", v2)
		}
		for _, p := range l2.Ports {
			if !l.Has(p) {
				t.Fatalf("a malformed row added listener %d: %v -> %v", p, l.Ports, l2.Ports)
			}
		}
	})
}
