package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	authorizationv1 "k8s.io/api/authorization/v1"
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
	Tick           time.Duration // how often triggered pods are checked (default 2s)
	FullRecheck    time.Duration // slow re-check of every pod (default 60s)
	Confirm        time.Duration // flap guard (default 10s)
	AutoRepair     bool          // heal confirmed findings of Ready pods
	RepairStuck    bool          // also heal not-Ready pods after GracePeriod
	GracePeriod    time.Duration // default 5m
	Strategy       heal.Strategy // default evict
	Settings       enroll.Settings
	IstioNamespace string
	// YoungRechecks are the pod ages at which a new pod is checked again: reboot orphans
	// are born when the sandbox is created, and ztunnel may lose a pod it captured a
	// moment ago. Default 15s, 45s, 2m, 5m. Empty slice (not nil) disables.
	YoungRechecks []time.Duration
	// SocketCountInterval bounds how often a falling socket count re-checks one pod
	// (a busy pod closes connections all the time). Default 5×Tick.
	SocketCountInterval time.Duration
	// Reader reads a pod's LISTEN sockets; nil: netns.ProcReader over ProcRoot.
	Reader netns.SocketReader
	// Rules, when set, adds rule inspection (netns.RuleReader): every check also reads
	// istio-cni's in-pod routing set-up, so bypass and blackhole are told apart from
	// captured and orphaned. Rules lost while the listeners stay leave the socket counters
	// alone: the slow full re-check (or a pod change) finds them.
	Rules detect.RulesReader
	// Breaker are the node circuit breaker's thresholds (zero: heal's defaults).
	Breaker heal.Breaker
}

// DefaultYoungRechecks are the ages at which a new pod is checked again.
var DefaultYoungRechecks = []time.Duration{15 * time.Second, 45 * time.Second, 2 * time.Minute, 5 * time.Minute}

// Agent is the per-node runtime: it keeps this node's pods in an informer and checks a pod
// when something says it may have changed — it appeared, its annotation, IP, phase or
// restarts changed, it is young, a finding awaits confirmation, its netns's own socket
// counters fell, the node's ztunnel or istio-cni pod restarted — and every pod on a slow
// full re-check. Findings are confirmed without blocking the sweep, published as the
// meshmedic.io/AmbientCaptured condition, and healed under heal's safety layer.
type Agent struct {
	cfg    Config
	cs     kubernetes.Interface
	clock  clock.Clock
	log    logr.Logger
	fs     netns.FS
	prober *detect.NodeLocalProber
	engine *detect.Engine
	healer *heal.Healer
	events heal.EventSink
	m      *metrics
	reg    *prometheus.Registry

	pods     corelisters.PodLister
	podInf   cache.SharedIndexInformer
	synced   []cache.InformerSynced
	required int // listeners a captured pod has at least (socket-count trigger)

	mu          sync.Mutex
	dirty       map[types.UID]bool // pods changed in the API since the last sweep
	all         string             // non-empty: check every pod at the next tick, and why
	state       map[types.UID]*podState
	lastFull    time.Time
	breakerOpen bool
	staleRV     string // the informer's resourceVersion at the last watch error; "" = fresh

	newEngine func() // (re)builds prober and engine: benchmarks start from an empty cache

	ready         atomic.Bool
	repairDenied  atomic.Bool // --auto-repair asked for, but RBAC does not allow eviction
	informerStart func(stop <-chan struct{})
}

// podState is what the agent remembers about one pod of its node.
type podState struct {
	class     detect.Class // latest class (node health, socket-count trigger)
	checked   bool
	published corev1.ConditionStatus // last condition status written ("" = none)
	reported  detect.Class           // last confirmed class an Event was written for
	due       time.Time              // a finding awaits confirmation: check again then
	young     int                    // next index into YoungRechecks
	sockets   int                    // TCP+TCP6 sockets in use at the last fast tick
	sockRead  bool                   // sockets holds a reading
	sockErr   bool                   // the last reading failed (triggers once)
	sockCheck time.Time              // last check caused by the socket counters
	refused   heal.Result            // a refusal that cannot change for this pod UID (bare pod): not asked again
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
	if cfg.YoungRechecks == nil {
		cfg.YoungRechecks = DefaultYoungRechecks
	}
	if cfg.SocketCountInterval <= 0 {
		cfg.SocketCountInterval = 5 * cfg.Tick
	}
	fs, err := netns.NewFS(cfg.ProcRoot)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{cfg: cfg, cs: cs, fs: fs, clock: clock.RealClock{}, log: logr.Discard(),
		dirty: map[types.UID]bool{}, state: map[types.UID]*podState{}, required: len(netns.CorePorts)}
	for _, o := range opts {
		o(a)
	}
	a.reg = prometheus.NewRegistry()
	a.m = newMetrics(a.reg, func() detect.NodeStats { return a.prober.Stats() })

	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
	}))
	podInf := factory.Core().V1().Pods()
	nsFactory := informers.NewSharedInformerFactory(cs, 0) // namespaces: no node field selector
	nsInf := nsFactory.Core().V1().Namespaces()
	a.pods, a.podInf = podInf.Lister(), podInf.Informer()
	// The informers keep what the agent reads, not managedFields or kubectl's
	// last-applied copy of the whole object: the agent's memory is per node, per pod.
	if err := a.podInf.SetTransform(slimObject); err != nil {
		return nil, err
	}
	if err := nsInf.Informer().SetTransform(slimObject); err != nil {
		return nil, err
	}
	a.synced = []cache.InformerSynced{podInf.Informer().HasSynced, nsInf.Informer().HasSynced}
	if _, err := a.podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { a.onAdd(o) },
		UpdateFunc: func(old, o any) { a.onUpdate(old, o) },
	}); err != nil {
		return nil, err
	}
	// During an API-server outage the informer keeps its last state; the agent keeps
	// reading /proc but heals nothing until the watch has relisted (see stale).
	watchErr := func(ctx context.Context, r *cache.Reflector, err error) {
		a.mu.Lock()
		if a.staleRV == "" {
			a.staleRV = a.podInf.LastSyncResourceVersion()
			if a.staleRV == "" {
				a.staleRV = "-"
			}
		}
		a.mu.Unlock()
		cache.DefaultWatchErrorHandler(ctx, r, err)
	}
	if err := a.podInf.SetWatchErrorHandlerWithContext(watchErr); err != nil {
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
	reader := cfg.Reader
	if reader == nil {
		reader = netns.NewProcReader(fs)
	}
	a.newEngine = func() {
		// One walk of the kernel's TCP hash table per pod, not two: tcp is read only when tcp6
		// lacks a listener the engine requires of this pod (it passes them per pod), so an
		// IPv4-only 127.0.0.1:15053 is still seen; loopback listeners nobody requires are not
		// listed. node scan keeps Full.
		opts := []detect.NodeOption{detect.WithNodeReadOptions(netns.ReadOptions{})}
		if a.cfg.Rules != nil {
			opts = append(opts, detect.WithRuleInspection(a.cfg.Rules))
		}
		a.prober = detect.NewNodeLocalProber(fs, reader, opts...)
		a.engine = detect.New(lister, nsGetter, a.prober,
			detect.WithSettings(a.cfg.Settings), detect.WithNode(a.cfg.NodeName), detect.WithClock(a.clock),
			detect.WithConfirmDelay(a.cfg.Confirm), detect.WithLogger(a.log))
	}
	a.newEngine()
	a.events = heal.NewEventSink(cs.CoreV1(), "meshmedic-agent", heal.EventSinkLogger(a.log))
	strategy := cfg.Strategy
	if strategy == nil {
		strategy = NewEvictStrategy(cs)
	}
	a.healer = heal.NewHealer(strategy, heal.WithEvents(a.events), heal.WithClock(a.clock), heal.WithLogger(a.log),
		heal.WithBreaker(cfg.Breaker))
	a.informerStart = func(stop <-chan struct{}) { factory.Start(stop); nsFactory.Start(stop) }
	return a, nil
}

// slimObject drops what the agent never reads from a cached object: managedFields and the
// kubectl.kubernetes.io/last-applied-configuration annotation (a second copy of the spec).
func slimObject(o any) (any, error) {
	if m, ok := o.(metav1.Object); ok {
		m.SetManagedFields(nil)
		if ann := m.GetAnnotations(); ann != nil {
			if _, ok := ann[corev1.LastAppliedConfigAnnotation]; ok {
				ann = maps.Clone(ann)
				delete(ann, corev1.LastAppliedConfigAnnotation)
				m.SetAnnotations(ann)
			}
		}
	}
	return o, nil
}

// NewEvictStrategy is the agent's default heal strategy: eviction that does not wait for
// the pod to go (the informer sees it go; a sweep must not stall for a grace period).
func NewEvictStrategy(cs kubernetes.Interface) heal.Strategy {
	return heal.NewEvict(heal.NewEvicter(cs.CoreV1().RESTClient()), cs.CoreV1(), heal.EvictOptions{Timeout: -1})
}

// isInfra reports whether p is this node's ztunnel or istio-cni pod: when one of them
// restarts or becomes Ready, every pod's capture may have changed.
func (a *Agent) isInfra(p *corev1.Pod) bool {
	return p.Namespace == a.cfg.IstioNamespace && (p.Labels["app"] == "ztunnel" || p.Labels["k8s-app"] == "istio-cni-node")
}

func restarts(p *corev1.Pod) int32 {
	var n int32
	for _, c := range p.Status.ContainerStatuses {
		n += c.RestartCount
	}
	return n
}

func (a *Agent) markDirty(p *corev1.Pod) {
	a.mu.Lock()
	a.dirty[p.UID] = true
	a.mu.Unlock()
}

func (a *Agent) markAll(why string) {
	a.mu.Lock()
	a.all = why
	a.mu.Unlock()
}

func (a *Agent) onAdd(o any) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	if a.isInfra(p) {
		a.markAll("ztunnel or istio-cni pod " + p.Name + " appeared")
	}
	a.markDirty(p)
}

// onUpdate checks a pod again when something that matters changed: the redirection
// annotation, the dataplane-mode label, the pod IP, its phase or container restarts — not
// on every status heartbeat. A change of readiness or restarts of the node's ztunnel or
// istio-cni pod re-checks every pod.
func (a *Agent) onUpdate(old, o any) {
	op, ok1 := old.(*corev1.Pod)
	np, ok2 := o.(*corev1.Pod)
	if !ok1 || !ok2 {
		return
	}
	if a.isInfra(np) && (heal.PodReady(op) != heal.PodReady(np) || restarts(op) != restarts(np) || op.UID != np.UID) {
		a.markAll(fmt.Sprintf("%s/%s restarted or changed readiness", np.Namespace, np.Name))
	}
	if op.Annotations[enroll.AnnotationRedirection] != np.Annotations[enroll.AnnotationRedirection] ||
		op.Labels[enroll.LabelDataplaneMode] != np.Labels[enroll.LabelDataplaneMode] ||
		op.Status.PodIP != np.Status.PodIP || op.Status.Phase != np.Status.Phase || restarts(op) != restarts(np) {
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
	a.log.Info("informers synced", "node", a.cfg.NodeName, "netnsIdentity", a.fs.Identity())
	a.checkPermissions(ctx)
	for {
		if err := a.RunOnce(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			a.m.sweepErrors.Inc()
			a.log.Error(err, "sweep failed")
		}
		// Jitter spreads the DaemonSet's sweeps (and their condition patches) over the tick.
		select {
		case <-ctx.Done():
			return nil
		case <-a.clock.After(jitter(a.cfg.Tick)):
		}
	}
}

func jitter(d time.Duration) time.Duration {
	return d - d/10 + time.Duration(rand.Int64N(int64(d/5)+1))
}

// checkPermissions asks the API server (SelfSubjectAccessReview) whether this agent's
// identity may do what its configuration needs, and says clearly what is missing. Without
// pods/eviction create, --auto-repair is switched off (detection and the condition go on):
// that is the detect-only RBAC of deploy/base.
func (a *Agent) checkPermissions(ctx context.Context) {
	type need struct {
		verb, resource, sub, why string
		repair                   bool
	}
	needs := []need{
		{"patch", "pods", "status", "publish the " + string(detect.ConditionAmbientCaptured) + " condition", false},
		{"create", "events", "", "write Events", false},
	}
	if a.cfg.AutoRepair {
		needs = append(needs, need{"create", "pods", "eviction", "--auto-repair evicts confirmed orphans", true})
	}
	for _, n := range needs {
		ok, err := a.allowed(ctx, n.verb, n.resource, n.sub)
		res := n.resource
		if n.sub != "" {
			res += "/" + n.sub
		}
		switch {
		case err != nil:
			a.log.Error(err, "could not check permission (SelfSubjectAccessReview); going ahead", "verb", n.verb, "resource", res)
		case !ok && n.repair:
			a.repairDenied.Store(true)
			a.m.repairEnabled.Set(0)
			a.log.Error(nil, "--auto-repair is OFF: this ServiceAccount cannot "+n.verb+" "+res+
				"; bind the repair ClusterRole (deploy/overlays/auto-repair) to heal; detection and the condition go on",
				"verb", n.verb, "resource", res)
		case !ok:
			a.log.Error(nil, "missing permission: cannot "+n.verb+" "+res+", so the agent cannot "+n.why, "verb", n.verb, "resource", res)
		}
	}
	if a.cfg.AutoRepair && !a.repairDenied.Load() {
		a.m.repairEnabled.Set(1)
	}
}

func (a *Agent) allowed(ctx context.Context, verb, resource, sub string) (bool, error) {
	r, err := a.cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: verb, Resource: resource, Subresource: sub}},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	return r.Status.Allowed, nil
}

// stale reports whether the pod informer may be behind the API server: a watch failed and
// the informer has not relisted since. The agent then heals nothing.
func (a *Agent) stale() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.staleRV == "" {
		return false
	}
	if rv := a.podInf.LastSyncResourceVersion(); rv != "" && rv != a.staleRV {
		a.staleRV = ""
		return false
	}
	return true
}

// RunOnce is one sweep: the pods something points at (or all of them when the full
// re-check is due) are probed, findings confirmed once the confirm delay has passed,
// conditions published, and, when enabled, confirmed findings healed.
func (a *Agent) RunOnce(ctx context.Context) error {
	start := a.clock.Now()
	defer func() { a.m.sweepSeconds.Observe(a.clock.Since(start).Seconds()) }()
	all, err := a.pods.List(labels.Everything())
	if err != nil {
		return err
	}
	a.m.podsTracked.Set(float64(len(all)))
	pods, full := a.selectPods(start, all)
	if len(pods) > 0 {
		rep, err := a.engine.ScanPods(ctx, pods)
		if err != nil {
			return err
		}
		a.confirm(start, &rep)
		a.publish(ctx, rep)
		if a.cfg.AutoRepair && !a.repairDenied.Load() {
			if a.stale() {
				a.log.Info("not healing: the pod informer has not resynced since a watch error (API server unreachable?)")
			} else {
				a.repair(ctx, rep, all)
			}
		}
		if full {
			a.updateGauges(rep)
		}
	}
	a.updateBreaker(ctx, all)
	a.ready.Store(true)
	return nil
}

// selectPods decides which pods this sweep checks, and forgets pods that left the node.
func (a *Agent) selectPods(now time.Time, all []*corev1.Pod) ([]corev1.Pod, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	full := a.lastFull.IsZero() || now.Sub(a.lastFull) >= a.cfg.FullRecheck
	why := map[types.UID]string{} // pod → trigger label of meshmedic_checks_triggered_total
	if full {
		a.lastFull = now
	} else if a.all != "" {
		full = true
		a.log.Info("re-checking every pod", "why", a.all)
	}
	a.all = ""
	present := make(map[types.UID]bool, len(all))
	for _, p := range all {
		present[p.UID] = true
		st := a.state[p.UID]
		if st == nil {
			st = &podState{}
			a.state[p.UID] = st
		}
		if a.dirty[p.UID] {
			why[p.UID] = triggerPodChange
		}
		if !st.due.IsZero() && !now.Before(st.due) {
			why[p.UID] = triggerConfirm
		}
		if a.youngDue(now, p, st) {
			why[p.UID] = triggerYoung
		}
		if a.socketsFell(now, p, st) {
			if _, already := why[p.UID]; !already && !full {
				why[p.UID] = triggerSocketCount
			}
		}
	}
	clear(a.dirty)
	for uid := range a.state {
		if !present[uid] {
			delete(a.state, uid)
		}
	}
	var out []corev1.Pod
	for _, p := range all {
		if full || why[p.UID] != "" {
			out = append(out, *p)
		}
	}
	if !full {
		for _, label := range why {
			a.m.triggers.WithLabelValues(label).Inc()
		}
	}
	return out, full
}

// What put a pod into a sweep outside the full re-check (the trigger label).
const (
	triggerPodChange   = "pod-change"
	triggerConfirm     = "confirm"
	triggerYoung       = "young"
	triggerSocketCount = "socket-count"
)

// youngDue: a pod younger than the last YoungRechecks age is checked again each time its
// age crosses the next one (from status.startTime, when the kubelet accepted it).
func (a *Agent) youngDue(now time.Time, p *corev1.Pod, st *podState) bool {
	if st.young >= len(a.cfg.YoungRechecks) {
		return false
	}
	born := p.CreationTimestamp.Time
	if p.Status.StartTime != nil {
		born = p.Status.StartTime.Time
	}
	age := now.Sub(born)
	crossed := false
	for st.young < len(a.cfg.YoungRechecks) && age >= a.cfg.YoungRechecks[st.young] {
		st.young++
		crossed = true
	}
	return crossed && st.checked
}

// socketsFell is the fast tick: the netns's own socket counters (net/sockstat{,6}: no walk
// of the kernel's TCP hash table) of a pod last seen captured. Fewer sockets than a
// captured pod's listeners means "check now"; a count that fell means "check soon" (at
// most once per SocketCountInterval: busy pods close connections all the time); a
// sandbox process that is gone means "check now", once. Other read errors (a proc tree
// without the counters) leave the pod to the other triggers.
func (a *Agent) socketsFell(now time.Time, p *corev1.Pod, st *podState) bool {
	if !st.checked || st.class != detect.ClassCaptured {
		st.sockRead, st.sockErr = false, false
		return false
	}
	s, ok := a.prober.Cached(detect.SandboxUID(p))
	if !ok || s.HostNetwork {
		return false
	}
	c, err := a.fs.SocketsInUse(s.PID)
	if err != nil {
		trigger := !st.sockErr && errors.Is(err, netns.ErrProcessGone)
		st.sockErr, st.sockRead = true, false
		return trigger
	}
	st.sockErr = false
	n := c.TCP + c.TCP6
	prev, had := st.sockets, st.sockRead
	st.sockets, st.sockRead = n, true
	switch {
	case n < a.required: // fewer sockets than a captured pod's listeners
		return true
	case had && n < prev && now.Sub(st.sockCheck) >= a.cfg.SocketCountInterval:
		st.sockCheck = now
		return true
	}
	return false
}

// confirm marks actionable findings confirmed when they have been seen at least twice and
// for at least the confirm delay (the flap guard), without waiting inside the sweep: an
// unconfirmed finding gets a due time and is checked again then.
func (a *Agent) confirm(now time.Time, rep *detect.Report) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range rep.Findings {
		f := &rep.Findings[i]
		st := a.state[f.UID]
		if st == nil {
			st = &podState{}
			a.state[f.UID] = st
		}
		st.class, st.checked = f.Class, true
		if !f.Actionable() {
			st.due = time.Time{}
			continue
		}
		due := f.FirstSeen.Add(a.cfg.Confirm)
		if a.cfg.Confirm <= 0 || (f.Confirmations >= 2 && !now.Before(due)) {
			f.Confirmed = true
			st.due = time.Time{}
			continue
		}
		if !due.After(now) {
			due = now.Add(a.cfg.Tick)
		}
		st.due = due
	}
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
		st := a.state[f.UID]
		a.mu.Unlock()
		if st == nil {
			continue // left the node during the sweep
		}
		if st.published != cond.Status {
			if err := a.patchCondition(ctx, f, cond); err != nil {
				a.log.Error(err, "publishing condition", "pod", f.Key())
			} else {
				a.mu.Lock()
				st.published = cond.Status
				a.mu.Unlock()
			}
		}
		a.mu.Lock()
		last := st.reported
		if f.Confirmed {
			st.reported = f.Class
		} else {
			st.reported = ""
		}
		a.mu.Unlock()
		if f.Confirmed && last != f.Class {
			a.m.confirmed.Inc()
			a.log.Info("confirmed finding", "pod", f.Key(), "class", f.Class, "missing", f.Missing)
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

// nodeHealth is the breaker's input: this node's ztunnel readiness and the latest class of
// every pod still on the node (a sweep that checked only some pods does not see the others).
func (a *Agent) nodeHealth(all []*corev1.Pod) heal.NodeHealth {
	h := heal.NodeHealth{ZtunnelReady: a.ztunnelReady(all)}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range all {
		if st := a.state[p.UID]; st != nil && st.checked {
			h.Count(st.class)
		}
	}
	return h
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
		if pod == nil || pod.DeletionTimestamp != nil {
			continue // gone, or already going
		}
		a.mu.Lock()
		st := a.state[f.UID]
		refused := st != nil && st.refused != ""
		a.mu.Unlock()
		if refused {
			continue // refused once with an Event; the pod's owner cannot change
		}
		if !f.Ready && !gatedByUs(pod) && !(a.cfg.RepairStuck && time.Duration(f.NotReadyFor) >= a.cfg.GracePeriod) {
			continue
		}
		targets = append(targets, heal.Target{Pod: pod.DeepCopy(), Class: f.Class, Detail: f.Detail})
	}
	if len(targets) == 0 {
		return
	}
	health := map[string]heal.NodeHealth{a.cfg.NodeName: a.nodeHealth(all)}
	for _, act := range a.healer.Heal(ctx, targets, health) {
		if act.Result == heal.ResultRefusedBarePod {
			a.mu.Lock()
			if st := a.state[act.UID]; st != nil {
				st.refused = act.Result
			}
			a.mu.Unlock()
		}
		a.m.repairs.WithLabelValues(act.Strategy, string(act.Result)).Inc()
		a.log.Info("heal", "pod", act.Namespace+"/"+act.Name, "result", act.Result, "detail", act.Detail)
	}
}

// gatedByUs reports whether a pod is not Ready only because of meshmedic's own condition:
// it opted in to fail-closed with a readinessGate on meshmedic.io/AmbientCaptured and its
// containers are ready. Such a pod is treated as Ready by --auto-repair — it went NotReady
// because it is orphaned, which is exactly what healing fixes.
func gatedByUs(p *corev1.Pod) bool {
	gated := false
	for _, g := range p.Spec.ReadinessGates {
		if g.ConditionType == detect.ConditionAmbientCaptured {
			gated = true
		}
	}
	if !gated {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.ContainersReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// updateBreaker publishes the node-level finding: when the breaker would refuse heals on
// this node (ztunnel not Ready, or most of its ambient pods orphaned at once) the gauge
// meshmedic_node_breaker_open is 1, and an Event on the Node says so when it opens and
// closes. Only pods are healed, never the node: this is for a human.
func (a *Agent) updateBreaker(ctx context.Context, all []*corev1.Pod) {
	h := a.nodeHealth(all)
	if h.AmbientPods == 0 && !h.ZtunnelReady {
		a.m.breakerOpen.Set(0) // no ambient pod here: nothing to protect, nothing to say
		a.setBreaker(ctx, false, "")
		return
	}
	open, why := a.cfg.Breaker.Trips(h)
	if open {
		a.m.breakerOpen.Set(1)
	} else {
		a.m.breakerOpen.Set(0)
	}
	a.setBreaker(ctx, open, why)
}

func (a *Agent) setBreaker(ctx context.Context, open bool, why string) {
	a.mu.Lock()
	changed := a.breakerOpen != open
	a.breakerOpen = open
	a.mu.Unlock()
	if !changed {
		return
	}
	reason, typ, msg := "MeshmedicNodeBreakerClosed", corev1.EventTypeNormal, "node circuit breaker closed: pods on this node may be healed again"
	if open {
		reason, typ, msg = "MeshmedicNodeBreakerOpen", corev1.EventTypeWarning, "node circuit breaker open, no pod on this node is healed: "+why
	}
	a.log.Info(msg, "node", a.cfg.NodeName)
	a.nodeEvent(ctx, typ, reason, msg)
}

// nodeEvent writes an Event about this node (namespace default, as the kubelet's are).
func (a *Agent) nodeEvent(ctx context.Context, typ, reason, msg string) {
	now := metav1.NewTime(a.clock.Now())
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: a.cfg.NodeName + ".meshmedic-", Namespace: metav1.NamespaceDefault},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: a.cfg.NodeName, UID: types.UID(a.cfg.NodeName), APIVersion: "v1"},
		Reason:         reason, Message: msg, Type: typ, Count: 1, FirstTimestamp: now, LastTimestamp: now,
		Source: corev1.EventSource{Component: "meshmedic-agent", Host: a.cfg.NodeName},
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := a.cs.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		a.log.Error(err, "writing node Event", "reason", reason)
	}
}

// ztunnelReady reports whether this node's ztunnel pod (app=ztunnel in the Istio
// namespace) is Ready; not found = not Ready (heal's breaker then refuses: fail closed).
func (a *Agent) ztunnelReady(all []*corev1.Pod) bool {
	for _, p := range all {
		if p.Namespace == a.cfg.IstioNamespace && p.Labels["app"] == "ztunnel" && heal.PodReady(p) {
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
