package heal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/enroll"
)

// NodeMode is the planner's verdict on one node.
type NodeMode string

const (
	// NodeHeal: heal the node's confirmed findings under the budgets and limits.
	NodeHeal NodeMode = "heal"
	// NodeCanary: many of the node's ambient pods are broken at once while its ztunnel and
	// istio-cni are Ready. One pod is healed first; the rest wait for what a pod created
	// after it shows (see CanaryState).
	NodeCanary NodeMode = "canary"
	// NodeWait: the node's canary is in flight; nothing else there is healed until it is
	// judged.
	NodeWait NodeMode = "wait"
	// NodeStop: nothing on the node is healed: its ztunnel or istio-cni is not Ready or not
	// found, its canary came back broken, or nothing is known about it. The node, not its
	// pods, needs a person (docs/operations.md, "The node breaker and the canary").
	NodeStop NodeMode = "stop"
)

// NodeVerdict is the planner's decision about one node, with what it was based on.
type NodeVerdict struct {
	Node   string     `json:"node"`
	Mode   NodeMode   `json:"mode"`
	Reason string     `json:"reason,omitempty"`
	Health NodeHealth `json:"health"`
	// Canary is the node's canary record in the ledger, when it has one.
	Canary *CanaryRecord `json:"canary,omitempty"`
}

// PodFact is what is known of one pod on a node: the canary's evidence and the breaker's
// counts come from these.
type PodFact struct {
	Namespace string       `json:"namespace"`
	Name      string       `json:"name"`
	UID       types.UID    `json:"uid"`
	Created   time.Time    `json:"created"`
	Class     detect.Class `json:"class"`
	Confirmed bool         `json:"confirmed"`
}

// NodeFacts is what a FactsSource knows about one node: its health (counts over *every*
// ambient pod of the node, not only the ones a caller scanned; its ztunnel and istio-cni
// pods) and the latest verdict on each of its pods.
type NodeFacts struct {
	Health NodeHealth
	Pods   []PodFact
}

// FactsSource tells the planner about a node. The agent answers from its own state; the CLI
// and controllers use ScanFacts (it scans the node's pods it has no finding for). An error
// stops the node (fail closed).
type FactsSource interface {
	NodeFacts(ctx context.Context, node string) (NodeFacts, error)
}

// FactsFunc adapts a function to FactsSource.
type FactsFunc func(ctx context.Context, node string) (NodeFacts, error)

// NodeFacts implements FactsSource.
func (f FactsFunc) NodeFacts(ctx context.Context, node string) (NodeFacts, error) {
	return f(ctx, node)
}

// PodGetter re-reads a pod just before it is planned for healing ("gone" means the UID
// changed, as kubectl drain decides). A NotFound error means gone.
type PodGetter interface {
	GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
}

// PodGetterFunc adapts a function to PodGetter.
type PodGetterFunc func(ctx context.Context, namespace, name string) (*corev1.Pod, error)

// GetPod implements PodGetter.
func (f PodGetterFunc) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	return f(ctx, namespace, name)
}

// PodsFromClient is a PodGetter over the API (one GET per planned pod).
func PodsFromClient(pods corev1client.PodsGetter) PodGetter {
	return PodGetterFunc(func(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
		return pods.Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	})
}

// Plan is what the planner decided for one report: the pods to heal, the findings it left
// out and why, each node's verdict, and the canary verdicts it reached.
type Plan struct {
	Targets []Target
	// Dropped are actionable findings that are not targets: not confirmed yet, gone or
	// replaced, being deleted, or not Ready. They get no Event and no Action.
	Dropped []Dropped
	// Nodes has a verdict for every node that holds a target or a dropped finding.
	Nodes map[string]NodeVerdict
	// Canaries are the canary verdicts reached while planning (a canary judged passed or
	// failed), each recorded in the ledger by this planner and reported by it once.
	Canaries []CanaryChange
}

// Dropped is an actionable finding the planner did not make a target.
type Dropped struct {
	Namespace string       `json:"namespace"`
	Name      string       `json:"name"`
	UID       types.UID    `json:"uid"`
	Class     detect.Class `json:"class"`
	Why       string       `json:"why"`
}

// CanaryChange is a node's canary judged while planning.
type CanaryChange struct {
	Node   string       `json:"node"`
	Record CanaryRecord `json:"record"`
}

// Why a finding is dropped (Dropped.Why).
const (
	DropUnconfirmed = "not confirmed by the flap guard yet"
	DropGone        = "gone or replaced since it was checked"
	DropTerminating = "being deleted"
	DropNotReady    = "not Ready"
)

// Plan turns a detection report into targets: every rule between "a finding" and "a heal"
// lives here, once, for the agent, `meshmedic repair` and every embedder.
//
//  1. Only confirmed, actionable findings (detect.Engine.Settle or Confirm) are considered;
//     unknown is never healed.
//  2. Each is re-read with pods: gone, replaced (another UID) or being deleted → dropped.
//  3. A pod that is not Ready is dropped unless it is held back only by meshmedic's own
//     readiness gate, or WithNotReady allows it (after its grace).
//  4. Every node holding one gets a verdict from facts and the ledger (see NodeMode): its
//     ztunnel and istio-cni must be Ready and found; mass orphaning gets a canary instead of
//     a wall; a canary in flight is judged from the pods created on the node after it.
//
// What the strategy may do to the pod itself (bare and mirror pods, drain-style exclusions,
// backoff, budgets, the fleet-wide limits) is decided by Apply, which knows the strategy. An
// error means the ledger could not be read: nothing may be healed then.
func (h *Healer) Plan(ctx context.Context, rep detect.Report, pods PodGetter, facts FactsSource) (Plan, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.o.clock.Now()
	plan := Plan{Nodes: map[string]NodeVerdict{}}

	var considered []detect.Finding
	for _, f := range rep.Findings {
		if !f.Actionable() {
			continue
		}
		if !f.Confirmed {
			plan.Dropped = append(plan.Dropped, dropped(f, DropUnconfirmed))
			continue
		}
		considered = append(considered, f)
	}
	if len(considered) == 0 {
		return plan, nil
	}

	st, err := h.ledger.Load(ctx)
	if err != nil {
		return plan, err
	}
	for _, f := range considered {
		if _, ok := plan.Nodes[f.Node]; ok {
			continue
		}
		v, change, err := h.judgeNode(ctx, now, f.Node, facts, st)
		if err != nil {
			return plan, err
		}
		plan.Nodes[f.Node] = v
		if change != nil {
			plan.Canaries = append(plan.Canaries, *change)
		}
	}

	for _, f := range considered {
		pod, err := pods.GetPod(ctx, f.Namespace, f.Name)
		switch {
		case apierrors.IsNotFound(err) || (err == nil && pod.UID != f.UID):
			plan.Dropped = append(plan.Dropped, dropped(f, DropGone))
			continue
		case err != nil:
			return plan, fmt.Errorf("pod %s: get: %w", f.Key(), err)
		case pod.DeletionTimestamp != nil:
			plan.Dropped = append(plan.Dropped, dropped(f, DropTerminating))
			continue
		}
		if ok, why := h.readyEnough(f, pod); !ok {
			plan.Dropped = append(plan.Dropped, dropped(f, why))
			continue
		}
		plan.Targets = append(plan.Targets, Target{Pod: pod, Class: f.Class, Detail: f.Detail})
	}
	return plan, nil
}

func dropped(f detect.Finding, why string) Dropped {
	return Dropped{Namespace: f.Namespace, Name: f.Name, UID: f.UID, Class: f.Class, Why: why}
}

// readyEnough is rule 3 of Plan.
func (h *Healer) readyEnough(f detect.Finding, pod *corev1.Pod) (bool, string) {
	if PodReady(pod) || GatedByMeshmedic(pod) {
		return true, ""
	}
	if h.o.notReady < 0 {
		return false, DropNotReady
	}
	if notReady := time.Duration(f.NotReadyFor); notReady < h.o.notReady {
		return false, fmt.Sprintf("%s for %s (healed after %s)", DropNotReady, notReady.Truncate(time.Second), h.o.notReady)
	}
	return true, ""
}

// GatedByMeshmedic reports whether a pod is not Ready only because of meshmedic's own
// condition: it opted in to fail closed with a readinessGate on
// meshmedic.io/AmbientCaptured and its containers are ready. Such a pod counts as Ready — it
// went NotReady because it is orphaned, which is what healing fixes.
func GatedByMeshmedic(p *corev1.Pod) bool {
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

// judgeNode decides a node's mode, recording a canary verdict in the ledger when one is
// reached (not in a dry run).
func (h *Healer) judgeNode(ctx context.Context, now time.Time, node string, facts FactsSource, st LedgerState) (NodeVerdict, *CanaryChange, error) {
	v := NodeVerdict{Node: node}
	if node == "" {
		v.Mode, v.Reason = NodeStop, "the pod is not bound to a node"
		return v, nil, nil
	}
	if facts == nil {
		v.Mode, v.Reason = NodeStop, "nothing is known about the node (no facts source): fail closed"
		return v, nil, nil
	}
	nf, err := facts.NodeFacts(ctx, node)
	if err != nil {
		if ctx.Err() != nil {
			return v, nil, ctx.Err()
		}
		v.Mode, v.Reason = NodeStop, "node facts unavailable (fail closed): "+err.Error()
		return v, nil, nil
	}
	v.Health = nf.Health
	var rec *CanaryRecord
	if r, ok := st.Canaries[node]; ok {
		rec = &r
	}
	d := h.o.breaker.decide(now, nf, rec)
	v.Mode, v.Reason, v.Canary = d.mode, d.reason, rec
	if d.judged == nil {
		return v, nil, nil
	}
	// A canary verdict: record it where every healer sees it, unless another healer got
	// there first (then its verdict stands and it reports it).
	judged := *d.judged
	change := &CanaryChange{Node: node, Record: judged}
	if h.o.dryRun {
		v.Canary = &judged
		return v, change, nil
	}
	var won bool
	_, err = h.ledger.Update(ctx, func(s *LedgerState) error {
		cur, ok := s.Canaries[node]
		if !ok || cur.UID != rec.UID || !cur.Started.Equal(rec.Started) || cur.State != CanaryPending {
			return ErrNoChange
		}
		s.Canaries[node] = judged
		won = true
		return nil
	})
	if err != nil {
		return v, nil, err
	}
	v.Canary = &judged
	if !won {
		return v, nil, nil
	}
	h.nodeEvent(node, judged)
	return v, change, nil
}

// nodeDecision is Breaker.decide's answer.
type nodeDecision struct {
	mode   NodeMode
	reason string
	judged *CanaryRecord // a pending canary just judged passed or failed
}

// decide is the node verdict (see NodeMode), given the node's facts and its canary record.
func (b Breaker) decide(now time.Time, nf NodeFacts, rec *CanaryRecord) nodeDecision {
	b = b.withDefaults()
	h := nf.Health
	if why := h.infraProblem(); why != "" {
		return nodeDecision{mode: NodeStop, reason: why}
	}
	massOrphaned, why := b.mass(h)
	if rec != nil && rec.State == CanaryPending {
		// Judge the canary in flight, whether or not the node still looks mass-orphaned.
		if j := judgeCanary(now, *rec, nf.Pods); j != nil {
			if j.State == CanaryFailed {
				return nodeDecision{mode: NodeStop, reason: canaryFailedReason(*j), judged: j}
			}
			if !massOrphaned {
				return nodeDecision{mode: NodeHeal, judged: j}
			}
			return nodeDecision{mode: NodeHeal, reason: "canary passed: " + j.Detail, judged: j}
		}
		if now.Sub(rec.Started) < b.CanaryTimeout {
			return nodeDecision{mode: NodeWait, reason: fmt.Sprintf("canary %s healed at %s; waiting for a pod created on the node since to show whether it enrolls pods (at most until %s)",
				rec.Pod, rec.Started.UTC().Format(time.RFC3339), rec.Started.Add(b.CanaryTimeout).UTC().Format(time.RFC3339))}
		}
		// Inconclusive (no pod was created on the node since: the replacement went
		// elsewhere): another canary may be tried.
		if massOrphaned {
			return nodeDecision{mode: NodeCanary, reason: why + "; the previous canary (" + rec.Pod + ") showed nothing within " + b.CanaryTimeout.String()}
		}
		return nodeDecision{mode: NodeHeal}
	}
	if !massOrphaned {
		return nodeDecision{mode: NodeHeal}
	}
	if b.NoCanary {
		return nodeDecision{mode: NodeStop, reason: why + " (canary disabled)"}
	}
	if rec != nil {
		switch rec.State {
		case CanaryPassed:
			return nodeDecision{mode: NodeHeal, reason: "canary passed at " + rec.Decided.UTC().Format(time.RFC3339) + ": " + rec.Detail}
		case CanaryFailed:
			if rec.Infra == h.Infra {
				return nodeDecision{mode: NodeStop, reason: canaryFailedReason(*rec)}
			}
			return nodeDecision{mode: NodeCanary, reason: why + "; the node's ztunnel or istio-cni pod changed since the last canary failed"}
		}
	}
	return nodeDecision{mode: NodeCanary, reason: why}
}

func canaryFailedReason(r CanaryRecord) string {
	return "canary " + r.Pod + " healed, and a pod created on the node since came back broken: " + r.Detail +
		"; the node does not enroll pods (restart its istio-cni pod, then meshmedic retries)"
}

// canarySkew is how much earlier than the canary's start a pod may have been created and
// still count as its evidence: the API server's clock stamps creation, the healer's clock
// stamps the canary.
const canarySkew = 5 * time.Second

// judgeCanary returns the pending canary judged, or nil while there is no evidence: a pod
// of the node (not the canary itself) created since the canary that is captured passes it;
// one confirmed broken fails it (a failure wins over a pass: the node does not enroll every
// new pod).
func judgeCanary(now time.Time, rec CanaryRecord, pods []PodFact) *CanaryRecord {
	var pass, fail *PodFact
	for i := range pods {
		p := &pods[i]
		if p.UID == rec.UID || p.Created.Before(rec.Started.Add(-canarySkew)) {
			continue
		}
		switch {
		case p.Class.Actionable() && p.Confirmed:
			if fail == nil {
				fail = p
			}
		case p.Class == detect.ClassCaptured:
			if pass == nil {
				pass = p
			}
		}
	}
	out := rec
	out.Decided = now
	switch {
	case fail != nil:
		out.State = CanaryFailed
		out.Detail = fmt.Sprintf("pod %s/%s (created %s) is %s", fail.Namespace, fail.Name, fail.Created.UTC().Format(time.RFC3339), fail.Class)
	case pass != nil:
		out.State = CanaryPassed
		out.Detail = fmt.Sprintf("pod %s/%s (created %s) is captured", pass.Namespace, pass.Name, pass.Created.UTC().Format(time.RFC3339))
	default:
		return nil
	}
	return &out
}

// nodeEvent reports a canary verdict on the Node, when the EventSink can.
func (h *Healer) nodeEvent(node string, r CanaryRecord) {
	ns, ok := h.o.events.(NodeEventSink)
	if !ok {
		return
	}
	switch r.State {
	case CanaryPassed:
		ns.NodeEvent(node, corev1.EventTypeNormal, ReasonCanaryPassed,
			"canary "+r.Pod+" passed ("+r.Detail+"): the node enrolls pods again; its other orphans are healed under the limits")
	case CanaryFailed:
		ns.NodeEvent(node, corev1.EventTypeWarning, ReasonCanaryFailed, canaryFailedReason(r))
	}
}

// NodeFactsOf builds a node's facts from the pods on it (all namespaces) and the latest
// finding known for each, by UID: the node's ztunnel and istio-cni pods (only those in a
// namespace infraNS accepts count), the breaker's counts over every ambient pod with a
// finding, and the canary's evidence.
func NodeFactsOf(pods []*corev1.Pod, latest map[types.UID]detect.Finding, infraNS func(namespace string) bool) NodeFacts {
	var nf NodeFacts
	nf.Health.SetInfra(pods, infraNS)
	for _, p := range pods {
		f, ok := latest[p.UID]
		if !ok || f.Class == detect.ClassSkipped {
			continue
		}
		nf.Health.Count(f.Class)
		nf.Pods = append(nf.Pods, PodFact{Namespace: p.Namespace, Name: p.Name, UID: p.UID,
			Created: p.CreationTimestamp.Time, Class: f.Class, Confirmed: f.Confirmed})
	}
	return nf
}

// SetInfra records the node's ztunnel and istio-cni pods among pods (those in a namespace
// infraNS accepts; nil accepts every namespace): Ready when at least one of each kind is
// Ready, and a fingerprint of them (UIDs and restart counts) that changes when either
// restarts or is replaced.
func (h *NodeHealth) SetInfra(pods []*corev1.Pod, infraNS func(namespace string) bool) {
	var zt, cni []string
	h.ZtunnelReady, h.IstioCNIReady = false, false
	h.ZtunnelFound, h.IstioCNIFound = false, false
	for _, p := range pods {
		if infraNS != nil && !infraNS(p.Namespace) {
			continue
		}
		fp := string(p.UID) + ":" + strconv.Itoa(int(restartCount(p)))
		switch {
		case enroll.IsZtunnelPod(p):
			h.ZtunnelFound = true
			h.ZtunnelReady = h.ZtunnelReady || PodReady(p)
			zt = append(zt, fp)
		case enroll.IsIstioCNIPod(p):
			h.IstioCNIFound = true
			h.IstioCNIReady = h.IstioCNIReady || PodReady(p)
			cni = append(cni, fp)
		}
	}
	slices.Sort(zt)
	slices.Sort(cni)
	h.Infra = "ztunnel=" + strings.Join(zt, ",") + ";istio-cni=" + strings.Join(cni, ",")
}

func restartCount(p *corev1.Pod) int32 {
	var n int32
	for _, c := range p.Status.ContainerStatuses {
		n += c.RestartCount
	}
	return n
}

// infraProblem says why the node's infrastructure forbids heals ("" when it does not).
func (h NodeHealth) infraProblem() string {
	switch {
	case !h.ZtunnelReady && !h.ZtunnelFound && h.knowsInfra():
		return "no ztunnel pod found on the node"
	case !h.ZtunnelReady:
		return "ztunnel is not Ready"
	case !h.IstioCNIReady && !h.IstioCNIFound && h.knowsInfra():
		return "no istio-cni pod found on the node"
	case !h.IstioCNIReady:
		return "istio-cni is not Ready"
	}
	return ""
}

// knowsInfra: the health was built by SetInfra (hand-made NodeHealth values do not say
// whether a pod was found).
func (h NodeHealth) knowsInfra() bool { return h.Infra != "" }

// ScanFacts is a FactsSource that judges a node by every pod on it, not only the ones a
// caller happened to scan: it lists the node's pods, takes the findings it already has
// (Known), and scans the others with Scan. The CLI and controllers use it.
type ScanFacts struct {
	// List returns every pod bound to node, all namespaces.
	List func(ctx context.Context, node string) ([]corev1.Pod, error)
	// Scan classifies pods (e.g. a detect.Engine's ScanPods, settled).
	Scan func(ctx context.Context, pods []corev1.Pod) (detect.Report, error)
	// Known are findings already made; their pods are not scanned again.
	Known []detect.Finding
	// InfraNamespace accepts the namespaces whose ztunnel and istio-cni pods count (nil:
	// any namespace).
	InfraNamespace func(namespace string) bool
}

// NodeFacts implements FactsSource.
func (s ScanFacts) NodeFacts(ctx context.Context, node string) (NodeFacts, error) {
	if s.List == nil || s.Scan == nil {
		return NodeFacts{}, errors.New("ScanFacts: List and Scan are required")
	}
	pods, err := s.List(ctx, node)
	if err != nil {
		return NodeFacts{}, fmt.Errorf("node %s: list pods: %w", node, err)
	}
	latest := map[types.UID]detect.Finding{}
	for _, f := range s.Known {
		if f.Node == node {
			latest[f.UID] = f
		}
	}
	var rest []corev1.Pod
	ptrs := make([]*corev1.Pod, 0, len(pods))
	for i := range pods {
		ptrs = append(ptrs, &pods[i])
		if _, ok := latest[pods[i].UID]; !ok {
			rest = append(rest, pods[i])
		}
	}
	if len(rest) > 0 {
		rep, err := s.Scan(ctx, rest)
		if err != nil {
			return NodeFacts{}, fmt.Errorf("node %s: scan its other pods: %w", node, err)
		}
		for _, f := range rep.Findings {
			latest[f.UID] = f
		}
	}
	return NodeFactsOf(ptrs, latest, s.InfraNamespace), nil
}
