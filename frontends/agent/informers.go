package agent

import (
	"context"
	"fmt"
	"maps"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/heal"
)

// watchState tracks whether the pod informer may be behind the API server.
type watchState struct {
	mu      sync.Mutex
	staleRV string // the informer's resourceVersion at the last watch error; "" = fresh
}

// setupInformers builds the pod informer (this node's pods only) and the namespace
// informer, and wires the pod events into the trigger scheduler.
func (a *Agent) setupInformers() error {
	factory := informers.NewSharedInformerFactoryWithOptions(a.cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", a.cfg.NodeName).String()
	}))
	podInf := factory.Core().V1().Pods()
	nsFactory := informers.NewSharedInformerFactory(a.cs, 0) // namespaces: no node field selector
	nsInf := nsFactory.Core().V1().Namespaces()
	a.pods, a.podInf = podInf.Lister(), podInf.Informer()
	a.nsLister = nsInf.Lister()
	// The informers keep what the agent reads, not managedFields or kubectl's
	// last-applied copy of the whole object: the agent's memory is per node, per pod.
	if err := a.podInf.SetTransform(slimObject); err != nil {
		return err
	}
	if err := nsInf.Informer().SetTransform(slimObject); err != nil {
		return err
	}
	a.synced = []cache.InformerSynced{podInf.Informer().HasSynced, nsInf.Informer().HasSynced}
	if _, err := a.podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { a.onAdd(o) },
		UpdateFunc: func(old, o any) { a.onUpdate(old, o) },
	}); err != nil {
		return err
	}
	// During an API-server outage the informer keeps its last state; the agent keeps
	// reading /proc but heals nothing until the watch has relisted (see stale).
	watchErr := func(ctx context.Context, r *cache.Reflector, err error) {
		a.watch.mu.Lock()
		if a.watch.staleRV == "" {
			a.watch.staleRV = a.podInf.LastSyncResourceVersion()
			if a.watch.staleRV == "" {
				a.watch.staleRV = "-"
			}
		}
		a.watch.mu.Unlock()
		cache.DefaultWatchErrorHandler(ctx, r, err)
	}
	if err := a.podInf.SetWatchErrorHandlerWithContext(watchErr); err != nil {
		return err
	}
	a.informerStart = func(stop <-chan struct{}) { factory.Start(stop); nsFactory.Start(stop) }
	return nil
}

// podListerForEngine is detect's PodLister over the pod informer.
func (a *Agent) podListerForEngine() detect.PodLister {
	return detect.PodListerFunc(func(_ context.Context, namespace string) ([]corev1.Pod, error) {
		list, err := a.pods.List(labels.Everything())
		if err != nil {
			return nil, err
		}
		out := make([]corev1.Pod, 0, len(list))
		for _, p := range list {
			if namespace == "" || p.Namespace == namespace {
				out = append(out, *p)
			}
		}
		return out, nil
	})
}

// namespaceGetter is detect's NamespaceGetter over the namespace informer.
func (a *Agent) namespaceGetter() detect.NamespaceGetter {
	return detect.NamespaceGetterFunc(func(_ context.Context, name string) (*corev1.Namespace, error) {
		return a.nsLister.Get(name)
	})
}

// podGetter is heal's PodGetter over the pod informer: the planner re-reads a target
// there (the informer is as fresh as the agent's view can be; stale() guards outages).
func (a *Agent) podGetter() heal.PodGetter {
	return heal.PodGetterFunc(func(_ context.Context, namespace, name string) (*corev1.Pod, error) {
		p, err := a.pods.Pods(namespace).Get(name)
		if err != nil {
			return nil, err
		}
		return p.DeepCopy(), nil
	})
}

// slimObject drops what the agent never reads from a cached object: managedFields and the
// kubectl.kubernetes.io/last-applied-configuration annotation (a second copy of the spec).
func slimObject(o any) (any, error) {
	if m, ok := o.(metav1.Object); ok {
		m.SetManagedFields(nil)
		if ann := m.GetAnnotations(); ann != nil {
			if _, ok := ann[corev1.LastAppliedConfigAnnotation]; ok {
				ann = maps.Clone(ann)
				delete(ann, corev1.LastAppliedConfigAnnotation)
				m.SetAnnotations(ann)
			}
		}
	}
	return o, nil
}

// isInfra reports whether p is this node's ztunnel or istio-cni pod: when one of them
// restarts or becomes Ready, every pod's capture may have changed.
func (a *Agent) isInfra(p *corev1.Pod) bool {
	return a.infraNamespace(p.Namespace) && (enroll.IsZtunnelPod(p) || enroll.IsIstioCNIPod(p))
}

func restarts(p *corev1.Pod) int32 {
	var n int32
	for _, c := range p.Status.ContainerStatuses {
		n += c.RestartCount
	}
	return n
}

func (a *Agent) onAdd(o any) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	if a.isInfra(p) {
		a.sched.markAll("ztunnel or istio-cni pod " + p.Name + " appeared")
	}
	a.sched.markDirty(p.UID)
}

// onUpdate checks a pod again when something that matters changed: the redirection
// annotation, the dataplane-mode label, the pod IP, its phase or container restarts — not
// on every status heartbeat. A change of readiness or restarts of the node's ztunnel or
// istio-cni pod re-checks every pod.
func (a *Agent) onUpdate(old, o any) {
	op, ok1 := old.(*corev1.Pod)
	np, ok2 := o.(*corev1.Pod)
	if !ok1 || !ok2 {
		return
	}
	if a.isInfra(np) && (heal.PodReady(op) != heal.PodReady(np) || restarts(op) != restarts(np) || op.UID != np.UID) {
		a.sched.markAll(fmt.Sprintf("%s/%s restarted or changed readiness", np.Namespace, np.Name))
	}
	if op.Annotations[enroll.AnnotationRedirection] != np.Annotations[enroll.AnnotationRedirection] ||
		op.Labels[enroll.LabelDataplaneMode] != np.Labels[enroll.LabelDataplaneMode] ||
		op.Status.PodIP != np.Status.PodIP || op.Status.Phase != np.Status.Phase || restarts(op) != restarts(np) ||
		(op.DeletionTimestamp == nil) != (np.DeletionTimestamp == nil) {
		a.sched.markDirty(np.UID)
	}
}

// stale reports whether the pod informer may be behind the API server: a watch failed and
// the informer has not relisted since. The agent then heals nothing.
func (a *Agent) stale() bool {
	a.watch.mu.Lock()
	defer a.watch.mu.Unlock()
	if a.watch.staleRV == "" {
		return false
	}
	if rv := a.podInf.LastSyncResourceVersion(); rv != "" && rv != a.watch.staleRV {
		a.watch.staleRV = ""
		return false
	}
	return true
}
