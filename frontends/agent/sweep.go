package agent

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/heal"
)

// sweep is what the detector hands the reporters after one sweep.
type sweep struct {
	at   time.Time
	full bool // every pod was checked
	// all is every pod on the node, from the informer.
	all []*corev1.Pod
	// rep are the pods checked in this sweep, settled (Confirmed set by detect.Engine.Settle).
	rep detect.Report
	// latest is the latest settled finding of every pod on the node that was ever checked.
	latest map[types.UID]detect.Finding
	// health is the node breaker's view: the latest class of every pod, and the node's
	// ztunnel and istio-cni pods.
	health heal.NodeHealth
	// stale: the pod informer may be behind the API server (a watch failed and has not
	// relisted): nothing may act on this sweep.
	stale bool
}

// present is the set of pod UIDs on the node now.
func (s *sweep) present() map[types.UID]bool {
	m := make(map[types.UID]bool, len(s.all))
	for _, p := range s.all {
		m[p.UID] = true
	}
	return m
}

// reporter consumes a sweep. Each reporter owns its own state and forgets pods that left.
type reporter interface {
	report(ctx context.Context, s *sweep)
}

// forget deletes from m every pod not in present.
func forget[V any](m map[types.UID]V, present map[types.UID]bool) {
	for uid := range m {
		if !present[uid] {
			delete(m, uid)
		}
	}
}
