package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/heal"
	"github.com/meshmedic/meshmedic/heal/healtest"
)

func pod(ns, name, node string, ready bool) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), Labels: map[string]string{}},
		Spec:       corev1.PodSpec{NodeName: node},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

func lister(t *testing.T, pods ...*corev1.Pod) corelisters.PodLister {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, p := range pods {
		require.NoError(t, idx.Add(p))
	}
	return corelisters.NewPodLister(idx)
}

func f(p *corev1.Pod, c detect.Class, confirmed bool) detect.Finding {
	return detect.Finding{Namespace: p.Namespace, Name: p.Name, UID: p.UID, Node: p.Spec.NodeName, Class: c, Confirmed: confirmed}
}

// The cycle's plan: confirmed findings of the same pod become targets; a node whose
// ztunnel is not Ready is stopped; the breaker sees every pod of the node.
func TestPlanIsConfirmedFindingsOfTheSamePod(t *testing.T) {
	orphan, flapping, healthy := pod("shop", "orphan", "n1", true), pod("shop", "flapping", "n1", true), pod("shop", "healthy", "n1", true)
	replaced := pod("shop", "replaced", "n1", true)
	zt1, zt2 := pod("istio-system", "ztunnel-a", "n1", true), pod("istio-system", "ztunnel-b", "n2", false)
	cni1, cni2 := pod("istio-system", "cni-a", "n1", true), pod("istio-system", "cni-b", "n2", true)
	zt1.Labels["app"], zt2.Labels["app"] = "ztunnel", "ztunnel"
	cni1.Labels["k8s-app"], cni2.Labels["k8s-app"] = "istio-cni-node", "istio-cni-node"
	var fine []*corev1.Pod
	for _, n := range []string{"a", "b", "c", "d"} {
		fine = append(fine, pod("shop", "fine-"+n, "n1", true))
	}
	other := pod("shop", "other", "n2", true)
	all := append([]*corev1.Pod{orphan, flapping, healthy, replaced, zt1, zt2, cni1, cni2, other}, fine...)
	// Pods the cycle did not scan are scanned for the node facts: here their namespace is
	// unknown to the engine, so they are skipped.
	noNamespaces := detect.NamespaceGetterFunc(func(_ context.Context, name string) (*corev1.Namespace, error) {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, name)
	})
	engine := detect.New(detect.PodListerFunc(func(context.Context, string) ([]corev1.Pod, error) { return nil, nil }), noNamespaces,
		detect.ProberFunc(func(context.Context, *corev1.Pod) (detect.Probe, error) { return detect.Probe{}, nil }), detect.WithConfirmDelay(0))
	c := &controller{cfg: config{istioNS: "istio-system"}, pods: lister(t, all...), engine: engine,
		healer: heal.NewHealer(heal.NewEvict(healtest.NewEvicter(), nil, heal.EvictOptions{}), heal.WithDryRun(true))}

	stale := f(replaced, detect.ClassOrphaned, true)
	stale.UID = "uid-before-replacement"
	findings := []detect.Finding{
		f(orphan, detect.ClassOrphaned, true),
		f(flapping, detect.ClassOrphaned, false),
		f(healthy, detect.ClassCaptured, false),
		stale,
		f(other, detect.ClassPartial, true),
	}
	for _, p := range []*corev1.Pod{zt1, zt2, cni1, cni2} {
		findings = append(findings, f(p, detect.ClassSkipped, false))
	}
	for _, p := range fine {
		findings = append(findings, f(p, detect.ClassCaptured, false))
	}
	rep := detect.Report{Findings: findings}
	plan, err := c.healer.Plan(context.Background(), rep, c.podGetter(), c.facts(rep))
	require.NoError(t, err)

	require.Len(t, plan.Targets, 2)
	assert.Equal(t, "orphan", plan.Targets[0].Pod.Name)
	assert.Equal(t, detect.ClassOrphaned, plan.Targets[0].Class)
	assert.Equal(t, "other", plan.Targets[1].Pod.Name)
	assert.NotSame(t, orphan, plan.Targets[0].Pod, "targets are copies, never the informer's objects")
	assert.Equal(t, heal.NodeHeal, plan.Nodes["n1"].Mode)
	assert.Equal(t, 7, plan.Nodes["n1"].Health.AmbientPods, "every pod of the node, not only the scanned ones")
	assert.Equal(t, heal.NodeStop, plan.Nodes["n2"].Mode, "ztunnel not Ready: nothing is healed on n2")
	acts := c.healer.Apply(context.Background(), plan)
	assert.Equal(t, heal.ResultRefusedBarePod, acts[0].Result, "these test pods have no owner")
	assert.Equal(t, heal.ResultRefusedNodeBreaker, acts[1].Result)
}

func TestUsage(t *testing.T) {
	var errb bytes.Buffer
	assert.Equal(t, 2, run(context.Background(), []string{"-no-such-flag"}, &errb))
	errb.Reset()
	assert.Equal(t, 2, run(context.Background(), []string{"-prober", "node-local", "-kubeconfig", "/nonexistent"}, &errb))
	assert.Contains(t, errb.String(), "give -node")
}
