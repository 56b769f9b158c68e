package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrNotProcRoot is returned by NewFS for a directory that is not laid out like /proc.
var ErrNotProcRoot = errors.New("not a proc root")

// FS is a proc root: /proc, /host/proc (a DaemonSet with the host's /proc mounted), or a
// test tree laid out the same way. meshmedic reads only <pid>/cgroup, <pid>/stat,
// <pid>/ns/net (readlink), <pid>/net/{tcp,tcp6,udp,udp6,sockstat,sockstat6,fib_trie,if_inet6}
// and 1/ns/net.
type FS struct {
	root string
}

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
	f, err := os.Open(root)
	if err != nil {
		return FS{}, fmt.Errorf("proc root %s: %w", root, err)
	}
	defer f.Close()
	for {
		names, err := f.Readdirnames(256)
		for _, n := range names {
			if _, ok := parsePID(n); ok {
				return FS{root: root}, nil
			}
		}
		if err != nil {
			return FS{}, fmt.Errorf("proc root %s: %w: no process directories", root, ErrNotProcRoot)
		}
	}
}

// Root returns the proc root's path.
func (f FS) Root() string { return f.root }

func (f FS) pidPath(pid int, elem string) string {
	return f.root + "/" + strconv.Itoa(pid) + "/" + elem
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
	d, err := os.Open(f.root)
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

// NetnsOf returns the inode of process pid's network namespace, from the link target
// "net:[4026532201]" of <pid>/ns/net.
func (f FS) NetnsOf(pid int) (uint64, error) {
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

// HostNetns returns the inode of the host's network namespace: that of PID 1 in this
// proc root (meshmedic runs with hostPID). Reading another process's ns/net link needs
// ptrace-read access, which a reader with fewer capabilities than PID 1 lacks (EACCES); then
// kthreadd (PID 2, comm "kthreadd") is used: kernel threads always live in the initial
// network namespace.
func (f FS) HostNetns() (uint64, error) {
	ino, err := f.NetnsOf(1)
	if err == nil {
		return ino, nil
	}
	if comm, cerr := os.ReadFile(f.pidPath(2, "comm")); cerr == nil && strings.TrimSpace(string(comm)) == "kthreadd" {
		if ino, kerr := f.NetnsOf(2); kerr == nil {
			return ino, nil
		}
	}
	return 0, fmt.Errorf("host netns (pid 1): %w", err)
}

// StartTime returns process pid's start time in clock ticks after boot (field 22 of stat).
func (f FS) StartTime(pid int) (uint64, error) {
	data, err := os.ReadFile(f.pidPath(pid, "stat"))
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
	data, err := os.ReadFile(f.pidPath(pid, "cgroup"))
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
