package netns_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshmedic/meshmedic/netns"
	nt "github.com/meshmedic/meshmedic/netns/netnstest"
)

// Evidence that cannot lie (issue 11): every way a socket table can fail to be what a
// kernel prints, read through ProcReader and InspectNode. Only a table read in full proves
// a listener absent; one the kernel would never print proves nothing; a damaged or cut one
// proves presence only.

// withRow inserts row as a line after the first n lines of table.
func withRow(table string, n int, row string) string {
	lines := strings.SplitAfter(table, "\n")
	out := strings.Join(lines[:n], "") + row + "\n" + strings.Join(lines[n:], "")
	return out
}

// rowsOnly is table without its header line.
func rowsOnly(table string) string { return table[strings.IndexByte(table, '\n')+1:] }

// tableFile puts one socket table (or something else) at <pid>/net/<name>.
type tableFile func(t *testing.T, tree *nt.Tree, pid int, name string)

func content(s string) tableFile {
	return func(t *testing.T, tree *nt.Tree, pid int, name string) {
		tree.Place(pid, "net/"+name, func(p string) error { return os.WriteFile(p, []byte(s), 0o644) })
	}
}

func fifo() tableFile {
	return func(t *testing.T, tree *nt.Tree, pid int, name string) { tree.Fifo(pid, "net/"+name) }
}

func symlinkTo(target string) tableFile {
	return func(t *testing.T, tree *nt.Tree, pid int, name string) { tree.Symlink(pid, "net/"+name, target) }
}

func dir() tableFile {
	return func(t *testing.T, tree *nt.Tree, pid int, name string) { tree.Dir(pid, "net/"+name) }
}

// symlinkToContent writes s outside the tree and links the table to it.
func symlinkToContent(s string) tableFile {
	return func(t *testing.T, tree *nt.Tree, pid int, name string) {
		target := filepath.Join(t.TempDir(), name)
		require.NoError(t, os.WriteFile(target, []byte(s), 0o644))
		tree.Symlink(pid, "net/"+name, target)
	}
}

// within runs fn and fails the test if it has not returned after a generous liveness
// bound: a read that blocks for ever must fail the test, not hang it. It is not a timing
// assertion: any correct run returns orders of magnitude sooner.
func within(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("%s has not returned after 10 s (blocked?)\n%s", what, buf[:runtime.Stack(buf, true)])
	}
}

var (
	ztun6 = nt.TCP6(nt.Ztunnel(false, 1)...)
	two6  = nt.TCP6(nt.Listen("[::]:15001", 1), nt.Listen("[::]:15006", 2))
	hdr6  = nt.TCP6()
	hdr4  = nt.TCP()
	app4  = nt.TCP(nt.Listen("0.0.0.0:8080", 9))
	ztun4 = nt.TCP(nt.Listen("0.0.0.0:15001", 1), nt.Listen("0.0.0.0:15006", 2), nt.Listen("0.0.0.0:15008", 3))
	// The 15008 row of a tcp6 table with its port field damaged.
	bad15008 = strings.Replace(rowsOnly(nt.TCP6(nt.Listen("[::]:15008", 3))), ":3AA0 ", ":3AZ0 ", 1)
)

type evidenceCase struct {
	name      string
	tcp6, tcp tableFile // nil: the file is absent
	want      netns.Capture
	wantPorts []uint16
	tcp6St    netns.TableStatus // after a Full read
	errHas    string            // in PodNetns.Err when unknown
}

func evidenceCases() []evidenceCase {
	return []evidenceCase{
		{name: "both tables empty (the 0-byte orphan)", tcp6: content(""), tcp: content(""),
			want: netns.CaptureUnknown, tcp6St: netns.TableUnreadable, errHas: "empty: a kernel always prints the header line"},
		{name: "tcp6 empty, tcp header only", tcp6: content(""), tcp: content(hdr4),
			want: netns.CaptureUnknown, tcp6St: netns.TableUnreadable, errHas: "tcp6: empty"},
		{name: "header only: no sockets, proven", tcp6: content(hdr6), tcp: content(hdr4),
			want: netns.CaptureNone, tcp6St: netns.TableOK},
		{name: "rows without a header prove nothing, not even presence", tcp6: content(rowsOnly(ztun6)), tcp: content(hdr4),
			want: netns.CaptureUnknown, tcp6St: netns.TableUnreadable, errHas: "the first line is not the kernel's header"},
		{name: "IPv4-only kernel, tcp rows without a header", tcp: content(rowsOnly(app4)),
			want: netns.CaptureUnknown, tcp6St: netns.TableMissing, errHas: "tcp: the first line is not the kernel's header"},
		{name: "header not the first line", tcp6: content("garbage\n" + ztun6), tcp: content(hdr4),
			want: netns.CaptureUnknown, tcp6St: netns.TableUnreadable, errHas: "not the kernel's header"},
		{name: "blank lines before the header are fine", tcp6: content("\n  \n" + ztun6), tcp: content(hdr4),
			want: netns.Captured, wantPorts: []uint16{15001, 15006, 15008}, tcp6St: netns.TableOK},
		{name: "malformed row where a listener should be, listener absent", tcp6: content(two6 + bad15008), tcp: content(hdr4),
			want: netns.CaptureUnknown, wantPorts: []uint16{15001, 15006}, tcp6St: netns.TableIncomplete, errHas: "1 malformed row(s), first at line 4"},
		{name: "malformed row, every listener present", tcp6: content(withRow(ztun6, 2, "   7: garbage")), tcp: content(hdr4),
			want: netns.Captured, wantPorts: []uint16{15001, 15006, 15008}, tcp6St: netns.TableIncomplete},
		{name: "malformed row, no ztunnel listener at all", tcp6: content(hdr6 + "   0: 0000\n"), tcp: content(app4),
			want: netns.CaptureUnknown, tcp6St: netns.TableIncomplete, errHas: "malformed"},
		{name: "malformed row in tcp, tcp6 proves a partial", tcp6: content(two6), tcp: content(app4 + "junk\n"),
			want: netns.CaptureUnknown, wantPorts: []uint16{15001, 15006}, tcp6St: netns.TableOK, errHas: "tcp: 1 malformed"},
		{name: "a second header is a malformed row", tcp6: content(two6 + "  sl  local_address remote_address\n"), tcp: content(hdr4),
			want: netns.CaptureUnknown, wantPorts: []uint16{15001, 15006}, tcp6St: netns.TableIncomplete, errHas: "first at line 4"},
		{name: "FIFO as tcp6", tcp6: fifo(), tcp: content(hdr4),
			want: netns.CaptureUnknown, tcp6St: netns.TableUnreadable, errHas: "not a regular file (a FIFO)"},
		{name: "FIFO as tcp6, tcp proves every listener (0.0.0.0)", tcp6: fifo(), tcp: content(ztun4),
			want: netns.Captured, wantPorts: []uint16{15001, 15006, 15008}, tcp6St: netns.TableUnreadable},
		{name: "FIFOs as both", tcp6: fifo(), tcp: fifo(),
			want: netns.CaptureUnknown, tcp6St: netns.TableUnreadable, errHas: "a FIFO"},
		{name: "/dev/zero as tcp6 (symlink)", tcp6: symlinkTo("/dev/zero"), tcp: content(hdr4),
			want: netns.CaptureUnknown, tcp6St: netns.TableUnreadable, errHas: "not a regular file (a character device)"},
		{name: "directory as tcp6", tcp6: dir(), tcp: content(hdr4),
			want: netns.CaptureUnknown, tcp6St: netns.TableUnreadable, errHas: "not a regular file (a directory)"},
		{name: "symlink to a table is followed", tcp6: symlinkToContent(ztun6), tcp: content(hdr4),
			want: netns.Captured, wantPorts: []uint16{15001, 15006, 15008}, tcp6St: netns.TableOK},
		{name: "tcp6 missing as a file (ipv6.disable=1) is a fact", tcp: content(app4),
			want: netns.CaptureNone, tcp6St: netns.TableMissing},
		{name: "no table at all", want: netns.CaptureUnknown, tcp6St: netns.TableMissing, errHas: "no socket table"},
	}
}

func evidenceTree(t *testing.T, cases []evidenceCase) (netns.FS, []int) {
	tree := nt.NewTree(t)
	pids := make([]int, len(cases))
	for i, c := range cases {
		pid := 1000 + i
		pids[i] = pid
		tree.Add(nt.Proc{PID: pid, Cgroup: nt.KubepodsCgroup(fmt.Sprintf("00000000-0000-0000-0000-%012d", i+1)), Start: uint64(100 + i), Netns: uint64(4026533000 + i)})
		if c.tcp6 != nil {
			c.tcp6(t, tree, pid, "tcp6")
		}
		if c.tcp != nil {
			c.tcp(t, tree, pid, "tcp")
		}
	}
	fs, err := netns.NewFS(tree.Root)
	require.NoError(t, err)
	return fs, pids
}

func TestEvidenceProcReader(t *testing.T) {
	cases := evidenceCases()
	fs, pids := evidenceTree(t, cases)
	r := netns.NewProcReader(fs)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, full := range []bool{true, false} {
				var l netns.Listeners
				var err error
				within(t, "ProcReader.Listeners", func() { l, err = r.Listeners(pids[i], netns.ReadOptions{Full: full}) })
				require.NoError(t, err)
				assert.Equal(t, c.want, l.Capture(nil), "full=%v %+v", full, l)
				assert.Equal(t, c.tcp6St, l.TCP6.Status, "full=%v", full)
				if c.want == netns.CaptureUnknown {
					require.Error(t, l.Err())
					assert.ErrorContains(t, l.Err(), c.errHas)
				}
				if full || c.want != netns.Captured {
					assert.Equal(t, fmt.Sprint(c.wantPorts), fmt.Sprint(l.Ports), "full=%v", full)
				}
			}
		})
	}
}

func TestEvidenceInspectNode(t *testing.T) {
	cases := evidenceCases()
	fs, _ := evidenceTree(t, cases)
	var rep netns.NodeReport
	var err error
	within(t, "InspectNode", func() { rep, err = netns.InspectNode(fs, netns.NewProcReader(fs), netns.ReadOptions{Full: true}) })
	require.NoError(t, err)
	require.Len(t, rep.Pods, len(cases))
	for i, c := range cases {
		p := rep.Pods[i]
		assert.Equal(t, c.want, p.Capture, "%s: %v", c.name, p.Err)
		if c.want == netns.CaptureUnknown {
			require.Error(t, p.Err, c.name)
			assert.ErrorContains(t, p.Err, c.errHas, c.name)
			assert.ErrorContains(t, p.Err, "pod "+p.PodUID, c.name)
		} else {
			assert.NoError(t, p.Err, c.name)
		}
	}
}

// paddedTable is a tcp6 table of head's rows, then filler ESTABLISHED rows up to at least
// size bytes, then tail's rows.
func paddedTable(head []nt.Sock, size int, tail ...nt.Sock) string {
	rowLen := len(rowsOnly(nt.TCP6(nt.Established("[fd00::1]:1024", 5000))))
	rows := append([]nt.Sock(nil), head...)
	for i := 0; i < size/rowLen+1; i++ {
		rows = append(rows, nt.Established(fmt.Sprintf("[fd00::%x:%x]:%d", (i+1)>>16, (i+1)&0xffff, 1024+i%60000), uint64(5000+i)))
	}
	return nt.TCP6(append(rows, tail...)...)
}

// A table cut by the byte cap proves the listeners it shows, never an absence.
func TestEvidenceTableCap(t *testing.T) {
	const limit = 8 << 10
	l15001, l15006, l15008 := nt.Listen("[::]:15001", 1), nt.Listen("[::]:15006", 2), nt.Listen("[::]:15008", 3)
	cases := []evidenceCase{
		{name: "listeners before the cap", tcp6: content(paddedTable([]nt.Sock{l15001, l15006, l15008}, 4*limit)), tcp: content(hdr4),
			want: netns.Captured, wantPorts: []uint16{15001, 15006, 15008}, tcp6St: netns.TableIncomplete},
		{name: "15008 beyond the cap", tcp6: content(paddedTable([]nt.Sock{l15001, l15006}, 4*limit, l15008)), tcp: content(hdr4),
			want: netns.CaptureUnknown, wantPorts: []uint16{15001, 15006}, tcp6St: netns.TableIncomplete, errHas: "cut at the 8192-byte read limit"},
		{name: "no listener before the cap", tcp6: content(paddedTable(nil, 4*limit)), tcp: content(hdr4),
			want: netns.CaptureUnknown, tcp6St: netns.TableIncomplete, errHas: "cut at the"},
		{name: "under the cap: proven", tcp6: content(paddedTable([]nt.Sock{l15001}, limit/2)), tcp: content(hdr4),
			want: netns.CapturePartial, wantPorts: []uint16{15001}, tcp6St: netns.TableOK},
	}
	fs, _ := evidenceTree(t, cases)
	rep, err := netns.InspectNode(fs, netns.NewProcReader(fs), netns.ReadOptions{Full: true, MaxTableBytes: limit})
	require.NoError(t, err)
	for i, c := range cases {
		p := rep.Pods[i]
		assert.Equal(t, c.want, p.Capture, "%s: %v", c.name, p.Err)
		assert.Equal(t, c.tcp6St, p.Listeners.TCP6.Status, c.name)
		assert.Equal(t, fmt.Sprint(c.wantPorts), fmt.Sprint(p.Listeners.Ports), c.name)
		assert.LessOrEqual(t, p.Listeners.TCP6.Stats.Bytes, int64(limit), c.name)
		assert.Equal(t, c.tcp6St == netns.TableIncomplete, p.Listeners.TCP6.Stats.Truncated, c.name)
		if c.errHas != "" {
			assert.ErrorContains(t, p.Err, c.errHas, c.name)
		}
	}

	// A table of exactly the cap counts as cut: the cap is what may be read, and only a
	// table shorter than it is known to have ended.
	exact := hdr6 + strings.Repeat("\n", limit-len(hdr6))
	l := netns.ListenersFromTables(strings.NewReader(exact), strings.NewReader(hdr4), netns.ReadOptions{MaxTableBytes: limit})
	assert.Equal(t, netns.TableIncomplete, l.TCP6.Status)
	l = netns.ListenersFromTables(strings.NewReader(exact[1:]), strings.NewReader(hdr4), netns.ReadOptions{MaxTableBytes: limit})
	assert.Equal(t, netns.TableOK, l.TCP6.Status)
	assert.Equal(t, netns.CaptureNone, l.Capture(nil))
}

// A table of tens of MB is streamed: the memory one read allocates does not grow with the
// table (the first version grew a buffer to the whole file: ~300 MB RSS for 100 MB).
func TestEvidenceBigTableBoundedMemory(t *testing.T) {
	l15001 := nt.Listen("[::]:15001", 1)
	cases := []evidenceCase{{tcp6: content(paddedTable([]nt.Sock{l15001}, 24<<20)), tcp: content(hdr4)}}
	fs, pids := evidenceTree(t, cases)
	r := netns.NewProcReader(fs)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l, err := r.Listeners(pids[0], netns.ReadOptions{Full: true})
	runtime.ReadMemStats(&after)
	require.NoError(t, err)
	require.Equal(t, netns.TableOK, l.TCP6.Status)
	require.Greater(t, l.TCP6.Stats.Bytes, int64(24<<20))
	assert.Equal(t, netns.CapturePartial, l.Capture(nil))
	assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(1<<20), "bytes allocated reading a %d-byte table", l.TCP6.Stats.Bytes)
}

// The same table rules hold for tables read by other means (exec), through
// ListenersFromTables.
func TestEvidenceListenersFromTables(t *testing.T) {
	read := func(tcp6, tcp *string) netns.Listeners {
		var r6, r4 *strings.Reader
		if tcp6 != nil {
			r6 = strings.NewReader(*tcp6)
		}
		if tcp != nil {
			r4 = strings.NewReader(*tcp)
		}
		// A typed nil is not a nil io.Reader: pass nil explicitly.
		switch {
		case r6 == nil && r4 == nil:
			return netns.ListenersFromTables(nil, nil, netns.ReadOptions{})
		case r6 == nil:
			return netns.ListenersFromTables(nil, r4, netns.ReadOptions{})
		case r4 == nil:
			return netns.ListenersFromTables(r6, nil, netns.ReadOptions{})
		}
		return netns.ListenersFromTables(r6, r4, netns.ReadOptions{})
	}
	for _, c := range []struct {
		tcp6, tcp *string
		want      netns.Capture
	}{
		{nt.Ptr(""), nt.Ptr(""), netns.CaptureUnknown},
		{nt.Ptr(hdr6), nt.Ptr(hdr4), netns.CaptureNone},
		{nt.Ptr(rowsOnly(ztun6)), nt.Ptr(hdr4), netns.CaptureUnknown},
		{nt.Ptr(two6 + bad15008), nt.Ptr(hdr4), netns.CaptureUnknown},
		{nt.Ptr(two6), nt.Ptr(hdr4), netns.CapturePartial},
		{nt.Ptr(withRow(ztun6, 1, "junk")), nt.Ptr(hdr4), netns.Captured},
		{nil, nt.Ptr(app4), netns.CaptureNone},
		{nil, nil, netns.CaptureUnknown},
	} {
		l := read(c.tcp6, c.tcp)
		assert.Equal(t, c.want, l.Capture(nil), "%q / %q: %v", deref(c.tcp6), deref(c.tcp), l.Err())
		assert.NotNil(t, l.Ports, "never null in JSON")
	}
}

func deref(s *string) string {
	if s == nil {
		return "<missing>"
	}
	return *s
}

// The other files read from a proc root are bounded and typed too.
func TestEvidenceOtherFiles(t *testing.T) {
	tree := nt.NewTree(t)
	const uid = "00000000-0000-0000-0000-000000000001"
	tree.Add(nt.Proc{PID: 100, Cgroup: nt.KubepodsCgroup(uid), Start: 10, Netns: 4026532201,
		TCP6: nt.Ptr(ztun6), TCP: nt.Ptr(hdr4)})
	fs, err := netns.NewFS(tree.Root)
	require.NoError(t, err)
	sc, err := fs.Sandboxes()
	require.NoError(t, err)
	require.Len(t, sc.Sandboxes, 1)
	sb := sc.Sandboxes[0]

	// stat as a FIFO: Revalidate and StartTime fail, naming it; no hang.
	tree.Fifo(100, "stat")
	within(t, "StartTime", func() {
		_, err = fs.StartTime(100)
	})
	assert.ErrorIs(t, err, netns.ErrNotRegularFile)
	assert.ErrorContains(t, err, "100/stat")
	within(t, "Revalidate", func() { _, err = fs.Revalidate(sb) })
	assert.ErrorIs(t, err, netns.ErrNotRegularFile)
	assert.NotErrorIs(t, err, netns.ErrProcessGone)

	// stat endless (/dev/zero) and oversized.
	tree.Symlink(100, "stat", "/dev/zero")
	_, err = fs.StartTime(100)
	assert.ErrorIs(t, err, netns.ErrNotRegularFile)
	tree.Place(100, "stat", func(p string) error { return os.WriteFile(p, []byte(strings.Repeat("1 ", 8<<10)), 0o644) })
	_, err = fs.StartTime(100)
	assert.ErrorIs(t, err, netns.ErrTooLarge)
	tree.Place(100, "stat", func(p string) error { return os.WriteFile(p, []byte(nt.Stat(100, "pause", 10)), 0o644) })

	// cgroup: a FIFO and an oversized file are problems of that process; the walk goes on.
	tree.Add(nt.Proc{PID: 200, Cgroup: nt.KubepodsCgroup("00000000-0000-0000-0000-000000000002"), Start: 20, Netns: 4026532202})
	tree.Fifo(200, "cgroup")
	tree.Add(nt.Proc{PID: 300, Cgroup: strings.Repeat("0::/"+strings.Repeat("x", 4000)+"\n", 40), Start: 30, Netns: 4026532203})
	within(t, "Sandboxes", func() { sc, err = fs.Sandboxes() })
	require.NoError(t, err)
	assert.Len(t, sc.Sandboxes, 1)
	var msgs []string
	for _, p := range sc.Problems {
		msgs = append(msgs, p.Error())
	}
	require.Len(t, sc.Problems, 2, msgs)
	byPID := map[int]error{}
	for _, p := range sc.Problems {
		var pe *netns.ProcessError
		require.ErrorAs(t, p, &pe)
		byPID[pe.PID] = p
	}
	assert.ErrorIs(t, byPID[200], netns.ErrNotRegularFile)
	assert.ErrorIs(t, byPID[300], netns.ErrTooLarge)
	_, err = fs.PodUIDOf(200)
	assert.ErrorIs(t, err, netns.ErrNotRegularFile)

	// sockstat as /dev/zero; fib_trie as a FIFO; if_inet6 endless.
	tree.Symlink(100, "net/sockstat", "/dev/zero")
	_, err = fs.SocketsInUse(100)
	assert.ErrorIs(t, err, netns.ErrNotRegularFile)
	tree.Place(100, "net/sockstat", func(p string) error {
		return os.WriteFile(p, []byte("TCP: inuse 3\n"+strings.Repeat("x", 8<<10)), 0o644)
	})
	_, err = fs.SocketsInUse(100)
	assert.ErrorIs(t, err, netns.ErrTooLarge)
	tree.Fifo(100, "net/fib_trie")
	within(t, "LocalAddrs", func() { _, err = fs.LocalAddrs(100) })
	assert.ErrorIs(t, err, netns.ErrNotRegularFile)
	assert.ErrorContains(t, err, "100/net/fib_trie")
	tree.Place(100, "net/fib_trie", func(p string) error { return os.WriteFile(p, nil, 0o644) })
	tree.Symlink(100, "net/if_inet6", "/dev/zero")
	_, err = fs.LocalAddrs(100)
	assert.ErrorIs(t, err, netns.ErrNotRegularFile)

	// comm of kthreadd as a FIFO: not kthreadd, no hang.
	require.NoError(t, os.Remove(filepath.Join(tree.Root, "1", "ns", "net")))
	tree.Add(nt.Proc{PID: 2, Start: 1, Netns: nt.HostNetns, Cgroup: "0::/\n"})
	tree.Fifo(2, "comm")
	within(t, "HostNetns", func() { _, err = fs.HostNetns() })
	assert.ErrorIs(t, err, netns.ErrHostNetnsUnknown)
}

// When neither PID 1's nor kthreadd's netns can be read, no process can be told from the
// host netns: Sandboxes and InspectNode fail naming the cause, rather than judge a CRI-O
// pod from conmon, which sits in the pod's cgroup but in the host netns (and is older than
// the pod's sandbox).
func TestEvidenceHostNetnsUnknowable(t *testing.T) {
	const uid = "00000000-0000-0000-0000-00000000c410"
	tree := nt.NewTree(t)
	crio := "1:name=systemd:/kubepods/burstable/pod" + uid + "/crio-conmon-1\n"
	// conmon: older, the host's sockets (nothing of ztunnel's) in its net/tcp6.
	tree.Add(nt.Proc{PID: 100, Comm: "conmon", Cgroup: crio, Start: 10, Netns: nt.HostNetns, TCP6: nt.Ptr(hdr6), TCP: nt.Ptr(app4)})
	tree.Add(nt.Proc{PID: 200, Cgroup: nt.KubepodsCgroup(uid), Start: 20, Netns: 4026532201, TCP6: nt.Ptr(ztun6), TCP: nt.Ptr(hdr4)})
	fs, err := netns.NewFS(tree.Root)
	require.NoError(t, err)

	rep, err := netns.InspectNode(fs, netns.NewProcReader(fs), netns.ReadOptions{Full: true})
	require.NoError(t, err)
	require.Len(t, rep.Pods, 1)
	assert.Equal(t, 200, rep.Pods[0].PID, "the sandbox, not conmon")
	assert.Equal(t, netns.Captured, rep.Pods[0].Capture)

	require.NoError(t, os.Remove(filepath.Join(tree.Root, "1", "ns", "net")))
	for _, step := range []struct {
		name string
		set  func()
		why  string
	}{
		{"no pid 2", func() {}, "pid 2 is not kthreadd"},
		{"pid 2 is not kthreadd", func() {
			tree.Add(nt.Proc{PID: 2, Comm: "systemd-journal", Start: 2, Netns: nt.HostNetns, Cgroup: "0::/\n", Extra: map[string]string{"comm": "systemd-journal\n"}})
		}, "pid 2 is not kthreadd"},
		{"kthreadd without a netns link", func() {
			tree.Remove(2)
			tree.Add(nt.Proc{PID: 2, Start: 1, Cgroup: "0::/\n", Extra: map[string]string{"comm": "kthreadd\n"}})
		}, "kthreadd (pid 2): readlink"},
	} {
		step.set()
		_, err := fs.HostNetns()
		require.ErrorIs(t, err, netns.ErrHostNetnsUnknown, step.name)
		assert.ErrorContains(t, err, "pid 1: readlink", step.name)
		assert.ErrorContains(t, err, step.why, step.name)
		_, err = fs.Sandboxes()
		assert.ErrorIs(t, err, netns.ErrHostNetnsUnknown, step.name)
		assert.ErrorContains(t, err, "cannot tell pod sandboxes from processes in the host netns", step.name)
		_, err = netns.InspectNode(fs, netns.NewProcReader(fs), netns.ReadOptions{Full: true})
		assert.ErrorIs(t, err, netns.ErrHostNetnsUnknown, step.name)
	}

	// kthreadd readable: known again, and the pod is judged from its sandbox.
	tree.Remove(2)
	tree.Add(nt.Proc{PID: 2, Start: 1, Netns: nt.HostNetns, Cgroup: "0::/\n", Extra: map[string]string{"comm": "kthreadd\n"}})
	rep, err = netns.InspectNode(fs, netns.NewProcReader(fs), netns.ReadOptions{Full: true})
	require.NoError(t, err)
	assert.Equal(t, 200, rep.Pods[0].PID)
}

// In the proc-net identity (the capability-free agent) the host netns is named by the
// inode of 1/net/dev, the same way every process's netns is; without it the host netns is
// unknown too.
func TestEvidenceHostNetnsProcNetIdentity(t *testing.T) {
	const uid = "00000000-0000-0000-0000-00000000c410"
	tree := nt.NewTree(t)
	crio := "1:name=systemd:/kubepods/burstable/pod" + uid + "/crio-conmon-1\n"
	tree.Add(nt.Proc{PID: 100, Comm: "conmon", Cgroup: crio, Start: 10, TCP6: nt.Ptr(hdr6), TCP: nt.Ptr(app4)})
	tree.Add(nt.Proc{PID: 200, Cgroup: nt.KubepodsCgroup(uid), Start: 20, TCP6: nt.Ptr(ztun6), TCP: nt.Ptr(hdr4)})
	// One net/dev per netns: the host's shared by PID 1 and conmon (a hard link: same inode).
	hostDev := tree.Place(1, "net/dev", func(p string) error { return os.WriteFile(p, []byte("host\n"), 0o444) })
	tree.Place(100, "net/dev", func(p string) error { return os.Link(hostDev, p) })
	tree.Place(200, "net/dev", func(p string) error { return os.WriteFile(p, []byte("pod\n"), 0o444) })
	fs, err := netns.NewFS(tree.Root)
	require.NoError(t, err)
	fs = fs.WithIdentity(netns.IdentityProcNet)

	host, err := fs.HostNetns()
	require.NoError(t, err)
	conmon, err := fs.NetnsOf(100)
	require.NoError(t, err)
	assert.Equal(t, host, conmon)
	rep, err := netns.InspectNode(fs, netns.NewProcReader(fs), netns.ReadOptions{Full: true})
	require.NoError(t, err)
	require.Len(t, rep.Pods, 1)
	assert.Equal(t, 200, rep.Pods[0].PID)
	assert.Equal(t, netns.Captured, rep.Pods[0].Capture)

	require.NoError(t, os.Remove(hostDev))
	_, err = netns.InspectNode(fs, netns.NewProcReader(fs), netns.ReadOptions{Full: true})
	require.ErrorIs(t, err, netns.ErrHostNetnsUnknown)
	assert.ErrorContains(t, err, "1/net/dev")
}

// A reader that never makes progress cannot spin ParseSocketTable for ever.
func TestParseSocketTableNoProgress(t *testing.T) {
	_, _, err := netns.ParseSocketTable(zeroReader{}, 0, nil)
	require.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), "no data"), err)
	assert.False(t, errors.Is(err, os.ErrNotExist))
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestEvidenceErrorsNameThePath(t *testing.T) {
	cases := []evidenceCase{{tcp6: fifo(), tcp: content(hdr4)}}
	fs, pids := evidenceTree(t, cases)
	l, err := netns.NewProcReader(fs).Listeners(pids[0], netns.ReadOptions{})
	require.NoError(t, err)
	assert.ErrorContains(t, l.TCP6.Err, filepath.Join(fs.Root(), strconv.Itoa(pids[0]), "net", "tcp6"))
	assert.ErrorIs(t, l.TCP6.Err, netns.ErrNotRegularFile)
}
