package netns

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"slices"
)

// ParseFibTrieLocal returns the local IPv4 addresses of a /proc/net/fib_trie file: the
// leaves ("|-- 10.0.0.5") followed by a "/32 host LOCAL" entry. Unparsable lines are
// skipped; a leaf that is not an address is ignored.
func ParseFibTrieLocal(r io.Reader) ([]netip.Addr, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	var out []netip.Addr
	var last netip.Addr
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if rest, ok := bytes.CutPrefix(line, []byte("|-- ")); ok {
			last, _ = netip.ParseAddr(string(rest))
			continue
		}
		if bytes.HasPrefix(line, []byte("/32 host LOCAL")) && last.Is4() && !slices.Contains(out, last) {
			out = append(out, last)
		}
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("reading fib_trie: %w", err)
	}
	return out, nil
}

// ParseIfInet6 returns the addresses of a /proc/net/if_inet6 file (first field: 32 hex
// digits in network order). Malformed lines are skipped.
func ParseIfInet6(r io.Reader) ([]netip.Addr, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	var out []netip.Addr
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) == 0 || len(f[0]) != 32 {
			continue
		}
		var a [16]byte
		if _, err := hex.Decode(a[:], f[0]); err != nil {
			continue
		}
		if addr := netip.AddrFrom16(a); !slices.Contains(out, addr) {
			out = append(out, addr)
		}
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("reading if_inet6: %w", err)
	}
	return out, nil
}

// LocalAddrs returns the addresses configured in the netns of process pid, from
// net/fib_trie (IPv4) and net/if_inet6 (IPv6). A missing file contributes nothing (no
// IPv6 on the kernel); if both are missing the error says so.
func (f FS) LocalAddrs(pid int) ([]netip.Addr, error) {
	var out []netip.Addr
	missing := 0
	for _, t := range []struct {
		name  string
		limit int64
		parse func(io.Reader) ([]netip.Addr, error)
	}{{"net/fib_trie", maxFibTrieBytes, ParseFibTrieLocal}, {"net/if_inet6", maxIfInet6Bytes, ParseIfInet6}} {
		file, err := openCapped(f.pidPath(pid, t.name), t.limit)
		if errors.Is(err, fs.ErrNotExist) {
			missing++
			continue
		}
		if err != nil {
			return nil, err
		}
		addrs, err := t.parse(file)
		file.Close()
		if err != nil {
			return nil, err
		}
		out = append(out, addrs...)
	}
	if missing == 2 {
		return nil, fmt.Errorf("pid %d: neither net/fib_trie nor net/if_inet6: %w", pid, fs.ErrNotExist)
	}
	return out, nil
}

// HoldsAddr reports whether the netns of process pid has addr configured: the check
// newer istio-cni makes before trusting a netns for a pod (the netns must hold one of the
// pod's IPs).
func (f FS) HoldsAddr(pid int, addr netip.Addr) (bool, error) {
	addrs, err := f.LocalAddrs(pid)
	if err != nil {
		return false, err
	}
	return slices.Contains(addrs, addr.Unmap()) || slices.Contains(addrs, addr), nil
}
