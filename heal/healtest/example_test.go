package healtest_test

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/heal"
	"github.com/meshmedic/meshmedic/heal/healtest"
)

func pod(name string) *corev1.Pod {
	yes := true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "shop", Name: name, UID: types.UID("uid-" + name), ResourceVersion: "1",
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "cart", UID: types.UID("rs-" + name), Controller: &yes,
			}},
		},
		Spec: corev1.PodSpec{NodeName: "node-a"},
	}
}

// An operator's test: heal two orphaned pods with the evict strategy while a
// PodDisruptionBudget protects one of them.
func Example() {
	cart1, cart2 := pod("cart-1"), pod("cart-2")
	cs := fake.NewClientset(cart1, cart2)

	evicter := healtest.NewEvicter().WithPods(cs.CoreV1()).BlockWithPDB("shop", "cart-2")
	events := healtest.NewEventSink()
	h := heal.NewHealer(heal.NewEvict(evicter, cs.CoreV1(), heal.EvictOptions{}), heal.WithEvents(events))

	actions := h.Heal(context.Background(), []heal.Target{
		{Pod: cart1, Class: detect.ClassOrphaned},
		{Pod: cart2, Class: detect.ClassOrphaned},
	}, nil)

	for _, a := range actions {
		fmt.Println(a.Name, a.Result)
	}
	fmt.Println(events.Reasons())
	fmt.Println(len(evicter.Evictions()), "evictions sent")
	// Output:
	// cart-1 evicted
	// cart-2 blocked-by-pdb
	// [MeshmedicEvicted MeshmedicBlockedByPDB]
	// 2 evictions sent
}
