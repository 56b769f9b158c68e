package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/heal"
	"github.com/meshmedic/meshmedic/netns"
)

// Config is the agent's configuration (the `meshmedic agent` flags). Zero values take the
// defaults named on each field.
type Config struct {
	NodeName    string
	ProcRoot    string        // the host's /proc, e.g. /host/proc
	MetricsAddr string        // ":9100"; "" disables the HTTP server
	Tick        time.Duration // how often triggered pods are checked (default 2s)
	FullRecheck time.Duration // slow re-check of every pod (default 60s)
	Confirm     time.Duration // flap guard (0: confirmed at once)
	AutoRepair  bool          // heal confirmed findings of Ready pods
	RepairStuck bool          // also heal not-Ready pods after GracePeriod
	GracePeriod time.Duration // default 5m
	Strategy    heal.Strategy // default evict
	Settings    enroll.Settings
	// IstioNamespace is where the node's ztunnel and istio-cni pods must run to count
	// (default istio-system).
	IstioNamespace string
	// Namespace is the agent's own namespace (POD_NAMESPACE): its heartbeat Lease lives
	// there. "" disables the heartbeat (then `scan --prober agent` trusts none of this
	// node's conditions).
	Namespace string
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
	// Breaker are the node breaker's thresholds (zero fields: heal.DefaultBreaker's).
	Breaker heal.Breaker
	// Ledger is where backoff, the fleet-wide limits and canaries are kept; give every
	// agent and `repair` the same heal.LeaseLedger. nil: in this process only.
	Ledger heal.Ledger
	// Limits are the fleet-wide heal limits, taken literally (nil: heal.DefaultLimits).
	Limits *heal.Limits
	// Budget is the per-sweep budget, taken literally (nil: heal.DefaultBudget).
	Budget *heal.Budget
}

// DefaultYoungRechecks are the ages at which a new pod is checked again.
var DefaultYoungRechecks = []time.Duration{15 * time.Second, 45 * time.Second, 2 * time.Minute, 5 * time.Minute}

// Agent is the per-node runtime, a detector and its reporters (as node-problem-detector
// keeps them apart). The detector: informers on this node's pods, a trigger scheduler that
// picks the pods to check — a pod appeared or changed, is young, awaits confirmation, its
// netns's socket counters fell, the node's ztunnel or istio-cni restarted, or the slow full
// re-check is due — and detect's Engine, which probes and settles them without blocking.
// Each sweep's result goes to the reporters, each with its own state: the pod condition,
// finding Events, the node breaker, repair (heal's planner), the heartbeat and metrics.
type Agent struct {
	cfg    Config
	cs     kubernetes.Interface
	clock  clock.Clock
	log    logr.Logger
	fs     netns.FS
	prober *detect.NodeLocalProber
	engine *detect.Engine
	healer *heal.Healer
	events heal.NodeEventSink
	m      *metrics
	reg    *prometheus.Registry

	pods     corelisters.PodLister
	podInf   cache.SharedIndexInformer
	synced   []cache.InformerSynced
	watch    watchState
	nsLister corelisters.NamespaceLister

	sched     *scheduler
	reporters []reporter

	newEngine func() // (re)builds prober and engine: benchmarks start from an empty cache

	ready         atomic.Bool
	repairDenied  atomic.Bool // --auto-repair asked for, but RBAC does not allow it
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
	if cfg.YoungRechecks == nil {
		cfg.YoungRechecks = DefaultYoungRechecks
	}
	if cfg.SocketCountInterval <= 0 {
		cfg.SocketCountInterval = 5 * cfg.Tick
	}
	if cfg.Limits == nil {
		cfg.Limits = &heal.DefaultLimits
	}
	if cfg.Budget == nil {
		cfg.Budget = &heal.DefaultBudget
	}
	fs, err := netns.NewFS(cfg.ProcRoot)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{cfg: cfg, cs: cs, fs: fs, clock: clock.RealClock{}, log: logr.Discard()}
	for _, o := range opts {
		o(a)
	}
	a.reg = prometheus.NewRegistry()
	a.m = newMetrics(a.reg, func() detect.NodeStats { return a.prober.Stats() })
	a.sched = newScheduler(cfg, fs, a.m, a.log)
	if err := a.setupInformers(); err != nil {
		return nil, err
	}
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
		a.sched.prober = a.prober
		a.engine = detect.New(a.podListerForEngine(), a.namespaceGetter(), a.prober,
			detect.WithSettings(a.cfg.Settings), detect.WithNode(a.cfg.NodeName), detect.WithClock(a.clock),
			detect.WithConfirmDelay(a.cfg.Confirm), detect.WithLogger(a.log))
	}
	a.newEngine()
	a.events = heal.NewEventSink(cs.CoreV1(), "meshmedic-agent", heal.EventSinkLogger(a.log),
		heal.EventSinkClock(a.clock), heal.EventSinkInstance(cfg.NodeName))
	strategy := cfg.Strategy
	if strategy == nil {
		strategy = NewEvictStrategy(cs)
	}
	notReady := time.Duration(-1)
	if cfg.RepairStuck {
		notReady = cfg.GracePeriod
	}
	a.healer = heal.NewHealer(strategy, heal.WithEvents(a.events), heal.WithClock(a.clock), heal.WithLogger(a.log),
		heal.WithBreaker(cfg.Breaker), heal.WithLedger(cfg.Ledger), heal.WithLimits(*cfg.Limits), heal.WithBudget(*cfg.Budget),
		heal.WithInstance("agent/"+cfg.NodeName), heal.WithNotReady(notReady))
	a.reporters = []reporter{
		&conditionReporter{a: a, published: map[types.UID]publishedCondition{}},
		&findingEvents{a: a, reported: map[types.UID]detect.Class{}},
		&repairer{a: a},
		&breakerReporter{a: a},
		&gaugeReporter{a: a},
		&heartbeat{a: a},
	}
	return a, nil
}

// NewEvictStrategy is the agent's default heal strategy: eviction that does not wait for
// the pod to go (the informer sees it go; a sweep must not stall for a grace period).
func NewEvictStrategy(cs kubernetes.Interface) heal.Strategy {
	return heal.NewEvict(heal.NewEvicter(cs.CoreV1().RESTClient()), cs.CoreV1(), heal.EvictOptions{Timeout: -1})
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

// RunOnce is one sweep: the detector checks the pods something points at (or all of them
// when the full re-check is due) and settles their findings without waiting; then every
// reporter consumes the result.
func (a *Agent) RunOnce(ctx context.Context) error {
	start := a.clock.Now()
	defer func() { a.m.sweepSeconds.Observe(a.clock.Since(start).Seconds()) }()
	all, err := a.pods.List(labels.Everything())
	if err != nil {
		return err
	}
	s := &sweep{at: start, all: all}
	pods, full := a.sched.selectPods(start, all)
	s.full = full
	if len(pods) > 0 {
		rep, err := a.engine.ScanPods(ctx, pods)
		if err != nil {
			return err
		}
		rep, due := a.engine.Settle(rep)
		a.sched.record(rep, due, a.cfg.Tick, start)
		s.rep = rep
	}
	s.latest = a.sched.latest()
	s.health = heal.NodeFactsOf(all, s.latest, a.infraNamespace).Health
	s.stale = a.stale()
	for _, r := range a.reporters {
		r.report(ctx, s)
	}
	a.ready.Store(true)
	return nil
}

// infraNamespace accepts the namespaces whose ztunnel and istio-cni pods count.
func (a *Agent) infraNamespace(ns string) bool { return ns == a.cfg.IstioNamespace }
