package main

import (
	"context"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/heal"
)

// OptOutLabel on a pod, with value "true", keeps Policy away from it.
const OptOutLabel = "example.com/no-auto-heal"

// Policy is an operator's own rule for which of meshmedic's findings it heals, on top of
// heal's safety layer (budgets, PDBs, bare-pod refusal, backoff, the node breaker): only
// confirmed findings, only classes it trusts, never pods that opted out, and only the pod
// the finding was about (same UID).
type Policy struct {
	Healer *heal.Healer
	Pods   corev1client.PodsGetter
	// Classes are the finding classes this policy heals (default: orphaned and
	// netns-replaced; a partial capture may be a ztunnel restart in progress).
	Classes []detect.Class
}

// Decision is what Policy did with one actionable finding.
type Decision struct {
	Pod   string // namespace/name
	Class detect.Class
	// Result is heal's result when the policy handed the pod to the Healer, empty when the
	// policy itself declined.
	Result heal.Result
	Reason string
}

// Apply decides for every actionable finding of rep, heals the accepted ones through
// p.Healer and returns one Decision per actionable finding, in the report's order.
func (p *Policy) Apply(ctx context.Context, rep detect.Report, nodes map[string]heal.NodeHealth) ([]Decision, error) {
	classes := p.Classes
	if classes == nil {
		classes = []detect.Class{detect.ClassOrphaned, detect.ClassNetnsReplaced}
	}
	var out []Decision
	var targets []heal.Target
	var healIdx []int // out index of each target
	for _, f := range rep.Actionable() {
		d := Decision{Pod: f.Key(), Class: f.Class}
		switch {
		case !f.Confirmed:
			d.Reason = "not confirmed by the flap guard"
		case !slices.Contains(classes, f.Class):
			d.Reason = fmt.Sprintf("class %s is not healed by this policy", f.Class)
		default:
			pod, err := p.Pods.Pods(f.Namespace).Get(ctx, f.Name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err) || (err == nil && pod.UID != f.UID):
				d.Reason = "gone or replaced since the scan"
			case err != nil:
				return nil, fmt.Errorf("pod %s: %w", f.Key(), err)
			case pod.Labels[OptOutLabel] == "true":
				d.Reason = "opted out with label " + OptOutLabel
			default:
				targets = append(targets, heal.Target{Pod: pod, Class: f.Class, Detail: f.Detail})
				healIdx = append(healIdx, len(out))
			}
		}
		out = append(out, d)
	}
	if len(targets) > 0 {
		for i, a := range p.Healer.Heal(ctx, targets, nodes) {
			out[healIdx[i]].Result, out[healIdx[i]].Reason = a.Result, a.Detail
		}
	}
	return out, nil
}
