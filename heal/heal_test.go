package heal_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/heal"
	"github.com/meshmedic/meshmedic/heal/healtest"
)

// stub is a Strategy that records calls and answers per pod name.
type stub struct {
	mu      sync.Mutex
	answers map[string]stubAnswer
	calls   []string
	dryRuns []bool
}

type stubAnswer struct {
	r   heal.Result
	err error
}

func newStub() *stub { return &stub{answers: map[string]stubAnswer{}} }

func (s *stub) Name() string { return "stub" }

func (s *stub) Heal(_ context.Context, t heal.Target, dry bool) (heal.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, t.Pod.Name)
	s.dryRuns = append(s.dryRuns, dry)
	if a, ok := s.answers[t.Pod.Name]; ok {
		return a.r, a.err
	}
	if dry {
		return heal.ResultWouldEvict, nil
	}
	return heal.ResultEvicted, nil
}

func (s *stub) answer(name string, r heal.Result, err error) *stub {
	s.answers[name] = stubAnswer{r, err}
	return s
}

func (s *stub) called() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

// gentle is a stub that does not destroy the pod (like toggle).
type gentle struct{ *stub }

func (gentle) ReplacesPod() bool { return false }

var healthy = map[string]heal.NodeHealth{
	"node-a": {AmbientPods: 10, Orphaned: 1, ZtunnelReady: true, IstioCNIReady: true},
	"node-b": {AmbientPods: 10, Orphaned: 1, ZtunnelReady: true, IstioCNIReady: true},
}

// unlimited lifts the fleet-wide limits, for tests of other rules.
var unlimited = heal.WithLimits(heal.Limits{ClusterMax: -1, NamespaceMax: -1})

func results(actions []heal.Action) []heal.Result {
	out := make([]heal.Result, len(actions))
	for i, a := range actions {
		out[i] = a.Result
	}
	return out
}

func equal[T comparable](t *testing.T, what string, got, want []T) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s:\n got  %v\n want %v", what, got, want)
	}
}

// TestRuleOrder checks which rule decides when several apply, for one target each.
func TestRuleOrder(t *testing.T) {
	sick := map[string]heal.NodeHealth{"node-a": {AmbientPods: 4, Orphaned: 4, ZtunnelReady: false, IstioCNIReady: true}}
	mirror := func(p *corev1.Pod) { p.Annotations[corev1.MirrorPodAnnotationKey] = "x" }
	cases := []struct {
		name     string
		pod      *corev1.Pod
		class    detect.Class
		nodes    map[string]heal.NodeHealth
		opts     []heal.Option
		gentle   bool
		want     heal.Result
		sentinel error
		called   bool
	}{
		{"unknown before everything", newPod("ns", "p", "node-a", bare), detect.ClassUnknown, sick, nil, false, heal.ResultNotActionable, heal.ErrUnknownNotHealed, false},
		{"skipped", newPod("ns", "p", "node-a"), detect.ClassSkipped, healthy, nil, false, heal.ResultNotActionable, heal.ErrUnknownNotHealed, false},
		{"captured", newPod("ns", "p", "node-a"), detect.ClassCaptured, healthy, nil, false, heal.ResultNotActionable, heal.ErrUnknownNotHealed, false},
		{"empty class", newPod("ns", "p", "node-a"), "", healthy, nil, false, heal.ResultNotActionable, heal.ErrUnknownNotHealed, false},
		{"breaker before bare pod", newPod("ns", "p", "node-a", bare), detect.ClassOrphaned, sick, nil, false, heal.ResultRefusedNodeBreaker, heal.ErrNodeBreaker, false},
		{"bare pod refused", newPod("ns", "p", "node-a", bare), detect.ClassOrphaned, healthy, nil, false, heal.ResultRefusedBarePod, heal.ErrBarePod, false},
		{"bare pod allowed", newPod("ns", "p", "node-a", bare), detect.ClassOrphaned, healthy, []heal.Option{heal.WithAllowBarePods(true)}, false, heal.ResultEvicted, nil, true},
		{"bare pod, gentle strategy", newPod("ns", "p", "node-a", bare), detect.ClassPartial, healthy, nil, true, heal.ResultEvicted, nil, true},
		{"mirror pod refused even when bare pods are allowed", newPod("ns", "p", "node-a", mirror), detect.ClassOrphaned, healthy, []heal.Option{heal.WithAllowBarePods(true)}, false, heal.ResultRefusedBarePod, heal.ErrBarePod, false},
		{"nil nodes map disables the breaker", newPod("ns", "p", "node-a"), detect.ClassOrphaned, nil, nil, false, heal.ResultEvicted, nil, true},
		{"negative budget is unlimited", newPod("ns", "p", "node-a"), detect.ClassNetnsReplaced, healthy, []heal.Option{heal.WithBudget(heal.Budget{PerRun: -1, PerNode: -1, PerNamespace: -1})}, false, heal.ResultEvicted, nil, true},
		{"dry run reaches the strategy", newPod("ns", "p", "node-a"), detect.ClassNotEnrolled, healthy, []heal.Option{heal.WithDryRun(true)}, false, heal.ResultWouldEvict, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := newStub()
			var s heal.Strategy = st
			if c.gentle {
				s = gentle{st}
			}
			a := heal.NewHealer(s, c.opts...).Heal(context.Background(), []heal.Target{{Pod: c.pod, Class: c.class}}, c.nodes)
			if len(a) != 1 {
				t.Fatalf("got %d actions, want 1", len(a))
			}
			if a[0].Result != c.want {
				t.Fatalf("result %q, want %q (detail %q)", a[0].Result, c.want, a[0].Detail)
			}
			if c.sentinel != nil && !errors.Is(a[0].Err, c.sentinel) {
				t.Fatalf("err %v does not wrap %v", a[0].Err, c.sentinel)
			}
			if c.sentinel == nil && a[0].Err != nil {
				t.Fatalf("unexpected err %v", a[0].Err)
			}
			if got := len(st.called()) == 1; got != c.called {
				t.Fatalf("strategy called = %v, want %v", got, c.called)
			}
			if a[0].Namespace != "ns" || a[0].Name != "p" || a[0].UID != "uid-p" || a[0].Node != "node-a" || a[0].Class != c.class || a[0].Strategy != "stub" || a[0].Detail == "" {
				t.Fatalf("action identity wrong: %+v", a[0])
			}
		})
	}
}

// TestBackoffBeforeBudget: a pod in backoff is reported as such even when the budget
// is also spent.
func TestBackoffBeforeBudget(t *testing.T) {
	fc := clocktesting.NewFakeClock(t0)
	h := heal.NewHealer(newStub(), heal.WithClock(fc), heal.WithBudget(heal.Budget{PerRun: 1, PerNode: -1, PerNamespace: -1}))
	a := newPod("ns", "a", "node-a")
	x := newPod("ns", "x", "node-b")
	equal(t, "first run", results(h.Heal(context.Background(), []heal.Target{orphan(a)}, healthy)), []heal.Result{heal.ResultEvicted})
	got := h.Heal(context.Background(), []heal.Target{orphan(x), orphan(a)}, healthy)
	equal(t, "second run", results(got), []heal.Result{heal.ResultEvicted, heal.ResultSkippedBackoff})
	if !errors.Is(got[1].Err, heal.ErrBackoff) {
		t.Fatalf("err %v does not wrap ErrBackoff", got[1].Err)
	}
}

func TestBudgets(t *testing.T) {
	b := heal.ResultSkippedBudget
	e := heal.ResultEvicted
	cases := []struct {
		name    string
		budget  heal.Budget
		targets []*corev1.Pod
		want    []heal.Result
	}{
		{"per run", heal.Budget{PerRun: 2, PerNode: -1, PerNamespace: -1},
			[]*corev1.Pod{newPod("a", "1", "n1"), newPod("b", "2", "n2"), newPod("c", "3", "n3")},
			[]heal.Result{e, e, b}},
		{"per node", heal.Budget{PerRun: -1, PerNode: 1, PerNamespace: -1},
			[]*corev1.Pod{newPod("a", "1", "n1"), newPod("b", "2", "n1"), newPod("c", "3", "n2")},
			[]heal.Result{e, b, e}},
		{"per namespace", heal.Budget{PerRun: -1, PerNode: -1, PerNamespace: 2},
			[]*corev1.Pod{newPod("a", "1", "n1"), newPod("a", "2", "n2"), newPod("a", "3", "n3"), newPod("b", "4", "n4")},
			[]heal.Result{e, e, b, e}},
		{"zero means none", heal.Budget{PerRun: 0, PerNode: -1, PerNamespace: -1},
			[]*corev1.Pod{newPod("a", "1", "n1")},
			[]heal.Result{b}},
		{"defaults: 2 per node", heal.DefaultBudget,
			[]*corev1.Pod{newPod("a", "1", "n1"), newPod("b", "2", "n1"), newPod("c", "3", "n1")},
			[]heal.Result{e, e, b}},
		{"defaults: 3 per namespace", heal.DefaultBudget,
			[]*corev1.Pod{newPod("a", "1", "n1"), newPod("a", "2", "n2"), newPod("a", "3", "n3"), newPod("a", "4", "n4")},
			[]heal.Result{e, e, e, b}},
		{"defaults: 5 per run", heal.DefaultBudget,
			[]*corev1.Pod{newPod("a", "1", "n1"), newPod("b", "2", "n2"), newPod("c", "3", "n3"), newPod("d", "4", "n4"), newPod("e", "5", "n5"), newPod("f", "6", "n6")},
			[]heal.Result{e, e, e, e, e, b}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := heal.NewHealer(newStub(), heal.WithBudget(c.budget), unlimited)
			var targets []heal.Target
			for _, p := range c.targets {
				targets = append(targets, orphan(p))
			}
			got := h.Heal(context.Background(), targets, nil)
			equal(t, "results", results(got), c.want)
			for _, a := range got {
				if a.Result == b && !errors.Is(a.Err, heal.ErrBudgetExhausted) {
					t.Fatalf("%s: err %v does not wrap ErrBudgetExhausted", a.Name, a.Err)
				}
			}
		})
	}
}

// TestBudgetAccounting: what consumes a budget and that budgets reset per call.
func TestBudgetAccounting(t *testing.T) {
	p1, p2, p3 := newPod("ns", "p1", "n1"), newPod("ns", "p2", "n1"), newPod("ns", "p3", "n1")
	targets := []heal.Target{orphan(p1), orphan(p2), orphan(p3)}
	one := heal.WithBudget(heal.Budget{PerRun: 1, PerNode: -1, PerNamespace: -1})

	t.Run("blocked-by-pdb does not consume", func(t *testing.T) {
		st := newStub().answer("p1", heal.ResultBlockedByPDB, fmt.Errorf("x: %w", heal.ErrPDBBlocked))
		got := heal.NewHealer(st, one).Heal(context.Background(), targets, nil)
		equal(t, "results", results(got), []heal.Result{heal.ResultBlockedByPDB, heal.ResultEvicted, heal.ResultSkippedBudget})
		if !errors.Is(got[0].Err, heal.ErrPDBBlocked) {
			t.Fatalf("err %v", got[0].Err)
		}
	})
	t.Run("already gone does not consume", func(t *testing.T) {
		st := newStub().answer("p1", heal.ResultEvicted, fmt.Errorf("p1: %w", heal.ErrAlreadyGone))
		got := heal.NewHealer(st, one).Heal(context.Background(), targets, nil)
		equal(t, "results", results(got), []heal.Result{heal.ResultEvicted, heal.ResultEvicted, heal.ResultSkippedBudget})
		if got[0].Err != nil || !strings.Contains(got[0].Detail, "already gone") {
			t.Fatalf("already-gone action: err %v detail %q", got[0].Err, got[0].Detail)
		}
	})
	t.Run("failed consumes", func(t *testing.T) {
		st := newStub().answer("p1", heal.ResultFailed, errors.New("boom"))
		got := heal.NewHealer(st, one).Heal(context.Background(), targets, nil)
		equal(t, "results", results(got), []heal.Result{heal.ResultFailed, heal.ResultSkippedBudget, heal.ResultSkippedBudget})
		if got[0].Err == nil || got[0].Detail != "boom" {
			t.Fatalf("failed action: %+v", got[0])
		}
	})
	t.Run("dry run consumes like a real run", func(t *testing.T) {
		got := heal.NewHealer(newStub(), one, heal.WithDryRun(true)).Heal(context.Background(), targets, nil)
		equal(t, "results", results(got), []heal.Result{heal.ResultWouldEvict, heal.ResultSkippedBudget, heal.ResultSkippedBudget})
	})
	t.Run("reset per call", func(t *testing.T) {
		// Different owners, so backoff does not interfere.
		h := heal.NewHealer(newStub(), one)
		equal(t, "first", results(h.Heal(context.Background(), targets[:1], nil)), []heal.Result{heal.ResultEvicted})
		equal(t, "second", results(h.Heal(context.Background(), targets[1:2], nil)), []heal.Result{heal.ResultEvicted})
	})
	t.Run("empty result from a strategy is failed", func(t *testing.T) {
		got := heal.NewHealer(newStub().answer("p1", "", nil)).Heal(context.Background(), targets[:1], nil)
		if got[0].Result != heal.ResultFailed || got[0].Err == nil {
			t.Fatalf("got %+v", got[0])
		}
	})
}

func TestBackoff(t *testing.T) {
	ctx := context.Background()
	fc := clocktesting.NewFakeClock(t0)
	st := newStub()
	h := heal.NewHealer(st, heal.WithClock(fc), heal.WithBackoff(time.Minute, 4*time.Minute), unlimited)
	owner := ownedBy("deploy-rs")
	p := newPod("ns", "web-1", "n1", owner)
	heals := func(p *corev1.Pod) heal.Result {
		return h.Heal(ctx, []heal.Target{orphan(p)}, nil)[0].Result
	}

	// Growth: 1m, 2m, 4m, then capped at 4m.
	for i, window := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 4 * time.Minute} {
		if r := heals(p); r != heal.ResultEvicted {
			t.Fatalf("heal %d: %s, want evicted", i+1, r)
		}
		fc.Step(window - time.Second)
		if r := heals(p); r != heal.ResultSkippedBackoff {
			t.Fatalf("heal %d: %s one second before the %s window ends, want skipped-backoff", i+1, r, window)
		}
		fc.Step(time.Second)
	}

	// A replacement pod (new UID, same owner) is still in backoff.
	if r := heals(p); r != heal.ResultEvicted {
		t.Fatalf("heal 5: %s", r)
	}
	replacement := newPod("ns", "web-2", "n1", owner)
	if r := heals(replacement); r != heal.ResultSkippedBackoff {
		t.Fatalf("replacement: %s, want skipped-backoff", r)
	}

	// Reset: 2*max without a heal ends the streak; the next window is base again.
	fc.Step(8*time.Minute + time.Second)
	if r := heals(replacement); r != heal.ResultEvicted {
		t.Fatalf("after reset: %s", r)
	}
	fc.Step(time.Minute)
	if r := heals(replacement); r != heal.ResultEvicted {
		t.Fatalf("after reset the window must be base (1m) again, got %s", r)
	}
}

func TestBackoffKeys(t *testing.T) {
	ctx := context.Background()
	fc := clocktesting.NewFakeClock(t0)

	t.Run("siblings in one call are all healed, later calls wait", func(t *testing.T) {
		h := heal.NewHealer(newStub(), heal.WithClock(fc))
		a, b, c := newPod("ns", "a", "n1", ownedBy("rs")), newPod("ns", "b", "n2", ownedBy("rs")), newPod("ns", "c", "n3", ownedBy("rs"))
		equal(t, "first", results(h.Heal(ctx, []heal.Target{orphan(a), orphan(b)}, nil)), []heal.Result{heal.ResultEvicted, heal.ResultEvicted})
		equal(t, "second", results(h.Heal(ctx, []heal.Target{orphan(c)}, nil)), []heal.Result{heal.ResultSkippedBackoff})
	})
	t.Run("bare pods are keyed by their own UID", func(t *testing.T) {
		h := heal.NewHealer(newStub(), heal.WithClock(fc), heal.WithAllowBarePods(true))
		a, b := newPod("ns", "a", "n1", bare), newPod("ns", "b", "n1", bare)
		equal(t, "first", results(h.Heal(ctx, []heal.Target{orphan(a)}, nil)), []heal.Result{heal.ResultEvicted})
		equal(t, "second", results(h.Heal(ctx, []heal.Target{orphan(a), orphan(b)}, nil)), []heal.Result{heal.ResultSkippedBackoff, heal.ResultEvicted})
	})
	t.Run("pdb block, dry run and already-gone do not start backoff; failed does", func(t *testing.T) {
		st := newStub().
			answer("pdb", heal.ResultBlockedByPDB, heal.ErrPDBBlocked).
			answer("gone", heal.ResultEvicted, heal.ErrAlreadyGone).
			answer("bad", heal.ResultFailed, errors.New("boom"))
		pods := []*corev1.Pod{newPod("ns", "pdb", "n1"), newPod("ns", "gone", "n1"), newPod("ns", "bad", "n1")}
		budget := heal.WithBudget(heal.Budget{PerRun: -1, PerNode: -1, PerNamespace: -1})
		var targets []heal.Target
		for _, p := range pods {
			targets = append(targets, orphan(p))
		}
		dry := heal.NewHealer(newStub(), heal.WithClock(fc), heal.WithDryRun(true), budget)
		dry.Heal(ctx, targets, nil)
		equal(t, "dry run twice", results(dry.Heal(ctx, targets, nil)), []heal.Result{heal.ResultWouldEvict, heal.ResultWouldEvict, heal.ResultWouldEvict})

		h := heal.NewHealer(st, heal.WithClock(fc), budget)
		h.Heal(ctx, targets, nil)
		equal(t, "second run", results(h.Heal(ctx, targets, nil)), []heal.Result{heal.ResultBlockedByPDB, heal.ResultEvicted, heal.ResultSkippedBackoff})
	})
}

func TestBreaker(t *testing.T) {
	e, r, w := heal.ResultEvicted, heal.ResultRefusedNodeBreaker, heal.ResultWaitingForCanary
	ok := func(ambient, orphaned int) heal.NodeHealth {
		return heal.NodeHealth{AmbientPods: ambient, Orphaned: orphaned, ZtunnelReady: true, IstioCNIReady: true}
	}
	cases := []struct {
		name    string
		breaker *heal.Breaker
		health  heal.NodeHealth
		missing bool
		want    []heal.Result
	}{
		{"ztunnel not ready", nil, heal.NodeHealth{AmbientPods: 10, Orphaned: 1, IstioCNIReady: true}, false, []heal.Result{r, r}},
		{"istio-cni not ready", nil, heal.NodeHealth{AmbientPods: 10, Orphaned: 1, ZtunnelReady: true}, false, []heal.Result{r, r}},
		{"mass orphaned: one canary, the rest wait", nil, ok(6, 3), false, []heal.Result{e, w}},
		{"two of two orphaned is mass orphaning too", nil, ok(2, 2), false, []heal.Result{e, w}},
		{"one of one is just a heal", nil, ok(1, 1), false, []heal.Result{e, e}},
		{"many orphaned but below the fraction", nil, ok(10, 4), false, []heal.Result{e, e}},
		{"custom thresholds", &heal.Breaker{MinPods: 1, OrphanFraction: 0.1}, ok(10, 1), false, []heal.Result{e, w}},
		{"no canary: the old wall", &heal.Breaker{NoCanary: true}, ok(6, 3), false, []heal.Result{r, r}},
		{"node missing from the map fails closed", nil, heal.NodeHealth{}, true, []heal.Result{r, r}},
		{"healthy", nil, ok(10, 1), false, []heal.Result{e, e}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var opts []heal.Option
			if c.breaker != nil {
				opts = append(opts, heal.WithBreaker(*c.breaker))
			}
			events := healtest.NewEventSink()
			st := newStub()
			h := heal.NewHealer(st, append(opts, heal.WithEvents(events), heal.WithBudget(heal.Budget{PerRun: -1, PerNode: -1, PerNamespace: -1}), unlimited)...)
			nodes := map[string]heal.NodeHealth{"other": ok(1, 0)}
			if !c.missing {
				nodes["n1"] = c.health
			}
			targets := []heal.Target{orphan(newPod("ns", "a", "n1")), orphan(newPod("ns", "b", "n1"))}
			got := h.Heal(context.Background(), targets, nodes)
			equal(t, "results", results(got), c.want)
			if c.want[0] == r {
				if len(st.called()) != 0 {
					t.Fatalf("strategy called on a stopped node: %v", st.called())
				}
				if !errors.Is(got[0].Err, heal.ErrNodeBreaker) {
					t.Fatalf("err %v", got[0].Err)
				}
				equal(t, "events", events.Reasons(), []string{heal.ReasonRefusedNodeBreaker, heal.ReasonRefusedNodeBreaker})
			}
			if c.want[1] == w && !errors.Is(got[1].Err, heal.ErrCanaryPending) {
				t.Fatalf("err %v does not wrap ErrCanaryPending", got[1].Err)
			}
		})
	}
}

func TestEvents(t *testing.T) {
	ctx := context.Background()
	fc := clocktesting.NewFakeClock(t0)
	events := healtest.NewEventSink()
	st := newStub().
		answer("pdb", heal.ResultBlockedByPDB, heal.ErrPDBBlocked).
		answer("bad", heal.ResultFailed, errors.New("boom"))
	h := heal.NewHealer(st, heal.WithClock(fc), heal.WithEvents(events), heal.WithBudget(heal.Budget{PerRun: 2, PerNode: -1, PerNamespace: -1}), unlimited)
	targets := []heal.Target{
		{Pod: newPod("ns", "healthy", "n1"), Class: detect.ClassCaptured},
		orphan(newPod("ns", "ok", "n1")),
		orphan(newPod("ns", "pdb", "n1")),
		orphan(newPod("ns", "bad", "n1")),
		orphan(newPod("ns", "bare", "n1", bare)),
		orphan(newPod("ns", "late", "n1")),
	}
	got := h.Heal(ctx, targets, nil)
	equal(t, "results", results(got), []heal.Result{heal.ResultNotActionable, heal.ResultEvicted, heal.ResultBlockedByPDB, heal.ResultFailed, heal.ResultRefusedBarePod, heal.ResultSkippedBudget})
	equal(t, "reasons", events.Reasons(), []string{heal.ReasonEvicted, heal.ReasonBlockedByPDB, heal.ReasonHealFailed, heal.ReasonRefusedBarePod, heal.ReasonSkippedBudget})
	ev := events.Events()
	if ev[0].Name != "ok" || ev[0].UID != "uid-ok" || ev[0].Type != corev1.EventTypeNormal {
		t.Fatalf("event 0: %+v", ev[0])
	}
	if ev[2].Type != corev1.EventTypeWarning || !strings.Contains(ev[2].Message, "strategy stub") || !strings.Contains(ev[2].Message, "finding orphaned") || !strings.Contains(ev[2].Message, "boom") {
		t.Fatalf("event 2: %+v", ev[2])
	}

	// Backoff: one Event per window, not one per sweep.
	events.Reset()
	okTarget := targets[1:2]
	h.Heal(ctx, okTarget, nil)
	h.Heal(ctx, okTarget, nil)
	equal(t, "backoff events", events.Reasons(), []string{heal.ReasonSkippedBackoff})

	// Dry run: would- reasons for actions, real reasons for refusals, "(dry run)" prefix.
	events.Reset()
	dry := heal.NewHealer(newStub(), heal.WithDryRun(true), heal.WithEvents(events))
	dry.Heal(ctx, []heal.Target{orphan(newPod("ns", "d1", "n1")), orphan(newPod("ns", "d2", "n1", bare))}, nil)
	equal(t, "dry-run reasons", events.Reasons(), []string{heal.ReasonWouldEvict, heal.ReasonRefusedBarePod})
	for _, e := range events.Events() {
		if !strings.HasPrefix(e.Message, "(dry run) ") {
			t.Fatalf("dry-run message %q", e.Message)
		}
	}
}

func TestActionJSON(t *testing.T) {
	a := heal.Action{Namespace: "ns", Name: "p", UID: "u", Node: "n1", Class: detect.ClassOrphaned,
		Strategy: "evict", Result: heal.ResultBlockedByPDB, Detail: "d", Err: heal.ErrPDBBlocked}
	raw, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"namespace": "ns", "name": "p", "strategy": "evict", "result": "blocked-by-pdb", "detail": "d", "uid": "u", "node": "n1", "class": "orphaned"} {
		if m[k] != v {
			t.Fatalf("key %q = %v, want %q (json %s)", k, m[k], v, raw)
		}
	}
	if len(m) != 8 {
		t.Fatalf("unexpected keys (Err must not be serialized): %s", raw)
	}
}

func TestCanceledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	st := newStub()
	got := heal.NewHealer(st).Heal(ctx, []heal.Target{orphan(newPod("ns", "p", "n1"))}, nil)
	if got[0].Result != heal.ResultFailed || !errors.Is(got[0].Err, context.Canceled) || len(st.called()) != 0 {
		t.Fatalf("got %+v, calls %v", got[0], st.called())
	}
}

func TestNilPodTarget(t *testing.T) {
	got := heal.NewHealer(newStub()).Heal(context.Background(), []heal.Target{{Class: detect.ClassOrphaned}}, nil)
	if got[0].Result != heal.ResultNotActionable || !errors.Is(got[0].Err, heal.ErrUnknownNotHealed) {
		t.Fatalf("got %+v", got[0])
	}
}

func TestNodeHealthCountAndPodReady(t *testing.T) {
	var h heal.NodeHealth
	for _, c := range []detect.Class{detect.ClassCaptured, detect.ClassSkipped, detect.ClassOrphaned, detect.ClassPartial, detect.ClassUnknown} {
		h.Count(c)
	}
	if h.AmbientPods != 4 || h.Orphaned != 2 {
		t.Fatalf("got %+v, want 4 ambient (skipped excluded), 2 orphaned", h)
	}
	ready := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	if !heal.PodReady(ready) {
		t.Fatal("a Running pod with Ready=True is ready")
	}
	pending := ready.DeepCopy()
	pending.Status.Phase = corev1.PodPending
	deleting := ready.DeepCopy()
	deleting.DeletionTimestamp = &metav1.Time{}
	notReady := ready.DeepCopy()
	notReady.Status.Conditions[0].Status = corev1.ConditionFalse
	for name, p := range map[string]*corev1.Pod{"pending": pending, "deleting": deleting, "not ready": notReady, "no condition": {Status: corev1.PodStatus{Phase: corev1.PodRunning}}} {
		if heal.PodReady(p) {
			t.Errorf("%s pod reported ready", name)
		}
	}
}
