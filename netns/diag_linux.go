//go:build linux

package netns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DiagCapabilities are the capabilities DiagReader needs, found by experiment on Linux 6.18
// (netns/diag_kernel_test.go, TestKernelDiagCapabilities): CAP_SYS_ADMIN for setns(2) into
// the pod's network namespace, and CAP_SYS_PTRACE to open <pid>/ns/net of a process whose
// uid differs from ours or that holds capabilities we lack (ptrace-read access; a pod's
// sandbox process usually does). CAP_NET_ADMIN is not needed: sock_diag dumps sockets to
// anyone.
var DiagCapabilities = []string{"CAP_SYS_ADMIN", "CAP_SYS_PTRACE"}

// diagCapsHint ends a permission error of DiagReader.
const diagCapsHint = "the netlink socket backend needs CAP_SYS_ADMIN (setns into the pod's netns) and CAP_SYS_PTRACE (open another process's ns/net)"

// DiagReader reads the LISTEN sockets of a process's network namespace through netlink
// sock_diag (NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY with inet_diag_req_v2) instead of
// /proc/<pid>/net/tcp{6,}. Asking the kernel for TCP_LISTEN sockets only makes it walk
// the small listening hash and skip the established hash that every read of
// /proc/<pid>/net/tcp* walks whole (net/ipv4/inet_diag.c, inet_diag_dump_icsk).
//
// A netlink socket answers for the netns it was created in, so each read enters the
// netns of pid on a locked OS thread just long enough to create the socket. That needs
// privileges ProcReader does not: see DiagCapabilities. The result has the same shape as
// ProcReader's: Sockets, Ports, and a "tcp6" and a "tcp" Table (AF_INET6 and AF_INET
// dumps); Table.Stats.Rows counts the LISTEN sockets the kernel reported, not every row
// of the table. ReadOptions are honoured as ProcReader does: the AF_INET dump is skipped
// when AF_INET6 already shows every required listener, unless Full. It is safe for
// concurrent use.
type DiagReader struct {
	root string
	seq  atomic.Uint32
}

// NewDiagReader returns a netlink sock_diag reader for the processes of fs's proc root
// (<root>/<pid>/ns/net is what it opens).
func NewDiagReader(fs FS) *DiagReader { return &DiagReader{root: fs.root} }

// netlinkBufSize is a receive buffer that holds any netlink dump datagram: the kernel sizes
// dump skbs by the largest receive buffer seen, capped at 32 KiB (net/netlink/af_netlink.c,
// netlink_recvmsg and netlink_dump).
const netlinkBufSize = 32 << 10

// netlinkBufs holds *[]byte of netlinkBufSize, the receive buffers of DiagReader and
// RuleReader.
var netlinkBufs = sync.Pool{New: func() any { b := make([]byte, netlinkBufSize); return &b }}

// Listeners implements SocketReader.
func (r *DiagReader) Listeners(pid int, opt ReadOptions) (Listeners, error) {
	l := Listeners{TCP6: Table{Name: "tcp6"}, TCP: Table{Name: "tcp"}}
	fd, err := r.open(pid)
	if err != nil {
		if !errors.Is(err, ErrProcessGone) {
			l.TCP6.Status, l.TCP6.Err = TableUnreadable, err
			l.TCP.Status, l.TCP.Err = TableUnreadable, err
		}
		return l, err
	}
	defer unix.Close(fd)
	bp := netlinkBufs.Get().(*[]byte)
	defer netlinkBufs.Put(bp)

	l.Sockets, l.Ports = make([]Socket, 0, 16), make([]uint16, 0, 5)
	l.TCP6 = r.dump(fd, pid, unix.AF_INET6, *bp, &l)
	if !l.NeedTCP(opt) {
		l.TCP.Status = TableSkipped
	} else {
		l.TCP = r.dump(fd, pid, unix.AF_INET, *bp, &l)
	}
	return l, nil
}

// open returns a NETLINK_SOCK_DIAG socket that lives in the network namespace of pid.
func (r *DiagReader) open(pid int) (int, error) {
	return netlinkIn(r.root, pid, unix.NETLINK_SOCK_DIAG, diagCapsHint)
}

// netlinkIn returns a netlink socket of protocol proto that lives in the network namespace
// of pid under root, connected to the kernel so that no other process of that netns can
// send to it. A process that is gone: ErrProcessGone; a permission error ends with hint
// (the capabilities the caller's reader needs).
func netlinkIn(root string, pid, proto int, hint string) (int, error) {
	path := root + "/" + strconv.Itoa(pid) + "/ns/net"
	// O_NONBLOCK: a FIFO put where the nsfs file should be must fail (setns refuses
	// anything but a namespace), not block the open.
	nsfd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		err = &fs.PathError{Op: "open", Path: path, Err: err}
		switch {
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ESRCH):
			return -1, fmt.Errorf("pid %d: %w: %w", pid, ErrProcessGone, err)
		case errors.Is(err, fs.ErrPermission):
			return -1, fmt.Errorf("pid %d: %w (%s)", pid, err, hint)
		}
		return -1, fmt.Errorf("pid %d: %w", pid, err)
	}
	fd, err := socketInNetns(nsfd, proto)
	unix.Close(nsfd)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return -1, fmt.Errorf("pid %d: %w (%s)", pid, err, hint)
		}
		return -1, fmt.Errorf("pid %d: %w", pid, err)
	}
	if err := unix.Connect(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("pid %d: connect netlink socket (protocol %d): %w", pid, proto, err)
	}
	return fd, nil
}

// errThreadLost marks a failure to return a thread to its own network namespace: the
// thread was then left locked, and the runtime ends it with its goroutine.
var errThreadLost = errors.New("could not return the thread to its network namespace")

// socketInNetns creates a netlink socket of protocol proto inside the network namespace nsfd
// refers to. It works on a fresh goroutine locked to its OS thread: setns into the
// target, socket, setns back. If the way back fails the goroutine exits still locked and
// the Go runtime terminates that thread, so no thread of this process stays in a foreign
// netns (the same dance ztunnel does for its in-pod sockets: istio/ztunnel
// src/inpod/netns.rs, InpodNetns::run).
func socketInNetns(nsfd, proto int) (int, error) {
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{-1, fmt.Errorf("open own netns: %w", &fs.PathError{Op: "open", Path: "/proc/thread-self/ns/net", Err: err})}
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{-1, fmt.Errorf("enter netns: %w", os.NewSyscallError("setns", err))}
			return
		}
		fd, serr := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if serr != nil {
			serr = fmt.Errorf("netlink socket (protocol %d): %w", proto, os.NewSyscallError("socket", serr))
			fd = -1
		}
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Deliberately no UnlockOSThread: the thread dies with this goroutine.
			if fd >= 0 {
				unix.Close(fd)
			}
			done <- result{-1, errors.Join(serr, fmt.Errorf("leave netns: %w: %w", errThreadLost, os.NewSyscallError("setns", err)))}
			return
		}
		runtime.UnlockOSThread()
		done <- result{fd, serr}
	}()
	res := <-done
	return res.fd, res.err
}

// Netlink and sock_diag wire constants (include/uapi/linux/netlink.h, sock_diag.h,
// inet_diag.h).
const (
	nlmsgHdrLen       = 16 // struct nlmsghdr
	inetDiagReqV2Len  = 56 // struct inet_diag_req_v2
	inetDiagMsgLen    = 72 // struct inet_diag_msg
	sockDiagByFamily  = 20 // SOCK_DIAG_BY_FAMILY
	nlmsgNoop         = 1  // NLMSG_NOOP
	nlmsgError        = 2  // NLMSG_ERROR
	nlmsgDone         = 3  // NLMSG_DONE
	nlmsgOverrun      = 4  // NLMSG_OVERRUN
	nlmFRequest       = 0x1
	nlmFDump          = 0x300
	tcpListenStateBit = 1 << StateListen // idiag_states bit for TCP_LISTEN
)

// diagRequest builds the one request of a dump: every TCP socket of family in TCP_LISTEN.
func diagRequest(b *[nlmsgHdrLen + inetDiagReqV2Len]byte, family uint8, seq uint32) {
	*b = [nlmsgHdrLen + inetDiagReqV2Len]byte{}
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], sockDiagByFamily)
	ne.PutUint16(b[6:], nlmFRequest|nlmFDump)
	ne.PutUint32(b[8:], seq)
	// b[12:16] nlmsg_pid 0: the kernel fills in our port id.
	b[16] = family                          // sdiag_family
	b[17] = unix.IPPROTO_TCP                // sdiag_protocol
	b[18] = 0                               // idiag_ext: no extensions
	ne.PutUint32(b[20:], tcpListenStateBit) // idiag_states
	// id (inet_diag_sockid) all zero: no port, address, interface or cookie filter.
}

// dump runs one sock_diag dump of family's LISTEN sockets on fd and appends them to l.
func (r *DiagReader) dump(fd, pid int, family uint8, buf []byte, l *Listeners) Table {
	name := "tcp"
	if family == unix.AF_INET6 {
		name = "tcp6"
	}
	t := Table{Name: name}
	fail := func(err error) Table {
		t.Status = TableUnreadable
		t.Err = fmt.Errorf("pid %d: netlink sock_diag dump of %s LISTEN sockets: %w", pid, name, err)
		if errors.Is(err, unix.ENOENT) {
			t.Err = fmt.Errorf("%w (kernel without inet_diag/tcp_diag?)", t.Err)
		}
		return t
	}
	seq := r.seq.Add(1)
	var req [nlmsgHdrLen + inetDiagReqV2Len]byte
	diagRequest(&req, family, seq)
	first := len(l.Sockets)
	err := netlinkDump(fd, req[:], buf, func(b []byte) (bool, error) {
		var rows int
		var done bool
		var err error
		l.Sockets, rows, done, err = parseDiagMessages(b, seq, l.Sockets)
		t.Stats.Rows += rows
		return done, err
	})
	if err != nil {
		l.Sockets = l.Sockets[:first]
		return fail(err)
	}
	t.Status = TableOK
	l.addPorts(first)
	return t
}

// netlinkDump sends one dump request on fd and feeds each reply datagram, received into
// buf, to parse until parse reports the dump done. A datagram larger than buf, or the end
// of the stream before NLMSG_DONE, is an error.
func netlinkDump(fd int, req, buf []byte, parse func([]byte) (done bool, err error)) error {
	if err := sendAll(fd, req); err != nil {
		return err
	}
	for {
		n, err := recvTrunc(fd, buf)
		if err != nil {
			return err
		}
		if n > len(buf) {
			return fmt.Errorf("datagram of %d bytes truncated to %d", n, len(buf))
		}
		if n == 0 {
			return errors.New("dump ended without NLMSG_DONE")
		}
		done, err := parse(buf[:n])
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

func sendAll(fd int, b []byte) error {
	for {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("send", err)
		}
		if n != len(b) {
			return fmt.Errorf("send: short write %d of %d bytes", n, len(b))
		}
		return nil
	}
}

// recvTrunc receives one datagram into b and returns its real length (MSG_TRUNC), which
// exceeds len(b) when it did not fit. It does not allocate.
func recvTrunc(fd int, b []byte) (int, error) {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_TRUNC, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, os.NewSyscallError("recv", errno)
		}
		return int(n), nil
	}
}

// walkNetlink walks one datagram of a netlink dump reply and calls fn with the offset and
// payload of each message of type want; fn's error stops the walk. NLMSG_NOOP is skipped;
// NLMSG_DONE ends the dump (done is true; a negative error code in it is an error).
// Every message must carry seq. A message whose length runs past the datagram or below its
// header, a message of another type, NLMSG_ERROR and NLMSG_OVERRUN are errors. It never
// reads past b and always advances: the layouts are include/uapi/linux/netlink.h's (struct
// nlmsghdr, NLMSG_ALIGN).
func walkNetlink(b []byte, seq uint32, want uint16, fn func(off int, payload []byte) error) (done bool, err error) {
	ne := binary.NativeEndian
	off := 0
	for off < len(b) {
		m := b[off:]
		if len(m) < nlmsgHdrLen {
			return false, fmt.Errorf("netlink message at byte %d: %d bytes left, header needs %d", off, len(m), nlmsgHdrLen)
		}
		mlen := int(ne.Uint32(m[0:]))
		typ := ne.Uint16(m[4:])
		mseq := ne.Uint32(m[8:])
		if mlen < nlmsgHdrLen || mlen > len(m) {
			return false, fmt.Errorf("netlink message at byte %d: length %d outside [%d, %d]", off, mlen, nlmsgHdrLen, len(m))
		}
		if mseq != seq {
			return false, fmt.Errorf("netlink message at byte %d: sequence %d, want %d", off, mseq, seq)
		}
		payload := m[nlmsgHdrLen:mlen]
		switch typ {
		case nlmsgNoop:
		case nlmsgDone:
			if len(payload) >= 4 {
				if e := int32(ne.Uint32(payload)); e < 0 {
					return true, fmt.Errorf("dump failed: %w", syscall.Errno(-e))
				}
			}
			return true, nil
		case nlmsgError:
			if len(payload) < 4 {
				return false, fmt.Errorf("netlink error message at byte %d: %d-byte payload", off, len(payload))
			}
			if e := int32(ne.Uint32(payload)); e < 0 {
				return true, syscall.Errno(-e)
			}
			return false, fmt.Errorf("netlink message at byte %d: unexpected acknowledgement in a dump", off)
		case nlmsgOverrun:
			return false, errors.New("netlink overrun: messages were lost")
		case want:
			if err := fn(off, payload); err != nil {
				return false, err
			}
		default:
			return false, fmt.Errorf("netlink message at byte %d: unexpected type %d", off, typ)
		}
		// NLMSG_ALIGN; the last message of a datagram may lack its padding.
		off += min((mlen+3)&^3, len(m))
	}
	return false, nil
}

// parseDiagMessages parses one datagram of a sock_diag dump reply (walkNetlink's rules):
// messages of type SOCK_DIAG_BY_FAMILY, each holding a struct inet_diag_msg (attributes
// after it are ignored), ended by NLMSG_DONE. It appends the TCP_LISTEN sockets to dst and
// returns how many socket messages it read and whether the dump is done. A short
// inet_diag_msg or an unknown address family is an error.
//
// struct inet_diag_msg is include/uapi/linux/inet_diag.h's: family, state, timer, retrans,
// id{sport, dport big-endian; src[4], dst[4] network order; if; cookie[2]}, expires,
// rqueue, wqueue, uid, inode.
func parseDiagMessages(b []byte, seq uint32, dst []Socket) (out []Socket, rows int, done bool, err error) {
	done, err = walkNetlink(b, seq, sockDiagByFamily, func(off int, payload []byte) error {
		s, err := parseInetDiagMsg(payload)
		if err != nil {
			return fmt.Errorf("sock_diag message at byte %d: %w", off, err)
		}
		rows++
		if s.State == StateListen {
			dst = append(dst, s)
		}
		return nil
	})
	return dst, rows, done, err
}

func parseInetDiagMsg(p []byte) (Socket, error) {
	if len(p) < inetDiagMsgLen {
		return Socket{}, fmt.Errorf("inet_diag_msg of %d bytes, want %d", len(p), inetDiagMsgLen)
	}
	s := Socket{
		Port:  binary.BigEndian.Uint16(p[4:]),
		State: State(p[1]),
		UID:   binary.NativeEndian.Uint32(p[64:]),
		Inode: uint64(binary.NativeEndian.Uint32(p[68:])),
	}
	switch p[0] {
	case unix.AF_INET:
		s.Addr = netip.AddrFrom4([4]byte(p[8:12]))
	case unix.AF_INET6:
		s.Addr = netip.AddrFrom16([16]byte(p[8:24]))
	default:
		return Socket{}, fmt.Errorf("address family %d", p[0])
	}
	return s, nil
}
