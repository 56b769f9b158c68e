package heal_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/heal"
	"github.com/meshmedic/meshmedic/heal/healtest"
)

// cluster is an in-memory set of pods for PodGetter and FactsSource.
type cluster struct {
	mu   sync.Mutex
	pods map[string]*corev1.Pod // namespace/name
	// classes is the latest finding per pod UID (the node facts' view).
	classes map[types.UID]detect.Finding
}

func newCluster(pods ...*corev1.Pod) *cluster {
	c := &cluster{pods: map[string]*corev1.Pod{}, classes: map[types.UID]detect.Finding{}}
	for _, p := range pods {
		c.add(p)
	}
	return c
}

func (c *cluster) add(p *corev1.Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pods[p.Namespace+"/"+p.Name] = p
}

func (c *cluster) remove(ns, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pods, ns+"/"+name)
}

func (c *cluster) GetPod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pods[ns+"/"+name]
	if !ok {
		return nil, apierrors.NewNotFound(podsGR, name)
	}
	return p.DeepCopy(), nil
}

// judge records the latest class of a pod, as an agent's sweep would.
func (c *cluster) judge(p *corev1.Pod, class detect.Class, confirmed bool) detect.Finding {
	f := detect.Finding{Namespace: p.Namespace, Name: p.Name, UID: p.UID, Node: p.Spec.NodeName, Class: class,
		Confirmed: confirmed, Ready: heal.PodReady(p)}
	c.mu.Lock()
	c.classes[p.UID] = f
	c.mu.Unlock()
	return f
}

func (c *cluster) NodeFacts(_ context.Context, node string) (heal.NodeFacts, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var on []*corev1.Pod
	for _, p := range c.pods {
		if p.Spec.NodeName == node {
			on = append(on, p)
		}
	}
	return heal.NodeFactsOf(on, c.classes, func(ns string) bool { return ns == "istio-system" }), nil
}

func readyPod(ns, name, node string, opts ...podOpt) *corev1.Pod {
	p := newPod(ns, name, node, opts...)
	p.CreationTimestamp = metav1.NewTime(t0.Add(-time.Hour))
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue})
	return p
}

// infra returns the node's Ready ztunnel and istio-cni pods.
func infra(node string) []*corev1.Pod {
	zt := readyPod("istio-system", "ztunnel-"+node, node, withLabel("app", "ztunnel"))
	cni := readyPod("istio-system", "istio-cni-"+node, node, withLabel("k8s-app", "istio-cni-node"))
	return []*corev1.Pod{zt, cni}
}

func report(fs ...detect.Finding) detect.Report {
	return detect.Report{Checked: len(fs), Findings: fs}
}

func TestPlanRules(t *testing.T) {
	ctx := context.Background()
	ok := readyPod("shop", "ok", "n1")
	unconfirmed := readyPod("shop", "unconfirmed", "n1")
	gone := readyPod("shop", "gone", "n1")
	replaced := readyPod("shop", "replaced", "n1")
	terminating := readyPod("shop", "terminating", "n1")
	terminating.DeletionTimestamp = &metav1.Time{Time: t0}
	notReady := readyPod("shop", "not-ready", "n1")
	notReady.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
	gated := readyPod("shop", "gated", "n1")
	gated.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: detect.ConditionAmbientCaptured}}
	gated.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}, {Type: corev1.ContainersReady, Status: corev1.ConditionTrue}}
	healthy := readyPod("shop", "healthy", "n1")

	c := newCluster(append(infra("n1"), ok, unconfirmed, replaced, terminating, notReady, gated, healthy)...)
	for i := range 6 { // enough healthy neighbours that the node is not mass-orphaned
		p := readyPod("shop", fmt.Sprintf("fine-%d", i), "n1")
		c.add(p)
		c.judge(p, detect.ClassCaptured, false)
	}
	c.add(func() *corev1.Pod { p := replaced.DeepCopy(); p.UID = "new-uid"; return p }())
	var fs []detect.Finding
	for _, p := range []*corev1.Pod{ok, gone, replaced, terminating, notReady, gated} {
		fs = append(fs, c.judge(p, detect.ClassOrphaned, true))
	}
	fs = append(fs, c.judge(unconfirmed, detect.ClassOrphaned, false), c.judge(healthy, detect.ClassCaptured, false))
	notReadyFinding := &fs[4]
	notReadyFinding.NotReadyFor = detect.Duration(10 * time.Minute)

	plan, err := heal.NewHealer(newStub(), heal.WithClock(clocktesting.NewFakeClock(t0))).Plan(ctx, report(fs...), c, c)
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, tg := range plan.Targets {
		targets = append(targets, tg.Pod.Name)
	}
	equal(t, "targets", targets, []string{"ok", "gated"})
	dropped := map[string]string{}
	for _, d := range plan.Dropped {
		dropped[d.Name] = d.Why
	}
	want := map[string]string{"gone": heal.DropGone, "replaced": heal.DropGone, "terminating": heal.DropTerminating,
		"not-ready": heal.DropNotReady, "unconfirmed": heal.DropUnconfirmed}
	if fmt.Sprint(dropped) != fmt.Sprint(want) {
		t.Fatalf("dropped:\n got  %v\n want %v", dropped, want)
	}
	if v := plan.Nodes["n1"]; v.Mode != heal.NodeHeal || v.Health.AmbientPods != 12 || !v.Health.ZtunnelReady || !v.Health.IstioCNIReady {
		t.Fatalf("node verdict %+v", v)
	}

	// WithNotReady: not-Ready pods are healed once they have not been Ready that long.
	plan, err = heal.NewHealer(newStub(), heal.WithNotReady(5*time.Minute)).Plan(ctx, report(fs...), c, c)
	if err != nil {
		t.Fatal(err)
	}
	targets = nil
	for _, tg := range plan.Targets {
		targets = append(targets, tg.Pod.Name)
	}
	equal(t, "targets with WithNotReady(5m)", targets, []string{"ok", "not-ready", "gated"})
	plan, _ = heal.NewHealer(newStub(), heal.WithNotReady(time.Hour)).Plan(ctx, report(fs...), c, c)
	for _, d := range plan.Dropped {
		if d.Name == "not-ready" && !strings.Contains(d.Why, "healed after 1h0m0s") {
			t.Fatalf("why %q", d.Why)
		}
	}
}

func TestPlanNodeStops(t *testing.T) {
	ctx := context.Background()
	p := readyPod("shop", "p", "n1")
	cases := []struct {
		name  string
		infra []*corev1.Pod
		facts heal.FactsSource
		want  string
	}{
		{"no ztunnel pod", infra("n1")[1:], nil, "no ztunnel pod found on the node"},
		{"ztunnel not ready", func() []*corev1.Pod {
			pods := infra("n1")
			pods[0].Status.Conditions[0].Status = corev1.ConditionFalse
			return pods
		}(), nil, "ztunnel is not Ready"},
		{"no istio-cni pod", infra("n1")[:1], nil, "no istio-cni pod found on the node"},
		{"istio-cni crash-looping", func() []*corev1.Pod {
			pods := infra("n1")
			pods[1].Status.Conditions[0].Status = corev1.ConditionFalse
			pods[1].Status.ContainerStatuses = []corev1.ContainerStatus{{RestartCount: 7}}
			return pods
		}(), nil, "istio-cni is not Ready"},
		{"infra in another namespace does not count", []*corev1.Pod{
			readyPod("default", "fake-ztunnel", "n1", withLabel("app", "ztunnel")), infra("n1")[1]}, nil, "no ztunnel pod found"},
		{"facts unavailable", infra("n1"), heal.FactsFunc(func(context.Context, string) (heal.NodeFacts, error) {
			return heal.NodeFacts{}, errors.New("apiserver down")
		}), "node facts unavailable (fail closed): apiserver down"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl := newCluster(append(c.infra, p)...)
			f := cl.judge(p, detect.ClassOrphaned, true)
			facts := c.facts
			if facts == nil {
				facts = cl
			}
			events := healtest.NewEventSink()
			st := newStub()
			h := heal.NewHealer(st, heal.WithEvents(events))
			plan, err := h.Plan(ctx, report(f), cl, facts)
			if err != nil {
				t.Fatal(err)
			}
			v := plan.Nodes["n1"]
			if v.Mode != heal.NodeStop || !strings.Contains(v.Reason, c.want) {
				t.Fatalf("verdict %+v, want stop with %q", v, c.want)
			}
			acts := h.Apply(ctx, plan)
			equal(t, "results", results(acts), []heal.Result{heal.ResultRefusedNodeBreaker})
			if len(st.called()) != 0 {
				t.Fatal("strategy called on a stopped node")
			}
		})
	}
	t.Run("no facts source fails closed", func(t *testing.T) {
		cl := newCluster(p)
		plan, err := heal.NewHealer(newStub()).Plan(ctx, report(cl.judge(p, detect.ClassOrphaned, true)), cl, nil)
		if err != nil || plan.Nodes["n1"].Mode != heal.NodeStop {
			t.Fatalf("plan %+v err %v", plan, err)
		}
	})
}

// massOrphaned makes a node with n ambient pods of which k are confirmed orphans, each of
// its own ReplicaSet (so backoff does not interfere).
func massOrphaned(n, k int) (*cluster, []*corev1.Pod, detect.Report) {
	c := newCluster(infra("n1")...)
	var pods []*corev1.Pod
	var fs []detect.Finding
	for i := range n {
		p := readyPod("shop", fmt.Sprintf("web-%d", i), "n1")
		c.add(p)
		pods = append(pods, p)
		if i < k {
			fs = append(fs, c.judge(p, detect.ClassOrphaned, true))
		} else {
			c.judge(p, detect.ClassCaptured, false)
		}
	}
	return c, pods, report(fs...)
}

func TestCanaryPasses(t *testing.T) {
	ctx := context.Background()
	fc := clocktesting.NewFakeClock(t0)
	ledger := heal.NewMemoryLedger()
	events := healtest.NewEventSink()
	c, pods, rep := massOrphaned(10, 8)
	st := newStub()
	open := heal.WithLimits(heal.Limits{ClusterMax: -1, NamespaceMax: -1})
	h := heal.NewHealer(st, heal.WithClock(fc), heal.WithLedger(ledger), heal.WithEvents(events), open,
		heal.WithBudget(heal.Budget{PerRun: -1, PerNode: 3, PerNamespace: -1}))

	plan, err := h.Plan(ctx, rep, c, c)
	if err != nil {
		t.Fatal(err)
	}
	if v := plan.Nodes["n1"]; v.Mode != heal.NodeCanary || !strings.Contains(v.Reason, "8 of 10 ambient pods orphaned") {
		t.Fatalf("verdict %+v", v)
	}
	acts := h.Apply(ctx, plan)
	w := heal.ResultWaitingForCanary
	equal(t, "canary sweep", results(acts), []heal.Result{heal.ResultEvicted, w, w, w, w, w, w, w})
	if !strings.Contains(acts[0].Detail, "canary for node n1") {
		t.Fatalf("canary detail %q", acts[0].Detail)
	}
	state, _ := ledger.Load(ctx)
	if cr := state.Canaries["n1"]; cr.State != heal.CanaryPending || cr.UID != pods[0].UID {
		t.Fatalf("ledger canary %+v", cr)
	}

	// The canary's pod is gone; no pod has come since: the node waits.
	c.remove("shop", pods[0].Name)
	fc.Step(30 * time.Second)
	rep.Findings = rep.Findings[1:]
	plan, _ = h.Plan(ctx, rep, c, c)
	if v := plan.Nodes["n1"]; v.Mode != heal.NodeWait {
		t.Fatalf("verdict while waiting %+v", v)
	}
	equal(t, "waiting sweep", results(h.Apply(ctx, plan)), []heal.Result{w, w, w, w, w, w, w})

	// The replacement comes up captured: the canary passes, the rest are healed under the
	// budgets (3 per node per call here).
	repl := readyPod("shop", "web-0-new", "n1")
	repl.UID = "uid-web-0-new"
	repl.CreationTimestamp = metav1.NewTime(fc.Now().Add(-20 * time.Second))
	c.add(repl)
	c.judge(repl, detect.ClassCaptured, false)
	fc.Step(10 * time.Second)
	events.Reset()
	plan, _ = h.Plan(ctx, rep, c, c)
	if v := plan.Nodes["n1"]; v.Mode != heal.NodeHeal || v.Canary == nil || v.Canary.State != heal.CanaryPassed {
		t.Fatalf("verdict after the replacement %+v", v)
	}
	if len(plan.Canaries) != 1 || plan.Canaries[0].Record.State != heal.CanaryPassed || !strings.Contains(plan.Canaries[0].Record.Detail, "web-0-new") {
		t.Fatalf("canary changes %+v", plan.Canaries)
	}
	e, b := heal.ResultEvicted, heal.ResultSkippedBudget
	equal(t, "after the canary", results(h.Apply(ctx, plan)), []heal.Result{e, e, e, b, b, b, b})
	equal(t, "node event", events.Reasons()[:1], []string{heal.ReasonCanaryPassed})
	if ev := events.Events()[0]; ev.Node != "n1" || ev.Type != corev1.EventTypeNormal {
		t.Fatalf("node event %+v", ev)
	}
	// A second planner (another process) sees the verdict without writing it again.
	plan, _ = heal.NewHealer(newStub(), heal.WithClock(fc), heal.WithLedger(ledger)).Plan(ctx, rep, c, c)
	if v := plan.Nodes["n1"]; v.Mode != heal.NodeHeal || len(plan.Canaries) != 0 {
		t.Fatalf("second planner: %+v %+v", v, plan.Canaries)
	}
}

func TestCanaryFails(t *testing.T) {
	ctx := context.Background()
	fc := clocktesting.NewFakeClock(t0)
	ledger := heal.NewMemoryLedger()
	events := healtest.NewEventSink()
	c, pods, rep := massOrphaned(4, 3)
	h := heal.NewHealer(newStub(), heal.WithClock(fc), heal.WithLedger(ledger), heal.WithEvents(events))
	plan, _ := h.Plan(ctx, rep, c, c)
	equal(t, "canary", results(h.Apply(ctx, plan)), []heal.Result{heal.ResultEvicted, heal.ResultWaitingForCanary, heal.ResultWaitingForCanary})

	// The replacement is orphaned too (confirmed): the node stops.
	c.remove("shop", pods[0].Name)
	repl := readyPod("shop", "web-0-new", "n1")
	repl.UID = "uid-web-0-new"
	repl.CreationTimestamp = metav1.NewTime(fc.Now().Add(2 * time.Second))
	c.add(repl)
	fc.Step(time.Minute)
	c.judge(repl, detect.ClassNotEnrolled, false)
	plan, _ = h.Plan(ctx, report(rep.Findings[1:]...), c, c)
	if plan.Nodes["n1"].Mode != heal.NodeWait {
		t.Fatalf("an unconfirmed finding is no evidence: %+v", plan.Nodes["n1"])
	}
	c.judge(repl, detect.ClassNotEnrolled, true)
	events.Reset()
	plan, _ = h.Plan(ctx, report(rep.Findings[1:]...), c, c)
	v := plan.Nodes["n1"]
	if v.Mode != heal.NodeStop || !strings.Contains(v.Reason, "restart its istio-cni pod") || !strings.Contains(v.Reason, "web-0-new") {
		t.Fatalf("verdict %+v", v)
	}
	r := heal.ResultRefusedNodeBreaker
	equal(t, "stopped", results(h.Apply(ctx, plan)), []heal.Result{r, r})
	equal(t, "events", events.Reasons()[:1], []string{heal.ReasonCanaryFailed})
	if ev := events.Events()[0]; ev.Type != corev1.EventTypeWarning || ev.Node != "n1" {
		t.Fatalf("node event %+v", ev)
	}

	// Stays stopped while the node's istio-cni is the same pod...
	fc.Step(time.Hour)
	plan, _ = h.Plan(ctx, report(rep.Findings[1:]...), c, c)
	if plan.Nodes["n1"].Mode != heal.NodeStop {
		t.Fatalf("verdict an hour later %+v", plan.Nodes["n1"])
	}
	// ...and gets a new canary once istio-cni restarted.
	cni := infra("n1")[1]
	cni.Status.ContainerStatuses = []corev1.ContainerStatus{{RestartCount: 1}}
	c.add(cni)
	plan, _ = h.Plan(ctx, report(rep.Findings[1:]...), c, c)
	if v := plan.Nodes["n1"]; v.Mode != heal.NodeCanary || !strings.Contains(v.Reason, "changed since the last canary failed") {
		t.Fatalf("verdict after istio-cni restarted %+v", v)
	}
}

func TestCanaryInconclusive(t *testing.T) {
	ctx := context.Background()
	fc := clocktesting.NewFakeClock(t0)
	c, pods, rep := massOrphaned(4, 3)
	h := heal.NewHealer(newStub(), heal.WithClock(fc), heal.WithBreaker(heal.Breaker{CanaryTimeout: 5 * time.Minute}))
	plan, _ := h.Plan(ctx, rep, c, c)
	h.Apply(ctx, plan)
	c.remove("shop", pods[0].Name)
	fc.Step(4 * time.Minute)
	plan, _ = h.Plan(ctx, report(rep.Findings[1:]...), c, c)
	if plan.Nodes["n1"].Mode != heal.NodeWait {
		t.Fatalf("before the timeout: %+v", plan.Nodes["n1"])
	}
	fc.Step(2 * time.Minute) // no pod came to the node: the replacement went elsewhere
	plan, _ = h.Plan(ctx, report(rep.Findings[1:]...), c, c)
	if v := plan.Nodes["n1"]; v.Mode != heal.NodeCanary || !strings.Contains(v.Reason, "showed nothing within 5m0s") {
		t.Fatalf("after the timeout: %+v", v)
	}
	acts := h.Apply(ctx, plan)
	equal(t, "second canary", results(acts), []heal.Result{heal.ResultEvicted, heal.ResultWaitingForCanary})
}

// countingLedger counts writes.
type countingLedger struct {
	heal.Ledger
	mu      sync.Mutex
	updates int
	fail    error
}

func (l *countingLedger) Load(ctx context.Context) (heal.LedgerState, error) {
	if l.fail != nil {
		return heal.LedgerState{}, l.fail
	}
	return l.Ledger.Load(ctx)
}

func (l *countingLedger) Update(ctx context.Context, fn func(*heal.LedgerState) error) (heal.LedgerState, error) {
	if l.fail != nil {
		return heal.LedgerState{}, l.fail
	}
	l.mu.Lock()
	l.updates++
	l.mu.Unlock()
	return l.Ledger.Update(ctx, fn)
}

// TestSharedLedger: two healers — an agent and `repair --yes` at the same time — draw from
// one ledger: the backoff of a ReplicaSet healed by one holds for the other (the 4-replicas
// incident), and the cluster-wide rate is one budget.
func TestSharedLedger(t *testing.T) {
	ctx := context.Background()
	fc := clocktesting.NewFakeClock(t0)
	ledger := heal.NewMemoryLedger()
	mk := func(name string, l heal.Limits) *heal.Healer {
		return heal.NewHealer(newStub(), heal.WithClock(fc), heal.WithLedger(ledger), heal.WithInstance(name), heal.WithLimits(l))
	}
	rs := ownedBy("rs-web")
	a1, a2 := newPod("shop", "web-1", "n1", rs), newPod("shop", "web-2", "n1", rs)
	b1, b2 := newPod("shop", "web-3", "n2", rs), newPod("shop", "web-4", "n2", rs)
	agent, cli := mk("agent/n1", heal.DefaultLimits), mk("cli/me", heal.DefaultLimits)
	equal(t, "agent", results(agent.Heal(ctx, []heal.Target{orphan(a1), orphan(a2)}, nil)), []heal.Result{heal.ResultEvicted, heal.ResultEvicted})
	got := cli.Heal(ctx, []heal.Target{orphan(b1), orphan(b2)}, nil)
	equal(t, "cli", results(got), []heal.Result{heal.ResultSkippedBackoff, heal.ResultSkippedBackoff})
	if !strings.Contains(got[0].Detail, "healed 1 time(s)") {
		t.Fatalf("detail %q", got[0].Detail)
	}

	// The cluster-wide rate: 3 per window across both healers.
	three := heal.Limits{ClusterMax: 3, NamespaceMax: -1}
	ledger2 := heal.NewMemoryLedger()
	x := heal.NewHealer(newStub(), heal.WithClock(fc), heal.WithLedger(ledger2), heal.WithLimits(three))
	y := heal.NewHealer(newStub(), heal.WithClock(fc), heal.WithLedger(ledger2), heal.WithLimits(three))
	e, b := heal.ResultEvicted, heal.ResultSkippedBudget
	equal(t, "x", results(x.Heal(ctx, []heal.Target{orphan(newPod("a", "1", "n1")), orphan(newPod("b", "2", "n2"))}, nil)), []heal.Result{e, e})
	got = y.Heal(ctx, []heal.Target{orphan(newPod("c", "3", "n3")), orphan(newPod("d", "4", "n4"))}, nil)
	equal(t, "y", results(got), []heal.Result{e, b})
	if !errors.Is(got[1].Err, heal.ErrBudgetExhausted) || !strings.Contains(got[1].Detail, "cluster-wide heal rate of 3 per 10m0s spent; next slot at 2025-03-01T12:10:00Z") {
		t.Fatalf("detail %q", got[1].Detail)
	}
	fc.Step(10 * time.Minute)
	equal(t, "a window later", results(y.Heal(ctx, []heal.Target{orphan(newPod("d", "4", "n4"))}, nil)), []heal.Result{e})

	// The namespace cap.
	ledger3 := heal.NewMemoryLedger()
	z := heal.NewHealer(newStub(), heal.WithClock(fc), heal.WithLedger(ledger3), heal.WithLimits(heal.Limits{ClusterMax: -1, NamespaceMax: 1}),
		heal.WithBudget(heal.Budget{PerRun: -1, PerNode: -1, PerNamespace: -1}))
	got = z.Heal(ctx, []heal.Target{orphan(newPod("a", "1", "n1")), orphan(newPod("a", "2", "n2")), orphan(newPod("b", "3", "n3"))}, nil)
	equal(t, "namespace cap", results(got), []heal.Result{e, b, e})
	if !strings.Contains(got[1].Detail, "namespace a's heal cap of 1 per 10m0s spent") {
		t.Fatalf("detail %q", got[1].Detail)
	}
	// Zero means none.
	none := heal.NewHealer(newStub(), heal.WithLimits(heal.Limits{ClusterMax: 0, NamespaceMax: -1}))
	equal(t, "cluster max 0", results(none.Heal(ctx, []heal.Target{orphan(newPod("a", "1", "n1"))}, nil)), []heal.Result{b})
}

// TestBackoffSurvivesRestart: a new Healer (an agent restarted, or OOM-killed) over the same
// ledger keeps the backoff.
func TestBackoffSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	fc := clocktesting.NewFakeClock(t0)
	ledger := heal.NewMemoryLedger()
	p := newPod("shop", "web-1", "n1")
	first := heal.NewHealer(newStub(), heal.WithClock(fc), heal.WithLedger(ledger))
	equal(t, "before", results(first.Heal(ctx, []heal.Target{orphan(p)}, nil)), []heal.Result{heal.ResultEvicted})
	fc.Step(time.Minute)
	restarted := heal.NewHealer(newStub(), heal.WithClock(fc), heal.WithLedger(ledger))
	equal(t, "after a restart", results(restarted.Heal(ctx, []heal.Target{orphan(p)}, nil)), []heal.Result{heal.ResultSkippedBackoff})
}

func TestExclusions(t *testing.T) {
	ctx := context.Background()
	annotate := func(k, v string) podOpt { return func(p *corev1.Pod) { p.Annotations[k] = v } }
	emptyDir := func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}
	critical := func(p *corev1.Pod) { p.Spec.Priority = ptr.To(heal.SystemCriticalPriority) }
	nodeCritical := func(p *corev1.Pod) { p.Spec.PriorityClassName = "system-node-critical" }
	x, e := heal.ResultRefusedExcluded, heal.ResultEvicted
	cases := []struct {
		name   string
		opts   []podOpt
		gentle bool
		want   heal.Result
		detail string
	}{
		{"safe-to-evict false", []podOpt{annotate(heal.AnnotationSafeToEvict, "false")}, false, x, "safe-to-evict=false"},
		{"safe-to-evict true", []podOpt{annotate(heal.AnnotationSafeToEvict, "true")}, false, e, ""},
		{"emptyDir data", []podOpt{emptyDir}, false, x, `emptyDir volume "scratch"`},
		{"system-critical priority", []podOpt{critical}, false, x, "system-critical priority 2000000000"},
		{"system-node-critical class", []podOpt{nodeCritical}, false, x, "priority class system-node-critical"},
		{"allow overrides the exclusions", []podOpt{emptyDir, critical, annotate(heal.AnnotationHeal, heal.HealAllow)}, false, e, ""},
		{"never", []podOpt{annotate(heal.AnnotationHeal, heal.HealNever)}, false, x, "meshmedic.io/heal=never"},
		{"never, even for a gentle strategy", []podOpt{annotate(heal.AnnotationHeal, heal.HealNever)}, true, x, "meshmedic.io/heal=never"},
		{"emptyDir is kept by a gentle strategy", []podOpt{emptyDir}, true, e, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var s heal.Strategy = newStub()
			if c.gentle {
				s = gentle{newStub()}
			}
			got := heal.NewHealer(s).Heal(ctx, []heal.Target{orphan(newPod("ns", "p", "n1", c.opts...))}, nil)
			if got[0].Result != c.want || !strings.Contains(got[0].Detail, c.detail) {
				t.Fatalf("got %s %q, want %s containing %q", got[0].Result, got[0].Detail, c.want, c.detail)
			}
			if c.want == x && !errors.Is(got[0].Err, heal.ErrExcluded) {
				t.Fatalf("err %v", got[0].Err)
			}
		})
	}
}

// TestRefusalEventsOncePerCause: a refusal that cannot change (a bare pod) is one Event,
// not one per sweep; a new cause is a new Event.
func TestRefusalEventsOncePerCause(t *testing.T) {
	ctx := context.Background()
	fc := clocktesting.NewFakeClock(t0)
	events := healtest.NewEventSink()
	h := heal.NewHealer(newStub(), heal.WithClock(fc), heal.WithEvents(events))
	p := newPod("ns", "solo", "node-a", bare)
	for range 5 {
		h.Heal(ctx, []heal.Target{orphan(p)}, healthy)
		fc.Step(time.Minute)
	}
	equal(t, "bare pod", events.Reasons(), []string{heal.ReasonRefusedBarePod})
	stopped := map[string]heal.NodeHealth{"node-a": {AmbientPods: 1, Orphaned: 1, IstioCNIReady: true}}
	q := newPod("ns", "q", "node-a")
	for range 3 {
		h.Heal(ctx, []heal.Target{orphan(q)}, stopped)
	}
	h.Heal(ctx, []heal.Target{orphan(q)}, map[string]heal.NodeHealth{"node-a": {AmbientPods: 1, Orphaned: 1, ZtunnelReady: true}})
	equal(t, "breaker causes", events.Reasons(), []string{heal.ReasonRefusedBarePod, heal.ReasonRefusedNodeBreaker, heal.ReasonRefusedNodeBreaker})
	if ev := events.Events(); !strings.Contains(ev[1].Message, "ztunnel is not Ready") || !strings.Contains(ev[2].Message, "istio-cni is not Ready") {
		t.Fatalf("messages %q / %q", ev[1].Message, ev[2].Message)
	}
}

// TestPDBRetry: a PDB refusal is not sent again (nor written to the ledger) until the retry
// delay has passed.
func TestPDBRetry(t *testing.T) {
	ctx := context.Background()
	fc := clocktesting.NewFakeClock(t0)
	ledger := &countingLedger{Ledger: heal.NewMemoryLedger()}
	st := newStub().answer("p", heal.ResultBlockedByPDB, heal.ErrPDBBlocked)
	h := heal.NewHealer(st, heal.WithClock(fc), heal.WithLedger(ledger), heal.WithPDBRetry(time.Minute))
	p := newPod("ns", "p", "n1")
	equal(t, "first", results(h.Heal(ctx, []heal.Target{orphan(p)}, nil)), []heal.Result{heal.ResultBlockedByPDB})
	if ledger.updates != 2 {
		t.Fatalf("reserve and release: %d ledger writes, want 2", ledger.updates)
	}
	got := h.Heal(ctx, []heal.Target{orphan(p)}, nil)
	equal(t, "second", results(got), []heal.Result{heal.ResultBlockedByPDB})
	if len(st.called()) != 1 || ledger.updates != 2 || !strings.Contains(got[0].Detail, "not tried again before") {
		t.Fatalf("calls %v, writes %d, detail %q", st.called(), ledger.updates, got[0].Detail)
	}
	state, _ := ledger.Load(ctx)
	if len(state.Heals) != 0 || len(state.Backoff) != 0 {
		t.Fatalf("a PDB block left %+v in the ledger", state)
	}
	fc.Step(time.Minute)
	h.Heal(ctx, []heal.Target{orphan(p)}, nil)
	if len(st.called()) != 2 {
		t.Fatalf("not retried after the delay: %v", st.called())
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	ctx := context.Background()
	ledger := &countingLedger{Ledger: heal.NewMemoryLedger()}
	c, _, rep := massOrphaned(4, 3)
	h := heal.NewHealer(newStub(), heal.WithDryRun(true), heal.WithLedger(ledger), heal.WithLimits(heal.Limits{ClusterMax: 2, NamespaceMax: -1}))
	plan, err := h.Plan(ctx, rep, c, c)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "dry run", results(h.Apply(ctx, plan)), []heal.Result{heal.ResultWouldEvict, heal.ResultWaitingForCanary, heal.ResultWaitingForCanary})
	c2, _, rep2 := massOrphaned(10, 3)
	plan, _ = h.Plan(ctx, rep2, c2, c2)
	equal(t, "dry run predicts the cluster rate", results(h.Apply(ctx, plan)), []heal.Result{heal.ResultWouldEvict, heal.ResultWouldEvict, heal.ResultSkippedBudget})
	if ledger.updates != 0 {
		t.Fatalf("a dry run wrote the ledger %d times", ledger.updates)
	}
}

func TestLedgerUnavailableFailsClosed(t *testing.T) {
	ctx := context.Background()
	broken := &countingLedger{Ledger: heal.NewMemoryLedger(), fail: fmt.Errorf("lease: %w", heal.ErrLedgerUnavailable)}
	c, _, rep := massOrphaned(10, 1)
	st := newStub()
	h := heal.NewHealer(st, heal.WithLedger(broken))
	if _, err := h.Plan(ctx, rep, c, c); !errors.Is(err, heal.ErrLedgerUnavailable) {
		t.Fatalf("Plan: %v", err)
	}
	got := h.Heal(ctx, []heal.Target{orphan(newPod("ns", "p", "n1"))}, nil)
	if got[0].Result != heal.ResultFailed || !errors.Is(got[0].Err, heal.ErrLedgerUnavailable) || len(st.called()) != 0 {
		t.Fatalf("got %+v, calls %v", got[0], st.called())
	}
}
