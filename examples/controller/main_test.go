package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/heal"
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

func TestTargetsAreConfirmedFindingsOfTheSamePod(t *testing.T) {
	orphan, flapping, healthy := pod("shop", "orphan", "n1", true), pod("shop", "flapping", "n1", true), pod("shop", "healthy", "n1", true)
	replaced := pod("shop", "replaced", "n1", true)
	zt1, zt2 := pod("istio-system", "ztunnel-a", "n1", true), pod("istio-system", "ztunnel-b", "n2", false)
	zt1.Labels["app"], zt2.Labels["app"] = "ztunnel", "ztunnel"
	other := pod("shop", "other", "n2", true)
	c := &controller{cfg: config{istioNS: "istio-system"}, pods: lister(t, orphan, flapping, healthy, replaced, zt1, zt2, other)}

	stale := f(replaced, detect.ClassOrphaned, true)
	stale.UID = "uid-before-replacement"
	targets, nodes := c.targets(detect.Report{Findings: []detect.Finding{
		f(orphan, detect.ClassOrphaned, true),
		f(flapping, detect.ClassOrphaned, false),
		f(healthy, detect.ClassCaptured, false),
		stale,
		f(other, detect.ClassPartial, true),
		f(zt1, detect.ClassSkipped, false),
	}})

	require.Len(t, targets, 2)
	assert.Equal(t, "orphan", targets[0].Pod.Name)
	assert.Equal(t, detect.ClassOrphaned, targets[0].Class)
	assert.Equal(t, "other", targets[1].Pod.Name)
	assert.NotSame(t, orphan, targets[0].Pod, "targets are copies, never the informer's objects")
	assert.Equal(t, heal.NodeHealth{AmbientPods: 4, Orphaned: 3, ZtunnelReady: true}, nodes["n1"])
	assert.Equal(t, heal.NodeHealth{AmbientPods: 1, Orphaned: 1, ZtunnelReady: false}, nodes["n2"], "ztunnel not Ready: the breaker refuses the node")
}

func TestUsage(t *testing.T) {
	var errb bytes.Buffer
	assert.Equal(t, 2, run(context.Background(), []string{"-no-such-flag"}, &errb))
	errb.Reset()
	assert.Equal(t, 2, run(context.Background(), []string{"-prober", "node-local", "-kubeconfig", "/nonexistent"}, &errb))
	assert.Contains(t, errb.String(), "give -node")
}
