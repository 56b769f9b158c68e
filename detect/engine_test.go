package detect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/netns"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// world is a fake cluster: pods and namespaces in memory.
type world struct {
	mu   sync.Mutex
	pods []corev1.Pod
	nss  map[string]*corev1.Namespace
}

func (w *world) ListPods(_ context.Context, ns string) ([]corev1.Pod, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []corev1.Pod
	for _, p := range w.pods {
		if ns == "" || p.Namespace == ns {
			out = append(out, *p.DeepCopy())
		}
	}
	return out, nil
}

func (w *world) GetNamespace(_ context.Context, name string) (*corev1.Namespace, error) {
	if ns, ok := w.nss[name]; ok {
		return ns, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, name)
}

func ambientNS(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{enroll.LabelDataplaneMode: "ambient"}}}
}

func newWorld(pods ...corev1.Pod) *world {
	return &world{pods: pods, nss: map[string]*corev1.Namespace{
		"shop": ambientNS("shop"), "plain": {ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
	}}
}

func enabledPod(ns, name string) corev1.Pod {
	p := pod(ns, name, "uid-"+name, map[string]string{enroll.AnnotationRedirection: "enabled"}, t0.Add(-time.Hour))
	p.Spec.NodeName = "node-a"
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	return p
}

// fakeProber answers by pod name; unknown names are captured.
type fakeProber struct {
	mu     sync.Mutex
	probes map[string]Probe
	errs   map[string]error
	calls  map[string]int
}

func newFakeProber() *fakeProber {
	return &fakeProber{probes: map[string]Probe{}, errs: map[string]error{}, calls: map[string]int{}}
}

func (f *fakeProber) set(name string, p Probe) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probes[name] = p
}

func (f *fakeProber) Probe(_ context.Context, pod *corev1.Pod) (Probe, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[pod.Name]++
	if err := f.errs[pod.Name]; err != nil {
		return Probe{}, err
	}
	if p, ok := f.probes[pod.Name]; ok {
		return p, nil
	}
	return Probe{Listeners: listeners(15001, 15006, 15008), Source: "fake"}, nil
}

func byName(r Report) map[string]Finding {
	out := map[string]Finding{}
	for _, f := range r.Findings {
		out[f.Name] = f
	}
	return out
}

func TestScanClasses(t *testing.T) {
	notReady := enabledPod("shop", "orphan")
	notReady.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse,
		LastTransitionTime: metav1.NewTime(t0.Add(-90 * time.Second))}}
	fresh := pod("shop", "fresh", "uid-fresh", nil, t0.Add(-time.Second))
	late := pod("shop", "late", "uid-late", nil, t0.Add(-time.Hour))
	hostNet := enabledPod("shop", "hostnet")
	hostNet.Spec.HostNetwork = true
	noIP := enabledPod("shop", "noip")
	noIP.Status.PodIP, noIP.Status.PodIPs = "", nil
	w := newWorld(enabledPod("shop", "ok"), notReady, enabledPod("shop", "partial"), enabledPod("shop", "broken"),
		fresh, late, hostNet, noIP, enabledPod("plain", "web"), enabledPod("shop", "unreadable"))
	pr := newFakeProber()
	pr.set("orphan", Probe{Listeners: listeners(), Source: "fake"})
	pr.set("partial", Probe{Listeners: listeners(15001, 15006), Source: "fake"})
	pr.set("fresh", Probe{Listeners: listeners(), Source: "fake"})
	pr.set("late", Probe{Listeners: listeners(), Source: "fake"})
	pr.set("noip", Probe{Listeners: listeners(), Source: "fake"})
	pr.set("unreadable", Probe{Listeners: netns.Listeners{TCP6: netns.Table{Status: netns.TableUnreadable}, TCP: netns.Table{Status: netns.TableUnreadable}}})
	pr.errs["broken"] = fmt.Errorf("pod shop/broken: %w", ErrNoSandbox)

	e := New(w, w, pr, WithClock(clocktesting.NewFakeClock(t0)))
	rep, err := e.Scan(context.Background(), "")
	require.NoError(t, err)
	assert.Equal(t, 10, rep.Checked)
	require.Len(t, rep.Findings, 10)
	got := byName(rep)
	want := map[string]Class{
		"ok": ClassCaptured, "orphan": ClassOrphaned, "partial": ClassPartial, "broken": ClassUnknown,
		"fresh": ClassUnknown, "late": ClassNotEnrolled, "hostnet": ClassSkipped, "noip": ClassUnknown,
		"web": ClassSkipped, "unreadable": ClassUnknown,
	}
	for name, c := range want {
		assert.Equal(t, c, got[name].Class, name)
	}
	assert.True(t, errors.Is(got["broken"].Err, ErrNoSandbox))
	assert.Contains(t, got["broken"].Error, "no sandbox")
	require.Len(t, rep.Errors, 1)

	o := got["orphan"]
	assert.Equal(t, []uint16{15001, 15006, 15008}, o.Expected)
	assert.Equal(t, []uint16{}, o.Present)
	assert.Equal(t, []uint16{15001, 15006, 15008}, o.Missing)
	assert.False(t, o.Ready, "readiness recorded")
	assert.Equal(t, Duration(90*time.Second), o.NotReadyFor)
	assert.Equal(t, 1, o.Confirmations)
	assert.Equal(t, t0, o.FirstSeen)
	assert.False(t, o.Confirmed)
	assert.Equal(t, []uint16{15008}, got["partial"].Missing)
	assert.Equal(t, enroll.ReasonHostNetwork, got["hostnet"].Reason)
	assert.Equal(t, []uint16{}, got["hostnet"].Expected, "never null")
	assert.True(t, got["ok"].Ready)
	assert.Equal(t, 0, got["ok"].Confirmations)
	assert.Zero(t, pr.calls["web"]+pr.calls["hostnet"], "pods enroll does not expect captured are not probed")
	assert.Equal(t, 1, pr.calls["noip"], "enroll-unknown pods are probed")

	// sorted by namespace, then name
	for i := 1; i < len(rep.Findings); i++ {
		a, b := rep.Findings[i-1], rep.Findings[i]
		assert.True(t, a.Namespace < b.Namespace || (a.Namespace == b.Namespace && a.Name < b.Name))
	}

	// namespaced scan, node filter
	rep, err = New(w, w, pr, WithNode("node-a")).Scan(context.Background(), "shop")
	require.NoError(t, err)
	assert.Equal(t, 7, rep.Checked, "fresh and late are on no node, web is in another namespace")
}

func TestScanNamespaceUnreadableStillProbes(t *testing.T) {
	p := enabledPod("locked", "app")
	w := newWorld(p)
	forbidden := NamespaceGetterFunc(func(context.Context, string) (*corev1.Namespace, error) {
		return nil, apierrors.NewForbidden(schema.GroupResource{Resource: "namespaces"}, "locked", errors.New("no"))
	})
	pr := newFakeProber()
	pr.set("app", Probe{Listeners: listeners()})
	rep, err := New(w, forbidden, pr, WithClock(clocktesting.NewFakeClock(t0))).Scan(context.Background(), "")
	require.NoError(t, err)
	f := rep.Findings[0]
	assert.Equal(t, ClassUnknown, f.Class, "namespace unknown and not captured: cannot say orphan")
	assert.Equal(t, 1, pr.calls["app"])
	require.NotEmpty(t, rep.Errors)
	assert.Contains(t, rep.Errors[0].Error(), "get namespace locked")
	pr.set("app", Probe{Listeners: listeners(15001, 15006, 15008)})
	rep, err = New(w, forbidden, pr).Scan(context.Background(), "")
	require.NoError(t, err)
	assert.Equal(t, ClassCaptured, rep.Findings[0].Class)
}

func TestScanListError(t *testing.T) {
	boom := PodListerFunc(func(context.Context, string) ([]corev1.Pod, error) { return nil, errors.New("connection refused") })
	_, err := New(boom, newWorld(), newFakeProber()).Scan(context.Background(), "shop")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "list pods in namespace shop")
	assert.Contains(t, err.Error(), "connection refused")
}

// gateProber blocks every probe until released and records the highest concurrency seen.
type gateProber struct {
	gate           chan struct{}
	entered        chan struct{}
	inFlight, peak atomic.Int64
}

func (g *gateProber) Probe(ctx context.Context, _ *corev1.Pod) (Probe, error) {
	n := g.inFlight.Add(1)
	defer g.inFlight.Add(-1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			break
		}
	}
	g.entered <- struct{}{}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return Probe{}, ctx.Err()
	}
	return Probe{Listeners: listeners(15001, 15006, 15008)}, nil
}

func manyPods(n int) []corev1.Pod {
	pods := make([]corev1.Pod, n)
	for i := range pods {
		pods[i] = enabledPod("shop", fmt.Sprintf("p%04d", i))
		pods[i].UID = types.UID(fmt.Sprintf("uid-%d", i))
	}
	return pods
}

func TestScanConcurrencyBound(t *testing.T) {
	const n, limit = 40, 3
	w := newWorld(manyPods(n)...)
	g := &gateProber{gate: make(chan struct{}), entered: make(chan struct{}, n)}
	var progress []int
	e := New(w, w, g, WithConcurrency(limit), WithOnProgress(func(done, total int) {
		assert.Equal(t, n, total)
		progress = append(progress, done)
	}))
	res := make(chan error, 1)
	go func() { _, err := e.Scan(context.Background(), ""); res <- err }()
	for i := 0; i < n; i++ {
		<-g.entered // a probe started
		if i >= limit-1 {
			g.gate <- struct{}{} // let one finish
		}
	}
	for range limit - 1 {
		g.gate <- struct{}{}
	}
	require.NoError(t, <-res)
	assert.Equal(t, int64(limit), g.peak.Load())
	require.Len(t, progress, n)
	assert.Equal(t, n, progress[n-1])
}

func TestScanCancel(t *testing.T) {
	w := newWorld(manyPods(50)...)
	g := &gateProber{gate: make(chan struct{}), entered: make(chan struct{}, 50)}
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { _, err := New(w, w, g, WithConcurrency(4)).Scan(ctx, ""); res <- err }()
	for range 4 {
		<-g.entered
	}
	cancel()
	assert.ErrorIs(t, <-res, context.Canceled)
	assert.LessOrEqual(t, len(g.entered), 4, "no new probe started after cancel")
}

func waitForWaiter(t *testing.T, c *clocktesting.FakeClock) {
	t.Helper()
	for !c.HasWaiters() {
		time.Sleep(time.Millisecond)
	}
}

func TestConfirm(t *testing.T) {
	w := newWorld(enabledPod("shop", "flappy"), enabledPod("shop", "orphan"), enabledPod("shop", "ok"), enabledPod("shop", "gone"))
	pr := newFakeProber()
	for _, n := range []string{"flappy", "orphan", "gone"} {
		pr.set(n, Probe{Listeners: listeners()})
	}
	clk := clocktesting.NewFakeClock(t0)
	e := New(w, w, pr, WithClock(clk), WithConfirmDelay(10*time.Second))
	rep, err := e.Scan(context.Background(), "shop")
	require.NoError(t, err)
	assert.Len(t, rep.Actionable(), 3)

	pr.set("flappy", Probe{Listeners: listeners(15001, 15006, 15008)}) // istio-cni caught up
	w.mu.Lock()
	w.pods = w.pods[:3] // "gone" deleted
	w.mu.Unlock()
	before := pr.calls["ok"]
	res := make(chan Report, 1)
	go func() {
		r, err := e.Confirm(context.Background(), rep)
		assert.NoError(t, err)
		res <- r
	}()
	waitForWaiter(t, clk)
	select {
	case <-res:
		t.Fatal("Confirm returned before the confirm delay elapsed")
	default:
	}
	clk.Step(10 * time.Second)
	got := byName(<-res)
	assert.Equal(t, ClassCaptured, got["flappy"].Class)
	assert.False(t, got["flappy"].Confirmed)
	assert.Zero(t, got["flappy"].Confirmations)
	assert.Equal(t, ClassOrphaned, got["orphan"].Class)
	assert.True(t, got["orphan"].Confirmed)
	assert.Equal(t, 2, got["orphan"].Confirmations)
	assert.Equal(t, t0, got["orphan"].FirstSeen, "first seen kept")
	assert.Equal(t, ClassUnknown, got["gone"].Class)
	assert.False(t, got["gone"].Confirmed)
	assert.Equal(t, before, pr.calls["ok"], "non-actionable findings are not re-probed")

	// a third observation by a later Scan keeps counting
	clk.Step(time.Minute)
	rep, err = e.Scan(context.Background(), "shop")
	require.NoError(t, err)
	assert.Equal(t, 3, byName(rep)["orphan"].Confirmations)
	assert.Equal(t, t0, byName(rep)["orphan"].FirstSeen)
}

func TestConfirmCancel(t *testing.T) {
	w := newWorld(enabledPod("shop", "orphan"))
	pr := newFakeProber()
	pr.set("orphan", Probe{Listeners: listeners()})
	clk := clocktesting.NewFakeClock(t0)
	e := New(w, w, pr, WithClock(clk))
	rep, err := e.Scan(context.Background(), "")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { _, err := e.Confirm(ctx, rep); res <- err }()
	waitForWaiter(t, clk)
	cancel()
	assert.ErrorIs(t, <-res, context.Canceled)
}

func TestNetnsReplaced(t *testing.T) {
	w := newWorld(enabledPod("shop", "app"))
	pr := newFakeProber()
	pr.set("app", Probe{Listeners: listeners(15001, 15006, 15008), Netns: 4026532201})
	e := New(w, w, pr, WithClock(clocktesting.NewFakeClock(t0)))
	scan := func() Finding {
		rep, err := e.Scan(context.Background(), "")
		require.NoError(t, err)
		return rep.Findings[0]
	}
	assert.Equal(t, ClassCaptured, scan().Class)
	pr.set("app", Probe{Listeners: listeners(), Netns: 4026532999}) // sandbox recreated, nothing in it
	f := scan()
	assert.Equal(t, ClassNetnsReplaced, f.Class)
	assert.Equal(t, uint64(4026532999), f.Netns)
	assert.Equal(t, ClassNetnsReplaced, scan().Class, "stays replaced until healed")
	pr.set("app", Probe{Listeners: listeners(15001, 15006, 15008), Netns: 4026532999})
	assert.Equal(t, ClassCaptured, scan().Class)
	pr.set("app", Probe{Listeners: listeners(), Netns: 4026532999}) // same netns, listeners lost
	assert.Equal(t, ClassOrphaned, scan().Class)
}

func TestScanConditionVerdict(t *testing.T) {
	p := enabledPod("shop", "agent-seen")
	p.Status.Conditions = append(p.Status.Conditions, AmbientCapturedCondition(Finding{Class: ClassPartial, Present: []uint16{15001, 15006}, Missing: []uint16{15008}, Netns: 42}, t0))
	w := newWorld(p, enabledPod("shop", "no-agent"))
	rep, err := New(w, w, NewConditionProber(alwaysAlive{})).Scan(context.Background(), "")
	require.NoError(t, err)
	got := byName(rep)
	assert.Equal(t, ClassPartial, got["agent-seen"].Class)
	assert.Equal(t, []uint16{15008}, got["agent-seen"].Missing)
	assert.Equal(t, []uint16{15001, 15006}, got["agent-seen"].Present)
	assert.Equal(t, SourceCondition, got["agent-seen"].Source)
	assert.Equal(t, ClassUnknown, got["no-agent"].Class)
	assert.ErrorIs(t, got["no-agent"].Err, ErrNoAgentCondition)
}

func TestScanRuleInspection(t *testing.T) {
	w := newWorld(enabledPod("shop", "ok"), enabledPod("shop", "bypass"), enabledPod("shop", "blackhole"),
		enabledPod("shop", "orphan"), enabledPod("shop", "noinspect"), enabledPod("shop", "failed"))
	pr := newFakeProber()
	present := netns.RoutingRules{MarkRule4: true, LocalRoute4: true}
	pr.set("ok", Probe{Listeners: listeners(15001, 15006, 15008), Rules: &present})
	pr.set("bypass", Probe{Listeners: listeners(15001, 15006, 15008), Rules: &netns.RoutingRules{LocalRoute4: true}})
	pr.set("blackhole", Probe{Listeners: listeners(), Rules: &present})
	pr.set("orphan", Probe{Listeners: listeners(), Rules: &netns.RoutingRules{}})
	pr.set("noinspect", Probe{Listeners: listeners(15001, 15006, 15008)})
	pr.set("failed", Probe{Listeners: listeners(15001, 15006, 15008), RulesErr: errors.New("pid 7: open /proc/7/ns/net: permission denied")})

	rep, err := New(w, w, pr, WithClock(clocktesting.NewFakeClock(t0))).Scan(context.Background(), "")
	require.NoError(t, err)
	got := byName(rep)
	for name, want := range map[string]struct {
		class Class
		rules string
	}{
		"ok": {ClassCaptured, "present"}, "bypass": {ClassBypass, "partial"}, "blackhole": {ClassBlackhole, "present"},
		"orphan": {ClassOrphaned, "absent"}, "noinspect": {ClassCaptured, ""}, "failed": {ClassCaptured, RulesUnknown},
	} {
		assert.Equal(t, want.class, got[name].Class, name)
		assert.Equal(t, want.rules, got[name].Rules, name)
	}
	assert.Contains(t, got["bypass"].Detail, "bypasses ztunnel")
	assert.Contains(t, got["bypass"].Detail, "missing: fwmark 0x111/0xfff rule")
	assert.Equal(t, netns.Captured, got["bypass"].Capture, "the listeners are all there")
	assert.Contains(t, got["blackhole"].Detail, "refused")
	assert.Equal(t, netns.CaptureNone, got["blackhole"].Capture)
	assert.Contains(t, got["failed"].Error, "permission denied", "a failed inspection says why")
	assert.True(t, got["bypass"].Actionable())
	assert.True(t, got["blackhole"].Actionable())

	b, err := json.Marshal(got["noinspect"])
	require.NoError(t, err)
	assert.NotContains(t, string(b), `"rules"`, "no rules field without inspection")
}

func TestSettle(t *testing.T) {
	w := newWorld(enabledPod("shop", "orphan"), enabledPod("shop", "ok"))
	pr := newFakeProber()
	pr.set("orphan", Probe{Listeners: listeners()})
	clk := clocktesting.NewFakeClock(t0)
	e := New(w, w, pr, WithClock(clk), WithConfirmDelay(10*time.Second))

	// First sighting: not confirmed, due once the confirm delay has passed.
	rep, err := e.Scan(context.Background(), "shop")
	require.NoError(t, err)
	rep, due := e.Settle(rep)
	assert.False(t, byName(rep)["orphan"].Confirmed)
	assert.Equal(t, map[types.UID]time.Time{"uid-orphan": t0.Add(10 * time.Second)}, due)

	// Seen again too early: two observations, but the delay has not passed.
	clk.Step(4 * time.Second)
	rep, err = e.Scan(context.Background(), "shop")
	require.NoError(t, err)
	rep, due = e.Settle(rep)
	assert.False(t, byName(rep)["orphan"].Confirmed)
	assert.Equal(t, t0.Add(10*time.Second), due["uid-orphan"])

	// Settled late, the same two sightings are still too close together: due (now).
	clk.Step(10 * time.Second)
	rep, due = e.Settle(rep)
	assert.False(t, byName(rep)["orphan"].Confirmed)
	assert.Equal(t, clk.Now(), due["uid-orphan"], "a due time in the past is clamped to now")

	// Observed again after the delay: confirmed, nothing due.
	rep, err = e.Scan(context.Background(), "shop")
	require.NoError(t, err)
	rep, due = e.Settle(rep)
	assert.True(t, byName(rep)["orphan"].Confirmed)
	assert.False(t, byName(rep)["ok"].Confirmed, "captured findings are never confirmed")
	assert.Empty(t, due)

	// A recovery ends the streak: the next orphaning starts over.
	pr.set("orphan", Probe{Listeners: listeners(15001, 15006, 15008)})
	rep, err = e.Scan(context.Background(), "shop")
	require.NoError(t, err)
	pr.set("orphan", Probe{Listeners: listeners()})
	rep, err = e.Scan(context.Background(), "shop")
	require.NoError(t, err)
	rep, due = e.Settle(rep)
	assert.False(t, byName(rep)["orphan"].Confirmed)
	assert.Equal(t, 1, byName(rep)["orphan"].Confirmations)
	assert.Len(t, due, 1)
}

func TestSettleWithoutDelayConfirmsAtOnce(t *testing.T) {
	w := newWorld(enabledPod("shop", "orphan"))
	pr := newFakeProber()
	pr.set("orphan", Probe{Listeners: listeners()})
	e := New(w, w, pr, WithClock(clocktesting.NewFakeClock(t0)), WithConfirmDelay(0))
	rep, err := e.Scan(context.Background(), "shop")
	require.NoError(t, err)
	rep, due := e.Settle(rep)
	assert.True(t, byName(rep)["orphan"].Confirmed)
	assert.Empty(t, due)
}

// alwaysAlive vouches for every condition (a heartbeat renewed now, started long ago).
type alwaysAlive struct{}

func (alwaysAlive) Heartbeat(context.Context, string) (*coordinationv1.Lease, error) {
	return heartbeat(time.Unix(0, 0), time.Now(), 24*time.Hour), nil
}
