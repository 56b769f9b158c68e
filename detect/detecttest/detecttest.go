// Package detecttest provides in-memory fakes for code that drives detect.Engine: a
// cluster of pods and namespaces (PodLister + NamespaceGetter) and a Prober whose
// answers are set per pod.
package detecttest

import (
	"context"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/netns"
)

// Cluster is an in-memory PodLister and NamespaceGetter. Safe for concurrent use.
type Cluster struct {
	mu   sync.Mutex
	pods []corev1.Pod
	nss  map[string]*corev1.Namespace
}

var (
	_ detect.PodLister       = (*Cluster)(nil)
	_ detect.NamespaceGetter = (*Cluster)(nil)
)

// NewCluster returns a cluster holding copies of the given objects.
func NewCluster(nss []*corev1.Namespace, pods ...corev1.Pod) *Cluster {
	c := &Cluster{nss: map[string]*corev1.Namespace{}}
	for _, ns := range nss {
		c.nss[ns.Name] = ns.DeepCopy()
	}
	for i := range pods {
		c.pods = append(c.pods, *pods[i].DeepCopy())
	}
	return c
}

// SetPods replaces every pod.
func (c *Cluster) SetPods(pods ...corev1.Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pods = c.pods[:0]
	for i := range pods {
		c.pods = append(c.pods, *pods[i].DeepCopy())
	}
}

// ListPods implements detect.PodLister.
func (c *Cluster) ListPods(_ context.Context, namespace string) ([]corev1.Pod, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []corev1.Pod
	for i := range c.pods {
		if namespace == "" || c.pods[i].Namespace == namespace {
			out = append(out, *c.pods[i].DeepCopy())
		}
	}
	return out, nil
}

// GetNamespace implements detect.NamespaceGetter (NotFound for unknown names).
func (c *Cluster) GetNamespace(_ context.Context, name string) (*corev1.Namespace, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ns, ok := c.nss[name]; ok {
		return ns.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, name)
}

// Prober answers by "namespace/name"; pods without an answer are Default. It counts calls.
type Prober struct {
	mu      sync.Mutex
	answers map[string]answer
	calls   map[string]int
	// Default answers pods that were not Set; Captured() when nil.
	Default *detect.Probe
}

type answer struct {
	probe detect.Probe
	err   error
}

var _ detect.Prober = (*Prober)(nil)

// NewProber returns a Prober that finds every pod captured until told otherwise.
func NewProber() *Prober {
	return &Prober{answers: map[string]answer{}, calls: map[string]int{}}
}

// Set makes the prober answer p for namespace/name.
func (p *Prober) Set(key string, probe detect.Probe) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.answers[key] = answer{probe: probe}
}

// Fail makes the prober return err for namespace/name.
func (p *Prober) Fail(key string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.answers[key] = answer{err: err}
}

// Calls is how many times namespace/name was probed.
func (p *Prober) Calls(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[key]
}

// Probe implements detect.Prober.
func (p *Prober) Probe(_ context.Context, pod *corev1.Pod) (detect.Probe, error) {
	key := pod.Namespace + "/" + pod.Name
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls[key]++
	if a, ok := p.answers[key]; ok {
		return a.probe, a.err
	}
	if p.Default != nil {
		return *p.Default, nil
	}
	return Captured(), nil
}

// Listeners returns readable socket tables showing ports.
func Listeners(ports ...uint16) netns.Listeners {
	if ports == nil {
		ports = []uint16{}
	}
	return netns.Listeners{Ports: ports, TCP6: netns.Table{Name: "tcp6", Status: netns.TableOK}, TCP: netns.Table{Name: "tcp", Status: netns.TableOK}}
}

// Captured is a probe showing ztunnel's three core listeners.
func Captured() detect.Probe {
	return detect.Probe{Listeners: Listeners(netns.CorePorts...), Source: "detecttest"}
}

// Orphaned is a probe showing no ztunnel listener.
func Orphaned() detect.Probe {
	return detect.Probe{Listeners: Listeners(), Source: "detecttest"}
}
