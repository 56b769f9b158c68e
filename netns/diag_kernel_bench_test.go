//go:build linux

package netns_test

import (
	"fmt"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/meshmedic/meshmedic/internal/podsim"
	"github.com/meshmedic/meshmedic/netns"
)

// BenchmarkKernelDiag compares the netlink sock_diag backend with the /proc backend on the
// real kernel, under the same load, in three groups of sub-benchmarks:
//
//   - pod-idle: one pod set up as in BenchmarkKernelPodRead (ztunnel's listeners with
//     DNS plus an app listener on 0.0.0.0:8080), on an otherwise idle sim;
//   - pod-loaded: the same pod while the node holds 199 more captured pods (5 TCP
//     listeners each, every one in its own netns) and 2000 ESTABLISHED loopback
//     connections (4000 sockets) in one of them;
//   - recheck200: one full re-check, reading all 200 pods once; ns/pod is reported beside
//     ns/op.
//
// Each group runs every backend in the fast mode (ReadOptions{}: AF_INET / tcp skipped
// when tcp6 already shows the listeners) and the Full mode (both families, node scan).
func BenchmarkKernelDiag(b *testing.B) {
	podsim.RequirePrivileged(b)
	sim, err := podsim.New()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := sim.Close(); err != nil {
			b.Error(err)
		}
	})
	p, err := sim.AddPod(podsim.PodSpec{})
	if err != nil {
		b.Fatal(err)
	}
	if err := sim.Capture(p, true); err != nil {
		b.Fatal(err)
	}
	if _, err := sim.Listen(p, netip.MustParseAddrPort("0.0.0.0:8080")); err != nil {
		b.Fatal(err)
	}
	fs, err := netns.NewFS("/proc")
	if err != nil {
		b.Fatal(err)
	}
	backends := []struct {
		name string
		r    netns.SocketReader
		opt  netns.ReadOptions
	}{
		{"proc-fast", netns.NewProcReader(fs), netns.ReadOptions{}},
		{"proc-full", netns.NewProcReader(fs), netns.ReadOptions{Full: true}},
		{"diag-fast", netns.NewDiagReader(fs), netns.ReadOptions{}},
		{"diag-full", netns.NewDiagReader(fs), netns.ReadOptions{Full: true}},
	}
	readPod := func(group string) {
		for _, be := range backends {
			b.Run(group+"/"+be.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					l, err := be.r.Listeners(p.PID, be.opt)
					if err != nil || len(l.Ports) != 4 {
						b.Fatal(err, l.Ports)
					}
				}
			})
		}
	}
	readPod("pod-idle")

	pids := []int{p.PID}
	for range 199 {
		q, err := sim.AddPod(podsim.PodSpec{})
		if err != nil {
			b.Fatal(err)
		}
		if err := sim.Capture(q, true); err != nil {
			b.Fatal(err)
		}
		pids = append(pids, q.PID)
	}
	establish(b, pids[1], 2000)
	readPod("pod-loaded")

	for _, be := range backends {
		b.Run("recheck200/"+be.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, pid := range pids {
					l, err := be.r.Listeners(pid, be.opt)
					if err != nil || l.Capture(nil) != netns.Captured {
						b.Fatal(err, l.Ports)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(pids)), "ns/pod")
		})
	}
}

// establish makes n ESTABLISHED loopback connections inside the netns of pid (2n sockets:
// each client and its accepted peer), closed at cleanup.
func establish(b *testing.B, pid, n int) {
	b.Helper()
	var fds []int
	b.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	inPodNetns(b, pid, func() error {
		lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		fds = append(fds, lfd)
		if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return err
		}
		if err := unix.Listen(lfd, 64); err != nil {
			return err
		}
		sa, err := unix.Getsockname(lfd)
		if err != nil {
			return err
		}
		for range n {
			cfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			fds = append(fds, cfd)
			if err := unix.Connect(cfd, sa); err != nil {
				return fmt.Errorf("connect: %w", err)
			}
			afd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
			if err != nil {
				return fmt.Errorf("accept: %w", err)
			}
			fds = append(fds, afd)
		}
		// The listener is closed at once: only the connections remain as load.
		unix.Close(lfd)
		fds = fds[1:]
		return nil
	})
}
