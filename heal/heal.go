package heal

import (
	"context"
	"errors"
	"fmt"
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
	// ResultSkippedBudget: a per-run, per-node or per-namespace budget was spent.
	ResultSkippedBudget Result = "skipped-budget"
	// ResultSkippedBackoff: the pod's backoff key was healed recently.
	ResultSkippedBackoff Result = "skipped-backoff"
	// ResultRefusedNodeBreaker: the node's ztunnel is not Ready, or too many of the
	// node's ambient pods are orphaned: the node is the cause, restarting pods cannot help.
	ResultRefusedNodeBreaker Result = "refused-node-breaker"
	// ResultNotActionable: the class is not one that is healed (unknown, skipped,
	// captured, ...), or the pod was already gone in a dry run. Nothing was sent.
	ResultNotActionable Result = "not-actionable"
	// ResultFailed: the strategy ran and did not succeed; Detail and Action.Err say why.
	ResultFailed Result = "failed"
)

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
	AmbientPods int
	// Orphaned is how many of them are broken (orphaned, partial, netns-replaced, ...).
	Orphaned int
	// ZtunnelReady is true when the node's ztunnel pod is Ready.
	ZtunnelReady bool
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

// Budget bounds how many pods one Heal call acts on. A zero field takes the default
// (PerRun 5, PerNode 2, PerNamespace 3); a negative field means unlimited.
type Budget struct {
	PerRun       int
	PerNode      int
	PerNamespace int
}

// defaultBudget applies field by field where a Budget field is zero.
var defaultBudget = Budget{PerRun: 5, PerNode: 2, PerNamespace: 3}

// Breaker is the node circuit breaker. A zero field takes its default
// (MinPods 3, OrphanFraction 0.5).
type Breaker struct {
	MinPods        int
	OrphanFraction float64
}

// Defaults for options not given.
const (
	DefaultBackoffBase = 5 * time.Minute
	DefaultBackoffMax  = 1 * time.Hour
	defaultMinPods     = 3
	defaultFraction    = 0.5
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
}

// WithDryRun makes every strategy send its request with server-side dry run.
func WithDryRun(dry bool) Option { return func(o *options) { o.dryRun = dry } }

// WithAllowBarePods lets destructive strategies act on pods without a controller owner.
func WithAllowBarePods(allow bool) Option { return func(o *options) { o.allowBare = allow } }

// WithBudget sets the per-call budgets (see Budget for zero and negative values).
func WithBudget(b Budget) Option { return func(o *options) { o.budget = b } }

// WithBackoff sets the per-pod exponential backoff: base after the first heal, doubling
// up to maxDelay (defaults 5m and 1h for non-positive values). Keyed by the controller
// owner's UID, else the pod's; a streak resets after 2*maxDelay without a heal.
func WithBackoff(base, maxDelay time.Duration) Option {
	return func(o *options) { o.backoffBase, o.backoffMax = base, maxDelay }
}

// WithClock injects the clock used for backoff.
func WithClock(c clock.Clock) Option { return func(o *options) { o.clock = c } }

// WithLogger sets the logger (default logr.Discard()).
func WithLogger(l logr.Logger) Option { return func(o *options) { o.log = l } }

// WithEvents sets where Events go (default: nowhere).
func WithEvents(s EventSink) Option { return func(o *options) { o.events = s } }

// WithBreaker sets the node circuit breaker thresholds.
func WithBreaker(b Breaker) Option { return func(o *options) { o.breaker = b } }

// Healer applies one Strategy to targets behind the shared safety rules. It keeps backoff
// state across Heal calls; budgets reset on every call. It is safe for concurrent use
// (calls are serialized).
type Healer struct {
	strategy Strategy
	o        options

	mu      sync.Mutex
	backoff map[types.UID]*backoffEntry
}

// NewHealer returns a Healer for s.
func NewHealer(s Strategy, opts ...Option) *Healer {
	o := options{clock: clock.RealClock{}, log: logr.Discard()}
	for _, opt := range opts {
		opt(&o)
	}
	o.budget = withDefaults(o.budget)
	if o.backoffBase <= 0 {
		o.backoffBase = DefaultBackoffBase
	}
	if o.backoffMax <= 0 {
		o.backoffMax = DefaultBackoffMax
	}
	if o.backoffMax < o.backoffBase {
		o.backoffMax = o.backoffBase
	}
	if o.clock == nil {
		o.clock = clock.RealClock{}
	}
	return &Healer{strategy: s, o: o, backoff: map[types.UID]*backoffEntry{}}
}

func withDefaults(b Budget) Budget {
	if b.PerRun == 0 {
		b.PerRun = defaultBudget.PerRun
	}
	if b.PerNode == 0 {
		b.PerNode = defaultBudget.PerNode
	}
	if b.PerNamespace == 0 {
		b.PerNamespace = defaultBudget.PerNamespace
	}
	return b
}

// Heal decides and acts on every target, in order, and returns one Action per target.
// The rules, first match wins:
//
//  1. class not actionable → not-actionable (unknown is never healed);
//  2. node breaker open → refused-node-breaker (nodes == nil disables the breaker; a
//     node missing from a non-nil map counts as unhealthy: fail closed);
//  3. destructive strategy and no controller owner → refused-bare-pod, unless
//     WithAllowBarePods; mirror (static) pods are always refused;
//  4. backoff key healed recently → skipped-backoff;
//  5. a budget spent → skipped-budget;
//  6. the strategy.
//
// A blocked-by-pdb answer does not consume a budget and does not start the backoff.
// Dry runs consume budgets (so a dry run predicts the real run) but never start backoff.
func (h *Healer) Heal(ctx context.Context, targets []Target, nodes map[string]NodeHealth) []Action {
	h.mu.Lock()
	defer h.mu.Unlock()

	now := h.o.clock.Now()
	h.gcBackoff(now)
	run := &runState{perNode: map[string]int{}, perNS: map[string]int{}, healedKeys: map[types.UID]bool{}}
	actions := make([]Action, 0, len(targets))
	for _, t := range targets {
		a := h.healOne(ctx, t, nodes, run)
		h.report(t, &a)
		actions = append(actions, a)
	}
	return actions
}

type runState struct {
	total      int
	perNode    map[string]int
	perNS      map[string]int
	healedKeys map[types.UID]bool // backoff keys healed in this call (siblings are not blocked by them)
}

func (h *Healer) healOne(ctx context.Context, t Target, nodes map[string]NodeHealth, run *runState) Action {
	a := Action{Class: t.Class, Strategy: h.strategy.Name()}
	if t.Pod == nil {
		a.Result, a.Err = ResultNotActionable, fmt.Errorf("target without a pod: %w", ErrUnknownNotHealed)
		a.Detail = a.Err.Error()
		return a
	}
	p := t.Pod
	a.Namespace, a.Name, a.UID, a.Node = p.Namespace, p.Name, p.UID, p.Spec.NodeName
	ref := podRef(p)

	refuse := func(r Result, err error) Action {
		a.Result, a.Err, a.Detail = r, err, err.Error()
		return a
	}

	// 1. Only broken pods are healed; unknown is never an orphan.
	if !t.Class.Actionable() {
		return refuse(ResultNotActionable, fmt.Errorf("pod %s: class %q: %w", ref, t.Class, ErrUnknownNotHealed))
	}
	// 2. Node circuit breaker.
	if nodes != nil {
		if open, why := h.o.breaker.open(nodes, p.Spec.NodeName); open {
			return refuse(ResultRefusedNodeBreaker, fmt.Errorf("pod %s: node %q: %s: %w", ref, p.Spec.NodeName, why, ErrNodeBreaker))
		}
	}
	// 3. Bare and mirror pods would not come back from a destructive heal.
	if destructive(h.strategy) {
		if _, mirror := p.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
			return refuse(ResultRefusedBarePod, fmt.Errorf("pod %s: mirror (static) pod, the kubelet owns it: %w", ref, ErrBarePod))
		}
		if metav1.GetControllerOf(p) == nil && !h.o.allowBare {
			return refuse(ResultRefusedBarePod, fmt.Errorf("pod %s: it would not come back (allow bare pods explicitly to override): %w", ref, ErrBarePod))
		}
	}
	// 4. Backoff across runs.
	key := backoffKey(p)
	if !run.healedKeys[key] {
		if e, ok := h.backoff[key]; ok && h.o.clock.Now().Before(e.until) {
			err := fmt.Errorf("pod %s: healed %d time(s), next attempt after %s: %w",
				ref, e.attempts, e.until.UTC().Format(time.RFC3339), ErrBackoff)
			return refuse(ResultSkippedBackoff, err)
		}
	}
	// 5. Budgets for this call.
	if why := h.budgetSpent(run, p); why != "" {
		return refuse(ResultSkippedBudget, fmt.Errorf("pod %s: %s: %w", ref, why, ErrBudgetExhausted))
	}
	if err := ctx.Err(); err != nil {
		return refuse(ResultFailed, fmt.Errorf("pod %s: not attempted: %w", ref, err))
	}

	// 6. The strategy.
	res, err := h.strategy.Heal(ctx, t, h.o.dryRun)
	a.Result = res
	switch {
	case res.succeeded():
		// err, if any, explains a success (ErrAlreadyGone); Action.Err stays nil.
		if err != nil {
			a.Detail = err.Error()
		} else {
			a.Detail = successDetail(res, ref, p.UID)
		}
	case res == ResultNotActionable:
		if err == nil {
			err = fmt.Errorf("pod %s: %w", ref, ErrUnknownNotHealed)
		}
		a.Err, a.Detail = err, err.Error()
	case res == ResultBlockedByPDB:
		if err == nil {
			err = fmt.Errorf("pod %s: %w", ref, ErrPDBBlocked)
		}
		a.Err, a.Detail = err, err.Error()
	default:
		if err == nil {
			err = fmt.Errorf("pod %s: strategy %s returned %q", ref, h.strategy.Name(), res)
		}
		if res == "" {
			a.Result = ResultFailed
		}
		a.Err, a.Detail = err, err.Error()
	}

	// Budgets count what a real run would act on; already-gone pods and PDB blocks do not.
	acted := a.Result == ResultFailed || (a.Result.succeeded() && !errors.Is(err, ErrAlreadyGone))
	if acted {
		run.total++
		run.perNode[p.Spec.NodeName]++
		run.perNS[p.Namespace]++
	}
	if acted && !h.o.dryRun {
		h.recordBackoff(key, h.o.clock.Now())
		run.healedKeys[key] = true
	}
	return a
}

func (h *Healer) budgetSpent(run *runState, p *corev1.Pod) string {
	b := h.o.budget
	switch {
	case b.PerRun >= 0 && run.total >= b.PerRun:
		return fmt.Sprintf("per-run budget of %d spent", b.PerRun)
	case b.PerNode >= 0 && run.perNode[p.Spec.NodeName] >= b.PerNode:
		return fmt.Sprintf("per-node budget of %d spent on node %q", b.PerNode, p.Spec.NodeName)
	case b.PerNamespace >= 0 && run.perNS[p.Namespace] >= b.PerNamespace:
		return fmt.Sprintf("per-namespace budget of %d spent in namespace %q", b.PerNamespace, p.Namespace)
	}
	return ""
}

func (b Breaker) open(nodes map[string]NodeHealth, node string) (bool, string) {
	n, ok := nodes[node]
	if !ok {
		return true, "no health known for the node (fail closed)"
	}
	return b.Trips(n)
}

// Trips reports whether the breaker refuses heals on a node in health n, and why: ztunnel
// not Ready, or at least MinPods ambient pods and OrphanFraction of them orphaned at once
// (a node-level fault that evicting pods would not fix). Zero fields take their defaults.
func (b Breaker) Trips(n NodeHealth) (bool, string) {
	if b.MinPods <= 0 {
		b.MinPods = defaultMinPods
	}
	if b.OrphanFraction <= 0 {
		b.OrphanFraction = defaultFraction
	}
	if !n.ZtunnelReady {
		return true, "ztunnel is not Ready"
	}
	if n.Orphaned >= b.MinPods && n.AmbientPods > 0 &&
		float64(n.Orphaned)/float64(n.AmbientPods) >= b.OrphanFraction {
		return true, fmt.Sprintf("%d of %d ambient pods orphaned (breaker at %d pods and %.0f%%)",
			n.Orphaned, n.AmbientPods, b.MinPods, b.OrphanFraction*100)
	}
	return false, ""
}

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

// report logs the action and sends its Event.
func (h *Healer) report(t Target, a *Action) {
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
	if a.Result == ResultSkippedBackoff {
		// One Event per backoff window, not one per sweep.
		e := h.backoff[backoffKey(t.Pod)]
		if e == nil || e.notified {
			return
		}
		e.notified = true
	}
	eventType, reason := eventFor(a.Result)
	h.o.events.Event(t.Pod, eventType, reason, eventMessage(t, a, h.o.dryRun))
}

func podRef(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }
