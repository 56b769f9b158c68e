package main

import (
	"context"
	"fmt"
	"slices"

	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/heal"
)

// OptOutLabel on a pod, with value "true", keeps Policy away from it.
const OptOutLabel = "example.com/no-auto-heal"

// Policy is an operator's own rule for which of meshmedic's findings it heals, on top of
// heal's planner and safety layer (re-read, readiness, the node's verdict and canary,
// exclusions, PDBs, bare-pod refusal, backoff, budgets and fleet-wide limits): only classes
// it trusts, and never pods that opted out with its own label.
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
	// Result is heal's result when the pod reached the Healer's Apply, empty when the policy
	// or heal's planner left it out.
	Result heal.Result
	Reason string
}

// Apply decides for every actionable finding of rep: the policy keeps the classes it
// trusts, heal's planner (with facts about each node) makes the targets, the policy drops
// targets that opted out, and the Healer acts on the rest. One Decision per actionable
// finding, in the report's order.
func (p *Policy) Apply(ctx context.Context, rep detect.Report, facts heal.FactsSource) ([]Decision, error) {
	classes := p.Classes
	if classes == nil {
		classes = []detect.Class{detect.ClassOrphaned, detect.ClassNetnsReplaced}
	}
	decided := map[string]Decision{}
	trusted := detect.Report{Checked: rep.Checked}
	for _, f := range rep.Actionable() {
		if !slices.Contains(classes, f.Class) {
			decided[f.Key()] = Decision{Pod: f.Key(), Class: f.Class, Reason: fmt.Sprintf("class %s is not healed by this policy", f.Class)}
			continue
		}
		trusted.Findings = append(trusted.Findings, f)
	}
	plan, err := p.Healer.Plan(ctx, trusted, heal.PodsFromClient(p.Pods), facts)
	if err != nil {
		return nil, err
	}
	for _, d := range plan.Dropped {
		key := d.Namespace + "/" + d.Name
		decided[key] = Decision{Pod: key, Class: d.Class, Reason: d.Why}
	}
	targets := plan.Targets[:0]
	for _, t := range plan.Targets {
		key := t.Pod.Namespace + "/" + t.Pod.Name
		if t.Pod.Labels[OptOutLabel] == "true" {
			decided[key] = Decision{Pod: key, Class: t.Class, Reason: "opted out with label " + OptOutLabel}
			continue
		}
		targets = append(targets, t)
	}
	plan.Targets = targets
	for _, a := range p.Healer.Apply(ctx, plan) {
		key := a.Namespace + "/" + a.Name
		decided[key] = Decision{Pod: key, Class: a.Class, Result: a.Result, Reason: a.Detail}
	}
	var out []Decision
	for _, f := range rep.Actionable() {
		out = append(out, decided[f.Key()])
	}
	return out, nil
}
