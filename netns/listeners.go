package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"unsafe"
)

// The listeners ztunnel opens inside a captured pod's network namespace (ISTIO-FACTS §2;
// ztunnel src/inpod/statemanager.rs starts the in-pod proxy, src/proxy/*.rs bind them).
const (
	PortOutbound uint16 = 15001 // outbound capture, wildcard
	PortInbound  uint16 = 15006 // inbound plaintext, wildcard
	PortHBONE    uint16 = 15008 // inbound HBONE, wildcard
	PortDNS      uint16 = 15053 // DNS proxy, loopback (127.0.0.1, [::1] from 1.23) when DNS capture is on
	PortSOCKS5   uint16 = 15080 // SOCKS5, loopback; always in 1.21, opt-in later
)

// CorePorts are the listeners every captured pod has; capture is judged on them.
var CorePorts = []uint16{PortOutbound, PortInbound, PortHBONE}

// IsZtunnelListener reports whether a LISTEN socket sits on a ztunnel in-pod port *and* on
// the address ztunnel binds it to: the wildcard (0.0.0.0 or ::) for 15001/15006/15008,
// loopback or wildcard for 15053 and 15080. An application's 127.0.0.1:15008 or
// 10.0.0.5:15001 is not ztunnel's and does not count.
func IsZtunnelListener(s Socket) bool {
	if s.State != StateListen {
		return false
	}
	a := s.Addr.Unmap()
	switch s.Port {
	case PortOutbound, PortInbound, PortHBONE:
		return a.IsUnspecified()
	case PortDNS, PortSOCKS5:
		return a.IsLoopback() || a.IsUnspecified()
	}
	return false
}

// TableStatus says what became of one socket table.
type TableStatus string

const (
	TableOK         TableStatus = "ok"
	TableMissing    TableStatus = "missing"    // the file does not exist (e.g. tcp6 on a kernel booted ipv6.disable=1)
	TableUnreadable TableStatus = "unreadable" // it exists but could not be read, or no row of it parsed
	TableSkipped    TableStatus = "skipped"    // not read: tcp6 already showed every required listener
	TableNotTried   TableStatus = ""
)

// Table is the outcome of reading one /proc/<pid>/net/<name> file.
type Table struct {
	Name   string // "tcp6", "tcp"
	Status TableStatus
	Err    error
	Stats  TableStats
}

// Capture is the verdict on a pod's in-pod listeners (the node scan JSON contract).
type Capture string

const (
	Captured           Capture = "captured"     // every required listener present
	CapturePartial     Capture = "partial"      // some present, some missing
	CaptureNone        Capture = "none"         // none present
	CaptureUnknown     Capture = "unknown"      // could not be verified: never healthy, never an orphan
	CaptureHostNetwork Capture = "host-network" // the pod shares the host netns: never captured
)

// Listeners is what one read of a netns's socket tables found.
type Listeners struct {
	// Ports are the ztunnel in-pod ports found LISTENing on ztunnel's address
	// (IsZtunnelListener), in tcp or tcp6; sorted, no duplicates (two sockets per port
	// during a ztunnel rolling restart are normal: SO_REUSEPORT).
	Ports []uint16
	// Sockets are every LISTEN socket read, both families, in table order.
	Sockets []Socket
	TCP6    Table
	TCP     Table
}

// Has reports whether a ztunnel listener on port was found.
func (l Listeners) Has(port uint16) bool {
	_, ok := slices.BinarySearch(l.Ports, port)
	return ok
}

// HasAll reports whether every port in ports was found.
func (l Listeners) HasAll(ports []uint16) bool {
	for _, p := range ports {
		if !l.Has(p) {
			return false
		}
	}
	return true
}

// Capture judges the pod on required (CorePorts when nil). Everything present is
// captured even if a table was unreadable. Otherwise a table that exists but could not be
// read — or no table at all — makes the verdict unknown: the missing listeners may be in
// the table we could not see. A table missing as a file (tcp6 on an IPv6-less kernel) is a
// fact, not an error.
func (l Listeners) Capture(required []uint16) Capture {
	if required == nil {
		required = CorePorts
	}
	present := 0
	for _, p := range required {
		if l.Has(p) {
			present++
		}
	}
	if present == len(required) && present > 0 {
		return Captured
	}
	readable := l.TCP6.Status == TableOK || l.TCP.Status == TableOK
	if !readable || l.TCP6.Status == TableUnreadable || l.TCP.Status == TableUnreadable {
		return CaptureUnknown
	}
	if present > 0 {
		return CapturePartial
	}
	return CaptureNone
}

// Missing returns the ports of required that were not found.
func (l Listeners) Missing(required []uint16) []uint16 {
	var out []uint16
	for _, p := range required {
		if !l.Has(p) {
			out = append(out, p)
		}
	}
	return out
}

// ErrProcessGone is returned when the process vanished before or while it was read.
var ErrProcessGone = errors.New("process is gone")

// ReadOptions tune one read of a netns's listeners.
type ReadOptions struct {
	// Required are the ports whose presence in tcp6 lets the reader skip tcp; CorePorts
	// when nil.
	Required []uint16
	// Full reads tcp even when tcp6 already shows every required listener, so that
	// loopback-only listeners (127.0.0.1:15053) are reported too. It costs a second walk of
	// the kernel's TCP hash table.
	Full bool
}

// SocketReader reads the LISTEN sockets of the netns that process pid lives in. ProcReader
// reads /proc/<pid>/net/tcp{6,}; a netlink sock_diag backend can implement the same.
type SocketReader interface {
	Listeners(pid int, opt ReadOptions) (Listeners, error)
}

// ProcReader reads socket tables from a proc root without entering any namespace:
// /proc/<pid>/net/* shows the tables of the netns process pid is in.
//
// On a real kernel every read of net/tcp* that reaches the end of the table walks the
// kernel's whole TCP hash table, so ProcReader reads tcp6 first — ztunnel binds [::] —
// into one large buffer, and reads tcp only when tcp6 does not already show every
// required listener (or when ReadOptions.Full asks for it). It is safe for concurrent use.
type ProcReader struct {
	root string
	pool sync.Pool // *scratch
}

type scratch struct {
	buf  []byte // file contents
	path []byte // NUL-terminated path being opened
}

// NewProcReader returns a reader over the proc root of fs.
func NewProcReader(fs FS) *ProcReader { return &ProcReader{root: fs.root} }

const readBufSize = 64 << 10

// Listeners implements SocketReader.
func (r *ProcReader) Listeners(pid int, opt ReadOptions) (Listeners, error) {
	required := opt.Required
	if required == nil {
		required = CorePorts
	}
	sc, _ := r.pool.Get().(*scratch)
	if sc == nil {
		sc = &scratch{buf: make([]byte, 0, readBufSize), path: make([]byte, 0, 128)}
	}
	defer r.pool.Put(sc)

	sc.path = append(strconv.AppendInt(append(append(sc.path[:0], r.root...), '/'), int64(pid), 10), "/net/"...)
	base := len(sc.path)
	l := Listeners{Sockets: make([]Socket, 0, 16), Ports: make([]uint16, 0, 5)}
	l.TCP6 = r.readTable(sc, base, "tcp6", &l)
	if l.TCP6.Status == TableOK && !opt.Full && l.HasAll(required) {
		l.TCP = Table{Name: "tcp", Status: TableSkipped}
	} else {
		l.TCP = r.readTable(sc, base, "tcp", &l)
	}
	if l.TCP6.Status == TableMissing || l.TCP.Status == TableMissing {
		// A live process always has net/tcp; a missing table may mean it just exited.
		if _, err := os.Stat(r.root + "/" + strconv.Itoa(pid)); errors.Is(err, fs.ErrNotExist) {
			return l, fmt.Errorf("pid %d: %w", pid, ErrProcessGone)
		}
	}
	return l, nil
}

func (r *ProcReader) readTable(sc *scratch, base int, name string, l *Listeners) Table {
	t := Table{Name: name}
	sc.path = append(append(sc.path[:base], name...), 0)
	var err error
	sc.buf, err = readFileAt(sc.path, sc.buf[:0])
	switch {
	case errors.Is(err, fs.ErrNotExist):
		t.Status = TableMissing
		return t
	case err != nil:
		t.Status, t.Err = TableUnreadable, err
		return t
	}
	first := len(l.Sockets)
	l.Sockets, t.Stats = AppendSockets(l.Sockets, sc.buf, StatesOf(StateListen))
	if t.Stats.Rows == 0 && t.Stats.Malformed > 0 {
		t.Status = TableUnreadable
		t.Err = fmt.Errorf("%s: no parsable row (%d malformed, first at line %d)", sc.path[:len(sc.path)-1], t.Stats.Malformed, t.Stats.FirstMalformed)
		return t
	}
	t.Status = TableOK
	for _, s := range l.Sockets[first:] {
		if IsZtunnelListener(s) {
			if i, found := slices.BinarySearch(l.Ports, s.Port); !found {
				l.Ports = slices.Insert(l.Ports, i, s.Port)
			}
		}
	}
	return t
}

// readFileAt reads a whole file, named by a NUL-terminated path, into buf (growing it)
// with plain syscalls: one large read per call and no allocation on the way. procfs files
// report size 0, so the size is not known in advance.
func readFileAt(path []byte, buf []byte) ([]byte, error) {
	fd, err := openat(path)
	if err != nil {
		return buf, &fs.PathError{Op: "open", Path: string(path[:len(path)-1]), Err: err}
	}
	defer syscall.Close(fd)
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, cap(buf)+readBufSize)
		}
		n, err := syscall.Read(fd, buf[len(buf):cap(buf)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return buf, &fs.PathError{Op: "read", Path: string(path[:len(path)-1]), Err: err}
		}
		if n <= 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

// readFileInto is readFileAt for a Go string path.
func readFileInto(path string, buf []byte) ([]byte, error) {
	p := make([]byte, len(path)+1)
	copy(p, path)
	return readFileAt(p, buf)
}

func openat(path []byte) (int, error) {
	for {
		fd, _, errno := syscall.Syscall6(syscall.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(&path[0])),
			uintptr(syscall.O_RDONLY|syscall.O_CLOEXEC), 0, 0, 0)
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return -1, errno
		}
		return int(fd), nil
	}
}

// atFDCWD is AT_FDCWD (-100) as the syscall argument.
var atFDCWD = func() uintptr { v := -100; return uintptr(v) }()
