package podsim

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"slices"
	"sync"
	"syscall"
	"time"
)

// CgroupDriver is the kubelet's cgroup driver, which decides the shape of cgroup paths.
type CgroupDriver string

// Cgroup drivers.
const (
	DriverSystemd  CgroupDriver = "systemd"
	DriverCgroupfs CgroupDriver = "cgroupfs"
)

// Runtime is the container runtime, which decides the name of a container's cgroup.
type Runtime string

// Container runtimes.
const (
	RuntimeContainerd Runtime = "containerd"
	RuntimeCRIO       Runtime = "crio"
	RuntimeDocker     Runtime = "docker"
)

// ErrClosed is returned by every method of a Sim after Close.
var ErrClosed = errors.New("podsim: sim is closed")

// ErrRemoved is returned when a method is given a pod that was removed (or belongs to another Sim).
var ErrRemoved = errors.New("podsim: pod is not (or no longer) part of this sim")

// PodSpec describes a pod to simulate. The zero value is a burstable containerd pod with the
// systemd driver, a random UID and its own netns with only lo up.
type PodSpec struct {
	UID         string       // canonical dashed lower-case; empty = random
	QoS         string       // "burstable" (default) | "besteffort" | "guaranteed"
	Driver      CgroupDriver // default systemd
	Runtime     Runtime      // default containerd
	HostNetwork bool         // the sandbox stays in this process's netns (no new netns)
	IPv4        netip.Addr   // optional: on interface "eth0" (/32) inside the netns
	IPv6        netip.Addr   // optional: on "eth0" (/128, no DAD) inside the netns
	NoIPv6Lo    bool         // disable IPv6 on lo inside the netns (sysctl)
}

// Pod is a simulated pod. Its fields are written by the Sim (PID and Netns change on
// ReplaceNetns); do not read them concurrently with a Sim call on the same pod.
type Pod struct {
	Spec      PodSpec  // with defaults filled in
	UID       string   // canonical pod UID
	PID       int      // the sandbox ("pause") process: first and oldest of the pod
	Netns     uint64   // inode of the sandbox's netns
	Cgroups   []string // absolute cgroup dirs created for it (pod and container levels), all hierarchies
	SandboxID string   // 64-hex container ID of the sandbox; its cgroup leaf is named after it

	sim       *Sim
	podRel    string // pod cgroup, relative to every hierarchy's root
	leaves    []string
	procs     []*exec.Cmd // sandbox first
	listeners []*Listener
	removed   bool
}

// Sim owns pods made of real kernel objects, all under one parent cgroup
// <mountpoint>/meshmedic-sim-<pid>-<random> in every writable cgroup hierarchy. Its methods are
// safe for concurrent use.
type Sim struct {
	mu     sync.Mutex
	hier   []hierarchy
	name   string   // meshmedic-sim-<pid>-<random>
	shared []string // kubepods-level cgroups (relative), in creation order
	pods   []*Pod
	closed bool
	sleep  string
}

// New makes an empty Sim: it detects the cgroup hierarchies from /proc/self/mountinfo and creates
// its parent cgroup in each. It needs root.
func New() (*Sim, error) {
	hs, err := cgroupHierarchies()
	if err != nil {
		return nil, fmt.Errorf("new sim: %w", err)
	}
	sleep, err := lookTool("sleep")
	if err != nil {
		return nil, fmt.Errorf("new sim: %w", err)
	}
	s := &Sim{hier: hs, name: fmt.Sprintf("%s%d-%s", simPrefix, os.Getpid(), randHex(4)), sleep: sleep}
	if err := s.mkdir(s.name); err != nil {
		return nil, errors.Join(fmt.Errorf("new sim: %w", err), s.rmdir(s.name))
	}
	return s, nil
}

// Name returns the sim's parent cgroup name, meshmedic-sim-<pid>-<random>.
func (s *Sim) Name() string { return s.name }

// CgroupRoots returns the sim's parent cgroup directory in every hierarchy it uses.
func (s *Sim) CgroupRoots() []string {
	out := make([]string, 0, len(s.hier))
	for _, h := range s.hier {
		out = append(out, h.dir(s.name))
	}
	return out
}

// CgroupLinePaths returns, for each hierarchy, the label /proc/<pid>/cgroup gives it ("" for
// cgroup2, "cpu,cpuacct", "name=systemd", ...; controllers sorted) and the path p's sandbox
// process has there, as seen from the initial cgroup namespace.
func (s *Sim) CgroupLinePaths(p *Pod) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	if len(p.leaves) == 0 {
		return out
	}
	for _, h := range s.hier {
		out[h.Label()] = h.cgroupLinePath(p.leaves[0])
	}
	return out
}

// PIDs returns the live processes the sim started for p, sandbox first.
func (s *Sim) PIDs(p *Pod) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, c := range p.procs {
		out = append(out, c.Process.Pid)
	}
	return out
}

func (s *Sim) mkdir(rel string) error {
	var errs []error
	for _, h := range s.hier {
		if _, err := mkdirCgroup(h, rel); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Sim) rmdir(rel string) error {
	var errs []error
	for _, h := range s.hier {
		if err := rmdirCgroup(h.dir(rel)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Sim) join(rel string, pid int) error {
	for _, h := range s.hier {
		if err := joinCgroup(h, rel, pid); err != nil {
			return err
		}
	}
	return nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b)
}

// newUID returns a random version-4 UID in canonical form.
func newUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// validUID reports whether u is a canonical dashed lower-case UID.
func validUID(u string) bool {
	if len(u) != 36 {
		return false
	}
	for i := 0; i < len(u); i++ {
		c := u[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}

func normalise(spec PodSpec) (PodSpec, error) {
	if spec.UID == "" {
		spec.UID = newUID()
	} else if !validUID(spec.UID) {
		return spec, fmt.Errorf("pod UID %q is not a canonical dashed lower-case UID", spec.UID)
	}
	q, err := qosClass(spec.QoS)
	if err != nil {
		return spec, fmt.Errorf("pod %s: %w", spec.UID, err)
	}
	spec.QoS = q
	switch spec.Driver {
	case "":
		spec.Driver = DriverSystemd
	case DriverSystemd, DriverCgroupfs:
	default:
		return spec, fmt.Errorf("pod %s: unknown cgroup driver %q", spec.UID, spec.Driver)
	}
	switch spec.Runtime {
	case "":
		spec.Runtime = RuntimeContainerd
	case RuntimeContainerd, RuntimeCRIO, RuntimeDocker:
	default:
		return spec, fmt.Errorf("pod %s: unknown runtime %q", spec.UID, spec.Runtime)
	}
	if spec.HostNetwork && (spec.IPv4.IsValid() || spec.IPv6.IsValid() || spec.NoIPv6Lo) {
		return spec, fmt.Errorf("pod %s: IPv4, IPv6 and NoIPv6Lo need the pod's own netns, not HostNetwork", spec.UID)
	}
	return spec, nil
}

// AddPod creates a pod: its cgroups (kubelet layout for spec.Driver/QoS/Runtime) in every
// hierarchy, a sandbox process (a sleeping child with Pdeathsig=SIGKILL) started in a new netns
// unless HostNetwork, lo up, and the requested IPs on eth0.
func (s *Sim) AddPod(spec PodSpec) (*Pod, error) {
	spec, err := normalise(spec)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	for _, q := range s.pods {
		if q.UID == spec.UID {
			return nil, fmt.Errorf("pod %s: already in this sim", spec.UID)
		}
	}
	p := &Pod{Spec: spec, UID: spec.UID, sim: s, SandboxID: randHex(32)}
	parts := podCgroupParts(spec.Driver, spec.QoS, spec.UID)
	rel := s.name
	for _, part := range parts[:len(parts)-1] {
		rel = path.Join(rel, part)
		if !slices.Contains(s.shared, rel) {
			s.shared = append(s.shared, rel) // recorded first: Close removes a half-made one too
			if err := s.mkdir(rel); err != nil {
				return nil, fmt.Errorf("pod %s: %w", spec.UID, err)
			}
		}
	}
	p.podRel = path.Join(rel, parts[len(parts)-1])
	if err := s.mkdir(p.podRel); err != nil {
		return nil, errors.Join(fmt.Errorf("pod %s: %w", spec.UID, err), s.rmdir(p.podRel))
	}
	p.addCgroupDirs(p.podRel)
	if err := s.startSandbox(p); err != nil {
		return nil, errors.Join(fmt.Errorf("pod %s: %w", spec.UID, err), s.removePod(p))
	}
	s.pods = append(s.pods, p)
	return p, nil
}

func (p *Pod) addCgroupDirs(rel string) {
	for _, h := range p.sim.hier {
		p.Cgroups = append(p.Cgroups, h.dir(rel))
	}
}

// newLeaf creates a container cgroup under the pod's and returns it (relative).
func (s *Sim) newLeaf(p *Pod, id string) (string, error) {
	leaf := path.Join(p.podRel, containerCgroup(p.Spec.Driver, p.Spec.Runtime, id))
	if err := s.mkdir(leaf); err != nil {
		return "", errors.Join(fmt.Errorf("pod %s: %w", p.UID, err), s.rmdir(leaf))
	}
	p.leaves = append(p.leaves, leaf)
	p.addCgroupDirs(leaf)
	return leaf, nil
}

// startSandbox starts p's sandbox process in the sandbox cgroup (creating it on first use) and
// a new netns, configures the netns and records PID and Netns.
func (s *Sim) startSandbox(p *Pod) error {
	if len(p.leaves) == 0 {
		if _, err := s.newLeaf(p, p.SandboxID); err != nil {
			return err
		}
	}
	cmd := s.sleeper(!p.Spec.HostNetwork)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start sandbox: %w", err)
	}
	p.procs = append(p.procs, cmd)
	pid := cmd.Process.Pid
	if err := s.join(p.leaves[0], pid); err != nil {
		return err
	}
	if !p.Spec.HostNetwork {
		if err := configureNetns(pid, p.Spec); err != nil {
			return err
		}
	}
	ino, err := Netns(pid)
	if err != nil {
		return err
	}
	p.PID, p.Netns = pid, ino
	return nil
}

// sleeper returns a command for a process that only sleeps and dies with this process.
func (s *Sim) sleeper(newNetns bool) *exec.Cmd {
	// A number, not "infinity", so that any sleep(1) accepts it: 68 years.
	cmd := exec.Command(s.sleep, "2147483647")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if newNetns {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNET
	}
	return cmd
}

func (s *Sim) check(p *Pod) error {
	if s.closed {
		return ErrClosed
	}
	if p == nil || p.sim != s || p.removed {
		return ErrRemoved
	}
	return nil
}

// waitYounger returns once the clock has moved at least one tick (1/100 s) past pid's start
// time, so that a process started next is strictly younger by /proc/<pid>/stat field 22 — the
// "oldest process wins" rule of ISTIO-FACTS.md §4 then has no ties.
func waitYounger(pid int) error {
	start, err := startTime(pid)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		now, err := uptimeTicks()
		if err != nil {
			return err
		}
		if now > start || time.Now().After(deadline) {
			return nil
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// AddProcess starts an extra, younger "app" process in p's netns, in a new container cgroup of
// the pod (next to the sandbox's, as a runtime would), and returns its PID.
func (s *Sim) AddProcess(p *Pod) (int, error) {
	return s.addProcess(p, false)
}

// AddProcessAs is AddProcess for a process running as uid:gid with the environment env (an
// application container of a distroless image runs as 65532, its secrets in its environment).
func (s *Sim) AddProcessAs(p *Pod, uid, gid uint32, env []string) (int, error) {
	return s.addProcessWith(p, false, func(cmd *exec.Cmd) {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: gid}
		cmd.Env = env
	})
}

// AddForeignProcess starts a younger process in a new container cgroup of p but in another, new
// netns (like a process that is in the pod's cgroup without being in its network; for "dedupe /
// oldest wins" tests) and returns its PID.
func (s *Sim) AddForeignProcess(cgroupOf *Pod) (int, error) {
	return s.addProcess(cgroupOf, true)
}

func (s *Sim) addProcess(p *Pod, foreign bool) (int, error) {
	return s.addProcessWith(p, foreign, nil)
}

func (s *Sim) addProcessWith(p *Pod, foreign bool, tweak func(*exec.Cmd)) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(p); err != nil {
		return 0, err
	}
	if err := waitYounger(p.PID); err != nil {
		return 0, fmt.Errorf("pod %s: %w", p.UID, err)
	}
	leaf, err := s.newLeaf(p, randHex(32))
	if err != nil {
		return 0, err
	}
	cmd := s.sleeper(foreign)
	if tweak != nil {
		tweak(cmd)
	}
	if foreign {
		err = cmd.Start()
	} else {
		// The child inherits the forking thread's netns.
		err = inNetns(p.PID, cmd.Start)
	}
	if cmd.Process != nil {
		p.procs = append(p.procs, cmd)
	}
	if err != nil {
		return 0, fmt.Errorf("pod %s: start process: %w", p.UID, err)
	}
	pid := cmd.Process.Pid
	if err := s.join(leaf, pid); err != nil {
		return 0, fmt.Errorf("pod %s: %w", p.UID, err)
	}
	return pid, nil
}

// ReplaceNetns re-creates p's sandbox the way a kubelet does when a sandbox dies: every process
// of the pod is killed (the sandbox and the processes added with AddProcess/AddForeignProcess —
// containers do not survive their sandbox), then a new sandbox process starts in a fresh netns
// in the same sandbox cgroup, with lo up and the spec's IPs. p.PID and p.Netns change; the UID
// and cgroups stay. Listeners made in the old netns stay open, holding the old netns alive, as
// ztunnel's would (istio/istio #61182): use RemovePod or their Close to drop them.
func (s *Sim) ReplaceNetns(p *Pod) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(p); err != nil {
		return err
	}
	// Container cgroups other than the sandbox's are emptied now; drop them as a runtime would.
	if err := s.stopSandbox(p); err != nil {
		return fmt.Errorf("pod %s: replace netns: %w", p.UID, err)
	}
	if err := s.startSandbox(p); err != nil {
		return fmt.Errorf("pod %s: replace netns: %w", p.UID, err)
	}
	return nil
}

// StopSandbox ends every process of p, as a node losing power does, without starting a new
// sandbox: the netns goes with its last reference, the cgroups and the UID stay, and p.PID and
// p.Netns are 0 until StartSandbox. ReplaceNetns is StopSandbox and StartSandbox in one step.
func (s *Sim) StopSandbox(p *Pod) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(p); err != nil {
		return err
	}
	if err := s.stopSandbox(p); err != nil {
		return fmt.Errorf("pod %s: stop sandbox: %w", p.UID, err)
	}
	p.PID, p.Netns = 0, 0
	return nil
}

// StartSandbox starts a new sandbox for p after StopSandbox: a fresh netns with lo up and the
// spec's IPs, in the same sandbox cgroup. p.PID and p.Netns are set again.
func (s *Sim) StartSandbox(p *Pod) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(p); err != nil {
		return err
	}
	if p.PID != 0 {
		return fmt.Errorf("pod %s: start sandbox: sandbox pid %d is running (StopSandbox first)", p.UID, p.PID)
	}
	if err := s.startSandbox(p); err != nil {
		return fmt.Errorf("pod %s: start sandbox: %w", p.UID, err)
	}
	return nil
}

// stopSandbox kills p's processes and drops the container cgroups other than the sandbox's.
func (s *Sim) stopSandbox(p *Pod) error {
	if err := s.killAll(p); err != nil {
		return err
	}
	var errs []error
	for _, leaf := range p.leaves[1:] {
		errs = append(errs, s.rmdir(leaf))
		p.dropCgroupDirs(leaf)
	}
	p.leaves = p.leaves[:1]
	return errors.Join(errs...)
}

func (p *Pod) dropCgroupDirs(rel string) {
	for _, h := range p.sim.hier {
		p.Cgroups = slices.DeleteFunc(p.Cgroups, func(d string) bool { return d == h.dir(rel) })
	}
}

// killAll kills and reaps every process the sim started for p.
func (s *Sim) killAll(p *Pod) error {
	var errs []error
	for _, c := range p.procs {
		if err := c.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, fmt.Errorf("kill pid %d: %w", c.Process.Pid, err))
			continue
		}
		if err := c.Wait(); err != nil {
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				errs = append(errs, fmt.Errorf("wait pid %d: %w", c.Process.Pid, err))
			}
		}
	}
	p.procs = nil
	return errors.Join(errs...)
}

// RemovePod kills p's processes, closes its listeners (in every netns it had) and removes its
// cgroups, deepest first. The pod's netns disappears with its last process and socket.
func (s *Sim) RemovePod(p *Pod) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(p); err != nil {
		return err
	}
	s.pods = slices.DeleteFunc(s.pods, func(q *Pod) bool { return q == p })
	return s.removePod(p)
}

func (s *Sim) removePod(p *Pod) error {
	p.removed = true
	errs := []error{s.killAll(p)}
	for _, l := range p.listeners {
		errs = append(errs, l.closeLocked())
	}
	p.listeners = nil
	rels := append(slices.Clone(p.leaves), p.podRel)
	sortDeepestFirst(rels)
	for _, rel := range rels {
		if rel != "" {
			errs = append(errs, s.rmdir(rel))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove pod %s: %w", p.UID, err)
	}
	return nil
}

// Close removes every pod (newest first), then the shared kubepods cgroups and the sim's parent
// cgroups, deepest first. It keeps going after errors and returns them joined; later calls
// return nil.
func (s *Sim) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	for i := len(s.pods) - 1; i >= 0; i-- {
		errs = append(errs, s.removePod(s.pods[i]))
	}
	s.pods = nil
	shared := slices.Clone(s.shared)
	slices.Reverse(shared)
	sortDeepestFirst(shared)
	for _, rel := range shared {
		errs = append(errs, s.rmdir(rel))
	}
	errs = append(errs, s.rmdir(s.name))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close sim %s: %w", s.name, err)
	}
	return nil
}

// String describes the pod for messages.
func (p *Pod) String() string {
	return fmt.Sprintf("pod %s (pid %d, netns %d)", p.UID, p.PID, p.Netns)
}
