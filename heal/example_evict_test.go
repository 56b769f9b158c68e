package heal_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/heal"
	"github.com/meshmedic/meshmedic/heal/healtest"
)

// replicaPod is a pod of ReplicaSet rs on node.
func replicaPod(ns, name, rs, node string) *corev1.Pod {
	yes := true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs, UID: types.UID("rs-" + rs), Controller: &yes}}},
		Spec: corev1.PodSpec{NodeName: node},
	}
}

// The evict strategy on its own: a policy/v1 Eviction carrying the pod's UID as a
// precondition, then a wait until that UID is gone. A PodDisruptionBudget's 429 is
// blocked-by-pdb (ErrPDBBlocked), not a failure. With a real clientset the Evicter is
// heal.NewEvicter(clientset.CoreV1().RESTClient()); healtest.Evicter stands in for the API
// server here and deletes the pod the way it would.
func ExampleNewEvict() {
	web, db := replicaPod("shop", "web-1", "web", "n1"), replicaPod("shop", "db-0", "db", "n1")
	cs := fake.NewClientset(web, db)
	evicter := healtest.NewEvicter().WithPods(cs.CoreV1()).BlockWithPDB("shop", "db-0")
	evict := heal.NewEvict(evicter, cs.CoreV1(), heal.EvictOptions{Timeout: time.Minute})

	ctx := context.Background()
	res, err := evict.Heal(ctx, heal.Target{Pod: web, Class: detect.ClassOrphaned}, false)
	fmt.Println(res, err)
	res, err = evict.Heal(ctx, heal.Target{Pod: db, Class: detect.ClassOrphaned}, false)
	fmt.Println(res, errors.Is(err, heal.ErrPDBBlocked))
	ev := evicter.Evictions()[0]
	fmt.Println("eviction of", ev.Name, "only if uid is", *ev.DeleteOptions.Preconditions.UID)
	// Output:
	// evicted <nil>
	// blocked-by-pdb true
	// eviction of web-1 only if uid is uid-web-1
}

// Budgets bound one Heal call; backoff spans calls. Here at most two pods per node per
// call, and a ReplicaSet whose pod was just healed waits (5 minutes, doubling) before
// another of its pods is restarted, so a workload that keeps orphaning is not restarted in a
// loop. The clock is a fake one, stepped by hand.
func ExampleWithBudget() {
	a, b, c := replicaPod("shop", "a-1", "a", "n1"), replicaPod("shop", "b-1", "b", "n1"), replicaPod("shop", "c-1", "c", "n1")
	other := replicaPod("shop", "d-1", "d", "n2")
	cs := fake.NewClientset(a, b, c, other)
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	evict := heal.NewEvict(healtest.NewEvicter().WithPods(cs.CoreV1()), cs.CoreV1(), heal.EvictOptions{Clock: clk})
	h := heal.NewHealer(evict,
		heal.WithBudget(heal.Budget{PerRun: 10, PerNode: 2, PerNamespace: -1}), // negative: unlimited
		heal.WithBackoff(5*time.Minute, time.Hour),
		heal.WithClock(clk))

	ctx := context.Background()
	show := func(actions []heal.Action) {
		for _, a := range actions {
			fmt.Printf("  %s on %s: %s\n", a.Name, a.Node, a.Result)
		}
	}
	fmt.Println("first run:")
	show(h.Heal(ctx, []heal.Target{
		{Pod: a, Class: detect.ClassOrphaned}, {Pod: b, Class: detect.ClassOrphaned},
		{Pod: c, Class: detect.ClassOrphaned}, {Pod: other, Class: detect.ClassPartial},
	}, nil))

	// a's ReplicaSet made a new pod, and it is orphaned too.
	a2 := replicaPod("shop", "a-2", "a", "n1")
	if _, err := cs.CoreV1().Pods("shop").Create(ctx, a2, metav1.CreateOptions{}); err != nil {
		panic(err)
	}
	fmt.Println("one minute later:")
	clk.Step(time.Minute)
	show(h.Heal(ctx, []heal.Target{{Pod: a2, Class: detect.ClassOrphaned}}, nil))
	fmt.Println("five minutes later:")
	clk.Step(5 * time.Minute)
	show(h.Heal(ctx, []heal.Target{{Pod: a2, Class: detect.ClassOrphaned}}, nil))
	// Output:
	// first run:
	//   a-1 on n1: evicted
	//   b-1 on n1: evicted
	//   c-1 on n1: skipped-budget
	//   d-1 on n2: evicted
	// one minute later:
	//   a-2 on n1: skipped-backoff
	// five minutes later:
	//   a-2 on n1: evicted
}
