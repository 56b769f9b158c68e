package netns_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshmedic/meshmedic/netns"
	nt "github.com/meshmedic/meshmedic/netns/netnstest"
)

const (
	uidA = "70565f42-b704-42f2-83fe-1ffb77a67800"
	uidB = "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80"
	uidC = "d0544205-72df-11e8-b691-080027c5d95e"
	uidD = "863b91d4-4b68-4efa-917f-4b560e3e86aa"
)

func TestNewFS(t *testing.T) {
	_, err := netns.NewFS(filepath.Join(t.TempDir(), "nope"))
	assert.ErrorContains(t, err, "no such file")
	empty := t.TempDir()
	_, err = netns.NewFS(empty)
	assert.ErrorIs(t, err, netns.ErrNotProcRoot)
	file := filepath.Join(empty, "f")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	_, err = netns.NewFS(file)
	assert.ErrorIs(t, err, netns.ErrNotProcRoot)
	tree := nt.NewTree(t)
	fs, err := netns.NewFS(tree.Root)
	require.NoError(t, err)
	ino, err := fs.HostNetns()
	require.NoError(t, err)
	assert.Equal(t, nt.HostNetns, ino)
}

func TestSandboxesOldestOutsideHostNetnsWins(t *testing.T) {
	tree := nt.NewTree(t)
	// Pod A: CRI-O conmon (older, host netns, pod cgroup), pause, an app, and a younger
	// foreign process in another netns.
	tree.Add(nt.Proc{PID: 100, Comm: "conmon", Cgroup: "1:name=systemd:/kubepods/burstable/pod" + uidA + "/crio-conmon-1\n", Start: 10, Netns: nt.HostNetns})
	tree.Add(nt.Proc{PID: 205, Cgroup: nt.KubepodsCgroup(uidA), Start: 20, Netns: 4026532201})
	tree.Add(nt.Proc{PID: 150, Comm: "app", Cgroup: nt.KubepodsCgroup(uidA), Start: 30, Netns: 4026532201})
	tree.Add(nt.Proc{PID: 99, Comm: "foreign", Cgroup: nt.KubepodsCgroup(uidA), Start: 40, Netns: 4026532999})
	// Pod B: host network only.
	tree.Add(nt.Proc{PID: 300, Cgroup: nt.KubepodsCgroup(uidB), Start: 50, Netns: nt.HostNetns})
	tree.Add(nt.Proc{PID: 301, Cgroup: nt.KubepodsCgroup(uidB), Start: 51, Netns: nt.HostNetns})
	// A host process, and one with an ambiguous cgroup.
	tree.Add(nt.Proc{PID: 400, Comm: "sshd", Cgroup: "0::/system.slice/ssh.service\n", Start: 5, Netns: nt.HostNetns})
	tree.Add(nt.Proc{PID: 500, Cgroup: "0::/kubepods/pod" + uidC + "/x\n1:name=systemd:/kubepods/pod" + uidD + "/y\n", Start: 60, Netns: 4026532300})
	// Pod C's process vanished between listing and reading (no cgroup file): not a problem.
	require.NoError(t, os.MkdirAll(filepath.Join(tree.Root, "600"), 0o755))

	fs, err := netns.NewFS(tree.Root)
	require.NoError(t, err)
	sc, err := fs.Sandboxes()
	require.NoError(t, err)
	assert.Equal(t, nt.HostNetns, sc.HostNetns)
	require.Len(t, sc.Sandboxes, 2)
	a, b := sc.Sandboxes[0], sc.Sandboxes[1]
	assert.Equal(t, netns.Sandbox{PodUID: uidA, PID: 205, StartTime: 20, Netns: 4026532201, Processes: 4, OtherNetns: []uint64{4026532999}}, a)
	assert.Equal(t, netns.Sandbox{PodUID: uidB, PID: 300, StartTime: 50, Netns: nt.HostNetns, HostNetwork: true, Processes: 2}, b)
	require.Len(t, sc.Problems, 1)
	var pe *netns.ProcessError
	require.ErrorAs(t, sc.Problems[0], &pe)
	assert.Equal(t, 500, pe.PID)
	assert.ErrorIs(t, sc.Problems[0], netns.ErrAmbiguousCgroup)

	// Revalidation: same process → its netns; the process exits → ErrProcessGone; PID
	// reused by a younger process → ErrProcessGone.
	ino, err := fs.Revalidate(a)
	require.NoError(t, err)
	assert.Equal(t, uint64(4026532201), ino)
	tree.Remove(205)
	_, err = fs.Revalidate(a)
	assert.ErrorIs(t, err, netns.ErrProcessGone)
	tree.Add(nt.Proc{PID: 205, Cgroup: nt.KubepodsCgroup(uidA), Start: 999, Netns: 4026532201})
	_, err = fs.Revalidate(a)
	assert.ErrorIs(t, err, netns.ErrProcessGone)
}

func TestSandboxesUnplaceablePodIsReported(t *testing.T) {
	tree := nt.NewTree(t)
	tree.Add(nt.Proc{PID: 10, Cgroup: nt.KubepodsCgroup(uidA), Start: 20}) // no ns/net link
	fs, err := netns.NewFS(tree.Root)
	require.NoError(t, err)
	rep, err := netns.InspectNode(fs, netns.NewProcReader(fs), netns.ReadOptions{})
	require.NoError(t, err)
	require.Len(t, rep.Pods, 1)
	assert.Equal(t, netns.CaptureUnknown, rep.Pods[0].Capture)
	assert.Error(t, rep.Pods[0].Err)
}

func TestInspectNodeCaptureVerdicts(t *testing.T) {
	tree := nt.NewTree(t)
	type pod struct {
		uid        string
		tcp, tcp6  *string
		want       netns.Capture
		wantPorts  []uint16
		wantErr    bool
		hostNet    bool
		unreadable string // make this table a directory
	}
	full6 := nt.TCP6(append(nt.Ztunnel(true, 100), nt.Listen("[::]:15001", 200) /* SO_REUSEPORT twin */)...)
	pods := []pod{
		{uid: "00000000-0000-0000-0000-000000000001", tcp: nt.Ptr(nt.TCP(nt.Listen("127.0.0.1:15053", 5))), tcp6: nt.Ptr(full6), want: netns.Captured, wantPorts: []uint16{15001, 15006, 15008, 15053}},
		// IPv4-only kernel: no tcp6 file, ztunnel bound 0.0.0.0.
		{uid: "00000000-0000-0000-0000-000000000002", tcp: nt.Ptr(nt.TCP(nt.Listen("0.0.0.0:15001", 1), nt.Listen("0.0.0.0:15006", 2), nt.Listen("0.0.0.0:15008", 3), nt.Listen("127.0.0.1:15053", 4))), want: netns.Captured, wantPorts: []uint16{15001, 15006, 15008, 15053}},
		// Partial: HBONE listener flushed; an app's 127.0.0.1:15008 does not count.
		{uid: "00000000-0000-0000-0000-000000000003", tcp: nt.Ptr(nt.TCP(nt.Listen("127.0.0.1:15008", 9), nt.Listen("10.0.0.5:15001", 10))), tcp6: nt.Ptr(nt.TCP6(nt.Listen("[::]:15001", 1), nt.Listen("[::]:15006", 2), nt.Established("[::ffff:10.0.0.5]:15008", 3))), want: netns.CapturePartial, wantPorts: []uint16{15001, 15006}},
		// Orphan: only the app's own sockets.
		{uid: "00000000-0000-0000-0000-000000000004", tcp: nt.Ptr(nt.TCP(nt.Listen("0.0.0.0:8080", 1))), tcp6: nt.Ptr(nt.TCP6()), want: netns.CaptureNone},
		// Both tables unreadable.
		{uid: "00000000-0000-0000-0000-000000000005", unreadable: "both", want: netns.CaptureUnknown, wantErr: true},
		// tcp6 all garbage, tcp empty: the listeners may be in the table we could not read.
		{uid: "00000000-0000-0000-0000-000000000006", tcp: nt.Ptr(nt.TCP()), tcp6: nt.Ptr("garbage\nmore garbage\n"), want: netns.CaptureUnknown, wantErr: true},
		// tcp6 garbage but tcp shows everything: captured regardless.
		{uid: "00000000-0000-0000-0000-000000000007", tcp: nt.Ptr(nt.TCP(nt.Listen("0.0.0.0:15001", 1), nt.Listen("0.0.0.0:15006", 2), nt.Listen("0.0.0.0:15008", 3))), tcp6: nt.Ptr("garbage\n"), want: netns.Captured, wantPorts: []uint16{15001, 15006, 15008}},
		// Host network: sockets are the host's and are not read.
		{uid: "00000000-0000-0000-0000-000000000008", hostNet: true, tcp6: nt.Ptr(full6), want: netns.CaptureHostNetwork},
		// Garbage lines among valid rows do not hide them: they prove presence.
		{uid: "00000000-0000-0000-0000-000000000009", tcp: nt.Ptr(nt.TCP()), tcp6: nt.Ptr(withRow(nt.TCP6(nt.Ztunnel(false, 1)...), 1, "xx") + "\x00\xff garbage\n"), want: netns.Captured, wantPorts: []uint16{15001, 15006, 15008}},
	}
	for i, p := range pods {
		pid := 1000 + i
		ns := uint64(4026533000 + i)
		if p.hostNet {
			ns = nt.HostNetns
		}
		tree.Add(nt.Proc{PID: pid, Cgroup: nt.KubepodsCgroup(p.uid), Start: uint64(100 + i), Netns: ns, TCP: p.tcp, TCP6: p.tcp6})
		if p.unreadable == "both" {
			for _, name := range []string{"tcp", "tcp6"} {
				require.NoError(t, os.MkdirAll(filepath.Join(tree.Root, strconv.Itoa(pid), "net", name), 0o755))
			}
		}
	}
	fs, err := netns.NewFS(tree.Root)
	require.NoError(t, err)
	for _, full := range []bool{true, false} {
		rep, err := netns.InspectNode(fs, netns.NewProcReader(fs), netns.ReadOptions{Full: full})
		require.NoError(t, err)
		require.Len(t, rep.Pods, len(pods))
		for i, p := range pods {
			got := rep.Pods[i]
			require.Equal(t, p.uid, got.PodUID)
			assert.Equal(t, p.want, got.Capture, "pod %d full=%v: %+v", i+1, full, got.Listeners)
			assert.Equal(t, p.wantErr, got.Err != nil, "pod %d err %v", i+1, got.Err)
			if full || p.want != netns.Captured {
				assert.Equal(t, fmt.Sprint(p.wantPorts), fmt.Sprint(got.Listeners.Ports), "pod %d full=%v", i+1, full)
			}
		}
		// Without Full, a pod whose tcp6 shows the three wildcard listeners skips tcp.
		if !full {
			assert.Equal(t, netns.TableSkipped, rep.Pods[0].Listeners.TCP.Status)
			assert.Equal(t, []uint16{15001, 15006, 15008, 15053}, rep.Pods[0].Listeners.Ports, "[::1]:15053 is in tcp6")
		}
	}
}

func TestProcReaderVanishedProcess(t *testing.T) {
	tree := nt.NewTree(t)
	fs, err := netns.NewFS(tree.Root)
	require.NoError(t, err)
	_, err = netns.NewProcReader(fs).Listeners(4242, netns.ReadOptions{})
	assert.ErrorIs(t, err, netns.ErrProcessGone)
}

func TestHostNetnsFallsBackToKthreadd(t *testing.T) {
	tree := nt.NewTree(t)
	require.NoError(t, os.Remove(filepath.Join(tree.Root, "1", "ns", "net"))) // unreadable PID 1
	fs, err := netns.NewFS(tree.Root)
	require.NoError(t, err)
	_, err = fs.HostNetns()
	require.Error(t, err, "no kthreadd yet")
	tree.Add(nt.Proc{PID: 2, Comm: "kthreadd", Start: 1, Netns: nt.HostNetns, Cgroup: "0::/\n", Extra: map[string]string{"comm": "kthreadd\n"}})
	ino, err := fs.HostNetns()
	require.NoError(t, err)
	assert.Equal(t, nt.HostNetns, ino)
}
