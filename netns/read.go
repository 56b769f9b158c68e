package netns

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"syscall"
	"unsafe"
)

// Every file netns reads from a proc root goes through openRegular, and is read with a cap
// on the bytes it may consume. A kernel's proc files are regular files (S_IFREG, size 0)
// that end; a proc root can also be a test tree or a copy of a node's /proc, where a FIFO
// would block a plain open or read for ever and /dev/zero would never end.

// DefaultMaxTableBytes caps what one read of a socket table (net/tcp6, net/tcp) may
// consume. A kernel prints a tcp6 row in ~150–180 bytes (at most ~250 with every field at
// its widest: net/ipv6/tcp_ipv6.c, get_tcp6_sock), so a network namespace with 200,000
// sockets prints 30–50 MB; 128 MiB leaves 2.5× headroom over that worst case. A table of
// the cap or more is read up to the cap only: what it shows is present, what it does not
// show may lie beyond (TableIncomplete).
const DefaultMaxTableBytes int64 = 128 << 20

// Caps of the other files netns reads; each is a few times the largest a kernel prints.
const (
	// <pid>/cgroup: one line per hierarchy (v1 has at most ~16, plus "0::"), each path at
	// most PATH_MAX (kernel/cgroup/cgroup.c, proc_cgroup_show).
	maxCgroupBytes = 128 << 10
	// <pid>/stat: 52 numeric fields and a 16-byte comm, ~1 KiB at most.
	maxStatBytes = 4 << 10
	// <pid>/comm: TASK_COMM_LEN (16) and a newline.
	maxCommBytes = 256
	// net/sockstat, net/sockstat6: six short lines.
	maxSockstatBytes = 4 << 10
	// net/fib_trie: the IPv4 routing trie of one netns. A pod's is a few KiB; a router's
	// full BGP table (~1M routes) prints ~100 MB, far beyond what a pod netns holds.
	maxFibTrieBytes = 32 << 20
	// net/if_inet6: one ~55-byte line per IPv6 address.
	maxIfInet6Bytes = 4 << 20
)

var (
	// ErrNotRegularFile is wrapped when a file under the proc root is a FIFO, a device, a
	// socket or a directory. Kernel proc files never are; reading one could block for ever
	// (a FIFO) or never end (/dev/zero), so it is refused before any read.
	ErrNotRegularFile = errors.New("not a regular file")
	// ErrTooLarge is wrapped when a small proc file (cgroup, stat, comm, sockstat,
	// fib_trie, if_inet6) holds more than its cap: no kernel prints that much there.
	ErrTooLarge = errors.New("larger than its read limit")
)

// openFlags: no blocking on a FIFO's open (O_NONBLOCK), no fd leaked into children
// (O_CLOEXEC), never a controlling terminal (O_NOCTTY). Symlinks are followed (fixture
// trees use them); the opened file's type is what is checked.
const openFlags = syscall.O_RDONLY | syscall.O_NONBLOCK | syscall.O_CLOEXEC | syscall.O_NOCTTY

// openRegular opens the NUL-terminated path and checks that what it opened is a regular
// file. Errors are *fs.PathError naming the path.
func openRegular(path []byte) (int, error) {
	fd, err := openat(path)
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: pathString(path), Err: err}
	}
	var st syscall.Stat_t
	for {
		err = syscall.Fstat(fd, &st)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		syscall.Close(fd)
		return -1, &fs.PathError{Op: "fstat", Path: pathString(path), Err: err}
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		syscall.Close(fd)
		return -1, &fs.PathError{Op: "open", Path: pathString(path), Err: fmt.Errorf("%w (%s)", ErrNotRegularFile, fileType(st.Mode))}
	}
	return fd, nil
}

func fileType(mode uint32) string {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFIFO:
		return "a FIFO"
	case syscall.S_IFCHR:
		return "a character device"
	case syscall.S_IFBLK:
		return "a block device"
	case syscall.S_IFSOCK:
		return "a socket"
	case syscall.S_IFDIR:
		return "a directory"
	case syscall.S_IFLNK:
		return "a symlink"
	}
	return fmt.Sprintf("file type %#o", mode&syscall.S_IFMT)
}

// pathString is a NUL-terminated path without its NUL.
func pathString(path []byte) string {
	if n := len(path); n > 0 && path[n-1] == 0 {
		path = path[:n-1]
	}
	return string(path)
}

func openat(path []byte) (int, error) {
	for {
		fd, _, errno := syscall.Syscall6(syscall.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(&path[0])),
			uintptr(openFlags), 0, 0, 0)
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

// fdReader reads a file descriptor with plain syscalls; 0 bytes is io.EOF. It is a value
// type so that scanTable[fdReader] calls it directly (no interface, no allocation).
type fdReader struct{ fd int }

func (r fdReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := syscall.Read(r.fd, p)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n <= 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

// readSmall reads the whole regular file at the NUL-terminated path into buf (growing
// it), failing with ErrTooLarge when it holds more than limit bytes.
//
// It is only for files a kernel prints in one record — single_open seq files: cgroup,
// stat, comm, sockstat, sockstat6 (fs/seq_file.c, seq_read_iter: the one record is shown
// whole into a buffer grown to fit, then copied out up to the size asked) — and for
// regular files elsewhere (a test tree), where a read returns less than asked only at the
// end. So a short read is the end, and no read is spent on hearing EOF: with the fstat
// of openRegular the syscalls per file stay at four, as before the type check.
func readSmall(path []byte, buf []byte, limit int) ([]byte, error) {
	fd, err := openRegular(path)
	if err != nil {
		return buf, err
	}
	defer syscall.Close(fd)
	start := len(buf)
	tooLarge := func() error {
		return &fs.PathError{Op: "read", Path: pathString(path), Err: fmt.Errorf("%w (%d bytes)", ErrTooLarge, limit)}
	}
	for {
		got := len(buf) - start
		if got > limit {
			return buf[:start], tooLarge()
		}
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(max(got, 512), limit+1-got))
		}
		// Up to one byte past the limit: it tells "too large" from "exactly the limit".
		room := buf[len(buf):min(cap(buf), start+limit+1)]
		n, err := fdReader{fd}.Read(room)
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf[:start], &fs.PathError{Op: "read", Path: pathString(path), Err: err}
		}
		buf = buf[:len(buf)+n]
		if n < len(room) && len(buf)-start <= limit { // a short read: the end (see above)
			return buf, nil
		}
	}
}

// readSmallString is readSmall for a Go string path.
func readSmallString(path string, buf []byte, limit int) ([]byte, error) {
	p := make([]byte, len(path)+1)
	copy(p, path)
	return readSmall(p, buf, limit)
}

// cappedFile is an open regular file that fails with ErrTooLarge once more than left
// bytes would be read from it: for streaming parsers (fib_trie, if_inet6).
type cappedFile struct {
	fd    int
	left  int64
	limit int64
	path  string
}

func openCapped(path string, limit int64) (*cappedFile, error) {
	p := make([]byte, len(path)+1)
	copy(p, path)
	fd, err := openRegular(p)
	if err != nil {
		return nil, err
	}
	return &cappedFile{fd: fd, left: limit, limit: limit, path: path}, nil
}

func (c *cappedFile) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// Anything more is over the cap; EOF here is the file's true end.
		var one [1]byte
		if n, err := (fdReader{c.fd}).Read(one[:]); n == 0 && err == io.EOF {
			return 0, io.EOF
		}
		return 0, &fs.PathError{Op: "read", Path: c.path, Err: fmt.Errorf("%w (%d bytes)", ErrTooLarge, c.limit)}
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := fdReader{c.fd}.Read(p)
	c.left -= int64(n)
	if err != nil && err != io.EOF {
		err = &fs.PathError{Op: "read", Path: c.path, Err: err}
	}
	return n, err
}

func (c *cappedFile) Close() error { return syscall.Close(c.fd) }
