// Command healtest shows how to unit-test your own heal policy with heal/healtest: Policy
// (policy.go) decides which of meshmedic's findings an operator heals and calls
// heal.Healer; policy_test.go drives it with a fake clientset, healtest.Evicter (which can
// answer 429 the way a PodDisruptionBudget does, and deletes the pod like the API server)
// and healtest.EventSink, and asserts on the evictions sent and the Events written.
//
// The tests are the example — copy them next to your own policy:
//
//	go test ./examples/healtest
//
// `go run ./examples/healtest` applies the policy once to an in-memory cluster and prints
// its decisions.
package main

import (
	"context"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/heal"
	"github.com/meshmedic/meshmedic/heal/healtest"
)

func main() {
	web, batch := ownedPod("web-1"), ownedPod("batch-1")
	batch.Labels = map[string]string{OptOutLabel: "true"}
	cs := fake.NewClientset(web, batch)
	evicter := healtest.NewEvicter().WithPods(cs.CoreV1())
	p := &Policy{
		Healer: heal.NewHealer(heal.NewEvict(evicter, cs.CoreV1(), heal.EvictOptions{}), heal.WithDryRun(true)),
		Pods:   cs.CoreV1(),
	}
	rep := detect.Report{Checked: 2, Findings: []detect.Finding{
		finding(web, detect.ClassOrphaned), finding(batch, detect.ClassOrphaned),
	}}
	healthy := heal.FactsFunc(func(context.Context, string) (heal.NodeFacts, error) {
		return heal.NodeFacts{Health: heal.NodeHealth{AmbientPods: 2, Orphaned: 1, ZtunnelReady: true, IstioCNIReady: true}}, nil
	})
	decisions, err := p.Apply(context.Background(), rep, healthy)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for _, d := range decisions {
		fmt.Printf("%s\t%s\t%s\t%s\n", d.Pod, d.Class, or(string(d.Result), "declined"), d.Reason)
	}
}

// ownedPod is a Ready pod of a ReplicaSet (heal refuses to restart bare pods, and leaves
// pods that are not Ready alone unless told otherwise).
func ownedPod(name string) *corev1.Pod {
	yes := true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "shop", Name: name, UID: types.UID("uid-" + name),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", UID: "rs-uid", Controller: &yes}},
		},
		Spec: corev1.PodSpec{NodeName: "node-a"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

// finding is a confirmed finding of class c about pod p.
func finding(p *corev1.Pod, c detect.Class) detect.Finding {
	return detect.Finding{Namespace: p.Namespace, Name: p.Name, UID: p.UID, Node: p.Spec.NodeName, Class: c, Confirmed: true}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
