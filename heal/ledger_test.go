package heal_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshmedic/meshmedic/heal"
)

var leasesGR = schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}

func TestLeaseLedgerRoundTrip(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	fc := clocktesting.NewFakeClock(t0)
	l := heal.NewLeaseLedger(cs.CoordinationV1(), "meshmedic-system", "agent/n1", heal.LeaseLedgerClock(fc))

	st, err := l.Load(ctx)
	if err != nil || len(st.Heals) != 0 {
		t.Fatalf("missing lease: %+v %v", st, err)
	}
	h := heal.NewHealer(newStub(), heal.WithClock(fc), heal.WithLedger(l), heal.WithInstance("agent/n1"))
	equal(t, "heal", results(h.Heal(ctx, []heal.Target{orphan(newPod("shop", "web-1", "n1"))}, nil)), []heal.Result{heal.ResultEvicted})

	lease, err := cs.CoordinationV1().Leases("meshmedic-system").Get(ctx, heal.LedgerLeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *lease.Spec.HolderIdentity != "agent/n1" || !lease.Spec.RenewTime.Time.Equal(t0) {
		t.Fatalf("lease spec %+v", lease.Spec)
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(lease.Annotations[heal.LedgerAnnotation]), &raw); err != nil {
		t.Fatalf("annotation: %v", err)
	}
	st, err = l.Load(ctx)
	if err != nil || len(st.Heals) != 1 || st.Heals[0].Name != "web-1" || st.Heals[0].By != "agent/n1" || st.Backoff["rs-uid-web-1"].Attempts != 1 {
		t.Fatalf("state %+v %v", st, err)
	}

	// A restarted agent (a new LeaseLedger, a new Healer) keeps the backoff.
	l2 := heal.NewLeaseLedger(cs.CoordinationV1(), "meshmedic-system", "agent/n1", heal.LeaseLedgerClock(fc))
	h2 := heal.NewHealer(newStub(), heal.WithClock(fc), heal.WithLedger(l2))
	equal(t, "after restart", results(h2.Heal(ctx, []heal.Target{orphan(newPod("shop", "web-1", "n1"))}, nil)), []heal.Result{heal.ResultSkippedBackoff})
}

// TestLeaseLedgerConflicts: an update that loses a race (409) re-reads and re-applies its
// rules on the winner's state, so no heal is lost and no limit is exceeded.
func TestLeaseLedgerConflicts(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	l := heal.NewLeaseLedger(cs.CoordinationV1(), "ns", "me")
	if _, err := l.Update(ctx, func(s *heal.LedgerState) error {
		s.Heals = append(s.Heals, heal.HealRecord{Namespace: "a", Name: "first", At: time.Now()})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var conflicts atomic.Int32
	cs.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, k8sruntime.Object, error) {
		if conflicts.Add(1) <= 2 {
			// Another writer got there first: it added a heal.
			lease, _ := cs.Tracker().Get(leaseGVR, "ns", heal.LedgerLeaseName)
			ll := lease.(*coordinationv1.Lease).DeepCopy()
			var st heal.LedgerState
			_ = json.Unmarshal([]byte(ll.Annotations[heal.LedgerAnnotation]), &st)
			st.Heals = append(st.Heals, heal.HealRecord{Namespace: "b", Name: "theirs", At: time.Now()})
			b, _ := json.Marshal(st)
			ll.Annotations[heal.LedgerAnnotation] = string(b)
			_ = cs.Tracker().Update(leaseGVR, ll, "ns")
			return true, nil, apierrors.NewConflict(leasesGR, heal.LedgerLeaseName, errors.New("the object has been modified"))
		}
		return false, nil, nil
	})
	calls := 0
	st, err := l.Update(ctx, func(s *heal.LedgerState) error {
		calls++
		s.Heals = append(s.Heals, heal.HealRecord{Namespace: "a", Name: "mine", At: time.Now()})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 3 {
		t.Fatalf("fn called %d times, want 3 (two conflicts)", calls)
	}
	var names []string
	for _, h := range st.Heals {
		names = append(names, h.Name)
	}
	equal(t, "heals", names, []string{"first", "theirs", "theirs", "mine"})
}

func TestLeaseLedgerFailsClosed(t *testing.T) {
	ctx := context.Background()
	t.Run("forbidden", func(t *testing.T) {
		cs := fake.NewClientset()
		cs.PrependReactor("get", "leases", func(k8stesting.Action) (bool, k8sruntime.Object, error) {
			return true, nil, apierrors.NewForbidden(leasesGR, heal.LedgerLeaseName, errors.New("RBAC"))
		})
		l := heal.NewLeaseLedger(cs.CoordinationV1(), "meshmedic-system", "cli")
		if _, err := l.Load(ctx); !errors.Is(err, heal.ErrLedgerUnavailable) || !apierrors.IsForbidden(err) {
			t.Fatalf("Load: %v", err)
		}
		st := newStub()
		got := heal.NewHealer(st, heal.WithLedger(l)).Heal(ctx, []heal.Target{orphan(newPod("ns", "p", "n1"))}, nil)
		if got[0].Result != heal.ResultFailed || !strings.Contains(got[0].Detail, "lease meshmedic-system/meshmedic-heal-ledger") || len(st.called()) != 0 {
			t.Fatalf("got %+v", got[0])
		}
	})
	t.Run("corrupt annotation", func(t *testing.T) {
		cs := fake.NewClientset(&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: heal.LedgerLeaseName,
			Annotations: map[string]string{heal.LedgerAnnotation: "{not json"}}})
		l := heal.NewLeaseLedger(cs.CoordinationV1(), "ns", "cli")
		if _, err := l.Load(ctx); !errors.Is(err, heal.ErrLedgerUnavailable) {
			t.Fatalf("Load: %v", err)
		}
		if _, err := l.Update(ctx, func(*heal.LedgerState) error { return nil }); !errors.Is(err, heal.ErrLedgerUnavailable) {
			t.Fatalf("Update over a corrupt ledger must not overwrite it: %v", err)
		}
	})
	t.Run("endless conflicts", func(t *testing.T) {
		cs := fake.NewClientset()
		cs.PrependReactor("create", "leases", func(k8stesting.Action) (bool, k8sruntime.Object, error) {
			return true, nil, apierrors.NewAlreadyExists(leasesGR, heal.LedgerLeaseName)
		})
		l := heal.NewLeaseLedger(cs.CoordinationV1(), "ns", "cli", heal.LeaseLedgerTimeout(5*time.Second))
		_, err := l.Update(ctx, func(s *heal.LedgerState) error { s.Heals = append(s.Heals, heal.HealRecord{}); return nil })
		if !errors.Is(err, heal.ErrLedgerUnavailable) || !strings.Contains(err.Error(), "conflicting writes") {
			t.Fatalf("err %v", err)
		}
	})
}

// TestLedgerBounded: whatever the limits, the ledger keeps a bounded number of records, so
// the Lease stays far below the API server's annotation size limit.
func TestLedgerBounded(t *testing.T) {
	ctx := context.Background()
	fc := clocktesting.NewFakeClock(t0)
	cs := fake.NewClientset()
	l := heal.NewLeaseLedger(cs.CoordinationV1(), "ns", "agent/n1", heal.LeaseLedgerClock(fc))
	h := heal.NewHealer(newStub(), heal.WithClock(fc), heal.WithLedger(l), unlimited,
		heal.WithBudget(heal.Budget{PerRun: -1, PerNode: -1, PerNamespace: -1}))
	var targets []heal.Target
	for i := range 450 {
		targets = append(targets, orphan(newPod("ns", "p"+strings.Repeat("x", 50)+itoa(i), "node-"+strings.Repeat("y", 30))))
	}
	h.Heal(ctx, targets, nil)
	lease, err := cs.CoordinationV1().Leases("ns").Get(ctx, heal.LedgerLeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(lease.Annotations[heal.LedgerAnnotation]); n > 160<<10 { // + 100 canary records < 192 KiB of the 256 KiB
		t.Fatalf("ledger annotation is %d bytes", n)
	}
	st, _ := l.Load(ctx)
	if len(st.Heals) > heal.MaxLimit || len(st.Backoff) > 400 {
		t.Fatalf("%d heals, %d backoff records", len(st.Heals), len(st.Backoff))
	}
	// Everything ages out: a window later no heal counts, 2×max later no backoff is kept.
	fc.Step(2*heal.DefaultBackoffMax + time.Minute)
	st, _ = l.Update(ctx, func(*heal.LedgerState) error { return nil })
	h.Heal(ctx, targets[:1], nil)
	st, _ = l.Load(ctx)
	if len(st.Heals) != 1 || len(st.Backoff) != 1 {
		t.Fatalf("after aging: %d heals, %d backoff records", len(st.Heals), len(st.Backoff))
	}
}

var leaseGVR = schema.GroupVersionResource{Group: "coordination.k8s.io", Version: "v1", Resource: "leases"}

func itoa(i int) string { return strconv.Itoa(i) }
