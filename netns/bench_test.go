package netns_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/procfs"

	"github.com/meshmedic/meshmedic/netns"
	nt "github.com/meshmedic/meshmedic/netns/netnstest"
)

// onePodTree is a pod with ~10 sockets over tcp + tcp6: ztunnel's listeners, a DNS
// listener, an app listener and a few connections.
func onePodTree(b *testing.B) (netns.FS, int) {
	tree := nt.NewTree(b)
	tcp := nt.TCP(nt.Listen("127.0.0.1:15053", 10), nt.Listen("0.0.0.0:8080", 11), nt.Established("10.0.0.5:8080", 12), nt.Established("10.0.0.5:41000", 13))
	tcp6 := nt.TCP6(append(nt.Ztunnel(true, 20), nt.Listen("[::]:9090", 30), nt.Established("[::ffff:10.0.0.5]:15008", 31))...)
	tree.Add(nt.Proc{PID: 100, Cgroup: nt.KubepodsCgroup(uidA), Start: 5, Netns: 4026532201, TCP: &tcp, TCP6: &tcp6})
	fs, err := netns.NewFS(tree.Root)
	if err != nil {
		b.Fatal(err)
	}
	return fs, 100
}

// BenchmarkPodListeners compares reading one pod's listeners (both tables, the node scan
// mode) with merely reading the two files, a read-whole-file-and-split parser, and procfs.
func BenchmarkPodListeners(b *testing.B) {
	fs, pid := onePodTree(b)
	base := filepath.Join(fs.Root(), strconv.Itoa(pid), "net")
	b.Run("meshmedic", func(b *testing.B) {
		r := netns.NewProcReader(fs)
		b.ReportAllocs()
		for b.Loop() {
			l, err := r.Listeners(pid, netns.ReadOptions{Full: true})
			if err != nil || len(l.Ports) != 4 {
				b.Fatal(err, l.Ports)
			}
		}
	})
	b.Run("os.ReadFile-x2-only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, n := range []string{"tcp6", "tcp"} {
				if _, err := os.ReadFile(filepath.Join(base, n)); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("readfile-split-fields", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			n := 0
			for _, name := range []string{"tcp6", "tcp"} {
				data, err := os.ReadFile(filepath.Join(base, name))
				if err != nil {
					b.Fatal(err)
				}
				n += len(naiveListen(data))
			}
			if n != 7 {
				b.Fatal(n)
			}
		}
	})
	b.Run("procfs", func(b *testing.B) {
		pfs, err := procfs.NewFS(filepath.Join(fs.Root(), strconv.Itoa(pid)))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			t6, err := pfs.NetTCP6()
			if err != nil {
				b.Fatal(err)
			}
			t4, err := pfs.NetTCP()
			if err != nil {
				b.Fatal(err)
			}
			if len(t6)+len(t4) != 10 {
				b.Fatal(len(t6) + len(t4))
			}
		}
	})
}

// naiveListen is the split-and-fields parser a first version would write.
func naiveListen(data []byte) []string {
	var out []string
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "0A" {
			continue
		}
		out = append(out, f[1])
	}
	return out
}

func bigTable(rows int) []byte {
	socks := make([]nt.Sock, 0, rows)
	for i := 0; i < rows; i++ {
		a := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(1024+i%60000))
		st := uint8(0x01)
		if i%50 == 0 {
			st = 0x0A
		}
		socks = append(socks, nt.Sock{Addr: netip.AddrPortFrom(netip.AddrFrom16(a.Addr().As16()), a.Port()), State: st, Inode: uint64(100000 + i)})
	}
	return []byte(nt.TCP6(socks...))
}

// BenchmarkParseTable20k parses a 20,000-row tcp6 table held in memory.
func BenchmarkParseTable20k(b *testing.B) {
	data := bigTable(20000)
	b.Run("meshmedic-all-rows", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		dst := make([]netns.Socket, 0, 20000)
		for b.Loop() {
			var st netns.TableStats
			dst, st = netns.AppendSockets(dst[:0], data, 0)
			if st.Rows != 20000 {
				b.Fatal(st)
			}
		}
	})
	b.Run("meshmedic-listen-only", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		dst := make([]netns.Socket, 0, 1000)
		for b.Loop() {
			dst, _ = netns.AppendSockets(dst[:0], data, netns.StatesOf(netns.StateListen))
			if len(dst) != 400 {
				b.Fatal(len(dst))
			}
		}
	})
	b.Run("meshmedic-stream", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		dst := make([]netns.Socket, 0, 20000)
		for b.Loop() {
			var err error
			if dst, _, err = netns.ParseSocketTable(bytes.NewReader(data), 0, dst[:0]); err != nil || len(dst) != 20000 {
				b.Fatal(err)
			}
		}
	})
	b.Run("split-fields", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			if n := len(naiveListen(data)); n != 400 {
				b.Fatal(n)
			}
		}
	})
	b.Run("procfs", func(b *testing.B) {
		dir := b.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "net"), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "net", "tcp6"), data, 0o644); err != nil {
			b.Fatal(err)
		}
		pfs, err := procfs.NewFS(dir)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			t, err := pfs.NetTCP6()
			if err != nil || len(t) != 20000 {
				b.Fatal(err, len(t))
			}
		}
	})
}

// synthetic caches one synthetic node per size for the process.
var synthetic = map[int]string{}

func syntheticNode(b *testing.B, nProcs int) netns.FS {
	root, ok := synthetic[nProcs]
	if !ok {
		root = filepath.Join(os.TempDir(), fmt.Sprintf("meshmedic-bench-proc-%d-%d", nProcs, os.Getpid()))
		b.Cleanup(func() { os.RemoveAll(root) })
		if _, err := nt.WriteSyntheticNode(root, nProcs, 250); err != nil {
			b.Fatal(err)
		}
		synthetic[nProcs] = root
	}
	fs, err := netns.NewFS(root)
	if err != nil {
		b.Fatal(err)
	}
	return fs
}

// BenchmarkSandboxes50k is one full pod→PID map over 50,000 processes and 250 pods: the
// baseline the agent's cache must beat.
func BenchmarkSandboxes50k(b *testing.B) {
	fs := syntheticNode(b, 50000)
	b.Run("meshmedic", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sc, err := fs.Sandboxes()
			if err != nil || len(sc.Sandboxes) != 250 {
				b.Fatal(err, len(sc.Sandboxes))
			}
		}
	})
	b.Run("procfs-straightforward", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if n := naiveSandboxes(b, fs.Root()); n != 250 {
				b.Fatal(n)
			}
		}
	})
}

// naiveSandboxes is the straightforward walk: procfs.AllProcs, Cgroups(), readlink, Stat.
func naiveSandboxes(b *testing.B, root string) int {
	pfs, err := procfs.NewFS(root)
	if err != nil {
		b.Fatal(err)
	}
	procs, err := pfs.AllProcs()
	if err != nil {
		b.Fatal(err)
	}
	host, _ := os.Readlink(filepath.Join(root, "1", "ns", "net"))
	type best struct {
		pid   int
		start uint64
	}
	pods := map[string]best{}
	for _, p := range procs {
		cgs, err := p.Cgroups()
		if err != nil {
			continue
		}
		uid := ""
		for _, cg := range cgs {
			if u, ok := netns.PodUIDInCgroupLine(cg.Path); ok {
				uid = u
			}
		}
		if uid == "" {
			continue
		}
		link, err := os.Readlink(filepath.Join(root, strconv.Itoa(p.PID), "ns", "net"))
		if err != nil || link == host {
			continue
		}
		st, err := p.Stat()
		if err != nil {
			continue
		}
		if cur, ok := pods[uid]; !ok || st.Starttime < cur.start {
			pods[uid] = best{p.PID, st.Starttime}
		}
	}
	return len(pods)
}
