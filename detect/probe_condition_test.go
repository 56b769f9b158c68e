package detect

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshmedic/meshmedic/netns"
)

func TestConditionRoundTrip(t *testing.T) {
	for _, c := range []Class{ClassCaptured, ClassOrphaned, ClassPartial, ClassNotEnrolled, ClassNetnsReplaced, ClassUnknown, ClassBypass, ClassBlackhole} {
		f := Finding{Class: c, Present: []uint16{15001}, Missing: []uint16{15006, 15008}, Netns: 4026532201, Detail: "x; y=z"}
		if c == ClassCaptured || c == ClassBypass {
			f.Present, f.Missing = []uint16{15001, 15006, 15008}, nil
		}
		if c == ClassBypass {
			f.Rules = "absent"
		}
		cond := AmbientCapturedCondition(f, t0)
		assert.Equal(t, ConditionAmbientCaptured, cond.Type)
		p, err := ParseAmbientCapturedCondition(cond)
		require.NoError(t, err, c)
		assert.Equal(t, c, p.Class)
		assert.Equal(t, f.Present, p.Listeners.Ports)
		assert.Equal(t, f.Missing, p.Missing)
		assert.Equal(t, uint64(4026532201), p.Netns)
		assert.Equal(t, f.Rules, p.RulesVerdict, c)
	}
	assert.Contains(t, AmbientCapturedCondition(Finding{Class: ClassBypass, Rules: "partial"}, t0).Message, " rules=partial")
	assert.Equal(t, "NetnsReplaced", ConditionReason(ClassNetnsReplaced))
	assert.Equal(t, ClassNetnsReplaced, ClassFromConditionReason("netns-replaced"))
	assert.Equal(t, ClassUnknown, ClassFromConditionReason("Whatever"))
	assert.Equal(t, corev1.ConditionFalse, AmbientCapturedCondition(Finding{Class: ClassOrphaned}, t0).Status)
	assert.Equal(t, corev1.ConditionUnknown, AmbientCapturedCondition(Finding{Class: ClassUnknown}, t0).Status)
}

// heartbeats is a fixed HeartbeatSource.
type heartbeats map[string]*coordinationv1.Lease

func (h heartbeats) Heartbeat(_ context.Context, node string) (*coordinationv1.Lease, error) {
	if l, ok := h[node]; ok {
		return l, nil
	}
	return nil, nil
}

func heartbeat(started, renewed time.Time, duration time.Duration) *coordinationv1.Lease {
	secs := int32(duration / time.Second)
	return &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{AcquireTime: &metav1.MicroTime{Time: started},
		RenewTime: &metav1.MicroTime{Time: renewed}, LeaseDurationSeconds: &secs}}
}

func TestConditionProber(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	alive := heartbeats{"node-a": heartbeat(t0.Add(-time.Hour), t0.Add(-time.Minute), 3*time.Minute)}
	prober := NewConditionProber(alive, WithConditionClock(clk))
	p := enabledPod("shop", "a")
	_, err := prober.Probe(context.Background(), &p)
	assert.ErrorIs(t, err, ErrNoAgentCondition)

	bad := []corev1.PodCondition{
		{Type: ConditionAmbientCaptured, Status: corev1.ConditionTrue, Reason: "Orphaned"},
		{Type: ConditionAmbientCaptured, Status: corev1.ConditionFalse, Reason: "Captured"},
		{Type: ConditionAmbientCaptured, Status: corev1.ConditionFalse, Reason: "Orphaned", Message: "present=abc"},
		{Type: ConditionAmbientCaptured, Status: corev1.ConditionFalse, Reason: "Orphaned", Message: "junk"},
		{Type: ConditionAmbientCaptured, Status: corev1.ConditionFalse, Reason: "Orphaned", Message: "missing=70000"},
	}
	for _, c := range bad {
		p.Status.Conditions = []corev1.PodCondition{c}
		_, err := prober.Probe(context.Background(), &p)
		assert.Error(t, err, c)
	}
	written := metav1.NewTime(t0.Add(-30 * time.Minute))
	p.Status.Conditions = []corev1.PodCondition{{Type: ConditionAmbientCaptured, Status: corev1.ConditionUnknown, Reason: "Orphaned", LastProbeTime: written}}
	got, err := prober.Probe(context.Background(), &p)
	require.NoError(t, err)
	assert.Equal(t, ClassUnknown, got.Class, "status Unknown wins over the reason")

	// A False condition is evidence only while its agent vouches for it.
	p.Status.Conditions = []corev1.PodCondition{{Type: ConditionAmbientCaptured, Status: corev1.ConditionFalse, Reason: "Orphaned",
		Message: "present= missing=15001,15006,15008", LastProbeTime: written}}
	got, err = prober.Probe(context.Background(), &p)
	require.NoError(t, err)
	assert.Equal(t, ClassOrphaned, got.Class)

	cases := []struct {
		name string
		hb   HeartbeatSource
		want string
	}{
		{"no heartbeat source", nil, "no heartbeat source"},
		{"no lease: no agent ever ran there", heartbeats{}, "no heartbeat lease"},
		{"agent gone: lease expired", heartbeats{"node-a": heartbeat(t0.Add(-time.Hour), t0.Add(-4*time.Minute), 3*time.Minute)}, "heartbeat expired at"},
		{"agent restarted, pod not re-checked yet", heartbeats{"node-a": heartbeat(t0.Add(-10*time.Minute), t0, 3*time.Minute)}, "before the running agent started"},
		{"lease without times", heartbeats{"node-a": {}}, "without renewTime"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewConditionProber(c.hb, WithConditionClock(clk)).Probe(context.Background(), &p)
			assert.ErrorIs(t, err, ErrNoHeartbeat)
			assert.ErrorContains(t, err, c.want)
		})
	}
	// Through the Engine: a stale False is unknown, never an orphan.
	stale := p
	w := newWorld(stale)
	rep, err := New(w, w, NewConditionProber(heartbeats{}, WithConditionClock(clk)), WithClock(clk)).Scan(context.Background(), "shop")
	require.NoError(t, err)
	assert.Equal(t, ClassUnknown, rep.Findings[0].Class)
	assert.Contains(t, rep.Findings[0].Error, "no heartbeat lease")
}

func TestHeartbeatsFromLeases(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	lease := heartbeat(t0, t0, time.Minute)
	lease.Name, lease.Namespace = AgentHeartbeatLease("node-a"), "meshmedic-system"
	cs := fake.NewClientset(lease)
	gets := 0
	cs.PrependReactor("get", "leases", func(k8stesting.Action) (bool, runtime.Object, error) { gets++; return false, nil, nil })
	hb := HeartbeatsFromLeases(cs.CoordinationV1(), "meshmedic-system", 30*time.Second, clk)
	for range 3 {
		l, err := hb.Heartbeat(context.Background(), "node-a")
		require.NoError(t, err)
		require.NotNil(t, l)
	}
	l, err := hb.Heartbeat(context.Background(), "node-b")
	require.NoError(t, err)
	assert.Nil(t, l, "no lease is no heartbeat, not an error")
	assert.Equal(t, 2, gets, "one GET per node while cached")
	clk.Step(time.Minute)
	_, _ = hb.Heartbeat(context.Background(), "node-a")
	assert.Equal(t, 3, gets)

	assert.Equal(t, "meshmedic-agent-node-a", AgentHeartbeatLease("node-a"))
	long := AgentHeartbeatLease(strings.Repeat("n", 300))
	assert.LessOrEqual(t, len(long), 253)
	assert.NotEqual(t, long, AgentHeartbeatLease(strings.Repeat("n", 299)))
}

func FuzzParseAmbientCapturedCondition(f *testing.F) {
	f.Add("False", "Orphaned", "present= missing=15001,15006,15008 netns=4026532201; annotated enabled but empty")
	f.Add("True", "Captured", "present=15001,15006,15008 missing=")
	f.Add("Unknown", "netns-replaced", "netns=x")
	f.Fuzz(func(t *testing.T, status, reason, msg string) {
		c := corev1.PodCondition{Type: ConditionAmbientCaptured, Status: corev1.ConditionStatus(status), Reason: reason, Message: msg}
		p, err := ParseAmbientCapturedCondition(c)
		if err != nil {
			return
		}
		if p.Listeners.Ports == nil {
			t.Fatal("ports must never be nil")
		}
		switch c.Status {
		case corev1.ConditionTrue:
			if p.Class != ClassCaptured {
				t.Fatalf("True gave %s", p.Class)
			}
		case corev1.ConditionFalse:
			if !p.Class.Actionable() {
				t.Fatalf("False gave %s", p.Class)
			}
		default:
			if p.Class != ClassUnknown {
				t.Fatalf("%q gave %s", status, p.Class)
			}
		}
		// What parses re-renders and parses to the same thing.
		again, err := ParseAmbientCapturedCondition(AmbientCapturedCondition(Finding{Class: p.Class, Present: p.Listeners.Ports, Missing: p.Missing, Netns: p.Netns}, t0))
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if again.Class != p.Class || again.Netns != p.Netns || !slices.Equal(again.Listeners.Ports, p.Listeners.Ports) || !slices.Equal(again.Missing, p.Missing) {
			t.Fatalf("round trip: %+v != %+v", again, p)
		}
	})
}

func FuzzListenersFromTables(f *testing.F) {
	f.Add([]byte("  sl  local_address rem_address\n   0: 00000000000000000000000000000000:3A99 00000000000000000000000000000000:0000 0A 0 0 0 0 0 0 1 0\n"), []byte("x"), false)
	f.Add([]byte(""), []byte("  sl\n   0: 0100007F:3ACD 00000000:0000 0A\n"), true)
	f.Add([]byte("  sl  local_address remote_address st\n"), []byte("  sl  local_address rem_address\n   0: 0100007F:3ACD 00000000:0000 0A 0:0 0:0 0 0 0 7\nbad\n"), false)
	f.Fuzz(func(t *testing.T, tcp6, tcp []byte, missing6 bool) {
		if missing6 {
			tcp6 = nil
		}
		l := ListenersFromTables(tcp6, tcp)
		for i, p := range l.Ports {
			if i > 0 && l.Ports[i-1] >= p {
				t.Fatalf("ports not sorted/unique: %v", l.Ports)
			}
		}
		for _, s := range l.Sockets {
			if s.State != netns.StateListen {
				t.Fatalf("non-LISTEN socket kept: %v", s)
			}
		}
		// Only proof counts: partial or none needs both tables ok or missing.
		if c := l.Capture(nil); c == netns.CapturePartial || c == netns.CaptureNone {
			for _, tb := range []netns.Table{l.TCP6, l.TCP} {
				if tb.Status != netns.TableOK && tb.Status != netns.TableMissing {
					t.Fatalf("%s from a %s table: %+v", c, tb.Status, l)
				}
			}
		}
	})
}
