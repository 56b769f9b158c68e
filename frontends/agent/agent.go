package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/heal"
	"github.com/meshmedic/meshmedic/netns"
)

// Config is the agent's configuration (the `meshmedic agent` flags).
type Config struct {
	NodeName       string
	ProcRoot       string        // the host's /proc, e.g. /host/proc
	MetricsAddr    string        // ":9100"; "" disables the HTTP server
	Tick           time.Duration // how often changed pods are checked (default 2s)
	FullRecheck    time.Duration // slow re-check of every pod (default 60s)
	Confirm        time.Duration // flap guard (default 10s)
	AutoRepair     bool          // heal confirmed findings of Ready pods
	RepairStuck    bool          // also heal not-Ready pods after GracePeriod
	GracePeriod    time.Duration // default 5m
	Strategy       heal.Strategy // default evict
	Settings       enroll.Settings
	IstioNamespace string
}

// Agent is the per-node runtime: it keeps this node's pods in an informer, checks a pod
// when it changes (and every pod on a slow full re-check), confirms findings, publishes
// the meshmedic.io/AmbientCaptured condition, and heals under heal's safety layer.
type Agent struct {
	cfg    Config
	cs     kubernetes.Interface
	clock  clock.Clock
	log    logr.Logger
	engine *detect.Engine
	healer *heal.Healer
	events heal.EventSink
	m      *metrics
	reg    *prometheus.Registry

	pods     corelisters.PodLister
	ztunnels corelisters.PodLister
	synced   []cache.InformerSynced

	mu        sync.Mutex
	dirty     map[types.UID]bool
	published map[types.UID]corev1.ConditionStatus // last condition status written
	reported  map[types.UID]detect.Class           // last confirmed class with an Event
	classes   map[types.UID]detect.Class           // latest class of every pod checked (node health)
	lastFull  time.Time

	ready         atomic.Bool
	informerStart func(stop <-chan struct{})
}

// Option tunes an Agent.
type Option func(*Agent)

// WithClock injects the clock (tests step a fake one).
func WithClock(c clock.Clock) Option { return func(a *Agent) { a.clock = c } }

// WithLogger sets the logger.
func WithLogger(l logr.Logger) Option { return func(a *Agent) { a.log = l } }

// New builds an agent for cfg.NodeName reading cfg.ProcRoot.
func New(cs kubernetes.Interface, cfg Config, opts ...Option) (*Agent, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("agent: node name is required (NODE_NAME from the downward API)")
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 2 * time.Second
	}
	if cfg.FullRecheck <= 0 {
		cfg.FullRecheck = time.Minute
	}
	if cfg.GracePeriod <= 0 {
		cfg.GracePeriod = 5 * time.Minute
	}
	if cfg.IstioNamespace == "" {
		cfg.IstioNamespace = "istio-system"
	}
	fs, err := netns.NewFS(cfg.ProcRoot)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{cfg: cfg, cs: cs, clock: clock.RealClock{}, log: logr.Discard(),
		dirty: map[types.UID]bool{}, published: map[types.UID]corev1.ConditionStatus{}, reported: map[types.UID]detect.Class{},
		classes: map[types.UID]detect.Class{}}
	for _, o := range opts {
		o(a)
	}
	a.reg = prometheus.NewRegistry()
	a.m = newMetrics(a.reg)

	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
	}))
	podInf := factory.Core().V1().Pods()
	nsFactory := informers.NewSharedInformerFactory(cs, 0) // namespaces: no node field selector
	nsInf := nsFactory.Core().V1().Namespaces()
	a.pods, a.ztunnels = podInf.Lister(), podInf.Lister()
	a.synced = []cache.InformerSynced{podInf.Informer().HasSynced, nsInf.Informer().HasSynced}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { a.markDirty(o) },
		UpdateFunc: func(old, o any) { a.onUpdate(old, o) },
	}); err != nil {
		return nil, err
	}
	nsLister := nsInf.Lister()
	lister := detect.PodListerFunc(func(_ context.Context, namespace string) ([]corev1.Pod, error) {
		list, err := a.pods.List(labels.Everything())
		if err != nil {
			return nil, err
		}
		out := make([]corev1.Pod, 0, len(list))
		for _, p := range list {
			if namespace == "" || p.Namespace == namespace {
				out = append(out, *p)
			}
		}
		return out, nil
	})
	nsGetter := detect.NamespaceGetterFunc(func(_ context.Context, name string) (*corev1.Namespace, error) {
		return nsLister.Get(name)
	})
	a.engine = detect.New(lister, nsGetter, detect.NewNodeLocalProber(fs, netns.NewProcReader(fs)),
		detect.WithSettings(cfg.Settings), detect.WithNode(cfg.NodeName), detect.WithClock(a.clock),
		detect.WithConfirmDelay(cfg.Confirm), detect.WithLogger(a.log))
	a.events = heal.NewEventSink(cs.CoreV1(), "meshmedic-agent", heal.EventSinkLogger(a.log))
	strategy := cfg.Strategy
	if strategy == nil {
		strategy = heal.NewEvict(heal.NewEvicter(cs.CoreV1().RESTClient()), cs.CoreV1(), heal.EvictOptions{})
	}
	a.healer = heal.NewHealer(strategy, heal.WithEvents(a.events), heal.WithClock(a.clock), heal.WithLogger(a.log))
	a.informerStart = func(stop <-chan struct{}) { factory.Start(stop); nsFactory.Start(stop) }
	return a, nil
}

// markDirty queues a pod for the next tick.
func (a *Agent) markDirty(o any) {
	if p, ok := o.(*corev1.Pod); ok {
		a.mu.Lock()
		a.dirty[p.UID] = true
		a.mu.Unlock()
	}
}

// onUpdate checks a pod again when something that matters changed: the redirection
// annotation, the pod IP, its phase or readiness — not on every status heartbeat.
func (a *Agent) onUpdate(old, o any) {
	op, ok1 := old.(*corev1.Pod)
	np, ok2 := o.(*corev1.Pod)
	if !ok1 || !ok2 {
		return
	}
	if op.Annotations[enroll.AnnotationRedirection] != np.Annotations[enroll.AnnotationRedirection] ||
		op.Status.PodIP != np.Status.PodIP || op.Status.Phase != np.Status.Phase ||
		op.Labels[enroll.LabelDataplaneMode] != np.Labels[enroll.LabelDataplaneMode] {
		a.markDirty(np)
	}
}

// Registry exposes the agent's metrics registry (for tests and embedding).
func (a *Agent) Registry() *prometheus.Registry { return a.reg }

// Run starts the informers, serves metrics and health, and sweeps until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	a.informerStart(ctx.Done())
	if a.cfg.MetricsAddr != "" {
		srv, err := a.serve(a.cfg.MetricsAddr)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	if !cache.WaitForCacheSync(ctx.Done(), a.synced...) {
		return fmt.Errorf("agent: informers did not sync: %w", ctx.Err())
	}
	a.log.Info("informers synced", "node", a.cfg.NodeName)
	for {
		if err := a.RunOnce(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			a.m.sweepErrors.Inc()
			a.log.Error(err, "sweep failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.clock.After(a.cfg.Tick):
		}
	}
}

// RunOnce is one sweep: the pods marked changed (or all of them when the full re-check
// is due) are probed, findings confirmed, conditions published, and, when enabled,
// confirmed findings healed.
func (a *Agent) RunOnce(ctx context.Context) error {
	start := a.clock.Now()
	defer func() { a.m.sweepSeconds.Observe(a.clock.Since(start).Seconds()) }()
	all, err := a.pods.List(labels.Everything())
	if err != nil {
		return err
	}
	a.m.podsTracked.Set(float64(len(all)))
	a.mu.Lock()
	full := a.lastFull.IsZero() || start.Sub(a.lastFull) >= a.cfg.FullRecheck
	var pods []corev1.Pod
	for _, p := range all {
		if full || a.dirty[p.UID] {
			pods = append(pods, *p)
		}
	}
	a.dirty = map[types.UID]bool{}
	present := make(map[types.UID]bool, len(all))
	for _, p := range all {
		present[p.UID] = true
	}
	for _, m := range []map[types.UID]detect.Class{a.classes, a.reported} { // forget pods that left the node
		for uid := range m {
			if !present[uid] {
				delete(m, uid)
			}
		}
	}
	for uid := range a.published {
		if !present[uid] {
			delete(a.published, uid)
		}
	}
	if full {
		a.lastFull = start
	}
	a.mu.Unlock()
	if len(pods) > 0 {
		rep, err := a.engine.ScanPods(ctx, pods)
		if err != nil {
			return err
		}
		if len(rep.Actionable()) > 0 {
			if rep, err = a.engine.Confirm(ctx, rep); err != nil {
				return err
			}
		}
		a.mu.Lock()
		for _, f := range rep.Findings {
			a.classes[f.UID] = f.Class
		}
		a.mu.Unlock()
		a.publish(ctx, rep)
		if a.cfg.AutoRepair {
			a.repair(ctx, rep, all)
		}
		if full {
			a.updateGauges(rep)
		}
	}
	a.ready.Store(true)
	return nil
}

// publish patches the meshmedic.io/AmbientCaptured condition on pods/status when its status
// changed, and writes an Event when a finding is newly confirmed.
func (a *Agent) publish(ctx context.Context, rep detect.Report) {
	now := a.clock.Now()
	for _, f := range rep.Findings {
		if f.Class == detect.ClassSkipped {
			continue
		}
		if f.Actionable() && !f.Confirmed {
			continue // not confirmed yet: do not flip the condition on a flap
		}
		cond := detect.AmbientCapturedCondition(f, now)
		a.mu.Lock()
		prev, seen := a.published[f.UID]
		a.mu.Unlock()
		if !seen || prev != cond.Status {
			if err := a.patchCondition(ctx, f, cond); err != nil {
				a.log.Error(err, "publishing condition", "pod", f.Key())
			} else {
				a.mu.Lock()
				a.published[f.UID] = cond.Status
				a.mu.Unlock()
			}
		}
		a.mu.Lock()
		last := a.reported[f.UID]
		if f.Confirmed {
			a.reported[f.UID] = f.Class
		} else {
			delete(a.reported, f.UID)
		}
		a.mu.Unlock()
		if f.Confirmed && last != f.Class {
			a.m.confirmed.Inc()
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: f.Namespace, Name: f.Name, UID: f.UID}}
			a.events.Event(pod, corev1.EventTypeWarning, "MeshmedicAmbientOrphan",
				fmt.Sprintf("ambient capture missing (%s): expected %v, present %v", f.Class, f.Expected, f.Present))
		}
	}
}

func (a *Agent) patchCondition(ctx context.Context, f detect.Finding, cond corev1.PodCondition) error {
	body, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.PodCondition{cond}}})
	if err != nil {
		return err
	}
	_, err = a.cs.CoreV1().Pods(f.Namespace).Patch(ctx, f.Name, types.StrategicMergePatchType, body, metav1.PatchOptions{}, "status")
	return err
}

// repair heals confirmed findings: Ready pods, and with RepairStuck not-Ready pods after
// the grace period. heal's breaker gets this node's health.
func (a *Agent) repair(ctx context.Context, rep detect.Report, all []*corev1.Pod) {
	byUID := map[types.UID]*corev1.Pod{}
	for _, p := range all {
		byUID[p.UID] = p
	}
	var targets []heal.Target
	for _, f := range rep.Findings {
		if !f.Confirmed || !f.Actionable() {
			continue
		}
		pod := byUID[f.UID]
		if pod == nil {
			continue
		}
		if !f.Ready && !(a.cfg.RepairStuck && time.Duration(f.NotReadyFor) >= a.cfg.GracePeriod) {
			continue
		}
		targets = append(targets, heal.Target{Pod: pod.DeepCopy(), Class: f.Class, Detail: f.Detail})
	}
	if len(targets) == 0 {
		return
	}
	// Node health for the breaker, from the latest class of every pod still on the node
	// (a sweep that checked only changed pods does not see the others).
	h := heal.NodeHealth{ZtunnelReady: a.ztunnelReady()}
	a.mu.Lock()
	for _, p := range all {
		if c, ok := a.classes[p.UID]; ok {
			h.Count(c)
		}
	}
	a.mu.Unlock()
	for _, act := range a.healer.Heal(ctx, targets, map[string]heal.NodeHealth{a.cfg.NodeName: h}) {
		a.m.repairs.WithLabelValues(act.Strategy, string(act.Result)).Inc()
		a.log.Info("heal", "pod", act.Namespace+"/"+act.Name, "result", act.Result, "detail", act.Detail)
	}
}

// ztunnelReady reports whether this node's ztunnel pod (app=ztunnel in the Istio
// namespace) is Ready; not found = not Ready (heal's breaker then refuses: fail closed).
func (a *Agent) ztunnelReady() bool {
	list, err := a.ztunnels.Pods(a.cfg.IstioNamespace).List(labels.SelectorFromSet(labels.Set{"app": "ztunnel"}))
	if err != nil {
		return false
	}
	for _, p := range list {
		if heal.PodReady(p) {
			return true
		}
	}
	return false
}

func (a *Agent) updateGauges(rep detect.Report) {
	counts := map[detect.Class]int{}
	for _, f := range rep.Findings {
		counts[f.Class]++
	}
	for _, c := range []detect.Class{detect.ClassCaptured, detect.ClassOrphaned, detect.ClassPartial, detect.ClassNotEnrolled,
		detect.ClassNetnsReplaced, detect.ClassUnknown, detect.ClassSkipped} {
		a.m.findings.WithLabelValues(string(c)).Set(float64(counts[c]))
	}
}

// serve starts the metrics and health server; it returns once the port is bound.
func (a *Agent) serve(addr string) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "not ready: informers not synced or no sweep yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("agent: metrics listener %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	a.log.Info("serving metrics and health", "addr", ln.Addr().String())
	return srv, nil
}
