package heal_test

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/heal"
	"github.com/meshmedic/meshmedic/heal/healtest"
)

// A dry run over three findings: the orphan would be evicted, the bare pod is refused
// (it would not come back) and the unknown one is never healed. With a real clientset the
// Evicter is heal.NewEvicter(clientset.PolicyV1().RESTClient()).
func ExampleNewHealer() {
	yes := true
	owned := []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web", UID: "rs-1", Controller: &yes}}
	web := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", UID: "u1", OwnerReferences: owned}, Spec: corev1.PodSpec{NodeName: "n1"}}
	solo := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "solo", UID: "u2"}, Spec: corev1.PodSpec{NodeName: "n1"}}
	odd := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "odd", UID: "u3", OwnerReferences: owned}, Spec: corev1.PodSpec{NodeName: "n1"}}
	cs := fake.NewClientset(web, solo, odd)

	evict := heal.NewEvict(healtest.NewEvicter(), cs.CoreV1(), heal.EvictOptions{})
	h := heal.NewHealer(evict, heal.WithDryRun(true))
	nodes := map[string]heal.NodeHealth{"n1": {AmbientPods: 20, Orphaned: 2, ZtunnelReady: true, IstioCNIReady: true}}
	for _, a := range h.Heal(context.Background(), []heal.Target{
		{Pod: web, Class: detect.ClassOrphaned},
		{Pod: solo, Class: detect.ClassOrphaned},
		{Pod: odd, Class: detect.ClassUnknown},
	}, nodes) {
		fmt.Printf("%s %s %s\n", a.Name, a.Strategy, a.Result)
	}
	// Output:
	// web-1 evict would-evict
	// solo evict refused-bare-pod
	// odd evict not-actionable
}
