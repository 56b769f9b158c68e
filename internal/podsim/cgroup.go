package podsim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// simPrefix starts the name of every Sim's parent cgroup: meshmedic-sim-<owner pid>-<random>.
const simPrefix = "meshmedic-sim-"

// hierarchy is one mounted cgroup hierarchy.
type hierarchy struct {
	Mountpoint  string   // e.g. /sys/fs/cgroup/unified or /sys/fs/cgroup/cpu,cpuacct
	Root        string   // the mount's root inside the hierarchy (field 4 of mountinfo), usually "/"
	V2          bool     // cgroup2 (the "0::" line of /proc/<pid>/cgroup)
	Controllers []string // v1 only, sorted: e.g. [cpu cpuacct] or [name=systemd]
}

// Label is how /proc/<pid>/cgroup names the hierarchy in its second field ("" for v2).
func (h hierarchy) Label() string { return strings.Join(h.Controllers, ",") }

func (h hierarchy) has(controller string) bool { return slices.Contains(h.Controllers, controller) }

// v1NonControllers are cgroup v1 super options that are not controllers.
var v1NonControllers = map[string]bool{
	"rw": true, "ro": true, "noprefix": true, "clone_children": true, "xattr": true,
	"cpuset_v2_mode": true, "favordynmods": true, "none": true, "all": true,
}

// parseCgroupMounts reads /proc/self/mountinfo and returns its writable cgroup hierarchies, one
// per hierarchy (a hierarchy mounted twice is kept at its first mountpoint).
func parseCgroupMounts(r io.Reader) ([]hierarchy, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	seen := map[string]bool{}
	var out []hierarchy
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		sep := slices.Index(f, "-")
		if sep < 6 || sep+3 >= len(f) {
			continue
		}
		fstype := f[sep+1]
		if fstype != "cgroup" && fstype != "cgroup2" {
			continue
		}
		if slices.Contains(strings.Split(f[5], ","), "ro") {
			continue
		}
		h := hierarchy{Root: unescapeMountinfo(f[3]), Mountpoint: unescapeMountinfo(f[4]), V2: fstype == "cgroup2"}
		if !h.V2 {
			for _, o := range strings.Split(f[sep+3], ",") {
				if o == "" || v1NonControllers[o] || (strings.Contains(o, "=") && !strings.HasPrefix(o, "name=")) {
					continue
				}
				h.Controllers = append(h.Controllers, o)
			}
			if len(h.Controllers) == 0 {
				continue
			}
			sort.Strings(h.Controllers)
		}
		key := f[2]
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, h)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mountinfo: %w", err)
	}
	return out, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for space, ...) of mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && isOctal(s, i+1) {
			n, _ := strconv.ParseUint(s[i+1:i+4], 8, 8)
			b.WriteByte(byte(n))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string, i int) bool {
	if i+3 > len(s) {
		return false
	}
	for _, c := range []byte(s[i : i+3]) {
		if c < '0' || c > '7' {
			return false
		}
	}
	return s[i] <= '3'
}

// cgroupHierarchies returns the writable cgroup hierarchies of this machine.
func cgroupHierarchies() ([]hierarchy, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cgroup hierarchies: %w", err)
	}
	defer f.Close()
	hs, err := parseCgroupMounts(f)
	if err != nil {
		return nil, fmt.Errorf("cgroup hierarchies: %w", err)
	}
	if len(hs) == 0 {
		return nil, errors.New("cgroup hierarchies: no writable cgroup or cgroup2 mount in /proc/self/mountinfo")
	}
	return hs, nil
}

// qosClass returns the normalised QoS class of spec ("burstable" when empty).
func qosClass(q string) (string, error) {
	switch strings.ToLower(q) {
	case "", "burstable":
		return "burstable", nil
	case "besteffort":
		return "besteffort", nil
	case "guaranteed":
		return "guaranteed", nil
	}
	return "", fmt.Errorf("unknown QoS class %q", q)
}

// podCgroupParts returns the kubelet's cgroup path of a pod, relative to the kubepods parent,
// split into its directories (the last one is the pod's own). These are the forms kubelet's
// cgroup managers produce (kubernetes pkg/kubelet/cm/cgroup_manager_linux.go, qos_container_manager_linux.go)
// and that ISTIO-FACTS.md §4 lists:
//
//	systemd:  kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid, '-'→'_'>.slice
//	          kubepods.slice/kubepods-pod<uid_>.slice                       (guaranteed)
//	cgroupfs: kubepods/burstable/pod<uid>
//	          kubepods/pod<uid>                                             (guaranteed)
func podCgroupParts(driver CgroupDriver, qos, uid string) []string {
	switch driver {
	case DriverCgroupfs:
		if qos == "guaranteed" {
			return []string{"kubepods", "pod" + uid}
		}
		return []string{"kubepods", qos, "pod" + uid}
	default:
		u := strings.ReplaceAll(uid, "-", "_")
		if qos == "guaranteed" {
			return []string{"kubepods.slice", "kubepods-pod" + u + ".slice"}
		}
		return []string{"kubepods.slice", "kubepods-" + qos + ".slice", "kubepods-" + qos + "-pod" + u + ".slice"}
	}
}

// containerCgroup returns the leaf cgroup name of container id under its pod's cgroup:
//
//	systemd:  cri-containerd-<id>.scope | crio-<id>.scope | docker-<id>.scope
//	cgroupfs: <id> (containerd, docker) | crio-<id> (CRI-O)
func containerCgroup(driver CgroupDriver, rt Runtime, id string) string {
	if driver == DriverCgroupfs {
		if rt == RuntimeCRIO {
			return "crio-" + id
		}
		return id
	}
	switch rt {
	case RuntimeCRIO:
		return "crio-" + id + ".scope"
	case RuntimeDocker:
		return "docker-" + id + ".scope"
	default:
		return "cri-containerd-" + id + ".scope"
	}
}

// dir returns the absolute directory of cgroup rel (relative to the mount root) in h.
func (h hierarchy) dir(rel string) string {
	return filepath.Join(h.Mountpoint, filepath.FromSlash(rel))
}

// mkdirCgroup creates cgroup rel in h (its parent must exist). It reports whether it created it.
// On v1 cpuset hierarchies the new cgroup gets its parent's cpus and mems, without which no task
// may join it (as runc and the kubelet do).
func mkdirCgroup(h hierarchy, rel string) (bool, error) {
	d := h.dir(rel)
	if err := os.Mkdir(d, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("create cgroup %s: %w", d, err)
	}
	if !h.V2 && h.has("cpuset") {
		for _, name := range []string{"cpus", "mems"} {
			if err := copyCpuset(filepath.Dir(d), d, name); err != nil {
				_ = syscall.Rmdir(d)
				return false, fmt.Errorf("create cgroup %s: %w", d, err)
			}
		}
	}
	return true, nil
}

func copyCpuset(parent, child, name string) error {
	file := "cpuset." + name
	if _, err := os.Stat(filepath.Join(parent, file)); err != nil {
		file = name // mounted with -o noprefix
	}
	cur, err := os.ReadFile(filepath.Join(child, file))
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(cur)) != "" {
		return nil
	}
	v, err := os.ReadFile(filepath.Join(parent, file))
	if err != nil {
		return err
	}
	return writeCgroupFile(filepath.Join(child, file), strings.TrimSpace(string(v)))
}

func writeCgroupFile(p, v string) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(v)
	cerr := f.Close()
	return errors.Join(werr, cerr)
}

// joinCgroup moves process pid into cgroup rel of h.
func joinCgroup(h hierarchy, rel string, pid int) error {
	p := filepath.Join(h.dir(rel), "cgroup.procs")
	if err := writeCgroupFile(p, strconv.Itoa(pid)); err != nil {
		return fmt.Errorf("move pid %d into %s: %w", pid, p, err)
	}
	return nil
}

// rmdirCgroup removes one cgroup directory, retrying for a while when the kernel still counts
// tasks in it (cgroup.procs drains asynchronously after a killed task is reaped). A directory
// that is already gone is not an error.
func rmdirCgroup(d string) error {
	delay := time.Millisecond
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := syscall.Rmdir(d)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", d, err)
		}
		time.Sleep(delay)
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// sortDeepestFirst orders slash-separated paths deepest first.
func sortDeepestFirst(rels []string) {
	sort.SliceStable(rels, func(i, j int) bool {
		return strings.Count(rels[i], "/") > strings.Count(rels[j], "/")
	})
}

// CleanupStale removes meshmedic-sim-* cgroup trees left behind by a Sim whose process died
// without Close (a crashed test): every such tree, in every writable hierarchy, whose owner
// process (the pid in its name) is gone and whose cgroup.procs files are all empty. Trees that
// still hold processes are reported as errors and left in place; nothing is killed.
func CleanupStale() error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hs {
		root := h.Mountpoint
		walkErr := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if p == root {
					return err
				}
				return nil // a cgroup vanished under us, or an unreadable corner: not ours
			}
			if !d.IsDir() {
				return nil
			}
			if !strings.HasPrefix(d.Name(), simPrefix) {
				return nil
			}
			if ownerAlive(d.Name()) {
				return fs.SkipDir
			}
			if err := removeTree(p); err != nil {
				errs = append(errs, err)
			}
			return fs.SkipDir
		})
		if walkErr != nil {
			errs = append(errs, fmt.Errorf("cleanup stale sims under %s: %w", root, walkErr))
		}
	}
	return errors.Join(errs...)
}

// ownerAlive reports whether the process named in a sim cgroup name still exists. A name with no
// parseable pid has no owner.
func ownerAlive(name string) bool {
	pidStr, _, ok := strings.Cut(strings.TrimPrefix(name, simPrefix), "-")
	if !ok {
		return false
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return false
	}
	if pid == os.Getpid() {
		return true
	}
	err = syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// removeTree removes a cgroup directory tree deepest-first, refusing when any cgroup in it
// still holds a process.
func removeTree(top string) error {
	var dirs []string
	err := filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("stale sim cgroup %s: %w", top, err)
	}
	for _, d := range dirs {
		// A process of a crashed sim that has exited but is not yet reaped by its new parent
		// (a zombie) still counts as a member on cgroup v1: give the reaper a moment.
		deadline := time.Now().Add(5 * time.Second)
		for {
			b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("stale sim cgroup %s: %w", d, err)
			}
			procs := strings.Fields(string(b))
			if len(procs) == 0 {
				break
			}
			if !allZombies(procs) || time.Now().After(deadline) {
				return fmt.Errorf("stale sim cgroup %s still holds processes %s", d, strings.Join(procs, " "))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	sortDeepestFirst(dirs)
	var errs []error
	for _, d := range dirs {
		if err := rmdirCgroup(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// allZombies reports whether every listed process is exiting or has exited: gone, state Z
// or X, or without an address space any more (an empty cmdline: a killed process between
// releasing its memory and becoming a zombie; sim processes are never kernel threads).
func allZombies(pids []string) bool {
	for _, pid := range pids {
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false
		}
		i := strings.LastIndexByte(string(stat), ')')
		if i >= 0 && i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X') {
			continue
		}
		if cmdline, err := os.ReadFile("/proc/" + pid + "/cmdline"); err == nil && len(cmdline) == 0 {
			continue
		}
		return false
	}
	return true
}

// cgroupLinePath returns the path /proc/<pid>/cgroup shows for cgroup rel of h, for a reader in
// the initial cgroup namespace.
func (h hierarchy) cgroupLinePath(rel string) string { return path.Join("/", h.Root, rel) }
