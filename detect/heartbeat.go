package detect

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/utils/clock"
)

// A node agent proves it is alive, the way the kubelet does with its node Lease: after every
// full re-check of its node it renews the Lease AgentHeartbeatLease(node) in its own
// namespace, with leaseDurationSeconds a few full re-check intervals long and acquireTime
// its start. A ConditionAmbientCaptured condition is current only while that Lease is
// unexpired and the condition was written by the running agent (lastProbeTime at or after
// acquireTime). Otherwise the condition says what an agent that is gone, or was restarted
// and has not re-checked the pod, once saw: ConditionProber calls it unknown.

// AgentHeartbeatLease is the name of node's agent heartbeat Lease. Lease names are DNS
// subdomains (at most 253 characters); a node name too long for the prefix is shortened
// with a hash of it.
func AgentHeartbeatLease(node string) string {
	const prefix = "meshmedic-agent-"
	if len(prefix)+len(node) <= 253 {
		return prefix + node
	}
	sum := sha256.Sum256([]byte(node))
	return prefix + node[:253-len(prefix)-17] + "-" + hex.EncodeToString(sum[:8])
}

// ErrNoHeartbeat: the node's agent is not known to be running (no heartbeat Lease, or an
// expired one), or the condition predates its current run. The condition is then unknown.
var ErrNoHeartbeat = errors.New("no current heartbeat from the node's meshmedic agent")

// HeartbeatSource returns a node's agent heartbeat Lease (nil, nil when there is none).
type HeartbeatSource interface {
	Heartbeat(ctx context.Context, node string) (*coordinationv1.Lease, error)
}

// HeartbeatsFromLeases reads heartbeat Leases from namespace (meshmedic's), one GET per node
// per maxAge at most (measured on clk; nil: the real clock).
func HeartbeatsFromLeases(leases coordinationv1client.LeasesGetter, namespace string, maxAge time.Duration, clk clock.PassiveClock) HeartbeatSource {
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &leaseHeartbeats{leases: leases, ns: namespace, maxAge: maxAge, clock: clk, cache: map[string]cachedLease{}}
}

type leaseHeartbeats struct {
	leases coordinationv1client.LeasesGetter
	ns     string
	maxAge time.Duration
	clock  clock.PassiveClock
	mu     sync.Mutex
	cache  map[string]cachedLease
}

type cachedLease struct {
	lease *coordinationv1.Lease
	err   error
	at    time.Time
}

func (h *leaseHeartbeats) Heartbeat(ctx context.Context, node string) (*coordinationv1.Lease, error) {
	h.mu.Lock()
	c, ok := h.cache[node]
	h.mu.Unlock()
	if ok && h.clock.Since(c.at) < h.maxAge {
		return c.lease, c.err
	}
	lease, err := h.leases.Leases(h.ns).Get(ctx, AgentHeartbeatLease(node), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		lease, err = nil, nil
	case err != nil:
		lease, err = nil, fmt.Errorf("heartbeat lease %s/%s: %w", h.ns, AgentHeartbeatLease(node), err)
	}
	if ctx.Err() == nil {
		h.mu.Lock()
		h.cache[node] = cachedLease{lease: lease, err: err, at: h.clock.Now()}
		h.mu.Unlock()
	}
	return lease, err
}

// ConditionCurrent reports whether condition c, published by node's agent, is current given
// that agent's heartbeat Lease (nil: none), and if not, why (wrapping ErrNoHeartbeat).
func ConditionCurrent(c corev1.PodCondition, node string, lease *coordinationv1.Lease, now time.Time) error {
	if lease == nil {
		return fmt.Errorf("node %s: no heartbeat lease: %w", node, ErrNoHeartbeat)
	}
	s := lease.Spec
	if s.RenewTime == nil || s.LeaseDurationSeconds == nil {
		return fmt.Errorf("node %s: heartbeat lease without renewTime or leaseDurationSeconds: %w", node, ErrNoHeartbeat)
	}
	expires := s.RenewTime.Add(time.Duration(*s.LeaseDurationSeconds) * time.Second)
	if now.After(expires) {
		return fmt.Errorf("node %s: the agent's heartbeat expired at %s (last renewed %s): %w",
			node, expires.UTC().Format(time.RFC3339), s.RenewTime.UTC().Format(time.RFC3339), ErrNoHeartbeat)
	}
	written := c.LastProbeTime.Time
	if written.IsZero() {
		written = c.LastTransitionTime.Time
	}
	if s.AcquireTime != nil && written.Before(s.AcquireTime.Time) {
		return fmt.Errorf("node %s: condition written at %s, before the running agent started (%s), which has not re-checked the pod yet: %w",
			node, written.UTC().Format(time.RFC3339), s.AcquireTime.UTC().Format(time.RFC3339), ErrNoHeartbeat)
	}
	return nil
}
