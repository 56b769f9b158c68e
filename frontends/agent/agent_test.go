package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/heal"
	"github.com/meshmedic/meshmedic/heal/healtest"
	nt "github.com/meshmedic/meshmedic/netns/netnstest"
)

func ambientPod(name, uid string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID(uid),
			Annotations: map[string]string{enroll.AnnotationRedirection: "enabled"}},
		Spec: corev1.PodSpec{NodeName: "n1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

// RunOnce over a proc tree and the fake clientset: the captured pod's condition is
// published True, the orphan's False, and a second sweep with nothing changed writes
// nothing (conditions are patched only when they change).
func TestRunOncePublishesConditions(t *testing.T) {
	const ok, orphan = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
	tree := nt.NewTree(t)
	tree.Add(nt.Proc{PID: 10, Cgroup: nt.KubepodsCgroup(ok), Start: 5, Netns: 4026532001, TCP: nt.Ptr(nt.TCP()), TCP6: nt.Ptr(nt.TCP6(nt.Ztunnel(false, 1)...))})
	tree.Add(nt.Proc{PID: 20, Cgroup: nt.KubepodsCgroup(orphan), Start: 6, Netns: 4026532002, TCP: nt.Ptr(nt.TCP()), TCP6: nt.Ptr(nt.TCP6())})
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{enroll.LabelDataplaneMode: "ambient"}}}
	cs := fake.NewClientset(ns, ambientPod("ok", ok), ambientPod("orphan", orphan))
	patches := map[string]corev1.ConditionStatus{}
	cs.PrependReactor("patch", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pa := a.(k8stesting.PatchAction)
		require.Equal(t, "status", pa.GetSubresource())
		var body struct {
			Status struct{ Conditions []corev1.PodCondition } `json:"status"`
		}
		require.NoError(t, json.Unmarshal(pa.GetPatch(), &body))
		require.Len(t, body.Status.Conditions, 1)
		require.Equal(t, detect.ConditionAmbientCaptured, body.Status.Conditions[0].Type)
		patches[pa.GetName()] = body.Status.Conditions[0].Status
		return true, nil, nil
	})
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	a, err := New(cs, Config{NodeName: "n1", ProcRoot: tree.Root, Confirm: 0, Settings: enroll.DefaultSettings()}, WithClock(clk))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a.informerStart(ctx.Done())
	require.True(t, cache.WaitForCacheSync(ctx.Done(), a.synced...))

	require.NoError(t, a.RunOnce(ctx))
	assert.Equal(t, map[string]corev1.ConditionStatus{"ok": corev1.ConditionTrue, "orphan": corev1.ConditionFalse}, patches)
	assert.True(t, a.ready.Load())

	clear(patches)
	clk.Step(time.Second) // not yet the full re-check: nothing is dirty, nothing is read or written
	require.NoError(t, a.RunOnce(ctx))
	assert.Empty(t, patches)
	clk.Step(2 * time.Minute) // the full re-check: same verdicts, so still no patch
	require.NoError(t, a.RunOnce(ctx))
	assert.Empty(t, patches)
}

func TestNewRequiresNodeAndProcRoot(t *testing.T) {
	_, err := New(fake.NewClientset(), Config{ProcRoot: "/proc"})
	assert.ErrorContains(t, err, "node name")
	_, err = New(fake.NewClientset(), Config{NodeName: "n1", ProcRoot: t.TempDir()})
	assert.ErrorContains(t, err, "not a proc root")
}

func sockstat(tcp6 int) map[string]string {
	return map[string]string{
		"net/sockstat":  "sockets: used 5\nTCP: inuse 0 orphan 0 tw 0 alloc 0 mem 0\nUDP: inuse 0 mem 0\n",
		"net/sockstat6": fmt.Sprintf("TCP6: inuse %d\nUDP6: inuse 0\n", tcp6),
	}
}

// harness is an agent over a proc tree and the fake clientset, with a fake clock, that
// records condition patches and Events.
type harness struct {
	t       *testing.T
	a       *Agent
	cs      *fake.Clientset
	clk     *clocktesting.FakeClock
	tree    *nt.Tree
	patches map[string]corev1.ConditionStatus
	events  []string // reason of every Event created
	ctx     context.Context
}

func newHarness(t *testing.T, cfg Config, objs ...runtime.Object) *harness {
	return newHarnessWith(t, cfg, nil, objs...)
}

// newHarnessWith is newHarness with a heal strategy built over the fake clientset.
func newHarnessWith(t *testing.T, cfg Config, strategy func(*fake.Clientset) heal.Strategy, objs ...runtime.Object) *harness {
	h := &harness{t: t, tree: nt.NewTree(t), patches: map[string]corev1.ConditionStatus{},
		clk: clocktesting.NewFakeClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{enroll.LabelDataplaneMode: "ambient"}}}
	h.cs = fake.NewClientset(append([]runtime.Object{ns}, objs...)...)
	var mu sync.Mutex
	h.cs.PrependReactor("patch", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pa := a.(k8stesting.PatchAction)
		var body struct {
			Status struct{ Conditions []corev1.PodCondition } `json:"status"`
		}
		require.NoError(t, json.Unmarshal(pa.GetPatch(), &body))
		mu.Lock()
		h.patches[pa.GetName()] = body.Status.Conditions[0].Status
		mu.Unlock()
		return true, nil, nil
	})
	h.cs.PrependReactor("create", "events", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ev := a.(k8stesting.CreateAction).GetObject().(*corev1.Event)
		mu.Lock()
		h.events = append(h.events, ev.Reason)
		mu.Unlock()
		return true, ev, nil
	})
	cfg.NodeName, cfg.ProcRoot, cfg.Settings = "n1", h.tree.Root, enroll.DefaultSettings()
	if strategy != nil {
		cfg.Strategy = strategy(h.cs)
	}
	var err error
	h.a, err = New(h.cs, cfg, WithClock(h.clk))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h.ctx = ctx
	h.a.informerStart(ctx.Done())
	require.True(t, cache.WaitForCacheSync(ctx.Done(), h.a.synced...))
	return h
}

func (h *harness) sweep(step time.Duration) {
	h.t.Helper()
	h.clk.Step(step)
	require.NoError(h.t, h.a.RunOnce(h.ctx))
}

func (h *harness) counter(name string, labels ...string) float64 {
	h.t.Helper()
	mfs, err := h.a.Registry().Gather()
	require.NoError(h.t, err)
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() != labels[i+1] {
						continue metric
					}
				}
			}
			switch {
			case m.GetCounter() != nil:
				total += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				total += m.GetGauge().GetValue()
			}
		}
	}
	return total
}

const podA = "33333333-3333-3333-3333-333333333333"

// The fast tick: between full re-checks only the netns's socket counters are read; when
// they fall below the listeners of a captured pod the pod is checked at once, the finding
// waits for the confirm delay without blocking the sweep, and then the condition flips.
func TestSocketCountTriggersCheckAndConfirmWaitsWithoutBlocking(t *testing.T) {
	h := newHarness(t, Config{Confirm: 10 * time.Second, FullRecheck: time.Hour}, ambientPod("a", podA))
	h.tree.Add(nt.Proc{PID: 30, Cgroup: nt.KubepodsCgroup(podA), Start: 7, Netns: 4026532003,
		TCP: nt.Ptr(nt.TCP()), TCP6: nt.Ptr(nt.TCP6(nt.Ztunnel(false, 1)...)), Extra: sockstat(3)})
	h.sweep(0)
	assert.Equal(t, corev1.ConditionTrue, h.patches["a"])
	assert.Equal(t, 1.0, h.counter("meshmedic_pidmap_rebuilds_total"))

	h.sweep(2 * time.Second) // counters unchanged: nothing is checked
	assert.Equal(t, 0.0, h.counter("meshmedic_checks_triggered_total"))

	// The reboot orphan: the listeners vanish, and with them the netns's TCP6 count.
	h.tree.Add(nt.Proc{PID: 30, Cgroup: nt.KubepodsCgroup(podA), Start: 7,
		TCP: nt.Ptr(nt.TCP()), TCP6: nt.Ptr(nt.TCP6()), Extra: sockstat(0)})
	h.sweep(2 * time.Second)
	assert.Equal(t, 1.0, h.counter("meshmedic_checks_triggered_total", "trigger", "socket-count"))
	assert.Equal(t, corev1.ConditionTrue, h.patches["a"], "not confirmed yet: the condition stays")
	assert.Equal(t, 1.0, h.counter("meshmedic_pidmap_cache_hits_total"), "placed from the cache, no walk")
	assert.Equal(t, 1.0, h.counter("meshmedic_pidmap_rebuilds_total"))

	h.sweep(5 * time.Second) // confirm delay not yet over
	assert.Equal(t, corev1.ConditionTrue, h.patches["a"])
	h.sweep(5 * time.Second) // due: checked again, still orphaned → confirmed
	assert.Equal(t, 1.0, h.counter("meshmedic_checks_triggered_total", "trigger", "confirm"))
	assert.Equal(t, corev1.ConditionFalse, h.patches["a"])
	assert.Equal(t, 1.0, h.counter("meshmedic_confirmed_findings_total"))
	assert.Contains(t, h.events, "MeshmedicAmbientOrphan")
}

// A flap: the listeners come back before the confirm delay is over → never confirmed.
func TestFlapIsNotConfirmed(t *testing.T) {
	h := newHarness(t, Config{Confirm: 10 * time.Second, FullRecheck: time.Hour}, ambientPod("a", podA))
	captured := nt.Proc{PID: 30, Cgroup: nt.KubepodsCgroup(podA), Start: 7, Netns: 4026532003,
		TCP: nt.Ptr(nt.TCP()), TCP6: nt.Ptr(nt.TCP6(nt.Ztunnel(false, 1)...)), Extra: sockstat(3)}
	h.tree.Add(captured)
	h.sweep(0)
	h.tree.Add(nt.Proc{PID: 30, Cgroup: nt.KubepodsCgroup(podA), Start: 7, TCP: nt.Ptr(nt.TCP()), TCP6: nt.Ptr(nt.TCP6()), Extra: sockstat(0)})
	h.sweep(2 * time.Second)
	captured.Netns = 0 // the link exists already
	h.tree.Add(captured)
	h.sweep(10 * time.Second)
	assert.Equal(t, corev1.ConditionTrue, h.patches["a"])
	assert.Equal(t, 0.0, h.counter("meshmedic_confirmed_findings_total"))
	assert.NotContains(t, h.events, "MeshmedicAmbientOrphan")
}

// A young pod is checked again as its age crosses each YoungRechecks mark, with no event
// from the API: a listener lost moments after capture is caught without waiting for the
// full re-check.
func TestYoungPodIsRecheckedOverItsFirstMinutes(t *testing.T) {
	p := ambientPod("a", podA)
	start := metav1.NewTime(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	p.Status.StartTime = &start
	h := newHarness(t, Config{Confirm: 0, FullRecheck: time.Hour, YoungRechecks: []time.Duration{15 * time.Second, time.Minute}}, p)
	proc := nt.Proc{PID: 30, Cgroup: nt.KubepodsCgroup(podA), Start: 7, Netns: 4026532003,
		TCP: nt.Ptr(nt.TCP()), TCP6: nt.Ptr(nt.TCP6(nt.Ztunnel(false, 1)...))} // no sockstat: the fast tick has nothing
	h.tree.Add(proc)
	h.sweep(0)
	require.Equal(t, corev1.ConditionTrue, h.patches["a"])
	proc.Netns, proc.TCP6 = 0, nt.Ptr(nt.TCP6())
	h.tree.Add(proc)
	h.sweep(5 * time.Second)
	assert.Equal(t, corev1.ConditionTrue, h.patches["a"], "age 5s: no re-check due")
	h.sweep(10 * time.Second)
	assert.Equal(t, 1.0, h.counter("meshmedic_checks_triggered_total", "trigger", "young"))
	assert.Equal(t, corev1.ConditionFalse, h.patches["a"], "age 15s: re-checked, orphan found")
}

// The node's ztunnel restarting re-checks every pod; ztunnel not Ready opens the node
// breaker: gauge 1 and a Warning Event on the Node, and it closes again when ztunnel is Ready.
func TestZtunnelRestartRechecksAllAndBreakerFollowsReadiness(t *testing.T) {
	zt := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "ztunnel-x", UID: "zt-1", Labels: map[string]string{"app": "ztunnel"}},
		Spec: corev1.PodSpec{NodeName: "n1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "istio-proxy"}}}}
	h := newHarness(t, Config{Confirm: 0, FullRecheck: time.Hour}, ambientPod("a", podA), zt, istioCNIPod())
	h.tree.Add(nt.Proc{PID: 30, Cgroup: nt.KubepodsCgroup(podA), Start: 7, Netns: 4026532003,
		TCP: nt.Ptr(nt.TCP()), TCP6: nt.Ptr(nt.TCP6(nt.Ztunnel(false, 1)...))})
	h.sweep(0)
	assert.Equal(t, 0.0, h.counter("meshmedic_node_breaker_open"))
	hitsBefore := h.counter("meshmedic_pidmap_cache_hits_total")

	down := zt.DeepCopy()
	down.Status.Conditions[0].Status = corev1.ConditionFalse
	down.Status.ContainerStatuses[0].RestartCount = 1
	_, err := h.cs.CoreV1().Pods("istio-system").UpdateStatus(h.ctx, down, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		p, err := h.a.pods.Pods("istio-system").Get("ztunnel-x")
		// The informer updates its store before it calls the handlers: wait for both.
		h.a.sched.mu.Lock()
		asked := h.a.sched.all != ""
		h.a.sched.mu.Unlock()
		return err == nil && !heal.PodReady(p) && asked
	}, 5*time.Second, 10*time.Millisecond)
	h.sweep(time.Second)
	assert.Greater(t, h.counter("meshmedic_pidmap_cache_hits_total"), hitsBefore, "every pod re-checked")
	assert.Equal(t, 1.0, h.counter("meshmedic_node_breaker_open"))
	assert.Contains(t, h.events, "MeshmedicNodeBreakerOpen")

	_, err = h.cs.CoreV1().Pods("istio-system").UpdateStatus(h.ctx, zt, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		p, err := h.a.pods.Pods("istio-system").Get("ztunnel-x")
		return err == nil && heal.PodReady(p)
	}, 5*time.Second, 10*time.Millisecond)
	h.sweep(time.Second)
	assert.Equal(t, 0.0, h.counter("meshmedic_node_breaker_open"))
	assert.Contains(t, h.events, "MeshmedicNodeBreakerClosed")
}

// With --auto-repair but an identity that may not evict (deploy/base's detect-only role),
// the agent switches auto-repair off and says so; the metric shows it.
func TestAutoRepairOffWithoutEvictionPermission(t *testing.T) {
	h := newHarness(t, Config{AutoRepair: true})
	var asked []string
	h.cs.PrependReactor("create", "selfsubjectaccessreviews", func(act k8stesting.Action) (bool, runtime.Object, error) {
		r := act.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
		ra := r.Spec.ResourceAttributes
		asked = append(asked, ra.Verb+" "+ra.Resource+"/"+ra.Subresource)
		r.Status.Allowed = ra.Subresource != "eviction"
		return true, r, nil
	})
	h.a.checkPermissions(h.ctx)
	assert.Equal(t, []string{"patch pods/status", "create events/", "create pods/eviction"}, asked)
	assert.True(t, h.a.repairDenied.Load())
	assert.Equal(t, 0.0, h.counter("meshmedic_auto_repair_enabled"))

	h2 := newHarness(t, Config{AutoRepair: true})
	h2.cs.PrependReactor("create", "selfsubjectaccessreviews", func(act k8stesting.Action) (bool, runtime.Object, error) {
		r := act.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
		r.Status.Allowed = true
		return true, r, nil
	})
	h2.a.checkPermissions(h2.ctx)
	assert.False(t, h2.a.repairDenied.Load())
	assert.Equal(t, 1.0, h2.counter("meshmedic_auto_repair_enabled"))
}

// A bare orphan is refused with one Event, not one every full re-check (heal writes one
// refusal Event per pod and cause).
func TestBareOrphanRefusedOnce(t *testing.T) {
	zt := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "ztunnel-x", UID: "zt-1", Labels: map[string]string{"app": "ztunnel"}},
		Spec:   corev1.PodSpec{NodeName: "n1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	h := newHarness(t, Config{AutoRepair: true, Confirm: 0, FullRecheck: time.Minute, Strategy: failStrategy{t}},
		ambientPod("bare", podA), zt, istioCNIPod())
	h.tree.Add(nt.Proc{PID: 30, Cgroup: nt.KubepodsCgroup(podA), Start: 7, Netns: 4026532003, TCP: nt.Ptr(nt.TCP()), TCP6: nt.Ptr(nt.TCP6())})
	for range 3 {
		h.sweep(time.Minute) // a full re-check each time
	}
	assert.Equal(t, 3.0, h.counter("meshmedic_repairs_total", "result", string(heal.ResultRefusedBarePod)), "every decision is counted")
	n := 0
	for _, r := range h.events {
		if r == heal.ReasonRefusedBarePod {
			n++
		}
	}
	assert.Equal(t, 1, n, "one refusal Event, not one per sweep: %v", h.events)
}

// istioCNIPod is the node's Ready istio-cni pod.
func istioCNIPod() *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istio-cni-node-x", UID: "cni-1",
		Labels: map[string]string{"k8s-app": "istio-cni-node"}},
		Spec:   corev1.PodSpec{NodeName: "n1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
}

// failStrategy fails the test if heal ever gets past its own refusals to the strategy.
type failStrategy struct{ t *testing.T }

func (failStrategy) Name() string { return "evict" }
func (s failStrategy) Heal(context.Context, heal.Target, bool) (heal.Result, error) {
	s.t.Error("the strategy must not run for a bare pod")
	return heal.ResultFailed, nil
}

// The agent reads one table when tcp6 suffices, but a required listener that only tcp shows
// (DNS capture on, 15053 bound on 127.0.0.1 only) still makes the pod captured: the engine
// passes each pod's required ports, so tcp is read for it.
func TestRequiredIPv4ListenerIsRead(t *testing.T) {
	h := newHarness(t, Config{Confirm: 0}, ambientPod("a", podA))
	s := enroll.DefaultSettings()
	s.DNSCapture = enroll.DNSOn
	h.a.cfg.Settings = s
	h.a.newEngine()
	h.tree.Add(nt.Proc{PID: 30, Cgroup: nt.KubepodsCgroup(podA), Start: 7, Netns: 4026532003,
		TCP: nt.Ptr(nt.TCP(nt.Listen("127.0.0.1:15053", 9))), TCP6: nt.Ptr(nt.TCP6(nt.Ztunnel(false, 1)...))})
	h.sweep(0)
	assert.Equal(t, corev1.ConditionTrue, h.patches["a"])

	h.tree.Add(nt.Proc{PID: 30, Cgroup: nt.KubepodsCgroup(podA), Start: 7,
		TCP: nt.Ptr(nt.TCP()), TCP6: nt.Ptr(nt.TCP6(nt.Ztunnel(false, 1)...))})
	h.sweep(time.Hour) // full re-check: DNS listener gone → partial
	assert.Equal(t, corev1.ConditionFalse, h.patches["a"])
}

// The heartbeat: written after every full re-check (not on the ticks between), its
// acquireTime the agent's start, its lifetime three full re-checks and a tick.
func TestHeartbeat(t *testing.T) {
	h := newHarness(t, Config{Confirm: 0, FullRecheck: time.Minute, Namespace: "meshmedic-system"}, ambientPod("a", podA))
	h.tree.Add(nt.Proc{PID: 30, Cgroup: nt.KubepodsCgroup(podA), Start: 7, Netns: 4026532003,
		TCP: nt.Ptr(nt.TCP()), TCP6: nt.Ptr(nt.TCP6(nt.Ztunnel(false, 1)...))})
	h.sweep(0)
	start := h.clk.Now()
	lease, err := h.cs.CoordinationV1().Leases("meshmedic-system").Get(h.ctx, detect.AgentHeartbeatLease("n1"), metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "agent/n1", *lease.Spec.HolderIdentity)
	assert.Equal(t, int32(182), *lease.Spec.LeaseDurationSeconds)
	assert.True(t, lease.Spec.AcquireTime.Time.Equal(start))
	assert.True(t, lease.Spec.RenewTime.Time.Equal(start))

	h.sweep(2 * time.Second) // a tick, not a full re-check: no write
	lease, _ = h.cs.CoordinationV1().Leases("meshmedic-system").Get(h.ctx, detect.AgentHeartbeatLease("n1"), metav1.GetOptions{})
	assert.True(t, lease.Spec.RenewTime.Time.Equal(start))
	h.sweep(time.Minute)
	lease, _ = h.cs.CoordinationV1().Leases("meshmedic-system").Get(h.ctx, detect.AgentHeartbeatLease("n1"), metav1.GetOptions{})
	assert.True(t, lease.Spec.RenewTime.Time.Equal(h.clk.Now()))
	assert.True(t, lease.Spec.AcquireTime.Time.Equal(start), "acquireTime is the agent's start")

	// A condition this agent published is current for the condition prober...
	cond := detect.AmbientCapturedCondition(detect.Finding{Class: detect.ClassCaptured}, start)
	assert.NoError(t, detect.ConditionCurrent(cond, "n1", lease, h.clk.Now()))
	// ...and not once the agent has stopped renewing for three full re-checks.
	assert.ErrorIs(t, detect.ConditionCurrent(cond, "n1", lease, h.clk.Now().Add(4*time.Minute)), detect.ErrNoHeartbeat)
}

// --auto-repair through heal's planner: a mass-orphaned node whose ztunnel and istio-cni are
// Ready gets one canary eviction, the rest wait; with istio-cni not Ready nothing is
// evicted. meshmedic_node_heal_mode says which.
func TestAutoRepairCanaryAndIstioCNI(t *testing.T) {
	uids := []string{"44444444-4444-4444-4444-444444444441", "44444444-4444-4444-4444-444444444442",
		"44444444-4444-4444-4444-444444444443", "44444444-4444-4444-4444-444444444444"}
	run := func(t *testing.T, cni *corev1.Pod) (*harness, *healtest.Evicter) {
		objs := []runtime.Object{istioZtunnel(), cni}
		for i, uid := range uids {
			p := ambientPod(fmt.Sprintf("web-%d", i), uid)
			yes := true
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web", UID: types.UID("rs-" + uid), Controller: &yes}}
			objs = append(objs, p)
		}
		var ev *healtest.Evicter
		h := newHarnessWith(t, Config{AutoRepair: true, Confirm: 0, FullRecheck: time.Minute}, func(cs *fake.Clientset) heal.Strategy {
			ev = healtest.NewEvicter().WithPods(cs.CoreV1())
			return heal.NewEvict(ev, cs.CoreV1(), heal.EvictOptions{Timeout: -1})
		}, objs...)
		for i, uid := range uids {
			tcp6 := nt.TCP6()
			if i == 3 {
				tcp6 = nt.TCP6(nt.Ztunnel(false, 1)...)
			}
			h.tree.Add(nt.Proc{PID: 30 + i, Cgroup: nt.KubepodsCgroup(uid), Start: uint64(7 + i), Netns: uint64(4026532003 + i),
				TCP: nt.Ptr(nt.TCP()), TCP6: nt.Ptr(tcp6)})
		}
		h.sweep(0)
		return h, ev
	}
	t.Run("healthy node: one canary", func(t *testing.T) {
		h, ev := run(t, istioCNIPod())
		assert.Len(t, ev.Evictions(), 1)
		assert.Equal(t, 1.0, h.counter("meshmedic_node_heal_mode", "mode", "canary"))
		assert.Equal(t, 2.0, h.counter("meshmedic_repairs_total", "result", string(heal.ResultWaitingForCanary)))
		assert.Equal(t, 1.0, h.counter("meshmedic_node_breaker_open"))
	})
	t.Run("istio-cni not Ready: nothing", func(t *testing.T) {
		cni := istioCNIPod()
		cni.Status.Conditions[0].Status = corev1.ConditionFalse
		h, ev := run(t, cni)
		assert.Empty(t, ev.Evictions())
		assert.Equal(t, 1.0, h.counter("meshmedic_node_heal_mode", "mode", "stop"))
		assert.Equal(t, 3.0, h.counter("meshmedic_repairs_total", "result", string(heal.ResultRefusedNodeBreaker)))
	})
}

func istioZtunnel() *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "ztunnel-x", UID: "zt-1", Labels: map[string]string{"app": "ztunnel"}},
		Spec:   corev1.PodSpec{NodeName: "n1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
}
