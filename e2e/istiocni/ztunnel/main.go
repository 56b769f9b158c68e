// Command ztunnel-standin plays ztunnel's node side for the sandbox's real istio-cni: it speaks
// ZDS (istio pkg/zdsapi/zds.proto) to istio-cni's node agent over its unix socket, receives each
// enrolled pod's netns as an SCM_RIGHTS fd, opens ztunnel's in-pod listeners inside that netns and
// acks every message, the way istio/ztunnel src/inpod does:
//
//   - protocol.rs: ZdsHello{V1} first; every WorkloadRequest is one SOCK_SEQPACKET message of at
//     most 1024 bytes; AddWorkload carries exactly one fd, nothing else carries any; the answer
//     is WorkloadResponse{Ack{error}}, error empty for success (send_ack / send_nack).
//   - statemanager.rs process_msg: an Add before SnapshotSent joins the snapshot; Keep is valid
//     only before SnapshotSent and keeps a workload this process already has; SnapshotSent
//     drains every workload neither added nor kept since the connection began (reconcile); a
//     second SnapshotSent, or a Keep after it, is a protocol error (nack, then reconnect); Del
//     drains the workload; an Add for a workload already up in the same netns is a no-op, in a
//     new netns it replaces the old proxy.
//   - workloadmanager.rs: a proxy that fails to start is nacked ("failure to start proxy") and
//     retried; on EOF the process reconnects with backoff and keeps its proxies (istio-cni then
//     re-sends its snapshot); on SIGTERM it drains and exits.
//   - config.rs / inpod/config.rs: 15001, 15006 and 15008 on [::] (dual stack, so they show only
//     in tcp6) or 0.0.0.0 when IPv6 is off; 15053 tcp and udp on 127.0.0.1, plus [::1] when the
//     pod's lo has IPv6, when DNS capture is on; every socket with SO_MARK 1337 and SO_REUSEPORT.
//
// A control server on a unix socket (--control) serves the state (GET /state), a config_dump
// shaped like ztunnel's admin endpoint (GET /config_dump, its workloadState part; also on TCP with
// --admin, e.g. localhost:15000 as ztunnel serves it), and the fault
// hooks scenarios need: POST /fault/lose?uid=U[&port=P...] closes a pod's listeners while the
// stand-in keeps reporting it Up; POST /fault/restore?uid=U opens them again; POST
// /fault/ack?mode=ack|nack|silent makes it answer every later message with an empty Ack (the
// default), an Ack with an error, or nothing at all.
//
// Log lines follow ztunnel's plain format (1.22+): time, level, target, message, fields, tab
// separated, so meshmedic's ztlog reads them like a real ztunnel's.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"istio.io/istio/pkg/zdsapi"
)

// In-pod ports and the socket mark of ztunnel (istio cni/pkg/config/config.go mirrors them:
// ZtunnelOutboundPort, ZtunnelInboundPlaintextPort, ZtunnelInboundPort, DNSCapturePort, InpodMark).
const (
	portOutbound = 15001
	portInbound  = 15006
	portHBONE    = 15008
	portDNS      = 15053
	inpodMark    = 1337

	maxMessage   = 1024 // ztunnel src/inpod/protocol.rs read_message buffer
	retryPending = time.Second
)

func main() {
	var o options
	flag.StringVar(&o.uds, "uds", "/var/run/ztunnel/ztunnel.sock", "istio-cni's ZDS socket (its --ztunnel-uds-address)")
	flag.StringVar(&o.control, "control", "", "unix socket for the state, config_dump and fault hooks (none when empty)")
	flag.StringVar(&o.admin, "admin", "", "TCP address for ztunnel's admin endpoint, GET /config_dump only (none when empty)")
	flag.BoolVar(&o.dns, "dns-capture", true, "open the DNS proxy's 15053 listeners (ztunnel's DNS_CAPTURE)")
	flag.StringVar(&o.ipv6, "ipv6", "auto", "bind the in-pod listeners on [::] (true), 0.0.0.0 (false), or whatever this netns supports (auto)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "ztunnel-standin: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	switch o.ipv6 {
	case "true":
		o.v6 = true
	case "false":
	case "auto":
		o.v6 = ipv6Available()
	default:
		fmt.Fprintf(os.Stderr, "ztunnel-standin: --ipv6 must be true, false or auto, not %q\n", o.ipv6)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	z := newZtunnel(o, os.Stderr)
	if err := z.run(ctx); err != nil {
		z.logf("error", "ztunnel", "exiting", "error=%q", err.Error())
		os.Exit(1)
	}
}

type options struct {
	uds, control, admin string
	dns                 bool
	ipv6                string
	v6                  bool
}

// ackMode is how the stand-in answers messages (the "refuse to ack" fault hook).
type ackMode string

const (
	ackOK     ackMode = "ack"
	ackError  ackMode = "nack"
	ackSilent ackMode = "silent"
)

// workload is one pod ztunnel was handed: its proxy's listeners live in the pod's netns.
type workload struct {
	UID            string `json:"uid"`
	Name           string `json:"name"`
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
	Netns          uint64 `json:"netns"`
	State          string `json:"state"` // Up | Pending, as ztunnel's admin handler says
	// Listeners are the ports of the sockets open now (sorted, each once).
	Listeners []uint16 `json:"listeners"`
	// Lost marks listeners closed by the lose fault: the workload still says Up.
	Lost bool `json:"lost,omitempty"`

	netns   *os.File
	sockets []socket
}

type socket struct {
	fd   int
	port uint16
}

type ztunnel struct {
	o   options
	log io.Writer
	// open opens a proxy's listeners in a netns (openListeners; tests replace it).
	open func(netns *os.File, v6, dns bool) ([]socket, error)

	mu        sync.Mutex
	workloads map[string]*workload // uid → workload (Up or Pending)
	connected bool
	snapshot  bool            // SnapshotSent received on the current connection
	names     map[string]bool // uids added or kept since the connection began
	mode      ackMode
	messages  int // messages received, all connections
	conns     int // connections made
}

func newZtunnel(o options, log io.Writer) *ztunnel {
	return &ztunnel{o: o, log: log, open: openListeners, workloads: map[string]*workload{}, names: map[string]bool{}, mode: ackOK}
}

// logf writes one line in ztunnel's plain format: time, level, target, message, fields.
func (z *ztunnel) logf(level, target, msg, fields string, a ...any) {
	fmt.Fprintf(z.log, "%s\t%s\t%s\t%s\t%s\n", time.Now().UTC().Format("2006-01-02T15:04:05.000000Z"), level, target, msg, fmt.Sprintf(fields, a...))
}

func (z *ztunnel) run(ctx context.Context) error {
	if z.o.control != "" {
		l, err := listenUnix(z.o.control)
		if err != nil {
			return err
		}
		srv := z.serve(l, true)
		defer srv.Close()
	}
	if z.o.admin != "" {
		l, err := net.Listen("tcp", z.o.admin)
		if err != nil {
			return err
		}
		srv := z.serve(l, false)
		defer srv.Close()
	}
	retry := time.NewTicker(retryPending)
	defer retry.Stop()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-retry.C:
				z.retryPending()
			}
		}
	}()
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		err := z.connection(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			z.logf("warn", "inpod::workloadmanager", "failed to connect to the Istio CNI node agent", "uds=%q error=%q retry_in=%s", z.o.uds, err.Error(), backoff)
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
	z.drain()
	return nil
}

// connection runs one ZDS connection until EOF, a protocol error or ctx ends.
func (z *ztunnel) connection(ctx context.Context) error {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "unixpacket", z.o.uds)
	if err != nil {
		return err
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	z.beginConnection()
	defer func() {
		z.mu.Lock()
		z.connected = false
		z.mu.Unlock()
	}()
	z.logf("info", "inpod::workloadmanager", "connected to the Istio CNI node agent", "uds=%q", z.o.uds)

	hello, err := proto.Marshal(&zdsapi.ZdsHello{Version: zdsapi.Version_V1})
	if err != nil {
		return err
	}
	if _, err := conn.Write(hello); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	buf := make([]byte, maxMessage)
	oob := make([]byte, unix.CmsgSpace(4*4)) // room for a few fds: more than one is an error
	for {
		n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if n == 0 && oobn == 0 {
			z.logf("info", "inpod::workloadmanager", "node agent closed the connection", "")
			return nil
		}
		fds, ferr := fdsOf(oob[:oobn])
		req, perr := parse(buf[:n], flags, fds, ferr)
		z.mu.Lock()
		z.messages++
		mode := z.mode
		z.mu.Unlock()
		var procErr error
		fatal := false
		if perr != nil {
			procErr = fmt.Errorf("failure to read message : %w", perr)
			closeFds(fds)
		} else {
			procErr, fatal = z.process(req, fds)
		}
		switch {
		case mode == ackSilent:
			z.logf("warn", "inpod::workloadmanager", "fault: not answering", "")
			continue
		case mode == ackError && procErr == nil:
			procErr = errors.New("fault: stand-in refuses to ack")
		}
		ack := &zdsapi.WorkloadResponse{Payload: &zdsapi.WorkloadResponse_Ack{Ack: &zdsapi.Ack{}}}
		if procErr != nil {
			ack.GetAck().Error = procErr.Error()
		}
		b, err := proto.Marshal(ack)
		if err != nil {
			return err
		}
		if _, err := conn.Write(b); err != nil {
			return fmt.Errorf("ack: %w", err)
		}
		if fatal {
			return procErr
		}
	}
}

// beginConnection starts a connection's snapshot: nothing added or kept yet
// (statemanager.rs reset_snapshot). Proxies from earlier connections keep running.
func (z *ztunnel) beginConnection() {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.connected, z.snapshot, z.names = true, false, map[string]bool{}
	z.conns++
}

// parse decodes one request and checks its fds the way ztunnel's get_workload_data does.
func parse(b []byte, flags int, fds []int, fdErr error) (*zdsapi.WorkloadRequest, error) {
	if fdErr != nil {
		return nil, fdErr
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		return nil, errors.New("received truncated message")
	}
	if len(fds) > 1 {
		return nil, fmt.Errorf("expected 1 FD, got %d", len(fds))
	}
	var req zdsapi.WorkloadRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		return nil, err
	}
	switch req.Payload.(type) {
	case nil:
		return nil, errors.New("no payload")
	case *zdsapi.WorkloadRequest_Add:
		if len(fds) != 1 {
			return nil, errors.New("no control message")
		}
	default:
		if len(fds) != 0 {
			return nil, errors.New("unexpected control message")
		}
	}
	return &req, nil
}

func fdsOf(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue // not SCM_RIGHTS: ztunnel warns and ignores it
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

func closeFds(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// process applies one request. fatal errors end the connection after the nack, as ztunnel's
// protocol errors do.
func (z *ztunnel) process(req *zdsapi.WorkloadRequest, fds []int) (err error, fatal bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	switch p := req.Payload.(type) {
	case *zdsapi.WorkloadRequest_Add:
		netns := os.NewFile(uintptr(fds[0]), "netns")
		info := p.Add.GetWorkloadInfo()
		z.logf("info", "inpod::statemanager", "pod received, starting proxy", "uid=%s name=%s namespace=%s", p.Add.GetUid(), info.GetName(), info.GetNamespace())
		if info == nil {
			netns.Close()
			return errors.New("failure to process message : workload_info is required but not present"), true
		}
		if !z.snapshot {
			z.names[p.Add.GetUid()] = true
		}
		if err := z.add(p.Add.GetUid(), info, netns); err != nil {
			z.logf("error", "inpod::workloadmanager", "failed to start proxy", "uid=%s error=%q", p.Add.GetUid(), err.Error())
			return fmt.Errorf("failure to start proxy : %w", err), false
		}
		return nil, false
	case *zdsapi.WorkloadRequest_Keep:
		z.logf("info", "inpod::statemanager", "pod keep received. will not delete it when snapshot is sent", "uid=%s", p.Keep.GetUid())
		if z.snapshot {
			return errors.New("failure to process message : pod keep received after snapshot"), true
		}
		z.names[p.Keep.GetUid()] = true
		return nil, false
	case *zdsapi.WorkloadRequest_Del:
		uid := p.Del.GetUid()
		z.logf("info", "inpod::statemanager", "pod delete request, shutting down proxy", "uid=%s", uid)
		if !z.snapshot {
			delete(z.names, uid)
			if w := z.workloads[uid]; w != nil && w.State == "Pending" {
				z.remove(uid)
			}
			return nil, false
		}
		z.remove(uid)
		return nil, false
	case *zdsapi.WorkloadRequest_SnapshotSent:
		z.logf("info", "inpod::statemanager", "received snapshot sent", "")
		if z.snapshot {
			return errors.New("failure to process message : pod snapshot received already"), true
		}
		for uid := range z.workloads {
			if !z.names[uid] {
				z.remove(uid)
			}
		}
		z.names = map[string]bool{}
		z.snapshot = true
		return nil, false
	}
	return errors.New("failure to process message : unknown payload"), true
}

// add starts (or keeps) the proxy of uid in netns; z.mu is held. A failed start leaves the
// workload Pending, to be retried.
func (z *ztunnel) add(uid string, info *zdsapi.WorkloadInfo, netns *os.File) error {
	ino, err := inode(netns)
	if err != nil {
		netns.Close()
		return err
	}
	if w := z.workloads[uid]; w != nil {
		if w.Netns == ino && w.State == "Up" {
			netns.Close() // idempotent: the proxy is up in this netns already
			return nil
		}
		z.remove(uid) // a new netns (sandbox re-created), or a pending one: start over
	}
	w := &workload{UID: uid, Name: info.GetName(), Namespace: info.GetNamespace(), ServiceAccount: info.GetServiceAccount(),
		Netns: ino, State: "Pending", netns: netns}
	z.workloads[uid] = w
	return z.start(w)
}

// start opens w's listeners in its netns; z.mu is held.
func (z *ztunnel) start(w *workload) error {
	socks, err := z.open(w.netns, z.o.v6, z.o.dns)
	if err != nil {
		return err
	}
	w.sockets, w.State, w.Lost = socks, "Up", false
	w.Listeners = ports(socks)
	z.logf("info", "proxy", "proxy started", "uid=%s wl=%s/%s netns=%d listeners=%v", w.UID, w.Namespace, w.Name, w.Netns, w.Listeners)
	return nil
}

func (z *ztunnel) retryPending() {
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, w := range z.workloads {
		if w.State == "Pending" {
			if err := z.start(w); err != nil {
				z.logf("warn", "inpod::workloadmanager", "retrying proxy failed", "uid=%s error=%q", w.UID, err.Error())
			}
		}
	}
}

// remove drains uid's proxy: its listeners close and it is forgotten; z.mu is held.
func (z *ztunnel) remove(uid string) {
	w := z.workloads[uid]
	if w == nil {
		return
	}
	closeSockets(w.sockets)
	w.netns.Close()
	delete(z.workloads, uid)
	z.logf("info", "proxy", "proxy drained", "uid=%s wl=%s/%s", uid, w.Namespace, w.Name)
}

func (z *ztunnel) drain() {
	z.mu.Lock()
	defer z.mu.Unlock()
	for uid := range z.workloads {
		z.remove(uid)
	}
}

func closeSockets(socks []socket) {
	for _, s := range socks {
		unix.Close(s.fd)
	}
}

func ports(socks []socket) []uint16 {
	var out []uint16
	for _, s := range socks {
		if !slices.Contains(out, s.port) {
			out = append(out, s.port)
		}
	}
	slices.Sort(out)
	return out
}

func inode(f *os.File) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("netns fd: %w", err)
	}
	return st.Ino, nil
}

// ipv6Available reports whether this process's netns can open IPv6 sockets (ztunnel's
// ipv6_enabled: false on kernels booted with ipv6.disable=1).
func ipv6Available() bool {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// inNetns runs fn on a locked OS thread that has joined netns, then returns the thread to this
// process's netns. If the way back fails the goroutine ends still locked, and the Go runtime
// ends that thread with it (ztunnel src/inpod/netns.rs InpodNetns::run does setns there and back
// the same way).
func inNetns(netns *os.File, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(netns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("setns: %w", err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- errors.Join(ferr, fmt.Errorf("leaving the pod netns: %w", err))
			return // still locked: the runtime ends this thread
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// openListeners opens ztunnel's in-pod listeners inside netns; on error none stay open.
func openListeners(netns *os.File, v6, dns bool) ([]socket, error) {
	var socks []socket
	err := inNetns(netns, func() error {
		wild := "0.0.0.0"
		if v6 {
			wild = "::"
		}
		for _, p := range []uint16{portOutbound, portInbound, portHBONE} {
			fd, err := listen(unix.SOCK_STREAM, wild, p)
			if err != nil {
				return err
			}
			socks = append(socks, socket{fd, p})
		}
		if !dns {
			return nil
		}
		addrs := []string{"127.0.0.1"}
		if v6 && loHasIPv6() {
			addrs = append(addrs, "::1")
		}
		for _, a := range addrs {
			for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM} {
				fd, err := listen(typ, a, portDNS)
				if err != nil {
					return err
				}
				socks = append(socks, socket{fd, portDNS})
			}
		}
		return nil
	})
	if err != nil {
		closeSockets(socks)
		return nil, err
	}
	return socks, nil
}

// loHasIPv6 is ztunnel's ipv6_enabled_on_localhost, read from the calling thread's netns.
func loHasIPv6() bool {
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/lo/disable_ipv6")
	return err == nil && strings.TrimSpace(string(b)) != "1"
}

// listen opens a socket of typ bound to addr:port (listening, for a stream socket) in the
// calling thread's netns.
func listen(typ int, addr string, port uint16) (int, error) {
	ip := net.ParseIP(addr)
	family := unix.AF_INET
	if ip.To4() == nil {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket for %s: %w", net.JoinHostPort(addr, strconv.Itoa(int(port))), err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("%s %s: %w", what, net.JoinHostPort(addr, strconv.Itoa(int(port))), err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, inpodMark); err != nil {
		return fail("SO_MARK", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return fail("SO_REUSEPORT", err)
	}
	var sa unix.Sockaddr
	if family == unix.AF_INET6 {
		if ip.IsUnspecified() {
			// Dual stack: the listener takes IPv4 too and shows only in tcp6.
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
				return fail("IPV6_V6ONLY", err)
			}
		}
		a := &unix.SockaddrInet6{Port: int(port)}
		copy(a.Addr[:], ip.To16())
		sa = a
	} else {
		a := &unix.SockaddrInet4{Port: int(port)}
		copy(a.Addr[:], ip.To4())
		sa = a
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if typ == unix.SOCK_STREAM {
		if err := unix.Listen(fd, 128); err != nil {
			return fail("listen", err)
		}
	}
	return fd, nil
}

// --- control server -----------------------------------------------------------------------------

type state struct {
	Connected        bool       `json:"connected"`
	SnapshotReceived bool       `json:"snapshotReceived"`
	Connections      int        `json:"connections"`
	Messages         int        `json:"messages"`
	AckMode          ackMode    `json:"ackMode"`
	Workloads        []workload `json:"workloads"`
}

func (z *ztunnel) state() state {
	z.mu.Lock()
	defer z.mu.Unlock()
	s := state{Connected: z.connected, SnapshotReceived: z.snapshot, Connections: z.conns, Messages: z.messages, AckMode: z.mode,
		Workloads: []workload{}}
	for _, w := range z.workloads {
		c := *w
		c.Listeners = slices.Clone(w.Listeners)
		s.Workloads = append(s.Workloads, c)
	}
	slices.SortFunc(s.Workloads, func(a, b workload) int { return strings.Compare(a.UID, b.UID) })
	return s
}

func listenUnix(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return net.Listen("unix", path)
}

// serve serves config_dump on l, and with control also the state and the fault hooks.
func (z *ztunnel) serve(l net.Listener, control bool) io.Closer {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, _ *http.Request) {
		// The workloadState part of ztunnel's /config_dump (src/inpod/admin.rs ProxyState).
		type info struct {
			Name           string `json:"name"`
			Namespace      string `json:"namespace"`
			ServiceAccount string `json:"serviceAccount"`
		}
		type proxyState struct {
			State string `json:"state"`
			Info  info   `json:"info"`
		}
		ws := map[string]proxyState{}
		for _, wl := range z.state().Workloads {
			ws[wl.UID] = proxyState{State: wl.State, Info: info{wl.Name, wl.Namespace, wl.ServiceAccount}}
		}
		writeJSON(w, map[string]any{"workloadState": ws})
	})
	if control {
		z.controlHandlers(mux)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return srv
}

// controlHandlers adds the state and the fault hooks to mux.
func (z *ztunnel) controlHandlers(mux *http.ServeMux) {
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, z.state()) })
	mux.HandleFunc("POST /fault/lose", func(w http.ResponseWriter, r *http.Request) {
		if err := z.lose(r.URL.Query().Get("uid"), r.URL.Query()["port"]); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, z.state())
	})
	mux.HandleFunc("POST /fault/restore", func(w http.ResponseWriter, r *http.Request) {
		if err := z.restore(r.URL.Query().Get("uid")); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, z.state())
	})
	mux.HandleFunc("POST /fault/ack", func(w http.ResponseWriter, r *http.Request) {
		m := ackMode(r.URL.Query().Get("mode"))
		if m != ackOK && m != ackError && m != ackSilent {
			http.Error(w, fmt.Sprintf("mode must be %s, %s or %s", ackOK, ackError, ackSilent), http.StatusBadRequest)
			return
		}
		z.mu.Lock()
		z.mode = m
		z.mu.Unlock()
		z.logf("warn", "inpod::workloadmanager", "fault: ack mode set", "mode=%s", m)
		writeJSON(w, z.state())
	})
}

// lose closes uid's listeners (those on the given ports, all when none) and keeps the workload
// Up: the listeners vanish from the pod's netns while ztunnel believes its proxy runs.
func (z *ztunnel) lose(uid string, portArgs []string) error {
	var want []uint16
	for _, a := range portArgs {
		p, err := strconv.ParseUint(a, 10, 16)
		if err != nil {
			return fmt.Errorf("port %q: %w", a, err)
		}
		want = append(want, uint16(p))
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	w := z.workloads[uid]
	if w == nil {
		return fmt.Errorf("no workload %q", uid)
	}
	var keep []socket
	for _, s := range w.sockets {
		if len(want) == 0 || slices.Contains(want, s.port) {
			unix.Close(s.fd)
			continue
		}
		keep = append(keep, s)
	}
	w.sockets, w.Lost = keep, true
	w.Listeners = ports(keep)
	z.logf("warn", "proxy", "fault: listeners closed", "uid=%s wl=%s/%s left=%v", uid, w.Namespace, w.Name, w.Listeners)
	return nil
}

func (z *ztunnel) restore(uid string) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	w := z.workloads[uid]
	if w == nil {
		return fmt.Errorf("no workload %q", uid)
	}
	closeSockets(w.sockets)
	w.sockets = nil
	return z.start(w)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
