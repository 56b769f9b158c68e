package detect

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

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

func TestConditionProber(t *testing.T) {
	p := enabledPod("shop", "a")
	_, err := NewConditionProber().Probe(context.Background(), &p)
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
		_, err := NewConditionProber().Probe(context.Background(), &p)
		assert.Error(t, err, c)
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: ConditionAmbientCaptured, Status: corev1.ConditionUnknown, Reason: "Orphaned"}}
	got, err := NewConditionProber().Probe(context.Background(), &p)
	require.NoError(t, err)
	assert.Equal(t, ClassUnknown, got.Class, "status Unknown wins over the reason")
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
