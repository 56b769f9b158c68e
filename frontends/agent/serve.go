package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/heal"
)

// serve starts the metrics and health server; it returns once the port is bound.
func (a *Agent) serve(addr string) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "not ready: informers not synced or no sweep yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("agent: metrics listener %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	a.log.Info("serving metrics and health", "addr", ln.Addr().String())
	return srv, nil
}

// checkPermissions asks the API server (SelfSubjectAccessReview) whether this agent's
// identity may do what its configuration needs, and says clearly what is missing. Without
// pods/eviction create, or without the heal ledger's Lease in its namespace, --auto-repair
// is switched off (detection and the condition go on): heals that could not honour the
// fleet-wide limits must not happen.
func (a *Agent) checkPermissions(ctx context.Context) {
	type need struct {
		verb, group, resource, sub, namespace, why string
		repair                                     bool
	}
	needs := []need{
		{verb: "patch", resource: "pods", sub: "status", why: "publish the " + string(detect.ConditionAmbientCaptured) + " condition"},
		{verb: "create", resource: "events", why: "write Events"},
	}
	if a.cfg.Namespace != "" {
		needs = append(needs,
			need{verb: "create", group: "coordination.k8s.io", resource: "leases", namespace: a.cfg.Namespace, why: "write its heartbeat"},
			need{verb: "update", group: "coordination.k8s.io", resource: "leases", namespace: a.cfg.Namespace, why: "renew its heartbeat"})
	}
	if a.cfg.AutoRepair {
		needs = append(needs, need{verb: "create", resource: "pods", sub: "eviction", why: "--auto-repair evicts confirmed orphans", repair: true})
		if _, shared := a.cfg.Ledger.(*heal.LeaseLedger); shared {
			for _, v := range []string{"get", "create", "update"} {
				needs = append(needs, need{verb: v, group: "coordination.k8s.io", resource: "leases", namespace: a.cfg.Namespace,
					why: "--auto-repair keeps the fleet-wide heal ledger", repair: true})
			}
		}
	}
	for _, n := range needs {
		ok, err := a.allowed(ctx, n.verb, n.group, n.resource, n.sub, n.namespace)
		res := n.resource
		if n.sub != "" {
			res += "/" + n.sub
		}
		if n.namespace != "" {
			res += " in " + n.namespace
		}
		switch {
		case err != nil:
			a.log.Error(err, "could not check permission (SelfSubjectAccessReview); going ahead", "verb", n.verb, "resource", res)
		case !ok && n.repair:
			a.repairDenied.Store(true)
			a.m.repairEnabled.Set(0)
			a.log.Error(nil, "--auto-repair is OFF: this ServiceAccount cannot "+n.verb+" "+res+" ("+n.why+
				"); bind the repair role (deploy/overlays/auto-repair) to heal; detection and the condition go on",
				"verb", n.verb, "resource", res)
		case !ok:
			a.log.Error(nil, "missing permission: cannot "+n.verb+" "+res+", so the agent cannot "+n.why, "verb", n.verb, "resource", res)
		}
	}
	if a.cfg.AutoRepair && !a.repairDenied.Load() {
		a.m.repairEnabled.Set(1)
	}
}

func (a *Agent) allowed(ctx context.Context, verb, group, resource, sub, namespace string) (bool, error) {
	r, err := a.cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: verb, Group: group, Resource: resource, Subresource: sub, Namespace: namespace}},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	return r.Status.Allowed, nil
}
