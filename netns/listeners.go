package netns

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
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

// TableStatus says what became of one socket table, and so what it can prove.
type TableStatus string

const (
	// TableOK: the table is what a kernel prints (its header first, every row parsed, read
	// to its end): a listener it does not show is absent.
	TableOK TableStatus = "ok"
	// TableMissing: the file does not exist (tcp6 on a kernel booted ipv6.disable=1). A
	// fact, not an error: the other table tells.
	TableMissing TableStatus = "missing"
	// TableIncomplete: the table was read, but some of it could not be seen — malformed
	// rows, or cut at the byte cap (ReadOptions.MaxTableBytes). The listeners it shows
	// are present; one it does not show may be hidden, so it proves no absence.
	TableIncomplete TableStatus = "incomplete"
	// TableUnreadable: the file exists but could not be read (an error, not a regular
	// file), or it is nothing a kernel would print: empty, or its first non-blank line is
	// not the header. It proves nothing, presence included: its rows are not used.
	TableUnreadable TableStatus = "unreadable"
	// TableSkipped: not read, because tcp6 already showed every required listener.
	TableSkipped TableStatus = "skipped"
	// TableNotTried: not read at all.
	TableNotTried TableStatus = ""
)

// Table is the outcome of reading one /proc/<pid>/net/<name> file.
type Table struct {
	Name   string // "tcp6", "tcp"
	Status TableStatus
	Err    error // why Status is unreadable or incomplete
	Stats  TableStats
}

// judge sets t's Status and Err from the stats of a table read without error, under the
// rules of TableStatus; label names the table in Err.
func (t *Table) judge(label []byte) {
	st := t.Stats
	switch {
	case st.Bytes == 0:
		t.Status, t.Err = TableUnreadable, fmt.Errorf("%s: empty: a kernel always prints the header line", pathString(label))
	case !st.Header:
		t.Status, t.Err = TableUnreadable, fmt.Errorf("%s: the first line is not the kernel's header (\"sl  local_address ...\"): not a socket table a kernel prints", pathString(label))
	case st.Truncated:
		t.Status, t.Err = TableIncomplete, fmt.Errorf("%s: cut at the %d-byte read limit: what lies beyond was not seen", pathString(label), st.Bytes)
	case st.Malformed > 0:
		t.Status, t.Err = TableIncomplete, fmt.Errorf("%s: %d malformed row(s), first at line %d: a listener may hide in them", pathString(label), st.Malformed, st.FirstMalformed)
	default:
		t.Status = TableOK
	}
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

// Capture judges the pod on required (CorePorts when nil). Only proof counts:
//
//   - every required listener present → captured, whatever else was unreadable
//     (presence needs one row; any table but an unreadable one can show it);
//   - otherwise absence must be proven: both tables read in full (TableOK) or missing as
//     a file, and at least one of them read. A table that is unreadable, incomplete
//     (malformed rows, cut at the cap), skipped or not read may hold the missing listener,
//     so the verdict is unknown, never partial or none;
//   - then partial when some are present, none when none is.
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
	if l.absenceErr() != nil {
		return CaptureUnknown
	}
	if present > 0 {
		return CapturePartial
	}
	return CaptureNone
}

// Err says why the tables cannot prove a listener absent — an unreadable, incomplete,
// skipped or unread table, or no table at all — and is nil when they can. Capture is
// unknown exactly when Err is not nil and a required listener is missing.
func (l Listeners) Err() error { return l.absenceErr() }

func (l Listeners) absenceErr() error {
	var errs []error
	read := 0
	for _, t := range [2]*Table{&l.TCP6, &l.TCP} {
		switch t.Status {
		case TableOK:
			read++
		case TableMissing:
		case TableUnreadable, TableIncomplete:
			if t.Err != nil {
				errs = append(errs, t.Err) // it names the table
			} else {
				errs = append(errs, fmt.Errorf("%s: %s", tableName(t), t.Status))
			}
		case TableSkipped:
			errs = append(errs, fmt.Errorf("%s: skipped (not read)", tableName(t)))
		default:
			errs = append(errs, fmt.Errorf("%s: not read", tableName(t)))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if read == 0 {
		return errors.New("no socket table: tcp6 and tcp are both missing")
	}
	return nil
}

func tableName(t *Table) string {
	if t.Name == "" {
		return "table"
	}
	return t.Name
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

// addPorts records the ztunnel listeners among l.Sockets[first:].
func (l *Listeners) addPorts(first int) {
	for _, s := range l.Sockets[first:] {
		if IsZtunnelListener(s) {
			if i, found := slices.BinarySearch(l.Ports, s.Port); !found {
				l.Ports = slices.Insert(l.Ports, i, s.Port)
			}
		}
	}
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
	// MaxTableBytes caps the bytes read of each socket table; DefaultMaxTableBytes when 0
	// or less. A table cut by the cap is TableIncomplete.
	MaxTableBytes int64
}

func (o ReadOptions) maxTableBytes() int64 {
	if o.MaxTableBytes <= 0 {
		return DefaultMaxTableBytes
	}
	return o.MaxTableBytes
}

// NeedTCP is the rule every table reader follows after reading tcp6 into l: read tcp
// too, unless tcp6 already proved every required listener present (ReadOptions.Required,
// CorePorts when nil) and Full does not ask for both.
func (l Listeners) NeedTCP(opt ReadOptions) bool {
	required := opt.Required
	if required == nil {
		required = CorePorts
	}
	return opt.Full || !l.HasAll(required) || (l.TCP6.Status != TableOK && l.TCP6.Status != TableIncomplete)
}

// AddTable parses one socket table read by other means — the output of `cat
// /proc/net/tcp6` in a pod, a file — from r into l, under the rules ProcReader follows:
// at most opt.MaxTableBytes are read, the LISTEN rows are appended to l.Sockets and
// ztunnel's listeners to l.Ports, and the returned Table says what the table can prove
// (TableStatus). name ("tcp6" or "tcp") labels the Table and its errors; the caller
// stores it in l.TCP6 or l.TCP. A nil r is a table missing as a file.
func (l *Listeners) AddTable(name string, r io.Reader, opt ReadOptions) Table {
	if r == nil {
		return Table{Name: name, Status: TableMissing}
	}
	bp := tableBufs.Get().(*[]byte)
	defer tableBufs.Put(bp)
	return addTable(l, name, []byte(name), r, *bp, opt.maxTableBytes())
}

// ListenersFromTables builds Listeners from the contents of tcp6 and tcp read by other
// means (AddTable for each); a nil reader is a table missing as a file. Both are read:
// it is the Full mode.
func ListenersFromTables(tcp6, tcp io.Reader, opt ReadOptions) Listeners {
	l := Listeners{Ports: []uint16{}}
	l.TCP6 = l.AddTable("tcp6", tcp6, opt)
	l.TCP = l.AddTable("tcp", tcp, opt)
	return l
}

// addTable is the one place a socket table becomes Listeners: stream it through buf,
// judge it, and keep its rows unless it proves nothing.
func addTable[R io.Reader](l *Listeners, name string, label []byte, r R, buf []byte, limit int64) Table {
	t := Table{Name: name}
	first := len(l.Sockets)
	var err error
	l.Sockets, t.Stats, err = scanTable(r, buf, limit, StatesOf(StateListen), l.Sockets)
	if err != nil {
		l.Sockets = l.Sockets[:first]
		t.Status, t.Err = TableUnreadable, fmt.Errorf("%s: %w", pathString(label), err)
		return t
	}
	t.judge(label)
	if t.Status == TableUnreadable {
		l.Sockets = l.Sockets[:first]
		return t
	}
	l.addPorts(first)
	return t
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
// and reads tcp only when tcp6 does not already show every required listener (or when
// ReadOptions.Full asks for it). Each table is opened non-blocking, must be a regular
// file, and is streamed through one pooled 64 KiB buffer, at most
// ReadOptions.MaxTableBytes of it. It is safe for concurrent use.
type ProcReader struct {
	root string
	pool sync.Pool // *scratch
}

type scratch struct {
	buf  []byte // working buffer of the table parser (tableBufSize)
	path []byte // NUL-terminated path being opened
}

// NewProcReader returns a reader over the proc root of fs.
func NewProcReader(fs FS) *ProcReader { return &ProcReader{root: fs.root} }

// Listeners implements SocketReader.
func (r *ProcReader) Listeners(pid int, opt ReadOptions) (Listeners, error) {
	sc, _ := r.pool.Get().(*scratch)
	if sc == nil {
		sc = &scratch{buf: make([]byte, tableBufSize), path: make([]byte, 0, 128)}
	}
	defer r.pool.Put(sc)

	sc.path = append(strconv.AppendInt(append(append(sc.path[:0], r.root...), '/'), int64(pid), 10), "/net/"...)
	base := len(sc.path)
	l := Listeners{Sockets: make([]Socket, 0, 16), Ports: make([]uint16, 0, 5)}
	limit := opt.maxTableBytes()
	l.TCP6 = r.readTable(sc, base, "tcp6", &l, limit)
	if l.NeedTCP(opt) {
		l.TCP = r.readTable(sc, base, "tcp", &l, limit)
	} else {
		l.TCP = Table{Name: "tcp", Status: TableSkipped}
	}
	if l.TCP6.Status == TableMissing || l.TCP.Status == TableMissing {
		// A live process always has net/tcp; a missing table may mean it just exited.
		if _, err := os.Stat(r.root + "/" + strconv.Itoa(pid)); errors.Is(err, fs.ErrNotExist) {
			return l, fmt.Errorf("pid %d: %w", pid, ErrProcessGone)
		}
	}
	return l, nil
}

func (r *ProcReader) readTable(sc *scratch, base int, name string, l *Listeners, limit int64) Table {
	sc.path = append(append(sc.path[:base], name...), 0)
	fd, err := openRegular(sc.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return Table{Name: name, Status: TableMissing}
	case err != nil:
		return Table{Name: name, Status: TableUnreadable, Err: err}
	}
	defer syscall.Close(fd)
	return addTable(l, name, sc.path, fdReader{fd}, sc.buf, limit)
}
