package netns_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/meshmedic/meshmedic/netns"
	"github.com/meshmedic/meshmedic/netns/netnstest"
)

// writeProc writes the files netns reads for one process of a proc tree (netnstest.Tree does
// the same inside tests; an Example has no *testing.T). tcp6 "" leaves the table out.
func writeProc(root string, pid int, cgroup string, start, ino uint64, tcp6 string) {
	dir := filepath.Join(root, strconv.Itoa(pid))
	files := map[string]string{"cgroup": cgroup, "stat": netnstest.Stat(pid, "pause", start)}
	if tcp6 != "" {
		files["net/tcp6"] = tcp6
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			panic(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			panic(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
		panic(err)
	}
	if err := os.Symlink(fmt.Sprintf("net:[%d]", ino), filepath.Join(dir, "ns", "net")); err != nil {
		panic(err)
	}
}

// A node with two ambient pods: "web" is captured (ztunnel's listeners in its netns), "db"
// lost them (a reboot orphan). FS.Sandboxes maps each pod UID found in a cgroup path to its
// sandbox process, skipping CRI-O's conmon in the host netns; ProcReader reads the LISTEN
// sockets of that process's netns.
func ExampleFS_Sandboxes() {
	root, err := os.MkdirTemp("", "proc")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(root)

	const web, db = "0b1c2d3e-0000-4000-8000-000000000001", "0b1c2d3e-0000-4000-8000-000000000002"
	writeProc(root, 1, "0::/init.scope\n", 1, netnstest.HostNetns, "")
	writeProc(root, 99, netnstest.KubepodsCgroup(web), 90, netnstest.HostNetns, "")                                          // conmon: host netns
	writeProc(root, 100, netnstest.KubepodsCgroup(web), 100, 4026532301, netnstest.TCP6(netnstest.Ztunnel(false, 1000)...))  // web's pause
	writeProc(root, 104, netnstest.KubepodsCgroup(web), 140, 4026532301, netnstest.TCP6(netnstest.Ztunnel(false, 1000)...))  // web's app
	writeProc(root, 200, netnstest.KubepodsCgroup(db), 200, 4026532302, netnstest.TCP6(netnstest.Listen("[::]:5432", 2000))) // db: its own port only

	fs, err := netns.NewFS(root)
	if err != nil {
		panic(err)
	}
	scan, err := fs.Sandboxes()
	if err != nil {
		panic(err)
	}
	reader := netns.NewProcReader(fs)
	for _, s := range scan.Sandboxes {
		l, err := reader.Listeners(s.PID, netns.ReadOptions{})
		if err != nil {
			panic(err)
		}
		fmt.Printf("pod %s: pid %d, netns %d, ztunnel ports %v: %s\n", s.PodUID, s.PID, s.Netns, l.Ports, l.Capture(nil))
	}
	// Output:
	// pod 0b1c2d3e-0000-4000-8000-000000000001: pid 100, netns 4026532301, ztunnel ports [15001 15006 15008]: captured
	// pod 0b1c2d3e-0000-4000-8000-000000000002: pid 200, netns 4026532302, ztunnel ports []: none
}

// ParseSocketTable reads a /proc/net/tcp6 table as the kernel prints it. Only wildcard
// sockets on 15001/15006/15008 are ztunnel's: an application's 127.0.0.1:15008 is not.
func ExampleParseSocketTable() {
	table := strings.Join([]string{
		"  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
		"   0: 00000000000000000000000000000000:3A99 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31001 1 0000000000000000 100 0 0 10 0",
		"   1: 00000000000000000000000000000000:3AA0 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31002 1 0000000000000000 100 0 0 10 0",
		"   2: 0000000000000000FFFF00000100007F:3AA0 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31003 1 0000000000000000 100 0 0 10 0",
		"   3: 0000000000000000FFFF00000700F40A:1F90 00000000000000000000000000000000:0000 01 00000000:00000000 00:00000000 00000000     0        0 31004 1 0000000000000000 100 0 0 10 0",
		"   4: this row is damaged",
	}, "\n")
	socks, st, err := netns.ParseSocketTable(strings.NewReader(table), netns.StatesOf(netns.StateListen), nil)
	if err != nil {
		panic(err)
	}
	for _, s := range socks {
		fmt.Println(s, "ztunnel:", netns.IsZtunnelListener(s))
	}
	fmt.Printf("rows %d, malformed %d (first at line %d)\n", st.Rows, st.Malformed, st.FirstMalformed)
	// Output:
	// [::]:15001 st=0A inode=31001 ztunnel: true
	// [::]:15008 st=0A inode=31002 ztunnel: true
	// [::ffff:127.0.0.1]:15008 st=0A inode=31003 ztunnel: false
	// rows 4, malformed 1 (first at line 6)
}

// Capture judges a pod on the listeners it must have. A table that could not be read makes
// a missing listener unknown, never "none": it may be in the part that was not seen.
func ExampleListeners_Capture() {
	ok := netns.Table{Status: netns.TableOK}
	partial := netns.Listeners{Ports: []uint16{15001, 15008}, TCP6: ok, TCP: ok}
	fmt.Println(partial.Capture(nil), "missing", partial.Missing(netns.CorePorts))

	dns := []uint16{15001, 15006, 15008, 15053}
	full := netns.Listeners{Ports: []uint16{15001, 15006, 15008}, TCP6: ok, TCP: ok}
	fmt.Println(full.Capture(nil), "/ with DNS capture required:", full.Capture(dns))

	unread := netns.Listeners{Ports: []uint16{}, TCP6: ok, TCP: netns.Table{Status: netns.TableUnreadable}}
	fmt.Println(unread.Capture(nil))
	// Output:
	// partial missing [15006]
	// captured / with DNS capture required: partial
	// unknown
}
