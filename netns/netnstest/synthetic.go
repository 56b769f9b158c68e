package netnstest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// WriteSyntheticNode writes a proc tree of nProcs processes under root for benchmarks:
// PID 1 in the host netns, nPods pods of 4 processes each (CRI-O-style conmon in the host
// netns, then pause and two apps in the pod's netns; hybrid cgroup files), and host
// processes for the rest. It returns the pods' UIDs. Socket tables are not written.
func WriteSyntheticNode(root string, nProcs, nPods int) ([]string, error) {
	write := func(pid int, cgroup string, start uint64, ino uint64) error {
		dir := filepath.Join(root, strconv.Itoa(pid))
		if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cgroup), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(Stat(pid, "p", start)), 0o644); err != nil {
			return err
		}
		return os.Symlink(fmt.Sprintf("net:[%d]", ino), filepath.Join(dir, "ns", "net"))
	}
	hybrid := "12:pids:/system.slice/x.service\n11:memory:/system.slice/x.service\n1:name=systemd:/system.slice/x.service\n0::/system.slice/x.service\n"
	pid := 1
	if err := write(pid, "0::/init.scope\n", 1, HostNetns); err != nil {
		return nil, err
	}
	uids := make([]string, 0, nPods)
	for pod := 0; pod < nPods; pod++ {
		uid := fmt.Sprintf("%08x-0000-4000-8000-%012x", pod, pod)
		uids = append(uids, uid)
		cg := "12:pids:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + strings.ReplaceAll(uid, "-", "_") +
			".slice/cri-containerd-" + strings.Repeat("ab", 32) + ".scope\n" + KubepodsCgroup(uid)
		for k := 0; k < 4; k++ {
			pid++
			ino := uint64(4026532000 + pod)
			if k == 0 {
				ino = HostNetns
			}
			if err := write(pid, cg, uint64(100+pid), ino); err != nil {
				return nil, err
			}
		}
	}
	for pid < nProcs {
		pid++
		if err := write(pid, hybrid, uint64(100+pid), HostNetns); err != nil {
			return nil, err
		}
	}
	return uids, nil
}
