package detect

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshmedic/meshmedic/netns"
)

// NodeOption configures a NodeLocalProber.
type NodeOption func(*NodeLocalProber)

// WithNodeReadOptions sets the socket-read options (default Full: true, CorePorts).
func WithNodeReadOptions(o netns.ReadOptions) NodeOption {
	return func(p *NodeLocalProber) { p.read = o }
}

// RulesReader reads istio-cni's in-pod routing set-up of a process's netns
// (netns.RuleReader).
type RulesReader interface {
	Rules(pid int) (netns.RoutingRules, error)
}

// WithRuleInspection makes the prober also read each pod's routing rules with r, so that
// the Engine can tell bypass (listeners without istio-cni's redirect set-up) and blackhole
// (the set-up without listeners) apart. netns.RuleReader needs
// netns.RulesCapabilities.
func WithRuleInspection(r RulesReader) NodeOption {
	return func(p *NodeLocalProber) { p.rules = r }
}

// NodeLocalProber reads pods' netns through a proc root on the pods' node (the agent, or
// `node scan`): the pod's sandbox process is found by SandboxUID in a cached
// fs.Sandboxes() walk, revalidated on each use (fs.Revalidate) and re-walked only for a
// pod it cannot place (at most once per Probe call); its listeners are read with r.
type NodeLocalProber struct {
	fs    netns.FS
	r     netns.SocketReader
	read  netns.ReadOptions
	rules RulesReader

	mu    sync.Mutex
	cache map[string]netns.Sandbox
	gen   int // incremented by every walk

	walkMu sync.Mutex // one walk at a time

	hits, walks atomic.Uint64
}

// NodeStats counts how a NodeLocalProber placed pods.
type NodeStats struct {
	// CacheHits are pods placed from the cached sandbox map after a cheap revalidation
	// (start time, cgroup, netns of one PID).
	CacheHits uint64
	// Walks are full walks of the proc root (every <pid>/cgroup), done only for pods the
	// cache could not place.
	Walks uint64
}

// Stats returns the prober's counters since it was made.
func (p *NodeLocalProber) Stats() NodeStats {
	return NodeStats{CacheHits: p.hits.Load(), Walks: p.walks.Load()}
}

// Cached returns the sandbox the prober last placed the pod with sandbox UID uid in,
// without reading /proc (it may be stale: Probe revalidates it).
func (p *NodeLocalProber) Cached(uid string) (netns.Sandbox, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.cache[uid]
	return s, ok
}

// NewNodeLocalProber returns a prober over fs and r.
func NewNodeLocalProber(fs netns.FS, r netns.SocketReader, opts ...NodeOption) *NodeLocalProber {
	p := &NodeLocalProber{fs: fs, r: r, read: netns.ReadOptions{Full: true}, cache: map[string]netns.Sandbox{}}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Probe implements Prober. No sandbox: ErrNoSandbox; a host-network sandbox:
// ErrHostNetwork.
func (p *NodeLocalProber) Probe(ctx context.Context, pod *corev1.Pod) (Probe, error) {
	uid := SandboxUID(pod)
	s, err := p.sandbox(ctx, uid)
	if err != nil {
		return Probe{}, fmt.Errorf("pod %s: %w", podName(pod), err)
	}
	switch {
	case s.Err != nil:
		return Probe{}, fmt.Errorf("pod %s: sandbox pid %d: %w", podName(pod), s.PID, s.Err)
	case s.HostNetwork:
		return Probe{Netns: s.Netns, Source: SourceNode}, fmt.Errorf("pod %s: %w", podName(pod), ErrHostNetwork)
	}
	l, err := p.r.Listeners(s.PID, readOptionsFor(ctx, p.read))
	if err != nil {
		p.forget(uid)
		return Probe{}, fmt.Errorf("pod %s pid %d: %w", podName(pod), s.PID, err)
	}
	pr := Probe{Listeners: l, Netns: s.Netns, Source: SourceNode}
	if p.rules != nil {
		rr, err := p.rules.Rules(s.PID)
		if err != nil {
			pr.RulesErr = fmt.Errorf("pod %s pid %d: %w", podName(pod), s.PID, err)
		} else {
			pr.Rules = &rr
		}
	}
	return pr, nil
}

// sandbox finds uid's sandbox: from the cache if it revalidates, else from a fresh walk
// (unless another goroutine walked since this one looked).
func (p *NodeLocalProber) sandbox(ctx context.Context, uid string) (netns.Sandbox, error) {
	p.mu.Lock()
	s, ok := p.cache[uid]
	gen := p.gen
	p.mu.Unlock()
	if ok {
		ino, err := p.fs.Revalidate(s)
		if err == nil {
			p.hits.Add(1)
			s.Netns = ino
			return s, nil
		}
		if !errors.Is(err, netns.ErrProcessGone) {
			return netns.Sandbox{}, err
		}
		p.forget(uid)
	}
	if err := ctx.Err(); err != nil {
		return netns.Sandbox{}, err
	}
	p.walkMu.Lock()
	defer p.walkMu.Unlock()
	p.mu.Lock()
	walked := p.gen != gen
	p.mu.Unlock()
	if !walked {
		p.walks.Add(1)
		sc, err := p.fs.Sandboxes()
		if err != nil {
			return netns.Sandbox{}, fmt.Errorf("walking %s: %w", p.fs.Root(), err)
		}
		m := make(map[string]netns.Sandbox, len(sc.Sandboxes))
		for _, s := range sc.Sandboxes {
			m[s.PodUID] = s
		}
		p.mu.Lock()
		p.cache, p.gen = m, p.gen+1
		p.mu.Unlock()
	}
	p.mu.Lock()
	s, ok = p.cache[uid]
	p.mu.Unlock()
	if !ok {
		return netns.Sandbox{}, fmt.Errorf("uid %s under %s: %w", uid, p.fs.Root(), ErrNoSandbox)
	}
	return s, nil
}

func (p *NodeLocalProber) forget(uid string) {
	p.mu.Lock()
	delete(p.cache, uid)
	p.mu.Unlock()
}
