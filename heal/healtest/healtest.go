// Package healtest provides test doubles for code that uses package heal: a recording
// Evicter that can answer 429 (PodDisruptionBudget) or any error for chosen pods, and a
// recording EventSink. Like go-containerregistry's pkg/v1/fake, it is for importers' tests.
package healtest

import (
	"context"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/meshmedic/meshmedic/heal"
)

var (
	_ heal.Evicter   = (*Evicter)(nil)
	_ heal.EventSink = (*EventSink)(nil)
)

// PDBError is the error the API server returns when a PodDisruptionBudget refuses an
// eviction: 429 TooManyRequests with a DisruptionBudget cause.
func PDBError(namespace, name string) error {
	err := apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0)
	err.ErrStatus.Details.Name = name
	err.ErrStatus.Details.Kind = "pods"
	err.ErrStatus.Details.Causes = append(err.ErrStatus.Details.Causes, metav1.StatusCause{
		Type:    policyv1.DisruptionBudgetCause,
		Message: "The disruption budget for " + namespace + "/" + name + " needs 1 healthy pods and has 1 currently",
	})
	return err
}

// Evicter is a recording heal.Evicter. The zero value is not usable; call NewEvicter.
// It is safe for concurrent use.
type Evicter struct {
	mu        sync.Mutex
	evictions []*policyv1.Eviction
	blocked   map[types.NamespacedName]bool
	errs      map[types.NamespacedName]error
	err       error
	pods      corev1client.PodsGetter
}

// NewEvicter returns an Evicter that accepts every eviction.
func NewEvicter() *Evicter {
	return &Evicter{blocked: map[types.NamespacedName]bool{}, errs: map[types.NamespacedName]error{}}
}

// WithPods makes accepted, non-dry-run evictions delete the pod through pods (with the
// eviction's UID precondition), as the API server would; with a fake clientset this lets
// heal's "wait until the pod is gone" see the pod go.
func (e *Evicter) WithPods(pods corev1client.PodsGetter) *Evicter {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pods = pods
	return e
}

// BlockWithPDB makes evictions of namespace/name answer PDBError (429), dry run or not.
func (e *Evicter) BlockWithPDB(namespace, name string) *Evicter {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.blocked[types.NamespacedName{Namespace: namespace, Name: name}] = true
	return e
}

// FailWith makes evictions of namespace/name return err.
func (e *Evicter) FailWith(namespace, name string, err error) *Evicter {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.errs[types.NamespacedName{Namespace: namespace, Name: name}] = err
	return e
}

// FailAll makes every eviction not otherwise configured return err (nil: accept again).
func (e *Evicter) FailAll(err error) *Evicter {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.err = err
	return e
}

// Evict records ev, then answers as configured: 429 for blocked pods, the configured
// error, or acceptance (deleting the pod through WithPods' client when not a dry run).
func (e *Evicter) Evict(ctx context.Context, ev *policyv1.Eviction) error {
	e.mu.Lock()
	e.evictions = append(e.evictions, ev.DeepCopy())
	key := types.NamespacedName{Namespace: ev.Namespace, Name: ev.Name}
	blocked, err, all, pods := e.blocked[key], e.errs[key], e.err, e.pods
	e.mu.Unlock()

	switch {
	case blocked:
		return PDBError(ev.Namespace, ev.Name)
	case err != nil:
		return err
	case all != nil:
		return all
	}
	if pods == nil || isDryRun(ev) {
		return nil
	}
	opts := metav1.DeleteOptions{}
	if ev.DeleteOptions != nil {
		opts.Preconditions = ev.DeleteOptions.Preconditions
	}
	return pods.Pods(ev.Namespace).Delete(ctx, ev.Name, opts)
}

// Evictions returns copies of every eviction received, in order (refused ones too).
func (e *Evicter) Evictions() []*policyv1.Eviction {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*policyv1.Eviction, len(e.evictions))
	for i, ev := range e.evictions {
		out[i] = ev.DeepCopy()
	}
	return out
}

func isDryRun(ev *policyv1.Eviction) bool {
	return ev.DeleteOptions != nil && slices.Contains(ev.DeleteOptions.DryRun, metav1.DryRunAll)
}

// Event is one recorded Event. Node is set (and Namespace, Name empty) for an Event about a
// Node (heal.NodeEventSink).
type Event struct {
	Namespace, Name string
	Node            string
	UID             types.UID
	Type            string
	Reason          string
	Message         string
}

// EventSink is a recording heal.NodeEventSink, safe for concurrent use. The zero value is
// ready.
type EventSink struct {
	mu     sync.Mutex
	events []Event
}

// NewEventSink returns an empty recording sink.
func NewEventSink() *EventSink { return &EventSink{} }

// Event records one Event.
func (s *EventSink) Event(pod *corev1.Pod, eventType, reason, message string) {
	e := Event{Type: eventType, Reason: reason, Message: message}
	if pod != nil {
		e.Namespace, e.Name, e.UID = pod.Namespace, pod.Name, pod.UID
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, e)
}

// NodeEvent records one Event about a Node (heal.NodeEventSink).
func (s *EventSink) NodeEvent(node, eventType, reason, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, Event{Node: node, Type: eventType, Reason: reason, Message: message})
}

// Events returns the recorded Events in order.
func (s *EventSink) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

// Reasons returns the recorded Events' reasons in order.
func (s *EventSink) Reasons() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.events))
	for i, e := range s.events {
		out[i] = e.Reason
	}
	return out
}

// Reset forgets every recorded Event.
func (s *EventSink) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = nil
}
