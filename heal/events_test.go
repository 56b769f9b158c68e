package heal_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshmedic/meshmedic/heal"
)

func TestNewEventSink(t *testing.T) {
	ctx := context.Background()
	p := newPod("shop", "cart-1", "n1")
	cs := fake.NewClientset()
	fc := clocktesting.NewFakeClock(t0)
	sink := heal.NewEventSink(cs.CoreV1(), "meshmedic", heal.EventSinkClock(fc), heal.EventSinkInstance("node-a"))

	// Two Events on the same pod at the same instant must not collide.
	h := heal.NewHealer(newStub(), heal.WithEvents(sink), heal.WithDryRun(true))
	h.Heal(ctx, []heal.Target{orphan(p)}, nil)
	h.Heal(ctx, []heal.Target{orphan(p)}, nil)

	list, err := cs.CoreV1().Events("shop").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 2 {
		t.Fatalf("%d events, want 2", len(list.Items))
	}
	e := list.Items[0]
	io := e.InvolvedObject
	if io.Kind != "Pod" || io.APIVersion != "v1" || io.Namespace != "shop" || io.Name != "cart-1" || io.UID != p.UID {
		t.Fatalf("involvedObject %+v", io)
	}
	if e.Reason != heal.ReasonWouldEvict || e.Type != corev1.EventTypeNormal || e.Source.Component != "meshmedic" || e.Source.Host != "node-a" ||
		e.ReportingController != "meshmedic" || e.Count != 1 || !e.FirstTimestamp.Time.Equal(t0) {
		t.Fatalf("event %+v", e)
	}
	if !strings.Contains(e.Message, "strategy stub") || !strings.Contains(e.Message, "finding orphaned") || !strings.Contains(e.Message, "15001") {
		t.Fatalf("message %q", e.Message)
	}
	if !strings.HasPrefix(e.Name, "cart-1.") {
		t.Fatalf("name %q", e.Name)
	}
}

func TestEventSinkErrorsAreLoggedNotFatal(t *testing.T) {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "events", func(k8stesting.Action) (bool, k8sruntime.Object, error) {
		return true, nil, errors.New("etcd is on fire")
	})
	var mu sync.Mutex
	var logged []string
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		logged = append(logged, args)
	}, funcr.Options{})
	sink := heal.NewEventSink(cs.CoreV1(), "meshmedic", heal.EventSinkLogger(log))
	a := heal.NewHealer(newStub(), heal.WithEvents(sink)).Heal(context.Background(), []heal.Target{orphan(newPod("shop", "cart-1", "n1"))}, nil)[0]
	if a.Result != heal.ResultEvicted {
		t.Fatalf("an Event failure changed the heal: %+v", a)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logged) != 1 || !strings.Contains(logged[0], "etcd is on fire") || !strings.Contains(logged[0], "shop/cart-1") {
		t.Fatalf("logged %q", logged)
	}
}

func TestEventMessageIsBounded(t *testing.T) {
	events := &captureSink{}
	p := newPod("shop", "cart-1", "n1")
	st := newStub().answer("cart-1", heal.ResultFailed, errors.New(strings.Repeat("x", 5000)))
	heal.NewHealer(st, heal.WithEvents(events)).Heal(context.Background(), []heal.Target{orphan(p)}, nil)
	if len(events.msgs) != 1 || len(events.msgs[0]) != 1024 {
		t.Fatalf("message length %d", len(events.msgs[0]))
	}
}

type captureSink struct{ msgs []string }

func (c *captureSink) Event(_ *corev1.Pod, _, _, msg string) { c.msgs = append(c.msgs, msg) }

// TestHealerLogs: the Healer is silent unless given a logger, and logs failures.
func TestHealerLogs(t *testing.T) {
	var logged []string
	log := funcr.New(func(prefix, args string) { logged = append(logged, args) }, funcr.Options{Verbosity: 1})
	st := newStub().answer("bad", heal.ResultFailed, errors.New("boom"))
	heal.NewHealer(st, heal.WithLogger(log)).Heal(context.Background(), []heal.Target{
		orphan(newPod("ns", "bad", "n1")),
		{Pod: newPod("ns", "fine", "n1"), Class: "captured"},
	}, nil)
	if len(logged) != 2 || !strings.Contains(logged[0], "boom") || !strings.Contains(logged[0], "ns/bad") || !strings.Contains(logged[1], "not-actionable") {
		t.Fatalf("logged %q", logged)
	}
}
