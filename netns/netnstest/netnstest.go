// Package netnstest builds proc trees — directories laid out like /proc — for tests of code
// that reads pods' network namespaces through package netns, so they can run without root.
package netnstest

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// HostNetns is the netns inode NewTree gives PID 1 (the host netns).
const HostNetns uint64 = 4026531840

// Proc is one process of a proc tree. Nil table fields leave the file out.
type Proc struct {
	PID    int
	Comm   string // default "pause"
	Cgroup string // content of <pid>/cgroup, verbatim
	Start  uint64 // field 22 of <pid>/stat
	Netns  uint64 // inode behind <pid>/ns/net; 0 leaves the link out
	TCP    *string
	TCP6   *string
	Extra  map[string]string // more files under <pid>/, e.g. "net/fib_trie"
}

// Tree is a proc tree under a temporary directory.
type Tree struct {
	Root string
	tb   testing.TB
}

// NewTree makes a proc tree with PID 1 in the host netns and a systemd-like cgroup.
func NewTree(tb testing.TB) *Tree {
	tb.Helper()
	t := &Tree{Root: tb.TempDir(), tb: tb}
	t.Add(Proc{PID: 1, Comm: "systemd", Cgroup: "0::/init.scope\n", Start: 1, Netns: HostNetns})
	return t
}

// Add writes one process into the tree.
func (t *Tree) Add(p Proc) {
	t.tb.Helper()
	dir := filepath.Join(t.Root, strconv.Itoa(p.PID))
	comm := p.Comm
	if comm == "" {
		comm = "pause"
	}
	files := map[string]string{
		"cgroup": p.Cgroup,
		"stat":   Stat(p.PID, comm, p.Start),
	}
	if p.TCP != nil {
		files["net/tcp"] = *p.TCP
	}
	if p.TCP6 != nil {
		files["net/tcp6"] = *p.TCP6
	}
	for k, v := range p.Extra {
		files[k] = v
	}
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.tb.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.tb.Fatal(err)
		}
	}
	if p.Netns != 0 {
		if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
			t.tb.Fatal(err)
		}
		if err := os.Symlink(fmt.Sprintf("net:[%d]", p.Netns), filepath.Join(dir, "ns", "net")); err != nil {
			t.tb.Fatal(err)
		}
	}
}

// Place puts something at <pid>/<name> that a kernel's proc never holds there, replacing
// whatever was there: see Fifo, Symlink and Dir. The process directory must exist.
func (t *Tree) Place(pid int, name string, mk func(path string) error) string {
	t.tb.Helper()
	path := filepath.Join(t.Root, strconv.Itoa(pid), name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.tb.Fatal(err)
	}
	if err := os.RemoveAll(path); err != nil {
		t.tb.Fatal(err)
	}
	if err := mk(path); err != nil {
		t.tb.Fatal(err)
	}
	return path
}

// Fifo makes <pid>/<name> a FIFO with no writer: a plain open of it blocks until a writer
// comes, a plain read then blocks until it writes. The test's cleanup opens it for writing
// once, so a reader stuck in open (the bug the FIFO tests guard against) is released and
// the test binary can end.
func (t *Tree) Fifo(pid int, name string) string {
	t.tb.Helper()
	path := t.Place(pid, name, func(p string) error { return syscall.Mkfifo(p, 0o644) })
	t.tb.Cleanup(func() {
		if fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			syscall.Close(fd) // a reader waiting in open(2) returns, then reads EOF
		}
	})
	return path
}

// Symlink makes <pid>/<name> a symbolic link to target (e.g. "/dev/zero", or a file
// elsewhere in the tree).
func (t *Tree) Symlink(pid int, name, target string) string {
	t.tb.Helper()
	return t.Place(pid, name, func(p string) error { return os.Symlink(target, p) })
}

// Dir makes <pid>/<name> a directory.
func (t *Tree) Dir(pid int, name string) string {
	t.tb.Helper()
	return t.Place(pid, name, func(p string) error { return os.Mkdir(p, 0o755) })
}

// Remove deletes a process from the tree (it "exits").
func (t *Tree) Remove(pid int) {
	t.tb.Helper()
	if err := os.RemoveAll(filepath.Join(t.Root, strconv.Itoa(pid))); err != nil {
		t.tb.Fatal(err)
	}
}

// Stat renders a /proc/<pid>/stat line whose field 22 (starttime) is start.
func Stat(pid int, comm string, start uint64) string {
	// Fields 3..21 as a sleeping process would show them; 22 = starttime; then the rest.
	return fmt.Sprintf("%d (%s) S 1 %d %d 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 %d 1000000 100 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n", pid, comm, pid, pid, start)
}

// Ptr returns a pointer to s, for Proc's table fields.
func Ptr(s string) *string { return &s }

const (
	header4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	header6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
)

// Sock is one row for a table.
type Sock struct {
	Addr  netip.AddrPort
	State uint8 // 0x0A = LISTEN
	Inode uint64
}

// Listen is a LISTEN row on addr ("[::]:15001", "127.0.0.1:15053").
func Listen(addr string, inode uint64) Sock {
	return Sock{Addr: netip.MustParseAddrPort(addr), State: 0x0A, Inode: inode}
}

// Established is an ESTABLISHED row.
func Established(addr string, inode uint64) Sock {
	return Sock{Addr: netip.MustParseAddrPort(addr), State: 0x01, Inode: inode}
}

// TCP renders a /proc/net/tcp table (IPv4 rows only) the way the kernel prints it.
func TCP(rows ...Sock) string { return table(header4, false, rows) }

// TCP6 renders a /proc/net/tcp6 table; IPv4 addresses become v4-mapped.
func TCP6(rows ...Sock) string { return table(header6, true, rows) }

func table(header string, v6 bool, rows []Sock) string {
	var b strings.Builder
	b.WriteString(header)
	for i, r := range rows {
		remote := "00000000:0000"
		if v6 {
			remote = "00000000000000000000000000000000:0000"
		}
		fmt.Fprintf(&b, "%4d: %s:%04X %s %02X 00000000:00000000 00:00000000 00000000     0        0 %d 1 0000000000000000 100 0 0 10 0\n",
			i, HexAddr(r.Addr.Addr(), v6), r.Addr.Port(), remote, r.State, r.Inode)
	}
	return b.String()
}

// HexAddr renders an address as the kernel prints it in socket tables: 32-bit words
// in host byte order, %08X each.
func HexAddr(a netip.Addr, v6 bool) string {
	var raw []byte
	if v6 {
		b := a.As16()
		raw = b[:]
	} else {
		b := a.Unmap().As4()
		raw = b[:]
	}
	var s strings.Builder
	for i := 0; i < len(raw); i += 4 {
		fmt.Fprintf(&s, "%08X", binary.NativeEndian.Uint32(raw[i:i+4]))
	}
	return s.String()
}

// Ztunnel returns ztunnel's in-pod listener rows for a tcp6 table ([::]:15001/15006/15008)
// plus, when dns, the [::1]:15053 row, with inodes from base.
func Ztunnel(dns bool, base uint64) []Sock {
	rows := []Sock{Listen("[::]:15001", base), Listen("[::]:15006", base+1), Listen("[::]:15008", base+2)}
	if dns {
		rows = append(rows, Listen("[::1]:15053", base+3))
	}
	return rows
}

// KubepodsCgroup returns a cgroup v2 file naming uid the way the systemd driver with
// containerd writes it.
func KubepodsCgroup(uid string) string {
	u := strings.ReplaceAll(uid, "-", "_")
	return "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u +
		".slice/cri-containerd-" + strings.Repeat("ab", 32) + ".scope\n"
}
