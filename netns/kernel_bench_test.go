package netns_test

import (
	"net/netip"
	"os"
	"strconv"
	"testing"

	"github.com/prometheus/procfs"

	"github.com/meshmedic/meshmedic/internal/podsim"
	"github.com/meshmedic/meshmedic/netns"
)

// BenchmarkKernelPodRead measures one pod's read on the real kernel: a netns made by
// podsim with ztunnel's three listeners plus an app listener and its loopback DNS (~5
// sockets). Each read of net/tcp* that reaches the end walks the kernel's whole TCP hash
// table, whose size grows with the machine's memory.
func BenchmarkKernelPodRead(b *testing.B) {
	podsim.RequirePrivileged(b)
	sim, err := podsim.New()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sim.Close() })
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
	base := "/proc/" + strconv.Itoa(p.PID) + "/net/"
	r := netns.NewProcReader(fs)
	b.Run("naive-readfile-tcp+tcp6", func(b *testing.B) {
		for b.Loop() {
			for _, n := range []string{"tcp", "tcp6"} {
				if _, err := os.ReadFile(base + n); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("meshmedic-fast", func(b *testing.B) { // tcp6 only when it shows the listeners
		for b.Loop() {
			l, err := r.Listeners(p.PID, netns.ReadOptions{})
			if err != nil || l.TCP.Status != netns.TableSkipped {
				b.Fatal(err, l.TCP.Status)
			}
		}
	})
	b.Run("meshmedic-full", func(b *testing.B) { // both tables (node scan)
		for b.Loop() {
			if _, err := r.Listeners(p.PID, netns.ReadOptions{Full: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sockstat-counters", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := fs.SocketsInUse(p.PID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sockstat-procfs", func(b *testing.B) { // the same two numbers through prometheus/procfs
		b.ReportAllocs()
		for b.Loop() {
			pfs, err := procfs.NewFS("/proc/" + strconv.Itoa(p.PID))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := pfs.NetSockstat(); err != nil {
				b.Fatal(err)
			}
			if _, err := pfs.NetSockstat6(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
