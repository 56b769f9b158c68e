package heal

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/meshmedic/meshmedic/detect"
)

// Target is one confirmed finding to heal.
type Target struct {
	// Pod is the pod as detection saw it: namespace, name, UID, spec.nodeName, owner
	// references, labels and resourceVersion are used.
	Pod *corev1.Pod
	// Class is the finding's class; only detect.Class.Actionable classes are healed.
	Class detect.Class
	// Detail is detection's explanation (e.g. which listeners are missing); it is
	// repeated in Events.
	Detail string
}

// Result is what happened to one target. The JSON contract (DESIGN.md "Frontends") relies
// on these strings; none is ever renamed.
type Result string

const (
	// ResultEvicted: the Eviction was accepted and the pod with that UID is gone or
	// replaced (or it was already gone: Detail says so).
	ResultEvicted Result = "evicted"
	// ResultWouldEvict: dry run; the API accepted the Eviction with DryRun=All.
	ResultWouldEvict Result = "would-evict"
	// ResultBlockedByPDB: the API answered 429 to the Eviction (real or dry run). Not a
	// failure; retried on a later sweep.
	ResultBlockedByPDB Result = "blocked-by-pdb"
	// ResultRefusedBarePod: the pod has no controller owner and WithAllowBarePods was not
	// given; evicting or deleting it would lose it.
	ResultRefusedBarePod Result = "refused-bare-pod"
	// ResultToggled: the dataplane-mode label was set to none and restored, and the
	// re-probe saw capture go away and come back.
	ResultToggled Result = "toggled"
	// ResultWouldToggle: dry run; the API accepted the first label patch with DryRun=All.
	ResultWouldToggle Result = "would-toggle"
	// ResultDeleted: the pod (that UID) was deleted. Only with the delete strategy.
	ResultDeleted Result = "deleted"
	// ResultWouldDelete: dry run of the delete strategy accepted by the API.
	ResultWouldDelete Result = "would-delete"
	// ResultSkippedBudget: a per-run, per-node or per-namespace budget of this call, or a
	// fleet-wide limit (cluster rate, namespace cap), was spent.
	ResultSkippedBudget Result = "skipped-budget"
	// ResultSkippedBackoff: the pod's backoff key (its controller) was healed recently, by
	// any healer sharing the ledger.
	ResultSkippedBackoff Result = "skipped-backoff"
	// ResultRefusedNodeBreaker: the node is stopped (NodeStop): its ztunnel or istio-cni is
	// not Ready or not found, or its canary came back broken: the node is the cause,
	// restarting pods cannot help.
	ResultRefusedNodeBreaker Result = "refused-node-breaker"
	// ResultNotActionable: the class is not one that is healed (unknown, skipped,
	// captured, ...), or the pod was already gone in a dry run. Nothing was sent.
	ResultNotActionable Result = "not-actionable"
	// ResultWaitingForCanary: the node is mass-orphaned and another of its pods is its
	// canary; this one is healed once a pod created on the node after it comes back
	// captured.
	ResultWaitingForCanary Result = "waiting-for-canary"
	// ResultRefusedExcluded: a drain-style exclusion (Excluded) or the pod's own
	// meshmedic.io/heal=never annotation keeps it from being healed.
	ResultRefusedExcluded Result = "refused-excluded"
	// ResultFailed: the strategy ran and did not succeed, or the ledger could not be read
	// or written (fail closed); Detail and Action.Err say why.
	ResultFailed Result = "failed"
)

// Results are every Result, for docs and metrics.
var Results = []Result{ResultEvicted, ResultWouldEvict, ResultBlockedByPDB, ResultRefusedBarePod,
	ResultToggled, ResultWouldToggle, ResultDeleted, ResultWouldDelete, ResultSkippedBudget,
	ResultSkippedBackoff, ResultRefusedNodeBreaker, ResultWaitingForCanary, ResultRefusedExcluded,
	ResultNotActionable, ResultFailed}

// succeeded reports the results that mean "done" (or "would be done").
func (r Result) succeeded() bool {
	switch r {
	case ResultEvicted, ResultWouldEvict, ResultToggled, ResultWouldToggle, ResultDeleted, ResultWouldDelete:
		return true
	}
	return false
}

// Action is the record of one target's outcome; its JSON form is the `actions[]` element
// of `repair -o json`.
type Action struct {
	Namespace string       `json:"namespace"`
	Name      string       `json:"name"`
	UID       types.UID    `json:"uid,omitempty"`
	Node      string       `json:"node,omitempty"`
	Class     detect.Class `json:"class,omitempty"`
	Strategy  string       `json:"strategy"`
	Result    Result       `json:"result"`
	Detail    string       `json:"detail"`
	// Err is nil for a success or would- result (Detail may still explain it, e.g.
	// ErrAlreadyGone) and set for every other result; it wraps a sentinel where one
	// applies (ErrPDBBlocked, ErrBarePod, ErrBackoff, ...).
	Err error `json:"-"`
}

// Strategy is one way to heal a pod. Heal must not check budgets, backoff or ownership:
// the Healer does that for every strategy. A Strategy may return a non-nil error beside a
// success Result to explain it (e.g. ErrAlreadyGone).
type Strategy interface {
	Name() string
	Heal(ctx context.Context, t Target, dryRun bool) (Result, error)
}

// Replacer is implemented by strategies that say whether healing destroys the pod (so a
// bare pod would not come back). Strategies that do not implement it are treated as
// destructive.
type Replacer interface {
	ReplacesPod() bool
}

// NodeHealth is what the caller knows about a node when it heals pods on it.
type NodeHealth struct {
	// AmbientPods is the number of pods on the node expected to be captured.
	AmbientPods int `json:"ambientPods"`
	// Orphaned is how many of them are broken (orphaned, partial, netns-replaced, ...).
	Orphaned int `json:"orphaned"`
	// ZtunnelReady is true when the node's ztunnel pod is Ready.
	ZtunnelReady bool `json:"ztunnelReady"`
	// IstioCNIReady is true when the node's istio-cni pod is Ready. A NodeHealth made by
	// hand must set it: a node whose istio-cni is not known to be Ready heals nothing
	// (pods evicted while istio-cni crash-loops come back unenrolled).
	IstioCNIReady bool `json:"istioCNIReady"`
	// ZtunnelFound and IstioCNIFound say whether such pods were found at all, and Infra
	// fingerprints them (UIDs and restarts); SetInfra fills all three. A canary that
	// failed is retried once Infra changes (istio-cni restarted or replaced).
	ZtunnelFound  bool   `json:"ztunnelFound,omitempty"`
	IstioCNIFound bool   `json:"istioCNIFound,omitempty"`
	Infra         string `json:"infra,omitempty"`
}

// Count adds one checked pod of the node by its finding class: skipped pods are not ambient,
// actionable ones are ambient and broken, every other class is ambient.
func (h *NodeHealth) Count(c detect.Class) {
	switch {
	case c == detect.ClassSkipped:
	case c.Actionable():
		h.AmbientPods++
		h.Orphaned++
	default:
		h.AmbientPods++
	}
}

// PodReady reports whether a pod (such as a node's ztunnel) is Running, not being deleted,
// and has its Ready condition True.
func PodReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Budget bounds how many pods one Apply (one agent sweep, one `repair` run) acts on. The
// values are taken literally: 0 means none, a negative value means unlimited. A Healer
// without WithBudget uses DefaultBudget. The fleet-wide Limits apply on top.
type Budget struct {
	PerRun       int
	PerNode      int
	PerNamespace int
}

// DefaultBudget is the per-call budget of a Healer given none.
var DefaultBudget = Budget{PerRun: 5, PerNode: 2, PerNamespace: 3}

// Breaker holds the node breaker's thresholds: a node is mass-orphaned when at least
// MinPods of its ambient pods, and at least OrphanFraction of them, are broken at once. A
// mass-orphaned node whose ztunnel and istio-cni are Ready gets a canary (NodeCanary)
// instead of a wall, unless NoCanary. Zero fields take DefaultBreaker's.
type Breaker struct {
	MinPods        int
	OrphanFraction float64
	// CanaryTimeout is how long a canary waits for a pod created on its node to show
	// something; after it another canary may be tried.
	CanaryTimeout time.Duration
	// NoCanary refuses a mass-orphaned node outright (the breaker of old).
	NoCanary bool
}

// DefaultBreaker: two broken pods out of at most four ambient ones is already "the node"
// (a node with few ambient pods is covered), and the canary makes tripping cheap.
var DefaultBreaker = Breaker{MinPods: 2, OrphanFraction: 0.5, CanaryTimeout: 10 * time.Minute}

func (b Breaker) withDefaults() Breaker {
	if b.MinPods <= 0 {
		b.MinPods = DefaultBreaker.MinPods
	}
	if b.OrphanFraction <= 0 {
		b.OrphanFraction = DefaultBreaker.OrphanFraction
	}
	if b.CanaryTimeout <= 0 {
		b.CanaryTimeout = DefaultBreaker.CanaryTimeout
	}
	return b
}

// mass reports whether the node is mass-orphaned, and says how.
func (b Breaker) mass(n NodeHealth) (bool, string) {
	b = b.withDefaults()
	if n.Orphaned >= b.MinPods && n.AmbientPods > 0 &&
		float64(n.Orphaned)/float64(n.AmbientPods) >= b.OrphanFraction {
		return true, fmt.Sprintf("%d of %d ambient pods orphaned at once (breaker at %d pods and %.0f%%)",
			n.Orphaned, n.AmbientPods, b.MinPods, b.OrphanFraction*100)
	}
	return false, ""
}

// Trips reports whether the breaker holds heals on a node in health n back from plain
// healing, and why: its ztunnel or istio-cni is not Ready (NodeStop), or it is
// mass-orphaned (NodeCanary, or NodeStop with NoCanary).
func (b Breaker) Trips(n NodeHealth) (bool, string) {
	if why := n.infraProblem(); why != "" {
		return true, why
	}
	return b.mass(n)
}

// Defaults for options not given.
const (
	DefaultBackoffBase = 5 * time.Minute
	DefaultBackoffMax  = 1 * time.Hour
	// DefaultPDBRetry is how long a pod whose eviction a PodDisruptionBudget refused is left
	// alone before it is tried again (no ledger writes meanwhile).
	DefaultPDBRetry = 2 * time.Minute
)

// Option configures a Healer.
type Option func(*options)

type options struct {
	dryRun      bool
	allowBare   bool
	budget      Budget
	backoffBase time.Duration
	backoffMax  time.Duration
	clock       clock.Clock
	log         logr.Logger
	events      EventSink
	breaker     Breaker
	ledger      Ledger
	limits      Limits
	instance    string
	notReady    time.Duration
	pdbRetry    time.Duration
}

// WithDryRun makes every strategy send its request with server-side dry run. Nothing is
// written to the ledger; its limits are applied to a copy, so a dry run predicts a real
// one.
func WithDryRun(dry bool) Option { return func(o *options) { o.dryRun = dry } }

// WithAllowBarePods lets destructive strategies act on pods without a controller owner.
func WithAllowBarePods(allow bool) Option { return func(o *options) { o.allowBare = allow } }

// WithBudget sets the per-call budgets, taken literally (see Budget).
func WithBudget(b Budget) Option { return func(o *options) { o.budget = b } }

// WithBackoff sets the per-controller exponential backoff: base after the first heal,
// doubling up to maxDelay (defaults 5m and 1h for non-positive values). Keyed by the
// controller owner's UID, else the pod's; a streak resets after 2*maxDelay without a heal.
// It lives in the Ledger, so with a LeaseLedger it holds across processes and restarts.
func WithBackoff(base, maxDelay time.Duration) Option {
	return func(o *options) { o.backoffBase, o.backoffMax = base, maxDelay }
}

// WithClock injects the clock used for backoff, limits and canaries.
func WithClock(c clock.Clock) Option { return func(o *options) { o.clock = c } }

// WithLogger sets the logger (default logr.Discard()).
func WithLogger(l logr.Logger) Option { return func(o *options) { o.log = l } }

// WithEvents sets where Events go (default: nowhere). A sink that also implements
// NodeEventSink gets the canary verdicts on the Node.
func WithEvents(s EventSink) Option { return func(o *options) { o.events = s } }

// WithBreaker sets the node breaker's thresholds.
func WithBreaker(b Breaker) Option { return func(o *options) { o.breaker = b } }

// WithLedger sets where backoff, the fleet-wide limits and canaries are kept (default: a
// MemoryLedger of this Healer only). Give every healer of a cluster the same LeaseLedger.
func WithLedger(l Ledger) Option { return func(o *options) { o.ledger = l } }

// WithLimits sets the fleet-wide limits (default DefaultLimits), taken literally except a
// non-positive Window (the default window).
func WithLimits(l Limits) Option { return func(o *options) { o.limits = l } }

// WithInstance names this healer in the ledger's records (e.g. "agent/node-a").
func WithInstance(name string) Option { return func(o *options) { o.instance = name } }

// WithNotReady lets Plan target pods that are not Ready once they have not been Ready for
// after (0: at once). Without it, not-Ready pods are left alone (a pod that is starting or
// failing for its own reasons is the classic false orphan), except those held back only
// by meshmedic's own readiness gate.
func WithNotReady(after time.Duration) Option { return func(o *options) { o.notReady = after } }

// WithPDBRetry sets how long a PDB-refused pod is left alone (default DefaultPDBRetry).
func WithPDBRetry(d time.Duration) Option { return func(o *options) { o.pdbRetry = d } }

// Healer plans and applies heals behind the shared safety rules: Plan turns a detection
// report into targets and node verdicts, Apply acts on a plan. Budgets reset on every
// Apply; backoff, the fleet-wide limits and canaries live in the Ledger. It is safe for
// concurrent use (calls are serialized).
type Healer struct {
	strategy Strategy
	o        options
	ledger   Ledger
	policy   backoffPolicy
	batchID  string

	mu       sync.Mutex
	batches  uint64
	pdbUntil map[types.UID]time.Time // pod UID → no eviction before (a PDB said no)
	told     map[types.UID]told      // the last refusal Event per pod
}

// told is the last refusal Event written about a pod: one Event per pod and cause.
type told struct {
	cause string
	at    time.Time
}

// NewHealer returns a Healer for s.
func NewHealer(s Strategy, opts ...Option) *Healer {
	o := options{clock: clock.RealClock{}, log: logr.Discard(), budget: DefaultBudget, limits: DefaultLimits,
		notReady: -1, pdbRetry: DefaultPDBRetry}
	for _, opt := range opts {
		opt(&o)
	}
	if o.backoffBase <= 0 {
		o.backoffBase = DefaultBackoffBase
	}
	if o.backoffMax <= 0 {
		o.backoffMax = DefaultBackoffMax
	}
	if o.backoffMax < o.backoffBase {
		o.backoffMax = o.backoffBase
	}
	if o.limits.Window <= 0 {
		o.limits.Window = DefaultLimits.Window
	}
	o.limits.ClusterMax = min(o.limits.ClusterMax, MaxLimit)
	o.limits.NamespaceMax = min(o.limits.NamespaceMax, MaxLimit)
	if o.clock == nil {
		o.clock = clock.RealClock{}
	}
	if o.pdbRetry <= 0 {
		o.pdbRetry = DefaultPDBRetry
	}
	ledger := o.ledger
	if ledger == nil {
		ledger = NewMemoryLedger()
	}
	var nonce [4]byte
	_, _ = rand.Read(nonce[:])
	instance := o.instance
	if instance == "" {
		instance = "healer"
	}
	return &Healer{strategy: s, o: o, ledger: ledger, policy: backoffPolicy{base: o.backoffBase, max: o.backoffMax},
		batchID: fmt.Sprintf("%s#%x", instance, nonce), pdbUntil: map[types.UID]time.Time{}, told: map[types.UID]told{}}
}

// Heal decides and acts on every target, in order, and returns one Action per target. It
// is Apply on a plan made of targets and node health the caller computed (nodes == nil
// disables the node checks; a node missing from a non-nil map is stopped: fail closed).
// Prefer Plan + Apply, which also re-reads pods, judges canaries from the node's pods and
// applies every planning rule.
func (h *Healer) Heal(ctx context.Context, targets []Target, nodes map[string]NodeHealth) []Action {
	plan := Plan{Targets: targets}
	if nodes != nil {
		h.mu.Lock()
		st, err := h.ledger.Load(ctx)
		h.mu.Unlock()
		plan.Nodes = map[string]NodeVerdict{}
		now := h.o.clock.Now()
		for _, t := range targets {
			if t.Pod == nil {
				continue
			}
			node := t.Pod.Spec.NodeName
			if _, ok := plan.Nodes[node]; ok {
				continue
			}
			v := NodeVerdict{Node: node, Mode: NodeStop}
			n, known := nodes[node]
			switch {
			case err != nil:
				v.Reason = err.Error()
			case !known:
				v.Reason = "no health known for the node (fail closed)"
			default:
				var rec *CanaryRecord
				if r, ok := st.Canaries[node]; ok {
					rec = &r
				}
				d := h.o.breaker.decide(now, NodeFacts{Health: n}, rec)
				v.Mode, v.Reason, v.Health, v.Canary = d.mode, d.reason, n, rec
			}
			plan.Nodes[node] = v
		}
	}
	return h.Apply(ctx, plan)
}

// Apply acts on a plan's targets, in order, and returns one Action per target. The rules,
// first match wins:
//
//  1. class not actionable → not-actionable (unknown is never healed);
//  2. the node's verdict (plan.Nodes; a nil map disables this rule, a node missing from a
//     non-nil map is stopped): stop → refused-node-breaker; wait, or a canary node whose
//     canary was already attempted in this call → waiting-for-canary;
//  3. destructive strategy: mirror pods always, pods without a controller owner unless
//     WithAllowBarePods → refused-bare-pod; drain-style exclusions (Excluded) →
//     refused-excluded. A pod annotated meshmedic.io/heal=never is refused by every
//     strategy;
//  4. a PodDisruptionBudget refused it less than the PDB retry ago → blocked-by-pdb, not
//     sent again;
//  5. its controller healed recently, by any healer sharing the ledger → skipped-backoff;
//  6. this call's budgets → skipped-budget;
//  7. the ledger (fleet-wide, atomic): backoff again, the cluster rate or the namespace
//     cap spent → skipped-budget; a canary started on the node by another healer →
//     waiting-for-canary; the ledger unreadable → failed (fail closed);
//  8. the strategy. On a canary node, the first target to get here is the canary.
//
// A blocked-by-pdb answer or an already-gone pod gives back what the ledger recorded (no
// budget spent, no backoff started, no canary). Dry runs apply every rule to a copy of the
// ledger and write nothing.
func (h *Healer) Apply(ctx context.Context, plan Plan) []Action {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.o.clock.Now()
	h.gc(now)
	h.batches++
	run := &runState{perNode: map[string]int{}, perNS: map[string]int{}, canaried: map[string]bool{},
		batch: fmt.Sprintf("%s.%d", h.batchID, h.batches)}
	if len(plan.Targets) > 0 {
		// One read for the whole call: backoff is reported before this call's budgets
		// (it is the more lasting reason), and a dry run applies the rules to this copy.
		st, err := h.ledger.Load(ctx)
		run.snap, run.snapErr = &st, err
		if h.o.dryRun {
			run.dry, run.dryErr = run.snap, err
		}
	}
	actions := make([]Action, 0, len(plan.Targets))
	for _, t := range plan.Targets {
		a, cause := h.applyOne(ctx, t, plan.Nodes, run)
		h.report(t, &a, cause)
		actions = append(actions, a)
	}
	return actions
}

type runState struct {
	total    int
	perNode  map[string]int
	perNS    map[string]int
	canaried map[string]bool // canary nodes whose canary was attempted in this call
	batch    string
	snap     *LedgerState // the ledger as this call began
	snapErr  error
	dry      *LedgerState // dry run: the ledger copy the rules are applied to (the snapshot)
	dryErr   error
}

func (h *Healer) applyOne(ctx context.Context, t Target, nodes map[string]NodeVerdict, run *runState) (Action, string) {
	a := Action{Class: t.Class, Strategy: h.strategy.Name()}
	if t.Pod == nil {
		a.Result, a.Err = ResultNotActionable, fmt.Errorf("target without a pod: %w", ErrUnknownNotHealed)
		a.Detail = a.Err.Error()
		return a, ""
	}
	p := t.Pod
	a.Namespace, a.Name, a.UID, a.Node = p.Namespace, p.Name, p.UID, p.Spec.NodeName
	ref := podRef(p)

	refuse := func(r Result, cause string, err error) (Action, string) {
		a.Result, a.Err, a.Detail = r, err, err.Error()
		return a, cause
	}

	// 1. Only broken pods are healed; unknown is never an orphan.
	if !t.Class.Actionable() {
		return refuse(ResultNotActionable, "", fmt.Errorf("pod %s: class %q: %w", ref, t.Class, ErrUnknownNotHealed))
	}
	// 2. The node's verdict.
	mode := NodeHeal
	var infra string
	var seen *CanaryRecord
	if nodes != nil {
		v, ok := nodes[p.Spec.NodeName]
		if !ok {
			v = NodeVerdict{Mode: NodeStop, Reason: "no verdict for the node (fail closed)"}
		}
		mode, infra, seen = v.Mode, v.Health.Infra, v.Canary
		switch {
		case v.Mode == NodeStop:
			return refuse(ResultRefusedNodeBreaker, "node:"+firstWords(v.Reason), fmt.Errorf("pod %s: node %q: %s: %w", ref, p.Spec.NodeName, v.Reason, ErrNodeBreaker))
		case v.Mode == NodeWait:
			return refuse(ResultWaitingForCanary, "canary", fmt.Errorf("pod %s: node %q: %s: %w", ref, p.Spec.NodeName, v.Reason, ErrCanaryPending))
		case v.Mode == NodeCanary && run.canaried[p.Spec.NodeName]:
			return refuse(ResultWaitingForCanary, "canary", fmt.Errorf("pod %s: node %q: %s; another pod of the node is its canary: %w", ref, p.Spec.NodeName, v.Reason, ErrCanaryPending))
		}
	}
	// 3. What the strategy may do to this pod.
	if p.Annotations[AnnotationHeal] == HealNever {
		return refuse(ResultRefusedExcluded, "opt-out", fmt.Errorf("pod %s: annotated %s=%s: %w", ref, AnnotationHeal, HealNever, ErrExcluded))
	}
	if destructive(h.strategy) {
		if _, mirror := p.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
			return refuse(ResultRefusedBarePod, "mirror", fmt.Errorf("pod %s: mirror (static) pod, the kubelet owns it: %w", ref, ErrBarePod))
		}
		if metav1.GetControllerOf(p) == nil && !h.o.allowBare {
			return refuse(ResultRefusedBarePod, "bare", fmt.Errorf("pod %s: it would not come back (allow bare pods explicitly to override): %w", ref, ErrBarePod))
		}
		if why := Excluded(p); why != "" {
			return refuse(ResultRefusedExcluded, "excluded:"+why, fmt.Errorf("pod %s: %s (annotate %s=%s to heal it anyway): %w", ref, why, AnnotationHeal, HealAllow, ErrExcluded))
		}
	}
	// 4. A PDB said no a moment ago.
	if until, ok := h.pdbUntil[p.UID]; ok && h.o.clock.Now().Before(until) {
		return refuse(ResultBlockedByPDB, "pdb", fmt.Errorf("pod %s: a PodDisruptionBudget refused its eviction; not tried again before %s: %w",
			ref, until.UTC().Format(time.RFC3339), ErrPDBBlocked))
	}
	// 5. Backoff, as the ledger stood when this call began (the reservation below checks
	// it again, atomically).
	key := backoffKey(p)
	if run.snapErr == nil && run.snap != nil {
		if b, ok := run.snap.Backoff[key]; ok && h.o.clock.Now().Before(b.Until) && b.Batch != run.batch {
			return refuse(ResultSkippedBackoff, "backoff", fmt.Errorf("pod %s: its controller's pods were healed %d time(s), last at %s; next attempt after %s: %w",
				ref, b.Attempts, b.Last.UTC().Format(time.RFC3339), b.Until.UTC().Format(time.RFC3339), ErrBackoff))
		}
	}
	// 6. This call's budgets.
	if cause, why := h.budgetSpent(run, p); why != "" {
		return refuse(ResultSkippedBudget, cause, fmt.Errorf("pod %s: %s: %w", ref, why, ErrBudgetExhausted))
	}
	if err := ctx.Err(); err != nil {
		return refuse(ResultFailed, "", fmt.Errorf("pod %s: not attempted: %w", ref, err))
	}
	// 7. The fleet-wide ledger.
	c := claim{rec: HealRecord{Namespace: p.Namespace, Name: p.Name, UID: p.UID, Node: p.Spec.NodeName,
		Key: key, By: h.o.instance}, batch: run.batch, mode: mode, infra: infra, seen: seen}
	if mode == NodeCanary {
		c.detail = "canary for node " + p.Spec.NodeName
	}
	res, result, err := h.reserve(ctx, c, run)
	if err != nil {
		cause := string(result)
		if errors.Is(err, ErrBudgetExhausted) {
			cause = "limit:" + firstWords(err.Error())
		}
		if result == "" {
			result, cause = ResultFailed, "ledger"
		}
		return refuse(result, cause, err)
	}
	if mode == NodeCanary {
		run.canaried[p.Spec.NodeName] = true
	}

	// 8. The strategy.
	sres, serr := h.strategy.Heal(ctx, t, h.o.dryRun)
	a.Result = sres
	switch {
	case sres.succeeded():
		// err, if any, explains a success (ErrAlreadyGone); Action.Err stays nil.
		if serr != nil {
			a.Detail = serr.Error()
		} else {
			a.Detail = successDetail(sres, ref, p.UID)
		}
		if mode == NodeCanary {
			a.Detail += " (canary for node " + p.Spec.NodeName + ")"
		}
	case sres == ResultNotActionable:
		if serr == nil {
			serr = fmt.Errorf("pod %s: %w", ref, ErrUnknownNotHealed)
		}
		a.Err, a.Detail = serr, serr.Error()
	case sres == ResultBlockedByPDB:
		if serr == nil {
			serr = fmt.Errorf("pod %s: %w", ref, ErrPDBBlocked)
		}
		a.Err, a.Detail = serr, serr.Error()
		if !h.o.dryRun {
			h.pdbUntil[p.UID] = h.o.clock.Now().Add(h.o.pdbRetry)
		}
	default:
		if serr == nil {
			serr = fmt.Errorf("pod %s: strategy %s returned %q", ref, h.strategy.Name(), sres)
		}
		if sres == "" {
			a.Result = ResultFailed
		}
		a.Err, a.Detail = serr, serr.Error()
	}

	// Budgets count what a real run would act on; already-gone pods and PDB blocks do not,
	// and give back what the ledger recorded. A canary that failed to act is no canary.
	acted := a.Result == ResultFailed || (a.Result.succeeded() && !errors.Is(serr, ErrAlreadyGone))
	if acted {
		run.total++
		run.perNode[p.Spec.NodeName]++
		run.perNS[p.Namespace]++
	}
	switch {
	case !acted:
		h.release(ctx, res, run, false)
		if mode == NodeCanary {
			run.canaried[p.Spec.NodeName] = false
		}
	case a.Result == ResultFailed && res.started:
		h.release(ctx, res, run, true)
		run.canaried[p.Spec.NodeName] = false
	}
	return a, ""
}

// reserve takes room for one heal in the ledger (or in the dry run's copy of it).
func (h *Healer) reserve(ctx context.Context, c claim, run *runState) (reservation, Result, error) {
	now := h.o.clock.Now()
	if run.dry != nil || run.dryErr != nil {
		if run.dryErr != nil {
			return reservation{}, "", run.dryErr
		}
		return run.dry.reserve(now, c, h.o.limits, h.policy)
	}
	var res reservation
	var refusal Result
	var refused error
	_, err := h.ledger.Update(ctx, func(s *LedgerState) error {
		res, refusal, refused = s.reserve(now, c, h.o.limits, h.policy)
		return refused
	})
	if refused != nil {
		return res, refusal, refused
	}
	if err != nil {
		return res, "", fmt.Errorf("pod %s/%s: not healed: %w", c.rec.Namespace, c.rec.Name, err)
	}
	return res, "", nil
}

// release gives back a reservation (canaryOnly: only its canary record). A failure to write
// is logged: the ledger then over-counts, which errs on the safe side.
func (h *Healer) release(ctx context.Context, r reservation, run *runState, canaryOnly bool) {
	undo := func(s *LedgerState) {
		if canaryOnly { // keep the heal record and the backoff
			if cr, ok := s.Canaries[r.rec.Node]; ok && r.started && cr.UID == r.rec.UID && cr.State == CanaryPending {
				delete(s.Canaries, r.rec.Node)
			}
			return
		}
		s.release(r)
	}
	if run.dry != nil {
		undo(run.dry)
		return
	}
	if _, err := h.ledger.Update(ctx, func(s *LedgerState) error { undo(s); return nil }); err != nil {
		h.o.log.Error(err, "giving back a heal reservation; the ledger over-counts one heal until it leaves the window",
			"pod", r.rec.Namespace+"/"+r.rec.Name)
	}
}

func (h *Healer) budgetSpent(run *runState, p *corev1.Pod) (string, string) {
	b := h.o.budget
	switch {
	case b.PerRun >= 0 && run.total >= b.PerRun:
		return "budget:run", fmt.Sprintf("per-run budget of %d spent", b.PerRun)
	case b.PerNode >= 0 && run.perNode[p.Spec.NodeName] >= b.PerNode:
		return "budget:node", fmt.Sprintf("per-node budget of %d spent on node %q", b.PerNode, p.Spec.NodeName)
	case b.PerNamespace >= 0 && run.perNS[p.Namespace] >= b.PerNamespace:
		return "budget:namespace", fmt.Sprintf("per-namespace budget of %d spent in namespace %q", b.PerNamespace, p.Namespace)
	}
	return "", ""
}

// firstWords keeps the part of a reason that names its cause, not its numbers, so that a
// refusal Event is written again when the cause changes, not when a count does.
func firstWords(s string) string {
	var out []string
	for _, w := range strings.Fields(s) {
		if strings.IndexFunc(w, func(r rune) bool { return r >= '0' && r <= '9' }) >= 0 {
			continue
		}
		out = append(out, w)
		if len(out) == 4 {
			break
		}
	}
	return strings.Join(out, " ")
}

// gc forgets per-pod memory of pods not heard of for a long time, so it stays bounded.
func (h *Healer) gc(now time.Time) {
	for uid, until := range h.pdbUntil {
		if now.After(until) {
			delete(h.pdbUntil, uid)
		}
	}
	for uid, t := range h.told {
		if now.Sub(t.at) > toldTTL {
			delete(h.told, uid)
		}
	}
}

// toldTTL: a refusal Event is repeated at most this often while its cause stays the same.
const toldTTL = 6 * time.Hour

func destructive(s Strategy) bool {
	if r, ok := s.(Replacer); ok {
		return r.ReplacesPod()
	}
	return true
}

func successDetail(r Result, ref string, uid types.UID) string {
	switch r {
	case ResultEvicted:
		return fmt.Sprintf("pod %s evicted; uid %s is gone", ref, uid)
	case ResultWouldEvict:
		return fmt.Sprintf("pod %s: server-side dry run accepted the eviction", ref)
	case ResultToggled:
		return fmt.Sprintf("pod %s: dataplane-mode label toggled and restored; capture confirmed", ref)
	case ResultWouldToggle:
		return fmt.Sprintf("pod %s: server-side dry run accepted the label patch", ref)
	case ResultDeleted:
		return fmt.Sprintf("pod %s (uid %s) deleted", ref, uid)
	case ResultWouldDelete:
		return fmt.Sprintf("pod %s: server-side dry run accepted the delete", ref)
	}
	return string(r)
}

// report logs the action and sends its Event: every action, and one Event per pod and
// refusal cause until the cause changes.
func (h *Healer) report(t Target, a *Action, cause string) {
	log := h.o.log.WithValues("pod", a.Namespace+"/"+a.Name, "uid", a.UID, "node", a.Node,
		"class", a.Class, "strategy", a.Strategy, "result", a.Result, "dryRun", h.o.dryRun)
	switch a.Result {
	case ResultFailed:
		log.Error(a.Err, "heal failed")
	case ResultEvicted, ResultToggled, ResultDeleted:
		log.Info("healed", "detail", a.Detail)
	default:
		log.V(1).Info("heal decision", "detail", a.Detail)
	}

	if h.o.events == nil || t.Pod == nil || a.Result == ResultNotActionable {
		return
	}
	if cause != "" {
		key := string(a.Result) + "|" + cause
		if prev, ok := h.told[a.UID]; ok && prev.cause == key {
			return
		}
		h.told[a.UID] = told{cause: key, at: h.o.clock.Now()}
	} else {
		delete(h.told, a.UID)
	}
	eventType, reason := eventFor(a.Result)
	h.o.events.Event(t.Pod, eventType, reason, eventMessage(t, a, h.o.dryRun))
}

func podRef(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }
