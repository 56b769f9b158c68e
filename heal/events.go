package heal

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/utils/clock"
)

// EventSink receives one Kubernetes Event per action and per refusal. Implementations
// must not fail the heal: they report their own errors.
type EventSink interface {
	Event(pod *corev1.Pod, eventType, reason, message string)
}

// Event reasons. Every Result except not-actionable has one; a dry run uses the Would
// reasons for actions and the same reasons as a real run for refusals and skips (the
// refusal is real either way), with "(dry run)" at the start of the message.
// Refusals and skips are sent once per pod and cause, not on every sweep. not-actionable
// (unknown, skipped, captured, ...) sends no Event: it is not a heal decision about a
// broken pod, and healthy pods must not collect Events on every sweep.
const (
	ReasonEvicted            = "MeshmedicEvicted"
	ReasonWouldEvict         = "MeshmedicWouldEvict"
	ReasonBlockedByPDB       = "MeshmedicBlockedByPDB"
	ReasonRefusedBarePod     = "MeshmedicRefusedBarePod"
	ReasonToggled            = "MeshmedicToggled"
	ReasonWouldToggle        = "MeshmedicWouldToggle"
	ReasonDeleted            = "MeshmedicDeleted"
	ReasonWouldDelete        = "MeshmedicWouldDelete"
	ReasonSkippedBudget      = "MeshmedicSkippedBudget"
	ReasonSkippedBackoff     = "MeshmedicSkippedBackoff"
	ReasonRefusedNodeBreaker = "MeshmedicRefusedNodeBreaker"
	ReasonHealFailed         = "MeshmedicHealFailed"
	ReasonWaitingForCanary   = "MeshmedicWaitingForCanary"
	ReasonRefusedExcluded    = "MeshmedicRefusedExcluded"
	// On the Node: the canary's verdict.
	ReasonCanaryPassed = "MeshmedicCanaryPassed"
	ReasonCanaryFailed = "MeshmedicCanaryFailed"
)

func eventFor(r Result) (eventType, reason string) {
	switch r {
	case ResultEvicted:
		return corev1.EventTypeNormal, ReasonEvicted
	case ResultWouldEvict:
		return corev1.EventTypeNormal, ReasonWouldEvict
	case ResultToggled:
		return corev1.EventTypeNormal, ReasonToggled
	case ResultWouldToggle:
		return corev1.EventTypeNormal, ReasonWouldToggle
	case ResultDeleted:
		return corev1.EventTypeNormal, ReasonDeleted
	case ResultWouldDelete:
		return corev1.EventTypeNormal, ReasonWouldDelete
	case ResultBlockedByPDB:
		return corev1.EventTypeWarning, ReasonBlockedByPDB
	case ResultRefusedBarePod:
		return corev1.EventTypeWarning, ReasonRefusedBarePod
	case ResultSkippedBudget:
		return corev1.EventTypeNormal, ReasonSkippedBudget
	case ResultSkippedBackoff:
		return corev1.EventTypeNormal, ReasonSkippedBackoff
	case ResultRefusedNodeBreaker:
		return corev1.EventTypeWarning, ReasonRefusedNodeBreaker
	case ResultWaitingForCanary:
		return corev1.EventTypeNormal, ReasonWaitingForCanary
	case ResultRefusedExcluded:
		return corev1.EventTypeNormal, ReasonRefusedExcluded
	}
	return corev1.EventTypeWarning, ReasonHealFailed
}

// maxMessage is the core/v1 Event note limit (1 KiB).
const maxMessage = 1024

func eventMessage(t Target, a *Action, dryRun bool) string {
	msg := fmt.Sprintf("strategy %s, finding %s: %s: %s", a.Strategy, a.Class, a.Result, a.Detail)
	if t.Detail != "" {
		msg += " (finding: " + t.Detail + ")"
	}
	if dryRun {
		msg = "(dry run) " + msg
	}
	if len(msg) > maxMessage {
		msg = msg[:maxMessage-3] + "..."
	}
	return msg
}

// NodeEventSink is an EventSink that can also write Events about a Node (the canary's
// verdicts). NewEventSink's sink implements it.
type NodeEventSink interface {
	EventSink
	NodeEvent(node, eventType, reason, message string)
}

// EventSinkOption configures NewEventSink.
type EventSinkOption func(*eventSink)

// EventSinkLogger sets where Event creation errors are logged (default logr.Discard()).
func EventSinkLogger(l logr.Logger) EventSinkOption { return func(s *eventSink) { s.log = l } }

// EventSinkClock sets the clock for Event timestamps and names (default: the real clock).
func EventSinkClock(c clock.PassiveClock) EventSinkOption {
	return func(s *eventSink) { s.clock = c }
}

// EventSinkInstance names this reporter instance (e.g. the node or host name); it goes to
// source.host and reportingInstance.
func EventSinkInstance(instance string) EventSinkOption {
	return func(s *eventSink) { s.instance = instance }
}

// EventSinkTimeout bounds each Event creation (default 10s).
func EventSinkTimeout(d time.Duration) EventSinkOption {
	return func(s *eventSink) { s.timeout = d }
}

// NewEventSink returns an EventSink that creates core/v1 Events on the pod through events,
// reported by component (e.g. "meshmedic"). Creation errors are logged, never returned.
func NewEventSink(events corev1client.EventsGetter, component string, opts ...EventSinkOption) NodeEventSink {
	s := &eventSink{events: events, component: component, clock: clock.RealClock{}, log: logr.Discard(), timeout: 10 * time.Second}
	for _, o := range opts {
		o(s)
	}
	return s
}

type eventSink struct {
	events    corev1client.EventsGetter
	component string
	instance  string
	clock     clock.PassiveClock
	log       logr.Logger
	timeout   time.Duration
	seq       atomic.Uint64
}

func (s *eventSink) Event(pod *corev1.Pod, eventType, reason, message string) {
	if pod == nil {
		return
	}
	now := s.clock.Now()
	ts := metav1.NewTime(now)
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			// Like client-go's event recorder, <object>.<unix nanos, hex>, plus a
			// sequence number so two Events in the same instant never collide.
			Name:      eventName(pod.Name, now, s.seq.Add(1)),
			Namespace: pod.Namespace,
		},
		InvolvedObject: corev1.ObjectReference{
			Kind:            "Pod",
			APIVersion:      "v1",
			Namespace:       pod.Namespace,
			Name:            pod.Name,
			UID:             pod.UID,
			ResourceVersion: pod.ResourceVersion,
		},
		Reason:              reason,
		Message:             message,
		Type:                eventType,
		Source:              corev1.EventSource{Component: s.component, Host: s.instance},
		FirstTimestamp:      ts,
		LastTimestamp:       ts,
		Count:               1,
		ReportingController: s.component,
		ReportingInstance:   s.instance,
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	if _, err := s.events.Events(pod.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		s.log.Error(err, "creating event", "pod", pod.Namespace+"/"+pod.Name, "reason", reason)
	}
}

// NodeEvent writes an Event about node (in the default namespace, as the kubelet's are).
func (s *eventSink) NodeEvent(node, eventType, reason, message string) {
	now := s.clock.Now()
	ts := metav1.NewTime(now)
	if len(message) > maxMessage {
		message = message[:maxMessage-3] + "..."
	}
	ev := &corev1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: eventName(node, now, s.seq.Add(1)), Namespace: metav1.NamespaceDefault},
		InvolvedObject:      corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: node, UID: types.UID(node)},
		Reason:              reason,
		Message:             message,
		Type:                eventType,
		Source:              corev1.EventSource{Component: s.component, Host: s.instance},
		FirstTimestamp:      ts,
		LastTimestamp:       ts,
		Count:               1,
		ReportingController: s.component,
		ReportingInstance:   s.instance,
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	if _, err := s.events.Events(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		s.log.Error(err, "creating node event", "node", node, "reason", reason)
	}
}

func eventName(pod string, now time.Time, seq uint64) string {
	suffix := fmt.Sprintf(".%x.%x", now.UnixNano(), seq)
	if limit := 253 - len(suffix); len(pod) > limit {
		pod = pod[:limit]
	}
	return pod + suffix
}
