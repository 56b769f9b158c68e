package agent

import (
	"context"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshmedic/meshmedic/detect"
)

// breakerReporter publishes the node-level finding on every sweep: when heal would not
// simply heal on this node — its ztunnel or istio-cni is not Ready or not found, or most
// of its ambient pods are broken at once — the gauge meshmedic_node_breaker_open is 1, and
// an Event on the Node says so when it opens and closes. What heal then does (a canary, or
// nothing) is heal's planner's verdict: meshmedic_node_heal_mode. Only pods are healed,
// never the node: this is for a person.
type breakerReporter struct {
	a    *Agent
	open bool
}

func (r *breakerReporter) report(_ context.Context, s *sweep) {
	h := s.health
	open, why := false, ""
	if h.AmbientPods > 0 { // no ambient pod here: nothing to protect, nothing to say
		open, why = r.a.cfg.Breaker.Trips(h)
	}
	if open {
		r.a.m.breakerOpen.Set(1)
	} else {
		r.a.m.breakerOpen.Set(0)
	}
	if open == r.open {
		return
	}
	r.open = open
	reason, typ, msg := "MeshmedicNodeBreakerClosed", corev1.EventTypeNormal, "node breaker closed: pods on this node are healed as usual again"
	if open {
		reason, typ, msg = "MeshmedicNodeBreakerOpen", corev1.EventTypeWarning,
			"node breaker open: "+why+"; pods on this node are healed only through a canary, or not at all while ztunnel or istio-cni is not Ready"
	}
	r.a.log.Info(msg, "node", r.a.cfg.NodeName)
	r.a.events.NodeEvent(r.a.cfg.NodeName, typ, reason, msg)
}

// gaugeReporter keeps the per-node gauges: pods tracked, and findings by class as of the
// last full re-check.
type gaugeReporter struct{ a *Agent }

func (r *gaugeReporter) report(_ context.Context, s *sweep) {
	r.a.m.podsTracked.Set(float64(len(s.all)))
	if !s.full {
		return
	}
	counts := map[detect.Class]int{}
	for _, f := range s.rep.Findings {
		counts[f.Class]++
	}
	for _, c := range detect.Classes {
		r.a.m.findings.WithLabelValues(string(c)).Set(float64(counts[c]))
	}
}

// heartbeat renews this node's agent heartbeat Lease (detect.AgentHeartbeatLease) after
// every full re-check, so that `scan --prober agent` and controllers can tell a current
// condition from one an agent that is gone left behind (detect.ConditionCurrent). One write
// per full re-check, like the kubelet's node Lease.
type heartbeat struct {
	a       *Agent
	started time.Time
	failed  bool
}

// heartbeatIntervals is the heartbeat's lifetime, in full re-check intervals.
const heartbeatIntervals = 3

func (r *heartbeat) report(ctx context.Context, s *sweep) {
	a := r.a
	if a.cfg.Namespace == "" || !s.full {
		return
	}
	if r.started.IsZero() {
		r.started = s.at
	}
	if err := r.renew(ctx, s.at); err != nil {
		if !r.failed {
			a.log.Error(err, "heartbeat lease not written: `scan --prober agent` will call this node's conditions unknown",
				"lease", a.cfg.Namespace+"/"+detect.AgentHeartbeatLease(a.cfg.NodeName))
		}
		r.failed = true
		a.m.heartbeatErrors.Inc()
		return
	}
	r.failed = false
}

func (r *heartbeat) renew(ctx context.Context, now time.Time) error {
	a := r.a
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	leases := a.cs.CoordinationV1().Leases(a.cfg.Namespace)
	name := detect.AgentHeartbeatLease(a.cfg.NodeName)
	secs := int32((heartbeatIntervals*a.cfg.FullRecheck + a.cfg.Tick) / time.Second)
	holder := "agent/" + a.cfg.NodeName
	spec := coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs,
		AcquireTime: &metav1.MicroTime{Time: r.started}, RenewTime: &metav1.MicroTime{Time: now}}
	cur, err := leases.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: a.cfg.Namespace,
			Labels: map[string]string{"app.kubernetes.io/name": "meshmedic", "app.kubernetes.io/component": "agent-heartbeat"}},
			Spec: spec}, metav1.CreateOptions{})
		return err
	case err != nil:
		return err
	}
	cur.Spec = spec
	_, err = leases.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}
