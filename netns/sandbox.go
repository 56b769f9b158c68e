package netns

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

var syscallESRCH = syscall.ESRCH

// Sandbox is one pod's sandbox as found under a proc root.
type Sandbox struct {
	PodUID string
	// PID is the pod's oldest process outside the host netns — the sandbox ("pause")
	// process — or, for a host-network pod, its oldest process.
	PID         int
	StartTime   uint64 // clock ticks after boot
	Netns       uint64 // inode of the netns PID lives in
	HostNetwork bool   // every process of the pod shares the host netns
	Processes   int    // processes found in the pod's cgroup
	// OtherNetns lists other non-host netns inodes seen for the same pod (a younger
	// foreign process, or a sandbox being replaced); informational.
	OtherNetns []uint64
	// Err is set when the pod's processes were found but none could be placed in a netns
	// (e.g. ns/net unreadable). Such a pod can only be judged unknown.
	Err error
}

// ProcessError is a problem with one process of the walk; the walk goes on without it.
type ProcessError struct {
	PID int
	Err error
}

func (e *ProcessError) Error() string { return fmt.Sprintf("pid %d: %v", e.PID, e.Err) }
func (e *ProcessError) Unwrap() error { return e.Err }

// Scan is the result of one walk of a proc root.
type Scan struct {
	HostNetns uint64 // identity of the host netns (FS.HostNetns)
	Processes int    // process directories visited
	Sandboxes []Sandbox
	Problems  []error // per-process problems; processes that vanished mid-walk are not problems
}

type candidate struct {
	pid   int
	start uint64
	netns uint64
}

func older(a, b candidate) bool {
	return a.start < b.start || (a.start == b.start && a.pid < b.pid)
}

type podProcs struct {
	best, bestHost candidate // zero pid = none
	procs          int
	netns          []uint64
	err            error
}

// Sandboxes walks the proc root and maps every pod UID named in a process's cgroup to its
// sandbox, as istio-cni does (cni/pkg/nodeagent/podcgroupns.go, PodNetnsProcFinder.FindNetnsForPods):
// processes in the host netns are skipped (CRI-O's conmon sits in the pod cgroup but the
// host netns) unless the pod has no other, netns are deduplicated by inode, and the oldest
// process (start time, field 22 of stat) is kept. A pod with no process is simply absent:
// the caller must treat it as unknown, never as uncaptured (CRI-O drop_infra_ctr=true).
//
// The host netns must be known: without it a process in the host netns cannot be told
// from a sandbox, and a pod would be judged from the host's sockets (CRI-O's conmon is
// often a pod's oldest process). So when FS.HostNetns fails, Sandboxes fails with
// ErrHostNetnsUnknown before walking anything, rather than return sandboxes that might be
// the host: `node scan` exits 2 naming the cause, and a prober makes every pod unknown.
// The cause is node-wide (what the reader may see of PID 1 and kthreadd) and has one fix,
// which per-pod "unknown" rows would bury.
func (f FS) Sandboxes() (Scan, error) {
	var sc Scan
	var err error
	if sc.HostNetns, err = f.HostNetns(); err != nil {
		return Scan{}, fmt.Errorf("%w: cannot tell pod sandboxes from processes in the host netns (CRI-O's conmon, host-network pods)", err)
	}
	pids, err := f.PIDs()
	if err != nil {
		return Scan{}, err
	}
	sc.Processes = len(pids)
	pods := map[string]*podProcs{}
	buf := make([]byte, 0, 4096)
	path := make([]byte, 0, len(f.root)+32) // "<root>/<pid>/cgroup\x00", reused: most processes are not pods
	for _, pid := range pids {
		path = append(strconv.AppendInt(append(append(path[:0], f.root...), '/'), int64(pid), 10), "/cgroup\x00"...)
		buf, err = readSmall(path, buf[:0], maxCgroupBytes)
		if err != nil {
			if !gone(err) {
				sc.Problems = append(sc.Problems, &ProcessError{PID: pid, Err: err})
			}
			continue
		}
		uid, ok, err := podUIDFromCgroupBytes(buf)
		if err != nil {
			sc.Problems = append(sc.Problems, &ProcessError{PID: pid, Err: err})
			continue
		}
		if !ok {
			continue
		}
		key := string(uid[:])
		pp := pods[key]
		if pp == nil {
			pp = &podProcs{}
			pods[key] = pp
		}
		dir := f.root + "/" + strconv.Itoa(pid)
		c, err := f.candidate(pid, dir, &buf)
		if err != nil {
			// ENOENT on ns/net or stat of a process whose directory is still there is
			// not a race but a process we cannot place (a zombie, a broken tree).
			if !gone(err) || exists(dir) {
				pp.err = err
				sc.Problems = append(sc.Problems, &ProcessError{PID: pid, Err: err})
			}
			continue
		}
		pp.procs++
		if c.netns == sc.HostNetns {
			if pp.bestHost.pid == 0 || older(c, pp.bestHost) {
				pp.bestHost = c
			}
			continue
		}
		if !slices.Contains(pp.netns, c.netns) {
			pp.netns = append(pp.netns, c.netns)
		}
		if pp.best.pid == 0 || older(c, pp.best) {
			pp.best = c
		}
	}
	for uid, pp := range pods {
		s := Sandbox{PodUID: uid, Processes: pp.procs}
		switch {
		case pp.best.pid != 0:
			s.PID, s.StartTime, s.Netns = pp.best.pid, pp.best.start, pp.best.netns
			for _, n := range pp.netns {
				if n != s.Netns {
					s.OtherNetns = append(s.OtherNetns, n)
				}
			}
		case pp.bestHost.pid != 0:
			s.PID, s.StartTime, s.Netns, s.HostNetwork = pp.bestHost.pid, pp.bestHost.start, pp.bestHost.netns, true
		case pp.err != nil:
			s.Err = fmt.Errorf("pod %s: no process could be placed in a netns: %w", uid, pp.err)
		default:
			continue // every process vanished mid-walk
		}
		sc.Sandboxes = append(sc.Sandboxes, s)
	}
	slices.SortFunc(sc.Sandboxes, func(a, b Sandbox) int { return strings.Compare(a.PodUID, b.PodUID) })
	return sc, nil
}

func (f FS) candidate(pid int, dir string, buf *[]byte) (candidate, error) {
	netns, err := f.NetnsOf(pid)
	if err != nil {
		return candidate{}, err
	}
	*buf, err = readSmallString(dir+"/stat", (*buf)[:0], maxStatBytes)
	if err != nil {
		return candidate{}, err
	}
	start, err := parseStartTime(*buf)
	if err != nil {
		return candidate{}, fmt.Errorf("%s/stat: %w", dir, err)
	}
	return candidate{pid: pid, start: start, netns: netns}, nil
}

// Revalidate checks that a sandbox found earlier is still the same process: alive, same
// start time, same pod UID in its cgroup, and returns its current netns inode. It costs
// three small reads instead of a walk. ErrProcessGone when it is not.
func (f FS) Revalidate(s Sandbox) (netns uint64, err error) {
	start, err := f.StartTime(s.PID)
	if err != nil {
		if gone(err) {
			return 0, fmt.Errorf("pod %s pid %d: %w", s.PodUID, s.PID, ErrProcessGone)
		}
		return 0, err
	}
	if start != s.StartTime {
		return 0, fmt.Errorf("pod %s pid %d: reused by another process: %w", s.PodUID, s.PID, ErrProcessGone)
	}
	uid, err := f.PodUIDOf(s.PID)
	if err != nil {
		if gone(err) {
			return 0, fmt.Errorf("pod %s pid %d: %w", s.PodUID, s.PID, ErrProcessGone)
		}
		return 0, err
	}
	if uid != s.PodUID {
		return 0, fmt.Errorf("pod %s pid %d: now in pod %q: %w", s.PodUID, s.PID, uid, ErrProcessGone)
	}
	netns, err = f.NetnsOf(s.PID)
	if err != nil && gone(err) {
		return 0, fmt.Errorf("pod %s pid %d: %w", s.PodUID, s.PID, ErrProcessGone)
	}
	return netns, err
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
