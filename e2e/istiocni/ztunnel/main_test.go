package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"istio.io/istio/pkg/zdsapi"
)

func marshal(t testing.TB, r *zdsapi.WorkloadRequest) []byte {
	t.Helper()
	b, err := proto.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func add(uid string) *zdsapi.WorkloadRequest {
	return &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Add{Add: &zdsapi.AddWorkload{Uid: uid,
		WorkloadInfo: &zdsapi.WorkloadInfo{Name: "p-" + uid, Namespace: "ns", ServiceAccount: "default"}}}}
}

func keep(uid string) *zdsapi.WorkloadRequest {
	return &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Keep{Keep: &zdsapi.KeepWorkload{Uid: uid}}}
}

func del(uid string) *zdsapi.WorkloadRequest {
	return &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Del{Del: &zdsapi.DelWorkload{Uid: uid}}}
}

func snapshotSent() *zdsapi.WorkloadRequest {
	return &zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsapi.SnapshotSent{}}}
}

// TestParse checks the rules of ztunnel's get_workload_data: Add carries exactly one fd,
// nothing else carries any, truncation and garbage are errors.
func TestParse(t *testing.T) {
	cases := []struct {
		name  string
		b     []byte
		flags int
		fds   []int
		want  string // error substring; "" = ok
	}{
		{"add with its fd", marshal(t, add("a")), 0, []int{7}, ""},
		{"add without fd", marshal(t, add("a")), 0, nil, "no control message"},
		{"add with two fds", marshal(t, add("a")), 0, []int{7, 8}, "expected 1 FD, got 2"},
		{"del", marshal(t, del("a")), 0, nil, ""},
		{"del with an fd", marshal(t, del("a")), 0, []int{7}, "unexpected control message"},
		{"keep", marshal(t, keep("a")), 0, nil, ""},
		{"snapshot sent", marshal(t, snapshotSent()), 0, nil, ""},
		{"no payload", marshal(t, &zdsapi.WorkloadRequest{}), 0, nil, "no payload"},
		{"truncated", marshal(t, del("a")), unix.MSG_TRUNC, nil, "truncated"},
		{"truncated control", marshal(t, add("a")), unix.MSG_CTRUNC, []int{7}, "truncated"},
		{"garbage", []byte{0xff, 0xff, 0xff}, 0, nil, "proto"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := parse(c.b, c.flags, c.fds, nil)
			if c.want == "" {
				if err != nil || req == nil {
					t.Fatalf("parse = %v, %v; want a request", req, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("parse error = %v, want %q", err, c.want)
			}
		})
	}
	if _, err := parse(nil, 0, nil, errors.New("bad cmsg")); err == nil {
		t.Fatal("a control-message error is passed on")
	}
}

// FuzzParse: any message, flags and fd count either parses into a request whose fds fit its
// payload, or is an error; never a panic.
func FuzzParse(f *testing.F) {
	for _, r := range []*zdsapi.WorkloadRequest{add("a"), keep("b"), del("c"), snapshotSent()} {
		b, _ := proto.Marshal(r)
		f.Add(b, 0, 1)
		f.Add(b, 0, 0)
	}
	f.Add([]byte{0x0a, 0x80}, unix.MSG_TRUNC, 2)
	f.Fuzz(func(t *testing.T, b []byte, flags, nfds int) {
		fds := make([]int, max(0, min(nfds, 4)))
		req, err := parse(b, flags, fds, nil)
		if err != nil {
			return
		}
		_, isAdd := req.Payload.(*zdsapi.WorkloadRequest_Add)
		if isAdd != (len(fds) == 1) || (!isAdd && len(fds) != 0) {
			t.Fatalf("parsed %T with %d fds", req.Payload, len(fds))
		}
	})
}

// harness is a stand-in whose listeners are fake (no netns needed) and whose "netns" fds are
// temporary files: two files are two netns, the same file reopened is the same netns.
type harness struct {
	t     *testing.T
	z     *ztunnel
	dir   string
	opens int
	fail  bool
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, dir: t.TempDir()}
	h.z = newZtunnel(options{dns: true, v6: true}, io.Discard)
	h.z.open = func(*os.File, bool, bool) ([]socket, error) {
		if h.fail {
			return nil, errors.New("bind [::]:15001: address in use")
		}
		h.opens++
		var out []socket
		for _, p := range []uint16{portOutbound, portInbound, portHBONE, portDNS} {
			fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, socket{fd, p})
		}
		return out, nil
	}
	t.Cleanup(h.z.drain)
	return h
}

// netns returns an fd for the "netns" named n (a file in the harness's dir).
func (h *harness) netns(n string) int {
	p := filepath.Join(h.dir, n)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDONLY, 0o600)
	if err != nil {
		h.t.Fatal(err)
	}
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		h.t.Fatal(err)
	}
	return fd
}

func (h *harness) send(r *zdsapi.WorkloadRequest, fds ...int) (error, bool) {
	return h.z.process(r, fds)
}

func (h *harness) state(uid string) (workload, bool) {
	for _, w := range h.z.state().Workloads {
		if w.UID == uid {
			return w, true
		}
	}
	return workload{}, false
}

func TestSnapshotKeepDel(t *testing.T) {
	h := newHarness(t)
	h.z.beginConnection()
	if err, _ := h.send(add("a"), h.netns("na")); err != nil {
		t.Fatal(err)
	}
	if err, _ := h.send(keep("ghost")); err != nil {
		t.Fatal("keep before the snapshot is fine", err)
	}
	if err, _ := h.send(snapshotSent()); err != nil {
		t.Fatal(err)
	}
	w, ok := h.state("a")
	if !ok || w.State != "Up" || len(w.Listeners) != 4 {
		t.Fatalf("a = %+v, %v; want Up with 4 listener ports", w, ok)
	}
	if _, ok := h.state("ghost"); ok {
		t.Fatal("keep of an unknown workload starts nothing")
	}
	if err, fatal := h.send(keep("a")); err == nil || !fatal {
		t.Fatalf("keep after the snapshot = %v (fatal %v); want a protocol error that ends the connection", err, fatal)
	}
	if err, fatal := h.send(snapshotSent()); err == nil || !fatal {
		t.Fatalf("a second snapshot = %v (fatal %v); want a protocol error", err, fatal)
	}

	// The same netns again is a no-op; a new netns (sandbox re-created) replaces the proxy.
	before := h.opens
	if err, _ := h.send(add("a"), h.netns("na")); err != nil || h.opens != before {
		t.Fatalf("re-add in the same netns: err %v, opens %d → %d", err, before, h.opens)
	}
	if err, _ := h.send(add("a"), h.netns("na2")); err != nil || h.opens != before+1 {
		t.Fatalf("add in a new netns: err %v, opens %d → %d", err, before, h.opens)
	}
	if w2, _ := h.state("a"); w2.Netns == w.Netns {
		t.Fatal("the proxy moved to the new netns")
	}
	if err, _ := h.send(del("a")); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.state("a"); ok {
		t.Fatal("del drains the proxy")
	}
}

// TestReconnect: proxies outlive a connection; the next snapshot keeps what it names (by Add or
// Keep) and drains the rest.
func TestReconnect(t *testing.T) {
	h := newHarness(t)
	h.z.beginConnection()
	for _, uid := range []string{"a", "b", "c"} {
		if err, _ := h.send(add(uid), h.netns("n"+uid)); err != nil {
			t.Fatal(err)
		}
	}
	h.send(snapshotSent())

	h.z.beginConnection() // istio-cni restarted
	if err, _ := h.send(add("a"), h.netns("na")); err != nil {
		t.Fatal(err)
	}
	h.send(keep("b"))
	h.send(snapshotSent())
	for uid, want := range map[string]bool{"a": true, "b": true, "c": false} {
		if _, ok := h.state(uid); ok != want {
			t.Errorf("%s present = %v, want %v", uid, ok, want)
		}
	}
}

// TestStartFailureIsPendingAndRetried: a proxy that cannot start is nacked, stays Pending and is
// retried (workloadmanager.rs schedule_retry); a Del before the snapshot drops a pending one.
func TestStartFailureIsPendingAndRetried(t *testing.T) {
	h := newHarness(t)
	h.z.beginConnection()
	h.fail = true
	err, fatal := h.send(add("a"), h.netns("na"))
	if err == nil || fatal || !strings.Contains(err.Error(), "failure to start proxy") {
		t.Fatalf("add = %v (fatal %v); want a non-fatal nack", err, fatal)
	}
	if w, _ := h.state("a"); w.State != "Pending" {
		t.Fatalf("a = %+v, want Pending", w)
	}
	h.fail = false
	h.z.retryPending()
	if w, _ := h.state("a"); w.State != "Up" {
		t.Fatalf("after the retry a = %+v, want Up", w)
	}

	h.fail = true
	h.send(add("b"), h.netns("nb"))
	h.send(del("b"))
	if _, ok := h.state("b"); ok {
		t.Fatal("a del before the snapshot drops a pending workload")
	}
}

func TestLoseAndRestore(t *testing.T) {
	h := newHarness(t)
	h.z.beginConnection()
	h.send(add("a"), h.netns("na"))
	if err := h.z.lose("a", []string{"15008"}); err != nil {
		t.Fatal(err)
	}
	w, _ := h.state("a")
	if w.State != "Up" || !w.Lost || len(w.Listeners) != 3 {
		t.Fatalf("after losing 15008: %+v; want Up, lost, three ports", w)
	}
	if err := h.z.lose("a", []string{"x"}); err == nil {
		t.Fatal("a bad port is an error")
	}
	if err := h.z.lose("nobody", nil); err == nil {
		t.Fatal("an unknown workload is an error")
	}
	if err := h.z.restore("a"); err != nil {
		t.Fatal(err)
	}
	if w, _ := h.state("a"); w.Lost || len(w.Listeners) != 4 {
		t.Fatalf("after restore: %+v", w)
	}
}
