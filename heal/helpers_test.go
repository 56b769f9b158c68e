package heal_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/heal"
)

var (
	podsGVR = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	podsGR  = schema.GroupResource{Resource: "pods"}
	t0      = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
)

// podOpt modifies a test pod.
type podOpt func(*corev1.Pod)

// newPod returns a Running pod owned by ReplicaSet "rs-<name>" on node, annotated as
// enrolled, resourceVersion "1".
func newPod(ns, name, node string, opts ...podOpt) *corev1.Pod {
	yes := true
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name, UID: types.UID("uid-" + name), ResourceVersion: "1",
			Annotations: map[string]string{enroll.AnnotationRedirection: "enabled"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs-" + name,
				UID: types.UID("rs-uid-" + name), Controller: &yes,
			}},
		},
		Spec:   corev1.PodSpec{NodeName: node},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func bare(p *corev1.Pod) { p.OwnerReferences = nil }

// ownedBy makes the pod's controller the given UID (siblings share it).
func ownedBy(uid types.UID) podOpt {
	return func(p *corev1.Pod) { p.OwnerReferences[0].UID = uid }
}

func withLabel(k, v string) podOpt {
	return func(p *corev1.Pod) {
		if p.Labels == nil {
			p.Labels = map[string]string{}
		}
		p.Labels[k] = v
	}
}

func orphan(p *corev1.Pod) heal.Target {
	return heal.Target{Pod: p, Class: detect.ClassOrphaned, Detail: "no listener on 15001/15006/15008"}
}

// apiSim makes a fake clientset behave like the API server where heal depends on it:
// pod patches check and bump resourceVersion (409 on mismatch) and honour dry run;
// deletes and evictions honour the UID precondition and dry run.
type apiSim struct {
	cs *fake.Clientset

	mu      sync.Mutex
	rv      int
	patches []k8stesting.PatchActionImpl
	// afterPatch runs (under mu) after a stored patch, to simulate a controller reacting
	// (istio-cni); it may modify the pod, which is stored with a new resourceVersion.
	afterPatch func(p *corev1.Pod)
	// conflicts makes the next N patches answer 409 without applying.
	conflicts int
}

func newAPISim(t *testing.T, pods ...*corev1.Pod) *apiSim {
	t.Helper()
	objs := make([]k8sruntime.Object, len(pods))
	for i, p := range pods {
		objs[i] = p.DeepCopy()
	}
	s := &apiSim{cs: fake.NewClientset(objs...), rv: 100}
	s.cs.PrependReactor("patch", "pods", s.patch)
	s.cs.PrependReactor("delete", "pods", s.delete)
	s.cs.PrependReactor("create", "pods", s.evict)
	return s
}

// evicter sends evictions through the fake clientset's typed client (fine for a fake:
// there is no Retry-After loop in it).
func (s *apiSim) evicter() heal.Evicter {
	return heal.EvicterFunc(func(ctx context.Context, ev *policyv1.Eviction) error {
		return s.cs.PolicyV1().Evictions(ev.Namespace).Evict(ctx, ev)
	})
}

func (s *apiSim) get(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	p, err := s.cs.Tracker().Get(podsGVR, ns, name)
	if err != nil {
		t.Fatalf("get pod %s/%s: %v", ns, name, err)
	}
	return p.(*corev1.Pod)
}

func (s *apiSim) exists(ns, name string) bool {
	_, err := s.cs.Tracker().Get(podsGVR, ns, name)
	return err == nil
}

func (s *apiSim) patchLog() []k8stesting.PatchActionImpl {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.patches)
}

func (s *apiSim) nextRV() string {
	s.rv++
	return strconv.Itoa(s.rv)
}

func (s *apiSim) patch(a k8stesting.Action) (bool, k8sruntime.Object, error) {
	pa := a.(k8stesting.PatchActionImpl)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.patches = append(s.patches, pa)
	if pa.PatchType != types.MergePatchType {
		return true, nil, fmt.Errorf("apiSim: unexpected patch type %s", pa.PatchType)
	}
	if s.conflicts > 0 {
		s.conflicts--
		return true, nil, apierrors.NewConflict(podsGR, pa.Name, fmt.Errorf("the object has been modified"))
	}
	obj, err := s.cs.Tracker().Get(podsGVR, pa.Namespace, pa.Name)
	if err != nil {
		return true, nil, err
	}
	cur := obj.(*corev1.Pod)
	var patch map[string]any
	if err := json.Unmarshal(pa.Patch, &patch); err != nil {
		return true, nil, apierrors.NewBadRequest(err.Error())
	}
	if md, ok := patch["metadata"].(map[string]any); ok {
		if rv, ok := md["resourceVersion"].(string); ok && rv != "" && rv != cur.ResourceVersion {
			return true, nil, apierrors.NewConflict(podsGR, pa.Name, fmt.Errorf("the object has been modified"))
		}
		delete(md, "resourceVersion")
	}
	raw, _ := json.Marshal(cur)
	var doc any
	_ = json.Unmarshal(raw, &doc)
	merged, _ := json.Marshal(mergePatch(doc, patch))
	next := &corev1.Pod{}
	if err := json.Unmarshal(merged, next); err != nil {
		return true, nil, err
	}
	if slices.Contains(pa.PatchOptions.DryRun, metav1.DryRunAll) {
		next.ResourceVersion = cur.ResourceVersion
		return true, next, nil
	}
	next.ResourceVersion = s.nextRV()
	if err := s.cs.Tracker().Update(podsGVR, next, pa.Namespace); err != nil {
		return true, nil, err
	}
	if s.afterPatch != nil {
		after := next.DeepCopy()
		s.afterPatch(after)
		after.ResourceVersion = s.nextRV()
		if err := s.cs.Tracker().Update(podsGVR, after, pa.Namespace); err != nil {
			return true, nil, err
		}
	}
	return true, next, nil
}

// mergePatch applies an RFC 7386 JSON merge patch.
func mergePatch(doc, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	dm, ok := doc.(map[string]any)
	if !ok {
		dm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(dm, k)
			continue
		}
		dm[k] = mergePatch(dm[k], v)
	}
	return dm
}

func (s *apiSim) checkPrecondition(ns, name string, pre *metav1.Preconditions) error {
	obj, err := s.cs.Tracker().Get(podsGVR, ns, name)
	if err != nil {
		return err
	}
	if pre != nil && pre.UID != nil && *pre.UID != obj.(*corev1.Pod).UID {
		return apierrors.NewConflict(podsGR, name, fmt.Errorf("Precondition failed: UID in precondition: %s, UID in object meta: %s", *pre.UID, obj.(*corev1.Pod).UID))
	}
	return nil
}

func (s *apiSim) delete(a k8stesting.Action) (bool, k8sruntime.Object, error) {
	da := a.(k8stesting.DeleteActionImpl)
	if err := s.checkPrecondition(da.Namespace, da.Name, da.DeleteOptions.Preconditions); err != nil {
		return true, nil, err
	}
	if slices.Contains(da.DeleteOptions.DryRun, metav1.DryRunAll) {
		return true, nil, nil
	}
	return true, nil, s.cs.Tracker().Delete(podsGVR, da.Namespace, da.Name)
}

// evict handles create pods/eviction; other creates fall through.
func (s *apiSim) evict(a k8stesting.Action) (bool, k8sruntime.Object, error) {
	if a.GetSubresource() != "eviction" {
		return false, nil, nil
	}
	ev := a.(k8stesting.CreateActionImpl).Object.(*policyv1.Eviction)
	var pre *metav1.Preconditions
	dry := false
	if ev.DeleteOptions != nil {
		pre = ev.DeleteOptions.Preconditions
		dry = slices.Contains(ev.DeleteOptions.DryRun, metav1.DryRunAll)
	}
	if err := s.checkPrecondition(ev.Namespace, ev.Name, pre); err != nil {
		return true, nil, err
	}
	if dry {
		return true, ev, nil
	}
	return true, ev, s.cs.Tracker().Delete(podsGVR, ev.Namespace, ev.Name)
}

// evictionActions returns the Eviction objects the fake clientset received.
func (s *apiSim) evictionActions() []*policyv1.Eviction {
	var out []*policyv1.Eviction
	for _, a := range s.cs.Actions() {
		if a.GetVerb() == "create" && a.GetSubresource() == "eviction" {
			out = append(out, a.(k8stesting.CreateActionImpl).Object.(*policyv1.Eviction))
		}
	}
	return out
}

// runStepping runs f while stepping the fake clock by step whenever something waits on
// it, and returns f's result. Nothing sleeps: the waits in heal are timers on fc.
func runStepping[T any](t *testing.T, fc *clocktesting.FakeClock, step time.Duration, f func() T) T {
	t.Helper()
	done := make(chan T, 1)
	go func() { done <- f() }()
	for steps := 0; ; {
		select {
		case v := <-done:
			return v
		default:
		}
		if fc.HasWaiters() {
			fc.Step(step)
			steps++
			if steps > 100000 {
				t.Fatalf("still running after %d clock steps", steps)
			}
			continue
		}
		runtime.Gosched()
	}
}
