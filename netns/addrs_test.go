package netns

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// From this machine's /proc/net/fib_trie, with a pod address added.
const fibTrie = `Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     |-- 10.244.0.5
        /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
     +-- 127.0.0.0/31 1 0 0
        |-- 127.0.0.1
           /32 host LOCAL
`

const ifInet6 = `00000000000000000000000000000001 01 80 10 80       lo
fe80000000000000a8e5c2fffe6b1b7f 02 40 20 80     eth0
fd000000000000000000000000000005 02 80 00 80     eth0
garbage
`

func TestParseFibTrieLocal(t *testing.T) {
	got, err := ParseFibTrieLocal(strings.NewReader(fibTrie))
	require.NoError(t, err)
	assert.Equal(t, []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.244.0.5")}, got)
}

func TestParseIfInet6(t *testing.T) {
	got, err := ParseIfInet6(strings.NewReader(ifInet6))
	require.NoError(t, err)
	assert.Equal(t, []netip.Addr{netip.MustParseAddr("::1"), netip.MustParseAddr("fe80::a8e5:c2ff:fe6b:1b7f"), netip.MustParseAddr("fd00::5")}, got)
}

func TestParseNetnsLink(t *testing.T) {
	ino, err := ParseNetnsLink("net:[4026532201]")
	require.NoError(t, err)
	assert.Equal(t, uint64(4026532201), ino)
	for _, bad := range []string{"", "net:[]", "mnt:[4026532201]", "net:[0]", "net:[-1]", "net:[12", "net:[x]"} {
		_, err := ParseNetnsLink(bad)
		assert.Error(t, err, bad)
	}
}

func FuzzParseAddrFiles(f *testing.F) {
	f.Add(fibTrie)
	f.Add(ifInet6)
	f.Add("|-- 1.2.3.4\n/32 host LOCAL\n|-- ::1\n/32 host LOCAL\n")
	f.Fuzz(func(t *testing.T, in string) {
		v4, err := ParseFibTrieLocal(strings.NewReader(in))
		if err == nil {
			for _, a := range v4 {
				if !a.Is4() {
					t.Fatalf("fib_trie gave non-IPv4 %v", a)
				}
			}
		}
		v6, err := ParseIfInet6(strings.NewReader(in))
		if err == nil {
			for _, a := range v6 {
				if !a.Is6() {
					t.Fatalf("if_inet6 gave %v", a)
				}
			}
		}
	})
}

func FuzzParseNetnsLink(f *testing.F) {
	f.Add("net:[4026532201]")
	f.Add("net:[]")
	f.Fuzz(func(t *testing.T, in string) {
		ino, err := ParseNetnsLink(in)
		if err == nil && (ino == 0 || !strings.HasPrefix(in, "net:[")) {
			t.Fatalf("accepted %q as %d", in, ino)
		}
	})
}
