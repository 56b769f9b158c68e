//go:build linux

package netns

import (
	"encoding/binary"
	"net/netip"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// nlMsg builds one netlink message with a correct length, padded to NLMSG_ALIGN.
func nlMsg(typ uint16, seq uint32, payload []byte) []byte {
	ne := binary.NativeEndian
	m := make([]byte, nlmsgHdrLen, nlmsgHdrLen+len(payload)+3)
	ne.PutUint32(m[0:], uint32(nlmsgHdrLen+len(payload)))
	ne.PutUint16(m[4:], typ)
	ne.PutUint16(m[6:], 0x2) // NLM_F_MULTI
	ne.PutUint32(m[8:], seq)
	ne.PutUint32(m[12:], 4242)
	m = append(m, payload...)
	for len(m)%4 != 0 {
		m = append(m, 0)
	}
	return m
}

// diagMsg builds a struct inet_diag_msg as the kernel sends it (inet_sk_diag_fill), with
// the always-present INET_DIAG_SHUTDOWN attribute after it.
func diagMsg(ap netip.AddrPort, state State, uid, inode uint32) []byte {
	ne := binary.NativeEndian
	p := make([]byte, inetDiagMsgLen)
	a := ap.Addr()
	if a.Is4() {
		p[0] = syscall.AF_INET
		v := a.As4()
		copy(p[8:], v[:])
	} else {
		p[0] = syscall.AF_INET6
		v := a.As16()
		copy(p[8:], v[:])
	}
	p[1] = byte(state)
	binary.BigEndian.PutUint16(p[4:], ap.Port())
	binary.BigEndian.PutUint16(p[6:], 0)
	ne.PutUint32(p[64:], uid)
	ne.PutUint32(p[68:], inode)
	// rtattr INET_DIAG_SHUTDOWN (8), u8 0, padded.
	return append(p, 5, 0, 8, 0, 0, 0, 0, 0)
}

func done(seq uint32, errno int32) []byte {
	var p [4]byte
	binary.NativeEndian.PutUint32(p[:], uint32(errno))
	return nlMsg(nlmsgDone, seq, p[:])
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func TestParseDiagMessages(t *testing.T) {
	const seq = 7
	v6 := nlMsg(sockDiagByFamily, seq, diagMsg(netip.MustParseAddrPort("[::]:15001"), StateListen, 0, 4113))
	v4 := nlMsg(sockDiagByFamily, seq, diagMsg(netip.MustParseAddrPort("127.0.0.1:15053"), StateListen, 1337, 4114))
	mapped := nlMsg(sockDiagByFamily, seq, diagMsg(netip.MustParseAddrPort("[::ffff:10.0.0.5]:8080"), StateListen, 0, 1<<32-1))

	got, rows, fin, err := parseDiagMessages(cat(v6, v4, mapped, done(seq, 0)), seq, nil)
	require.NoError(t, err)
	assert.True(t, fin)
	assert.Equal(t, 3, rows)
	assert.Equal(t, []Socket{
		{Addr: netip.IPv6Unspecified(), Port: 15001, State: StateListen, UID: 0, Inode: 4113},
		{Addr: netip.MustParseAddr("127.0.0.1"), Port: 15053, State: StateListen, UID: 1337, Inode: 4114},
		{Addr: netip.MustParseAddr("::ffff:10.0.0.5"), Port: 8080, State: StateListen, Inode: 1<<32 - 1},
	}, got)
	assert.True(t, IsZtunnelListener(got[0]) && IsZtunnelListener(got[1]))

	// A multipart dump spread over datagrams: not done until NLMSG_DONE.
	got, rows, fin, err = parseDiagMessages(v6, seq, nil)
	require.NoError(t, err)
	assert.False(t, fin)
	assert.Equal(t, 1, rows)
	got, _, fin, err = parseDiagMessages(cat(nlMsg(nlmsgNoop, seq, nil), v4, done(seq, 0)), seq, got)
	require.NoError(t, err)
	assert.True(t, fin)
	assert.Len(t, got, 2)

	// An empty dump, and a DONE without payload (old kernels).
	got, rows, fin, err = parseDiagMessages(done(seq, 0), seq, nil)
	require.NoError(t, err)
	assert.True(t, fin)
	assert.Zero(t, rows)
	assert.Empty(t, got)
	_, _, fin, err = parseDiagMessages(nlMsg(nlmsgDone, seq, nil), seq, nil)
	require.NoError(t, err)
	assert.True(t, fin)

	// A non-LISTEN socket is counted, not returned.
	est := nlMsg(sockDiagByFamily, seq, diagMsg(netip.MustParseAddrPort("10.0.0.5:41000"), StateEstablished, 0, 9))
	got, rows, _, err = parseDiagMessages(cat(est, v4), seq, nil)
	require.NoError(t, err)
	assert.Equal(t, 2, rows)
	assert.Len(t, got, 1)

	// The last message of a datagram without its alignment padding.
	odd := nlMsg(sockDiagByFamily, seq, append(diagMsg(netip.MustParseAddrPort("[::]:15008"), StateListen, 0, 1), 0xAA))
	trimmed := odd[:nlmsgHdrLen+inetDiagMsgLen+8+1]
	got, rows, fin, err = parseDiagMessages(trimmed, seq, nil)
	require.NoError(t, err)
	assert.False(t, fin)
	assert.Equal(t, 1, rows)
	assert.Equal(t, uint16(15008), got[0].Port)
}

func TestParseDiagMessagesErrors(t *testing.T) {
	const seq = 9
	ok := nlMsg(sockDiagByFamily, seq, diagMsg(netip.MustParseAddrPort("[::]:15001"), StateListen, 0, 1))
	setLen := func(m []byte, n uint32) []byte {
		m = append([]byte(nil), m...)
		binary.NativeEndian.PutUint32(m, n)
		return m
	}
	badFamily := append([]byte(nil), ok...)
	badFamily[nlmsgHdrLen] = 99
	nlErr := make([]byte, 4+nlmsgHdrLen)
	e := -int32(syscall.EINVAL)
	binary.NativeEndian.PutUint32(nlErr, uint32(e))
	ack := make([]byte, 4+nlmsgHdrLen)

	for name, tc := range map[string]struct {
		in       []byte
		wantDone bool
		errno    syscall.Errno
	}{
		"short header":         {in: ok[:10]},
		"trailing bytes":       {in: cat(ok, []byte{1, 2, 3})},
		"length below header":  {in: setLen(ok, 15)},
		"length zero":          {in: setLen(ok, 0)},
		"length past datagram": {in: setLen(ok, uint32(len(ok)+4))},
		"length huge":          {in: setLen(ok, 0xFFFFFFFF)},
		"short inet_diag_msg":  {in: nlMsg(sockDiagByFamily, seq, make([]byte, inetDiagMsgLen-1))},
		"unknown family":       {in: badFamily},
		"wrong sequence":       {in: nlMsg(sockDiagByFamily, seq+1, diagMsg(netip.MustParseAddrPort("[::]:1"), StateListen, 0, 1))},
		"unexpected type":      {in: nlMsg(99, seq, nil)},
		"overrun":              {in: nlMsg(nlmsgOverrun, seq, nil)},
		"error message":        {in: nlMsg(nlmsgError, seq, nlErr), wantDone: true, errno: syscall.EINVAL},
		"short error message":  {in: nlMsg(nlmsgError, seq, []byte{1})},
		"ack in a dump":        {in: nlMsg(nlmsgError, seq, ack)},
		"done with error":      {in: cat(ok, done(seq, -int32(syscall.EINTR))), wantDone: true, errno: syscall.EINTR},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, fin, err := parseDiagMessages(tc.in, seq, nil)
			require.Error(t, err)
			assert.Equal(t, tc.wantDone, fin)
			if tc.errno != 0 {
				assert.ErrorIs(t, err, tc.errno)
			}
		})
	}
}

func TestDiagRequest(t *testing.T) {
	var b [nlmsgHdrLen + inetDiagReqV2Len]byte
	diagRequest(&b, syscall.AF_INET6, 0x01020304)
	ne := binary.NativeEndian
	assert.Equal(t, uint32(72), ne.Uint32(b[0:]), "nlmsg_len")
	assert.Equal(t, uint16(20), ne.Uint16(b[4:]), "SOCK_DIAG_BY_FAMILY")
	assert.Equal(t, uint16(0x301), ne.Uint16(b[6:]), "NLM_F_REQUEST|NLM_F_DUMP")
	assert.Equal(t, uint32(0x01020304), ne.Uint32(b[8:]))
	assert.Equal(t, byte(syscall.AF_INET6), b[16])
	assert.Equal(t, byte(syscall.IPPROTO_TCP), b[17])
	assert.Equal(t, uint32(1<<10), ne.Uint32(b[20:]), "idiag_states = 1<<TCP_LISTEN")
	assert.Equal(t, make([]byte, 48), b[24:], "no socket id filter")
}

func FuzzParseDiag(f *testing.F) {
	const seq = 3
	v6 := nlMsg(sockDiagByFamily, seq, diagMsg(netip.MustParseAddrPort("[::]:15001"), StateListen, 0, 4113))
	v4 := nlMsg(sockDiagByFamily, seq, diagMsg(netip.MustParseAddrPort("127.0.0.1:15053"), StateListen, 0, 4114))
	f.Add(cat(v6, v4, done(seq, 0)))
	f.Add(cat(v6, nlMsg(nlmsgNoop, seq, nil)))
	f.Add(done(seq, -4))
	f.Add(nlMsg(nlmsgError, seq, make([]byte, 20)))
	f.Add(v6[:nlmsgHdrLen+3])
	f.Fuzz(func(t *testing.T, in []byte) {
		got, rows, fin, err := parseDiagMessages(in, seq, nil)
		if len(got) > rows {
			t.Fatalf("%d sockets from %d messages", len(got), rows)
		}
		if rows > len(in)/(nlmsgHdrLen+inetDiagMsgLen) {
			t.Fatalf("%d messages from %d bytes", rows, len(in))
		}
		for _, s := range got {
			if s.State != StateListen || !s.Addr.IsValid() {
				t.Fatalf("bad socket %v", s)
			}
		}
		if err == nil && !fin && len(in) > 0 && rows == 0 {
			// Only NOOPs can make a non-empty, error-free, unfinished datagram without sockets.
			for off := 0; off < len(in); {
				mlen := int(binary.NativeEndian.Uint32(in[off:]))
				if binary.NativeEndian.Uint16(in[off+4:]) != nlmsgNoop {
					t.Fatalf("message at %d silently ignored", off)
				}
				off += min((mlen+3)&^3, len(in)-off)
			}
		}
	})
}
