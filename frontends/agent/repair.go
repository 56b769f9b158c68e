package agent

import (
	"context"

	"github.com/meshmedic/meshmedic/heal"
)

// repairer heals confirmed findings through heal's planner: every rule between a finding and
// a heal (re-read, readiness, the node's verdict, canaries, exclusions, backoff, budgets and
// the fleet-wide limits in the ledger) is heal's, the same as `repair` and any embedder use.
// It reads the ledger only when a sweep has a confirmed finding: nothing while all is well.
type repairer struct{ a *Agent }

func (r *repairer) report(ctx context.Context, s *sweep) {
	a := r.a
	if !a.cfg.AutoRepair || a.repairDenied.Load() {
		return
	}
	confirmed := false
	for _, f := range s.rep.Findings {
		if f.Confirmed && f.Actionable() {
			confirmed = true
			break
		}
	}
	if !confirmed {
		return
	}
	if s.stale {
		a.log.Info("not healing: the pod informer has not resynced since a watch error (API server unreachable?)")
		return
	}
	facts := heal.FactsFunc(func(context.Context, string) (heal.NodeFacts, error) {
		return heal.NodeFactsOf(s.all, s.latest, a.infraNamespace), nil
	})
	plan, err := a.healer.Plan(ctx, s.rep, a.podGetter(), facts)
	if err != nil {
		a.m.healErrors.Inc()
		a.log.Error(err, "not healing: the heal ledger could not be read (fail closed)")
		return
	}
	if v, ok := plan.Nodes[a.cfg.NodeName]; ok {
		a.m.setHealMode(v.Mode)
		if v.Mode != heal.NodeHeal {
			a.log.Info("node verdict", "mode", v.Mode, "reason", v.Reason)
		}
	}
	for _, c := range plan.Canaries {
		a.m.canaries.WithLabelValues(string(c.Record.State)).Inc()
		a.log.Info("canary judged", "node", c.Node, "state", c.Record.State, "detail", c.Record.Detail)
	}
	for _, d := range plan.Dropped {
		a.log.V(1).Info("not a heal target", "pod", d.Namespace+"/"+d.Name, "class", d.Class, "why", d.Why)
	}
	for _, act := range a.healer.Apply(ctx, plan) {
		a.m.repairs.WithLabelValues(act.Strategy, string(act.Result)).Inc()
		a.log.Info("heal", "pod", act.Namespace+"/"+act.Name, "result", act.Result, "detail", act.Detail)
	}
}
