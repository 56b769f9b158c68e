package podsim

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// errThreadLost marks a failure to return a thread to this process's own network namespace. The
// thread is then left locked so that the Go runtime terminates it when its goroutine exits.
var errThreadLost = errors.New("could not return the thread to the original network namespace")

// inNetns runs fn on an OS thread that has joined the network namespace of process pid, the way
// ztunnel creates its in-pod sockets (istio/ztunnel src/inpod/netns.rs, InpodNetns::run): lock a
// thread, setns into the pod's netns, act, setns back. fn runs on a fresh goroutine so that if the
// way back fails the goroutine exits still locked and the runtime kills that thread: no thread of
// this process ever stays in a foreign netns.
func inNetns(pid int, fn func() error) error {
	target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return fmt.Errorf("enter netns of pid %d: %w", pid, err)
	}
	defer target.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter netns of pid %d: %w", pid, err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter netns of pid %d: setns: %w", pid, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Deliberately no UnlockOSThread: this goroutine ends locked and takes the thread with it.
			done <- errors.Join(ferr, fmt.Errorf("leave netns of pid %d: %w: %w", pid, errThreadLost, err))
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// setLinkUp brings interface name up in the calling thread's netns (SIOCSIFFLAGS).
func setLinkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("link %s up: socket: %w", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("link %s up: %w", name, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("link %s up: SIOCGIFFLAGS: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("link %s up: SIOCSIFFLAGS: %w", name, err)
	}
	return nil
}

// loIPv6Sysctl is read and written from a thread inside the pod's netns: /proc/sys/net resolves
// against the calling thread's network namespace.
const loIPv6Sysctl = "/proc/sys/net/ipv6/conf/lo/disable_ipv6"

// hasIPv6 reports whether the calling thread's netns can open IPv6 sockets (false on kernels
// booted with ipv6.disable=1), and whether its lo has IPv6 — the test ztunnel makes per pod before
// binding [::1] (istio/ztunnel src/config.rs construct_config, src/proxy.rs ipv6_enabled_on_localhost).
func hasIPv6() (v6, lo bool) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, false
	}
	unix.Close(fd)
	b, err := os.ReadFile(loIPv6Sysctl)
	if err != nil {
		return true, false
	}
	return true, strings.TrimSpace(string(b)) != "1"
}

// configureNetns prepares the netns of a fresh sandbox: lo up, optionally IPv6 off on lo, and
// the pod IPs on eth0.
func configureNetns(pid int, spec PodSpec) error {
	err := inNetns(pid, func() error {
		if spec.NoIPv6Lo {
			err := writeCgroupFile(loIPv6Sysctl, "1")
			if err != nil && !errors.Is(err, fs.ErrNotExist) { // no file: IPv6 is off altogether
				return fmt.Errorf("disable IPv6 on lo: %w", err)
			}
		}
		return setLinkUp("lo")
	})
	if err != nil {
		return err
	}
	if !spec.IPv4.IsValid() && !spec.IPv6.IsValid() {
		return nil
	}
	return addPodIPs(pid, spec.IPv4, spec.IPv6)
}

// addPodIPs puts the pod's IPs on an interface "eth0" inside its netns. eth0 is one end of a veth
// pair whose peer (peerLink) stays in the same netns: veth exists wherever containers run, which
// the "dummy" link type does not (this kernel has no CONFIG_DUMMY), and a real pod's eth0 is a
// veth too. The host netns is never touched. IPv6 is added with nodad so it is usable at once.
func addPodIPs(pid int, v4, v6 netip.Addr) error {
	var batch bytes.Buffer
	fmt.Fprintf(&batch, "link add eth0 type veth peer name %s\n", peerLink)
	fmt.Fprintf(&batch, "link set %s up\n", peerLink)
	fmt.Fprintf(&batch, "link set eth0 up\n")
	if v4.IsValid() {
		if !v4.Unmap().Is4() {
			return fmt.Errorf("pod IPv4 %s is not an IPv4 address", v4)
		}
		fmt.Fprintf(&batch, "addr add %s/32 dev eth0\n", v4.Unmap())
	}
	if v6.IsValid() {
		if !v6.Is6() || v6.Is4In6() {
			return fmt.Errorf("pod IPv6 %s is not an IPv6 address", v6)
		}
		fmt.Fprintf(&batch, "addr add %s/128 dev eth0 nodad\n", v6.WithZone(""))
	}
	ip, err := lookTool("ip")
	if err != nil {
		return err
	}
	out, err := nsenterNet(pid, &batch, ip, "-batch", "-")
	if err != nil {
		return fmt.Errorf("add pod IPs in netns of pid %d: %w: %s", pid, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// peerLink is the name of eth0's veth peer inside a pod netns.
const peerLink = "podsim-peer0"

// nsenterNet runs argv inside the network namespace of pid via nsenter(1) and returns its
// combined output.
func nsenterNet(pid int, stdin *bytes.Buffer, argv ...string) ([]byte, error) {
	nsenter, err := lookTool("nsenter")
	if err != nil {
		return nil, err
	}
	args := append([]string{fmt.Sprintf("--net=/proc/%d/ns/net", pid), "--"}, argv...)
	cmd := exec.Command(nsenter, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	return cmd.CombinedOutput()
}

// toolDirs are searched after $PATH: root's PATH in CI images often lacks the sbin directories.
var toolDirs = []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/local/bin"}

// lookTool finds an executable (ip, ss, nsenter, sleep).
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range toolDirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in $PATH or %s (install iproute2/util-linux/coreutils)", name, strings.Join(toolDirs, ":"))
}

// ThreadsHome checks that every thread of this process is in the process's own network
// namespace: code that enters a pod's netns on a locked thread must leave none behind.
func ThreadsHome() error {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return err
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	var stray []string
	for _, task := range tasks {
		ns, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/net")
		if errors.Is(err, fs.ErrNotExist) {
			continue // the thread exited meanwhile
		}
		if err != nil {
			return err
		}
		if ns != self {
			stray = append(stray, fmt.Sprintf("thread %s in %s", task.Name(), ns))
		}
	}
	if len(stray) > 0 {
		return fmt.Errorf("threads outside %s: %s", self, strings.Join(stray, ", "))
	}
	return nil
}
