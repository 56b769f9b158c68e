package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/heal"
	"github.com/meshmedic/meshmedic/heal/healtest"
)

// fixture is a fake cluster, a recording Evicter that deletes evicted pods through the
// fake clientset (as the API server would), a recording EventSink and the Policy under
// test. extra heal options (dry run, budgets, ...) go to the Healer.
type fixture struct {
	cs      *fake.Clientset
	evicter *healtest.Evicter
	events  *healtest.EventSink
	policy  *Policy
}

func newFixture(pods []*corev1.Pod, opts ...heal.Option) *fixture {
	objs := make([]runtime.Object, 0, len(pods))
	for _, p := range pods {
		objs = append(objs, p)
	}
	cs := fake.NewClientset(objs...)
	f := &fixture{cs: cs, evicter: healtest.NewEvicter().WithPods(cs.CoreV1()), events: healtest.NewEventSink()}
	opts = append([]heal.Option{heal.WithEvents(f.events)}, opts...)
	f.policy = &Policy{
		Healer: heal.NewHealer(heal.NewEvict(f.evicter, cs.CoreV1(), heal.EvictOptions{}), opts...),
		Pods:   cs.CoreV1(),
	}
	return f
}

func (f *fixture) exists(t *testing.T, p *corev1.Pod) bool {
	t.Helper()
	got, err := f.cs.CoreV1().Pods(p.Namespace).Get(context.Background(), p.Name, metav1.GetOptions{})
	return err == nil && got.UID == p.UID
}

func report(fs ...detect.Finding) detect.Report { return detect.Report{Checked: len(fs), Findings: fs} }

// healthyNodes says every node has a Ready ztunnel and istio-cni and few orphans.
var healthyNodes = heal.FactsFunc(func(context.Context, string) (heal.NodeFacts, error) {
	return heal.NodeFacts{Health: heal.NodeHealth{AmbientPods: 10, Orphaned: 1, ZtunnelReady: true, IstioCNIReady: true}}, nil
})

func TestPolicyHealsOnlyConfirmedTrustedClasses(t *testing.T) {
	orphan, partial, flapping, optedOut := ownedPod("orphan"), ownedPod("partial"), ownedPod("flapping"), ownedPod("opted-out")
	optedOut.Labels = map[string]string{OptOutLabel: "true"}
	healthy := ownedPod("healthy")
	f := newFixture([]*corev1.Pod{orphan, partial, flapping, optedOut, healthy})

	unconfirmed := finding(flapping, detect.ClassOrphaned)
	unconfirmed.Confirmed = false
	got, err := f.policy.Apply(context.Background(), report(
		finding(orphan, detect.ClassOrphaned),
		finding(partial, detect.ClassPartial),
		unconfirmed,
		finding(optedOut, detect.ClassOrphaned),
		finding(healthy, detect.ClassCaptured), // not actionable: no decision at all
	), healthyNodes)
	require.NoError(t, err)

	require.Len(t, got, 4)
	assert.Equal(t, Decision{Pod: "shop/orphan", Class: detect.ClassOrphaned, Result: heal.ResultEvicted,
		Reason: "pod shop/orphan evicted; uid uid-orphan is gone"}, got[0])
	assert.Equal(t, heal.Result(""), got[1].Result, "partial is not a class this policy heals")
	assert.Contains(t, got[1].Reason, "class partial")
	assert.Equal(t, heal.Result(""), got[2].Result)
	assert.Contains(t, got[2].Reason, "not confirmed")
	assert.Equal(t, heal.Result(""), got[3].Result)
	assert.Contains(t, got[3].Reason, OptOutLabel)

	// Exactly one eviction went out, for the orphan's UID only, and it was real.
	evs := f.evicter.Evictions()
	require.Len(t, evs, 1)
	assert.Equal(t, "orphan", evs[0].Name)
	require.NotNil(t, evs[0].DeleteOptions.Preconditions)
	assert.Equal(t, orphan.UID, *evs[0].DeleteOptions.Preconditions.UID)
	assert.Empty(t, evs[0].DeleteOptions.DryRun)
	assert.False(t, f.exists(t, orphan), "the evicted pod is gone")
	for _, p := range []*corev1.Pod{partial, flapping, optedOut, healthy} {
		assert.True(t, f.exists(t, p), "%s must not be touched", p.Name)
	}
	assert.Equal(t, []string{heal.ReasonEvicted}, f.events.Reasons())
}

func TestPolicyHonoursPodDisruptionBudget(t *testing.T) {
	a, b := ownedPod("a"), ownedPod("b")
	f := newFixture([]*corev1.Pod{a, b})
	f.evicter.BlockWithPDB("shop", "b")

	got, err := f.policy.Apply(context.Background(), report(finding(a, detect.ClassOrphaned), finding(b, detect.ClassNetnsReplaced)), healthyNodes)
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, heal.ResultEvicted, got[0].Result)
	assert.Equal(t, heal.ResultBlockedByPDB, got[1].Result, "a 429 is reported, not retried in a loop")
	assert.True(t, f.exists(t, b), "the PDB-protected pod stays")
	assert.Equal(t, []string{heal.ReasonEvicted, heal.ReasonBlockedByPDB}, f.events.Reasons())
}

func TestPolicyDryRunSendsServerSideDryRun(t *testing.T) {
	a := ownedPod("a")
	f := newFixture([]*corev1.Pod{a}, heal.WithDryRun(true))

	got, err := f.policy.Apply(context.Background(), report(finding(a, detect.ClassOrphaned)), healthyNodes)
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, heal.ResultWouldEvict, got[0].Result)
	evs := f.evicter.Evictions()
	require.Len(t, evs, 1, "a dry run still sends the request, so the API's PDB verdict is real")
	assert.Equal(t, []string{metav1.DryRunAll}, evs[0].DeleteOptions.DryRun)
	assert.True(t, f.exists(t, a))
	assert.Equal(t, []string{heal.ReasonWouldEvict}, f.events.Reasons())
}

func TestPolicyBudgetAndReplacedPods(t *testing.T) {
	a, b, c := ownedPod("a"), ownedPod("b"), ownedPod("c")
	replaced := finding(c, detect.ClassOrphaned)
	replaced.UID = "uid-of-the-pod-before" // the name now belongs to a replacement
	f := newFixture([]*corev1.Pod{a, b, c}, heal.WithBudget(heal.Budget{PerRun: 1, PerNode: -1, PerNamespace: -1}))

	got, err := f.policy.Apply(context.Background(), report(finding(a, detect.ClassOrphaned), finding(b, detect.ClassOrphaned), replaced), healthyNodes)
	require.NoError(t, err)
	require.Len(t, got, 3)
	assert.Equal(t, heal.ResultEvicted, got[0].Result)
	assert.Equal(t, heal.ResultSkippedBudget, got[1].Result, "the Healer's per-run budget applies under the policy")
	assert.Equal(t, heal.Result(""), got[2].Result)
	assert.Equal(t, heal.DropGone, got[2].Reason)
	assert.True(t, f.exists(t, c), "a same-named replacement is never touched")
	assert.Len(t, f.evicter.Evictions(), 1)
}

func TestPolicyNodeBreaker(t *testing.T) {
	a := ownedPod("a")
	f := newFixture([]*corev1.Pod{a})
	// node-a's ztunnel is not Ready: restarting pods cannot help, heal refuses.
	got, err := f.policy.Apply(context.Background(), report(finding(a, detect.ClassOrphaned)),
		heal.FactsFunc(func(context.Context, string) (heal.NodeFacts, error) {
			return heal.NodeFacts{Health: heal.NodeHealth{AmbientPods: 10, Orphaned: 1, ZtunnelReady: false, IstioCNIReady: true}}, nil
		}))
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, heal.ResultRefusedNodeBreaker, got[0].Result)
	assert.Empty(t, f.evicter.Evictions())
	assert.Equal(t, []string{heal.ReasonRefusedNodeBreaker}, f.events.Reasons())
}
