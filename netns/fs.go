package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrNotProcRoot is returned by NewFS for a directory that is not laid out like /proc.
var ErrNotProcRoot = errors.New("not a proc root")

// FS is a proc root: /proc, /host/proc (a DaemonSet with the host's /proc mounted), or a
// test tree laid out the same way. meshmedic reads only <pid>/cgroup, <pid>/stat,
// <pid>/ns/net (readlink) or <pid>/net/dev (stat), <pid>/net/{tcp,tcp6,udp,udp6,sockstat,
// sockstat6,fib_trie,if_inet6} and 1/ns/net.
type FS struct {
	root  string
	ident NetnsIdentity
}

// NetnsIdentity is how an FS names a network namespace. Both are inode numbers that are
// equal for two processes exactly when they share a netns; they are not comparable with
// each other, so one FS uses one of them for every process.
type NetnsIdentity string

const (
	// IdentityNsfs is the inode of the <pid>/ns/net link target ("net:[4026532201]"), the
	// number `lsns` and `ip netns identify` show. Reading the link needs ptrace-read access
	// to the process: a reader without capabilities gets EACCES for any process that has
	// capabilities it lacks — most pod sandboxes.
	IdentityNsfs NetnsIdentity = "nsfs"
	// IdentityProcNet is the inode of <pid>/net/dev. The kernel creates the entries under
	// /proc/<pid>/net once per network namespace (fs/proc/proc_net.c, per-netns
	// proc_net directory), so the inode names the netns for as long as it lives, and
	// stat needs no ptrace check: this is what a capability-free agent uses.
	IdentityProcNet NetnsIdentity = "proc-net"
)

// NewFS checks that root exists and holds at least one process directory.
func NewFS(root string) (FS, error) {
	root = filepath.Clean(root)
	st, err := os.Stat(root)
	if err != nil {
		return FS{}, fmt.Errorf("proc root %s: %w", root, err)
	}
	if !st.IsDir() {
		return FS{}, fmt.Errorf("proc root %s: %w: not a directory", root, ErrNotProcRoot)
	}
	f, err := openDir(root)
	if err != nil {
		return FS{}, fmt.Errorf("proc root %s: %w", root, err)
	}
	defer f.Close()
	for {
		names, err := f.Readdirnames(256)
		for _, n := range names {
			if _, ok := parsePID(n); ok {
				return FS{root: root, ident: detectIdentity(root)}, nil
			}
		}
		if err != nil {
			return FS{}, fmt.Errorf("proc root %s: %w: no process directories", root, ErrNotProcRoot)
		}
	}
}

// detectIdentity picks IdentityNsfs when the host netns can be named by it — PID 1's
// ns/net link reads, or (HostNetns's fallback) kthreadd's does — or when PID 1's link fails
// for another reason than permission (a test tree without it). When PID 1's link is closed
// to us (the reader has fewer capabilities than PID 1) and kthreadd's cannot stand in — it
// is closed too, or there is no kthreadd (the PID namespace of a nested node) — it picks
// IdentityProcNet, which needs no ptrace access and so can name the host netns.
func detectIdentity(root string) NetnsIdentity {
	_, err := os.Readlink(root + "/1/ns/net")
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return IdentityNsfs
	}
	if isKthreadd(root) {
		if _, err := os.Readlink(root + "/2/ns/net"); err == nil {
			return IdentityNsfs
		}
	}
	return IdentityProcNet
}

// isKthreadd reports whether PID 2 of the proc root is the kernel's kthreadd.
func isKthreadd(root string) bool {
	var arr [maxCommBytes]byte
	comm, err := readSmallString(root+"/2/comm", arr[:0], maxCommBytes)
	return err == nil && strings.TrimSpace(string(comm)) == "kthreadd"
}

// Root returns the proc root's path.
func (f FS) Root() string { return f.root }

// Identity says how this FS names network namespaces (see NetnsIdentity).
func (f FS) Identity() NetnsIdentity {
	if f.ident == "" {
		return IdentityNsfs
	}
	return f.ident
}

// WithIdentity returns a copy of f that names network namespaces by id instead of the
// detected identity.
func (f FS) WithIdentity(id NetnsIdentity) FS {
	f.ident = id
	return f
}

func (f FS) pidPath(pid int, elem string) string {
	return f.root + "/" + strconv.Itoa(pid) + "/" + elem
}

// openDir opens a directory, failing (not blocking) on anything else: a FIFO put where
// the proc root was would block a plain open.
func openDir(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NONBLOCK, 0)
}

func parsePID(name string) (int, bool) {
	if name == "" || name[0] < '1' || name[0] > '9' {
		return 0, false
	}
	pid, err := strconv.Atoi(name)
	return pid, err == nil && pid > 0
}

// PIDs lists the process directories of the proc root, in directory order.
func (f FS) PIDs() ([]int, error) {
	d, err := openDir(f.root)
	if err != nil {
		return nil, fmt.Errorf("proc root %s: %w", f.root, err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("listing proc root %s: %w", f.root, err)
	}
	pids := make([]int, 0, len(names))
	for _, n := range names {
		if pid, ok := parsePID(n); ok {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// NetnsOf returns the identity of process pid's network namespace: with IdentityNsfs the
// inode from the link target "net:[4026532201]" of <pid>/ns/net, with IdentityProcNet the
// inode of <pid>/net/dev.
func (f FS) NetnsOf(pid int) (uint64, error) {
	if f.ident == IdentityProcNet {
		var st syscall.Stat_t
		if err := syscall.Stat(f.pidPath(pid, "net/dev"), &st); err != nil {
			return 0, &os.PathError{Op: "stat", Path: f.pidPath(pid, "net/dev"), Err: err}
		}
		return st.Ino, nil
	}
	target, err := os.Readlink(f.pidPath(pid, "ns/net"))
	if err != nil {
		return 0, err
	}
	ino, err := ParseNetnsLink(target)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", f.pidPath(pid, "ns/net"), err)
	}
	return ino, nil
}

// ParseNetnsLink parses a namespace link target such as "net:[4026532201]".
func ParseNetnsLink(target string) (uint64, error) {
	rest, ok := strings.CutPrefix(target, "net:[")
	if !ok || !strings.HasSuffix(rest, "]") {
		return 0, fmt.Errorf("unexpected netns link target %q", target)
	}
	ino, err := strconv.ParseUint(rest[:len(rest)-1], 10, 64)
	if err != nil || ino == 0 {
		return 0, fmt.Errorf("unexpected netns link target %q", target)
	}
	return ino, nil
}

// ErrHostNetnsUnknown is wrapped when the host's network namespace cannot be named:
// neither PID 1's nor kthreadd's netns can be read. Then no process can be told apart from
// one in the host netns (CRI-O's conmon, a host-network pod), so no pod can be judged from
// its processes: FS.Sandboxes fails with it.
var ErrHostNetnsUnknown = errors.New("host network namespace unknown")

// HostNetns returns the identity of the host's network namespace: that of PID 1 in this
// proc root (meshmedic runs with hostPID), named the way NetnsOf names every netns (so in
// IdentityProcNet mode it is the inode of 1/net/dev). Reading another process's ns/net link
// needs ptrace-read access, which a reader with fewer capabilities than PID 1 lacks
// (EACCES); then kthreadd (PID 2, comm "kthreadd") is used: kernel threads always live in
// the initial network namespace. When neither can be read the error wraps
// ErrHostNetnsUnknown.
func (f FS) HostNetns() (uint64, error) {
	ino, err := f.NetnsOf(1)
	if err == nil {
		return ino, nil
	}
	why := "pid 2 is not kthreadd"
	if isKthreadd(f.root) {
		kino, kerr := f.NetnsOf(2)
		if kerr == nil {
			return kino, nil
		}
		why = "kthreadd (pid 2): " + kerr.Error()
	}
	return 0, fmt.Errorf("%w under %s: pid 1: %w; %s", ErrHostNetnsUnknown, f.root, err, why)
}

// StartTime returns process pid's start time in clock ticks after boot (field 22 of stat).
func (f FS) StartTime(pid int) (uint64, error) {
	var arr [512]byte
	data, err := readSmallString(f.pidPath(pid, "stat"), arr[:0], maxStatBytes)
	if err != nil {
		return 0, err
	}
	st, err := parseStartTime(data)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", f.pidPath(pid, "stat"), err)
	}
	return st, nil
}

// PodUIDOf returns the pod UID named by process pid's cgroup file ("" when none).
func (f FS) PodUIDOf(pid int) (string, error) {
	var arr [1024]byte
	data, err := readSmallString(f.pidPath(pid, "cgroup"), arr[:0], maxCgroupBytes)
	if err != nil {
		return "", err
	}
	uid, ok, err := podUIDFromCgroupBytes(data)
	if err != nil {
		return "", fmt.Errorf("%s: %w", f.pidPath(pid, "cgroup"), err)
	}
	if !ok {
		return "", nil
	}
	return string(uid[:]), nil
}

// gone reports whether err means the process vanished while we looked (a normal race).
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscallESRCH)
}
