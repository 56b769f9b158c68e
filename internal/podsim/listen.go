package podsim

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ztunnel's in-pod ports (ISTIO-FACTS.md §2).
const (
	PortOutbound uint16 = 15001 // outbound capture
	PortInbound  uint16 = 15006 // inbound plaintext
	PortHBONE    uint16 = 15008 // inbound HBONE
	PortDNS      uint16 = 15053 // DNS proxy, tcp and udp
)

// ZtunnelPorts are all of ztunnel's in-pod ports, the default of Flush.
var ZtunnelPorts = []uint16{PortOutbound, PortInbound, PortHBONE, PortDNS}

// ListenOption changes how Listen and ListenUDP make a socket.
type ListenOption func(*listenOpts)

type listenOpts struct {
	reusePort bool
	v6only    bool
}

// ReusePort sets SO_REUSEPORT, as ztunnel does on its in-pod sockets (istio/ztunnel src/config.rs,
// inpod_port_reuse, on by default) so that an old and a new ztunnel can both listen during a restart.
func ReusePort() ListenOption { return func(o *listenOpts) { o.reusePort = true } }

// V6Only sets IPV6_V6ONLY on an IPv6 socket. Without it (the default, and ztunnel's way) a socket
// on [::] also takes IPv4 and shows only in /proc/<pid>/net/tcp6.
func V6Only() ListenOption { return func(o *listenOpts) { o.v6only = true } }

// Listener is a socket the sim made inside a pod's netns, standing in for one of ztunnel's. It
// is what Listen and ListenUDP return (as an io.Closer).
type Listener struct {
	pod     *Pod
	network string // "tcp" or "udp"
	addr    netip.AddrPort
	netns   uint64
	f       *os.File
	closed  bool
}

// Addr returns the bound address (with the real port when 0 was asked for).
func (l *Listener) Addr() netip.AddrPort { return l.addr }

// Network returns "tcp" or "udp".
func (l *Listener) Network() string { return l.network }

// Netns returns the inode of the netns the socket lives in.
func (l *Listener) Netns() uint64 { return l.netns }

// Close closes the socket. It is idempotent.
func (l *Listener) Close() error {
	s := l.pod.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	l.pod.listeners = slices.DeleteFunc(l.pod.listeners, func(x *Listener) bool { return x == l })
	return l.closeLocked()
}

func (l *Listener) closeLocked() error {
	if l.closed {
		return nil
	}
	l.closed = true
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("close %s listener %s in netns %d: %w", l.network, l.addr, l.netns, err)
	}
	return nil
}

// listening reports whether a TCP listener is still in LISTEN (ss -K moves it to CLOSE).
func (l *Listener) listening() (bool, error) {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return false, err
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	}); err != nil {
		return false, err
	}
	return v != 0, gerr
}

type sockReq struct {
	network string
	addr    netip.AddrPort
	opts    listenOpts
}

// openSocket creates, binds and (for tcp) listens a socket in the calling thread's netns. It is
// close-on-exec so that no child process of the sim inherits it.
func openSocket(r sockReq) (*os.File, netip.AddrPort, error) {
	a := r.addr.Addr()
	if !a.IsValid() {
		return nil, r.addr, fmt.Errorf("listen %s: invalid address", r.network)
	}
	family := unix.AF_INET6
	if a.Is4() {
		family = unix.AF_INET
	}
	typ := unix.SOCK_STREAM
	if r.network == "udp" {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, r.addr, fmt.Errorf("listen %s %s: socket: %w", r.network, r.addr, err)
	}
	fail := func(what string, err error) (*os.File, netip.AddrPort, error) {
		unix.Close(fd)
		return nil, r.addr, fmt.Errorf("listen %s %s: %s: %w", r.network, r.addr, what, err)
	}
	// Like Rust's std TcpListener::bind, which ztunnel uses (istio/ztunnel src/inpod/config.rs).
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	if r.opts.reusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fail("SO_REUSEPORT", err)
		}
	}
	var sa unix.Sockaddr
	if family == unix.AF_INET6 {
		v6only := 0
		if r.opts.v6only {
			v6only = 1
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			return fail("IPV6_V6ONLY", err)
		}
		sa = &unix.SockaddrInet6{Port: int(r.addr.Port()), Addr: a.As16()}
	} else {
		sa = &unix.SockaddrInet4{Port: int(r.addr.Port()), Addr: a.As4()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if r.network == "tcp" {
		if err := unix.Listen(fd, 128); err != nil {
			return fail("listen", err)
		}
	}
	bound := r.addr
	if got, err := unix.Getsockname(fd); err == nil {
		switch got := got.(type) {
		case *unix.SockaddrInet4:
			bound = netip.AddrPortFrom(a, uint16(got.Port))
		case *unix.SockaddrInet6:
			bound = netip.AddrPortFrom(a, uint16(got.Port))
		}
	}
	return os.NewFile(uintptr(fd), r.network+":"+bound.String()), bound, nil
}

// openInPod opens the sockets reqs inside p's current netns, all or none, and registers them.
func (s *Sim) openInPod(p *Pod, reqs []sockReq) ([]*Listener, error) {
	var made []*Listener
	err := inNetns(p.PID, func() error {
		for _, r := range reqs {
			f, bound, err := openSocket(r)
			if err != nil {
				return err
			}
			made = append(made, &Listener{pod: p, network: r.network, addr: bound, netns: p.Netns, f: f})
		}
		return nil
	})
	if err != nil {
		for _, l := range made {
			_ = l.closeLocked()
		}
		return nil, fmt.Errorf("pod %s: %w", p.UID, err)
	}
	p.listeners = append(p.listeners, made...)
	return made, nil
}

func buildOpts(opts []ListenOption) listenOpts {
	var o listenOpts
	for _, f := range opts {
		f(&o)
	}
	return o
}

// Listen makes a TCP LISTEN socket on addr inside p's netns, from this process, as ztunnel makes
// its in-pod sockets: a thread enters the netns, creates socket, binds and listens, and returns.
// The socket belongs to the sim (RemovePod and Close close it); the returned io.Closer is a
// *Listener. "[::]:P" is bound without IPV6_V6ONLY unless V6Only is given. For a host-network
// pod the socket is in this process's own netns, shared with everything else on the machine.
func (s *Sim) Listen(p *Pod, addr netip.AddrPort, opts ...ListenOption) (io.Closer, error) {
	return s.listen(p, "tcp", addr, opts)
}

// ListenUDP is Listen for a bound UDP socket (ztunnel's DNS proxy has one on 15053).
func (s *Sim) ListenUDP(p *Pod, addr netip.AddrPort, opts ...ListenOption) (io.Closer, error) {
	return s.listen(p, "udp", addr, opts)
}

func (s *Sim) listen(p *Pod, network string, addr netip.AddrPort, opts []ListenOption) (io.Closer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(p); err != nil {
		return nil, err
	}
	ls, err := s.openInPod(p, []sockReq{{network: network, addr: addr, opts: buildOpts(opts)}})
	if err != nil {
		return nil, err
	}
	return ls[0], nil
}

// Capture makes ztunnel's in-pod socket set in p's netns, as a ztunnel that has just taken the
// pod would (istio/ztunnel src/config.rs construct_config; ISTIO-FACTS.md §2): TCP LISTEN on
// [::]:15001, [::]:15006 and [::]:15008 without IPV6_V6ONLY (0.0.0.0 when the netns has no
// IPv6), and with dns also 127.0.0.1:15053 tcp and udp plus [::1]:15053 tcp and udp when the pod's
// lo has IPv6 (ztunnel checks /proc/sys/net/ipv6/conf/lo/disable_ipv6 per pod; see
// PodSpec.NoIPv6Lo). All sockets have SO_REUSEPORT, so a second Capture adds a second set, as
// during a ztunnel restart. Host-network pods are refused: ztunnel never captures them.
func (s *Sim) Capture(p *Pod, dns bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(p); err != nil {
		return err
	}
	if p.Spec.HostNetwork {
		return fmt.Errorf("pod %s: capture: host-network pods are never captured", p.UID)
	}
	var v6, lo6 bool
	if err := inNetns(p.PID, func() error { v6, lo6 = hasIPv6(); return nil }); err != nil {
		return fmt.Errorf("pod %s: capture: %w", p.UID, err)
	}
	wild := netip.IPv4Unspecified()
	if v6 {
		wild = netip.IPv6Unspecified()
	}
	o := listenOpts{reusePort: true}
	var reqs []sockReq
	for _, port := range []uint16{PortOutbound, PortInbound, PortHBONE} {
		reqs = append(reqs, sockReq{"tcp", netip.AddrPortFrom(wild, port), o})
	}
	if dns {
		locals := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
		if v6 && lo6 {
			locals = append(locals, netip.IPv6Loopback())
		}
		for _, a := range locals {
			reqs = append(reqs,
				sockReq{"tcp", netip.AddrPortFrom(a, PortDNS), o},
				sockReq{"udp", netip.AddrPortFrom(a, PortDNS), o})
		}
	}
	if _, err := s.openInPod(p, reqs); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	return nil
}

// Flush destroys the TCP LISTEN sockets on ports (all of ZtunnelPorts when none are given) in
// p's current netns, the way orphans are made: from outside, with
//
//	nsenter --net=/proc/<pid>/ns/net ss -K -t state listening '( sport = :P or ... )'
//
// which needs CONFIG_INET_DIAG_DESTROY. Any TCP listener there is destroyed, not only the sim's.
// `ss -K -u` left a bound UDP socket in place on the kernel this was written on (6.18), so when
// 15053 is flushed the sim closes its own UDP sockets on that port in that netns instead. Flush
// then checks that none of the sim's TCP listeners on those ports in that netns still listens,
// and closes their (now dead) descriptors.
func (s *Sim) Flush(p *Pod, ports ...uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(p); err != nil {
		return err
	}
	if p.Spec.HostNetwork {
		// ss -K there would destroy this host's own listeners.
		return fmt.Errorf("pod %s: flush: refused for a host-network pod", p.UID)
	}
	if len(ports) == 0 {
		ports = ZtunnelPorts
	}
	ss, err := lookTool("ss")
	if err != nil {
		return fmt.Errorf("pod %s: flush: %w", p.UID, err)
	}
	terms := make([]string, len(ports))
	for i, port := range ports {
		terms[i] = "sport = :" + strconv.Itoa(int(port))
	}
	filter := "( " + strings.Join(terms, " or ") + " )"
	out, err := nsenterNet(p.PID, nil, ss, "-K", "-t", "state", "listening", filter)
	if err != nil {
		return fmt.Errorf("pod %s: flush %v: ss -K: %w: %s", p.UID, ports, err, strings.TrimSpace(string(out)))
	}
	// The sim's sockets there are dead now (TCP) or must go (UDP): close their descriptors too, so
	// that repeated Capture/Flush cycles do not pile them up.
	var errs []error
	var dead []*Listener
	for _, l := range p.listeners {
		if l.netns != p.Netns || !slices.Contains(ports, l.addr.Port()) {
			continue
		}
		if l.network == "tcp" {
			on, err := l.listening()
			if err != nil {
				errs = append(errs, fmt.Errorf("check %s: %w", l.addr, err))
				continue
			}
			if on {
				errs = append(errs, fmt.Errorf("%s still listening after ss -K (kernel without CONFIG_INET_DIAG_DESTROY?)", l.addr))
				continue
			}
		}
		dead = append(dead, l)
	}
	for _, l := range dead {
		errs = append(errs, l.closeLocked())
	}
	p.listeners = slices.DeleteFunc(p.listeners, func(x *Listener) bool { return slices.Contains(dead, x) })
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pod %s: flush %v: %w", p.UID, ports, err)
	}
	return nil
}
