package detect

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
)

// ConditionAmbientCaptured is the pod condition a meshmedic node agent publishes with its
// verdict on the pod. Status True: captured; False: an actionable class; Unknown: could
// not be verified. Reason: the class in CamelCase ("Orphaned", "NetnsReplaced"; see
// ConditionReason). Message: space-separated key=value tokens "present=15001,15006
// missing=15008 netns=4026532201" (and "rules=present" when the agent inspects rules) then
// free text after "; ".
const ConditionAmbientCaptured corev1.PodConditionType = "meshmedic.io/AmbientCaptured"

var conditionReasons = map[Class]string{
	ClassCaptured: "Captured", ClassOrphaned: "Orphaned", ClassPartial: "Partial",
	ClassNotEnrolled: "NotEnrolled", ClassNetnsReplaced: "NetnsReplaced", ClassBypass: "Bypass",
	ClassBlackhole: "Blackhole", ClassUnknown: "Unknown", ClassSkipped: "Skipped",
}

// ConditionReason is the CamelCase condition reason for c (pod condition reasons are
// CamelCase by convention; "netns-replaced" becomes "NetnsReplaced").
func ConditionReason(c Class) string {
	if r, ok := conditionReasons[c]; ok {
		return r
	}
	return "Unknown"
}

// ClassFromConditionReason maps a condition reason back to a Class; it accepts the
// CamelCase form and the class value itself. Anything else is ClassUnknown.
func ClassFromConditionReason(reason string) Class {
	for c, r := range conditionReasons {
		if reason == r || reason == string(c) {
			return c
		}
	}
	return ClassUnknown
}

// AmbientCapturedCondition is the condition a node agent publishes for finding f.
func AmbientCapturedCondition(f Finding, now time.Time) corev1.PodCondition {
	status := corev1.ConditionUnknown
	switch {
	case f.Class == ClassCaptured:
		status = corev1.ConditionTrue
	case f.Class.Actionable():
		status = corev1.ConditionFalse
	}
	var b strings.Builder
	b.WriteString("present=")
	writePorts(&b, f.Present)
	b.WriteString(" missing=")
	writePorts(&b, f.Missing)
	if f.Netns != 0 {
		b.WriteString(" netns=")
		b.WriteString(strconv.FormatUint(f.Netns, 10))
	}
	if f.Rules != "" {
		b.WriteString(" rules=")
		b.WriteString(f.Rules)
	}
	if f.Detail != "" {
		b.WriteString("; ")
		b.WriteString(f.Detail)
	}
	return corev1.PodCondition{
		Type: ConditionAmbientCaptured, Status: status, Reason: ConditionReason(f.Class),
		Message: b.String(), LastProbeTime: metav1.NewTime(now), LastTransitionTime: metav1.NewTime(now),
	}
}

func writePorts(b *strings.Builder, ports []uint16) {
	for i, p := range ports {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(p)))
	}
}

// ParseAmbientCapturedCondition reads a condition published by AmbientCapturedCondition
// into a Probe (Class set, Listeners.Ports = present). A status that contradicts the
// reason, or a malformed token, is an error.
func ParseAmbientCapturedCondition(c corev1.PodCondition) (Probe, error) {
	p := Probe{Source: SourceCondition, Class: ClassFromConditionReason(c.Reason)}
	p.Listeners.Ports = []uint16{}
	msg, _, _ := strings.Cut(c.Message, "; ")
	for tok := range strings.FieldsSeq(msg) {
		k, v, ok := strings.Cut(tok, "=")
		if !ok {
			return Probe{}, fmt.Errorf("condition %s: malformed token %q", c.Type, tok)
		}
		var err error
		switch k {
		case "present":
			p.Listeners.Ports, err = parsePorts(v)
		case "missing":
			p.Missing, err = parsePorts(v)
		case "netns":
			p.Netns, err = strconv.ParseUint(v, 10, 64)
		case "rules":
			p.RulesVerdict = v
		}
		if err != nil {
			return Probe{}, fmt.Errorf("condition %s: %s: %w", c.Type, k, err)
		}
	}
	if p.Listeners.Ports == nil {
		p.Listeners.Ports = []uint16{}
	}
	switch c.Status {
	case corev1.ConditionTrue:
		if p.Class != ClassCaptured {
			return Probe{}, fmt.Errorf("condition %s: status True with reason %q", c.Type, c.Reason)
		}
	case corev1.ConditionFalse:
		if !p.Class.Actionable() {
			return Probe{}, fmt.Errorf("condition %s: status False with reason %q", c.Type, c.Reason)
		}
	default:
		p.Class = ClassUnknown
	}
	return p, nil
}

func parsePorts(s string) ([]uint16, error) {
	if s == "" {
		return nil, nil
	}
	var out []uint16
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("port %q: %w", f, err)
		}
		if i, found := slices.BinarySearch(out, uint16(n)); !found {
			out = slices.Insert(out, i, uint16(n))
		}
	}
	return out, nil
}

// ConditionProber reads the ConditionAmbientCaptured condition node agents publish on
// pods: no exec, no node access, just the pod object the Engine listed — and, per node,
// the agent's heartbeat Lease, without which a condition is not trusted (ConditionCurrent).
type ConditionProber struct {
	heartbeats HeartbeatSource
	clock      clock.PassiveClock
}

// ConditionOption tunes NewConditionProber.
type ConditionOption func(*ConditionProber)

// WithConditionClock sets the clock heartbeats are judged on (default the real clock).
func WithConditionClock(c clock.PassiveClock) ConditionOption {
	return func(p *ConditionProber) { p.clock = c }
}

// NewConditionProber returns a ConditionProber that checks every condition against its
// node's agent heartbeat from hb (HeartbeatsFromLeases). With a nil hb every condition is
// unknown: a verdict nobody can vouch for is not evidence.
func NewConditionProber(hb HeartbeatSource, opts ...ConditionOption) *ConditionProber {
	p := &ConditionProber{heartbeats: hb, clock: clock.RealClock{}}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Probe implements Prober. A pod without the condition: ErrNoAgentCondition; a condition
// its node's agent does not vouch for (gone, restarted since): ErrNoHeartbeat.
func (c *ConditionProber) Probe(ctx context.Context, pod *corev1.Pod) (Probe, error) {
	for _, cond := range pod.Status.Conditions {
		if cond.Type != ConditionAmbientCaptured {
			continue
		}
		p, err := ParseAmbientCapturedCondition(cond)
		if err != nil {
			return Probe{}, fmt.Errorf("pod %s: %w", podName(pod), err)
		}
		if c.heartbeats == nil {
			return Probe{}, fmt.Errorf("pod %s: no heartbeat source to vouch for the condition: %w", podName(pod), ErrNoHeartbeat)
		}
		lease, err := c.heartbeats.Heartbeat(ctx, pod.Spec.NodeName)
		if err != nil {
			return Probe{}, fmt.Errorf("pod %s: %w", podName(pod), err)
		}
		if err := ConditionCurrent(cond, pod.Spec.NodeName, lease, c.clock.Now()); err != nil {
			return Probe{}, fmt.Errorf("pod %s: condition %s=%s (%s) not current: %w", podName(pod), cond.Type, cond.Status, cond.Reason, err)
		}
		return p, nil
	}
	return Probe{}, fmt.Errorf("pod %s: %w", podName(pod), ErrNoAgentCondition)
}
