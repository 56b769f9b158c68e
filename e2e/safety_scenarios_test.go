//go:build sandbox

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/e2e/sandbox"
	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/heal"
)

// scenarioSafety: "safe to leave on" (issue 11). Every scenario keeps its fleet-wide heal
// ledger in a namespace of its own (--meshmedic-namespace), so the limits one scenario
// spends do not leak into the next; sharing is tested by giving two processes the same one.
func scenarioSafety(ctx context.Context, t *testing.T, e *env) {
	t.Run("agent-and-cli-share-budget", func(t *testing.T) { safetySharedBudget(ctx, t, e) })
	t.Run("backoff-survives-agent-restart", func(t *testing.T) { safetyBackoffSurvivesRestart(ctx, t, e) })
	t.Run("cluster-rate-across-nodes", func(t *testing.T) { safetyClusterRateAcrossNodes(ctx, t, e) })
	t.Run("mass-orphan-canary", func(t *testing.T) { safetyMassOrphanCanary(ctx, t, e) })
	t.Run("mass-orphan-node-broken", func(t *testing.T) { safetyMassOrphanNodeBroken(ctx, t, e) })
	t.Run("istio-cni-not-ready-refuses", func(t *testing.T) { safetyIstioCNINotReady(ctx, t, e) })
	t.Run("toggle-interrupted-restores", func(t *testing.T) { safetyToggleInterrupted(ctx, t, e) })
	t.Run("stale-condition-is-unknown", func(t *testing.T) { safetyStaleCondition(ctx, t, e) })
	t.Run("status-patch-scoped-to-node", func(t *testing.T) { safetyStatusPatchScoped(ctx, t, e) })
	t.Run("drain-exclusions", func(t *testing.T) { safetyDrainExclusions(ctx, t, e) })
	t.Run("agent-cannot-read-workload-secrets", func(t *testing.T) { safetyAgentCannotReadSecrets(ctx, t, e) })
	t.Run("churn-no-false-heals", func(t *testing.T) { safetyChurnNoFalseHeals(ctx, t, e) })
}

// ledgerNamespace makes a namespace for one scenario's heal ledger and heartbeats, deleted
// when the scenario ends.
func ledgerNamespace(ctx context.Context, t *testing.T, e *env, name string) string {
	t.Helper()
	mkNamespace(ctx, t, e, name, nil)
	t.Cleanup(func() { _ = e.cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	return name
}

// ledger reads the heal ledger in namespace ns (empty when there is none yet).
func ledger(ctx context.Context, t testing.TB, e *env, ns string) heal.LedgerState {
	t.Helper()
	lease, err := e.cs.CoordinationV1().Leases(ns).Get(ctx, heal.LedgerLeaseName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return heal.LedgerState{}
	}
	require.NoError(t, err)
	var st heal.LedgerState
	require.NoError(t, json.Unmarshal([]byte(lease.Annotations[heal.LedgerAnnotation]), &st))
	return st
}

// pinned creates Deployment ns/name of replicas pods bound to node (no scheduler), with
// tweak applied to the pod template.
func pinned(ctx context.Context, t *testing.T, e *env, ns, name, node string, replicas int32, tweak func(*corev1.PodSpec, *metav1.ObjectMeta)) {
	t.Helper()
	d := sandbox.Deployment(sandbox.Workload{Namespace: ns, Name: name, Replicas: replicas})
	d.Spec.Template.Spec.NodeName = node
	if tweak != nil {
		tweak(&d.Spec.Template.Spec, &d.Spec.Template.ObjectMeta)
	}
	_, err := e.cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
	require.NoError(t, err)
}

// podsOf lists the pods of Deployment app=name in ns.
func podsOf(ctx context.Context, t testing.TB, e *env, ns, name string) []corev1.Pod {
	t.Helper()
	list, err := e.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
	require.NoError(t, err)
	return list.Items
}

// evictions counts the MeshmedicEvicted Events in ns.
func evictions(ctx context.Context, t testing.TB, e *env, ns string) []string {
	t.Helper()
	return eventsWith(ctx, t, e, ns, heal.ReasonEvicted)
}

func eventsWith(ctx context.Context, t testing.TB, e *env, ns, reason string) []string {
	t.Helper()
	evs, err := e.cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	var out []string
	for _, ev := range evs.Items {
		if ev.Reason == reason {
			out = append(out, ev.InvolvedObject.Name)
		}
	}
	return out
}

// nodeEvents lists the reasons of Events about node (in namespace default).
func nodeEvents(ctx context.Context, t testing.TB, e *env, node string) []corev1.Event {
	t.Helper()
	evs, err := e.cs.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	var out []corev1.Event
	for _, ev := range evs.Items {
		if ev.InvolvedObject.Kind == "Node" && ev.InvolvedObject.Name == node {
			out = append(out, ev)
		}
	}
	return out
}

// metric reads one sample of the agent's /metrics ("" when absent).
func metric(t testing.TB, url, sample string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`)
	if m := re.FindStringSubmatch(metricsText(t, url)); m != nil {
		return m[1]
	}
	return ""
}

// fastAgent are the scenarios' agent flags on top of startAgent's fast tick: a ledger
// namespace, and a breaker that no other scenario's leftovers can trip.
func fastAgent(ledgerNS string, extra ...string) []string {
	return append([]string{"--auto-repair", "--meshmedic-namespace", ledgerNS, "--breaker-min-pods", "1000"}, extra...)
}

// safetySharedBudget: agent-and-cli-share-budget. One cluster-wide heal rate, drawn from by
// the agent and `repair --yes` alike: with a rate of 1, the agent heals one orphan and the
// CLI, run at the same time on the other, is refused with the fleet-wide reason.
func safetySharedBudget(ctx context.Context, t *testing.T, e *env) {
	const ns = "safety-budget"
	lns := ledgerNamespace(ctx, t, e, "mm-budget")
	agentNamespace(ctx, t, e, ns)
	pinned(ctx, t, e, ns, "a", e.node.Name(), 1, nil)
	pinned(ctx, t, e, ns, "b", e.node.Name(), 1, nil)
	waitPods(ctx, t, e, ns, 2, enrolled)
	a, b := podsOf(ctx, t, e, ns, "a")[0], podsOf(ctx, t, e, ns, "b")[0]

	url, _, _ := startAgent(ctx, t, e, agentRun{args: fastAgent(lns, "--cluster-max-heals", "1")})
	require.NoError(t, e.node.Flush(ns, a.Name))
	waitGone(ctx, t, e, a, time.Minute)

	require.NoError(t, e.node.Flush(ns, b.Name))
	out, res := repair(ctx, t, e, "-n", ns, "--yes", "--meshmedic-namespace", lns, "--cluster-max-heals", "1", "--breaker-min-pods", "1000")
	assert.Equal(t, 1, res.Code, "%s\n%s", res.Stdout, res.Stderr)
	require.Len(t, out.Actions, 1, res.Stdout)
	assert.Equal(t, b.Name, out.Actions[0].Name)
	assert.Equal(t, "skipped-budget", out.Actions[0].Result)
	assert.Contains(t, out.Actions[0].Detail, "cluster-wide heal rate of 1 per 10m0s spent")

	// The agent, still running, is held back by the same budget: b stays.
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return metric(t, url, `meshmedic_repairs_total{result="skipped-budget",strategy="evict"}`) != "", nil
	}), "the agent is refused by the budget the CLI saw spent")
	got, err := e.cs.CoreV1().Pods(ns).Get(ctx, b.Name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, b.UID, got.UID, "b is not evicted: one budget across the agent and the CLI")
	st := ledger(ctx, t, e, lns)
	require.Len(t, st.Heals, 1)
	assert.Equal(t, a.Name, st.Heals[0].Name)
	assert.Equal(t, "agent/"+e.node.Name(), st.Heals[0].By)
	assert.Equal(t, []string{a.Name}, evictions(ctx, t, e, ns))
	require.NoError(t, e.node.Recapture(ns, b.Name))
}

// safetyBackoffSurvivesAgentRestart: backoff-survives-agent-restart. The agent heals one
// replica of a ReplicaSet, is killed (as an OOM kill would), and a new agent does not heal
// the sibling that orphans next: the controller's backoff is in the ledger, not in memory.
func safetyBackoffSurvivesRestart(ctx context.Context, t *testing.T, e *env) {
	const ns = "safety-backoff"
	lns := ledgerNamespace(ctx, t, e, "mm-backoff")
	agentNamespace(ctx, t, e, ns)
	pinned(ctx, t, e, ns, "web", e.node.Name(), 2, nil)
	pods := waitPods(ctx, t, e, ns, 2, enrolled)

	_, _, proc := startAgent(ctx, t, e, agentRun{args: fastAgent(lns)})
	require.NoError(t, e.node.Flush(ns, pods[0].Name))
	waitGone(ctx, t, e, pods[0], time.Minute)
	require.NoError(t, proc.Kill()) // no graceful shutdown: whatever was in memory is lost
	_, _ = proc.Wait()

	url, _, _ := startAgent(ctx, t, e, agentRun{args: fastAgent(lns)})
	require.NoError(t, e.node.Flush(ns, pods[1].Name))
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		return hasEvent(ctx, t, e, ns, pods[1].Name, heal.ReasonSkippedBackoff), nil
	}), "the restarted agent reports the sibling in backoff")
	assert.NotEmpty(t, metric(t, url, `meshmedic_repairs_total{result="skipped-backoff",strategy="evict"}`))
	got, err := e.cs.CoreV1().Pods(ns).Get(ctx, pods[1].Name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, pods[1].UID, got.UID, "the sibling is not evicted while the ReplicaSet is in backoff")
	st := ledger(ctx, t, e, lns)
	require.Len(t, st.Backoff, 1)
	for _, b := range st.Backoff {
		assert.Equal(t, 1, b.Attempts)
		assert.True(t, b.Until.After(time.Now()), "backoff until %s", b.Until)
	}
	require.NoError(t, e.node.Recapture(ns, pods[1].Name))
}

// secondNode starts another simulated node for the scenario, and removes it (and its
// pods) when the scenario ends.
func secondNode(ctx context.Context, t *testing.T, e *env) *sandbox.Node {
	t.Helper()
	var log strings.Builder
	n2, err := sandbox.StartNode(ctx, e.cs, sandbox.Options{NodeName: "sandbox-node-2", PodCIDR: netip.MustParsePrefix("10.245.0.0/16"),
		DNS: true, Log: &lockedWriter{w: &log}})
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx := context.Background()
		_ = e.cs.CoreV1().Nodes().Delete(ctx, "sandbox-node-2", metav1.DeleteOptions{})
		for _, name := range []string{"ztunnel-sandbox-node-2", "istio-cni-node-sandbox-node-2"} {
			_ = e.cs.CoreV1().Pods("istio-system").Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		}
		assert.NoError(t, n2.Stop())
		if t.Failed() {
			t.Logf("second node log:\n%s", tail(log.String(), 40))
		}
	})
	return n2
}

// safetyClusterRateAcrossNodes: cluster-rate-across-nodes. Two nodes, two agents, one
// cluster-wide rate of 1: an orphan on each node, and exactly one is healed.
func safetyClusterRateAcrossNodes(ctx context.Context, t *testing.T, e *env) {
	const ns = "safety-rate"
	n2 := secondNode(ctx, t, e)
	lns := ledgerNamespace(ctx, t, e, "mm-rate")
	agentNamespace(ctx, t, e, ns)
	pinned(ctx, t, e, ns, "one", e.node.Name(), 1, nil)
	pinned(ctx, t, e, ns, "two", n2.Name(), 1, nil)
	waitPods(ctx, t, e, ns, 2, enrolled)
	one, two := podsOf(ctx, t, e, ns, "one")[0], podsOf(ctx, t, e, ns, "two")[0]

	url1, _, _ := startAgent(ctx, t, e, agentRun{args: fastAgent(lns, "--cluster-max-heals", "1")})
	url2, _, _ := startAgent(ctx, t, e, agentRun{node: n2.Name(), args: fastAgent(lns, "--cluster-max-heals", "1")})
	require.NoError(t, e.node.Flush(ns, one.Name))
	require.NoError(t, n2.Flush(ns, two.Name))

	// Both findings are confirmed; one agent heals, the other is refused by the rate.
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		skipped := metric(t, url1, `meshmedic_repairs_total{result="skipped-budget",strategy="evict"}`) +
			metric(t, url2, `meshmedic_repairs_total{result="skipped-budget",strategy="evict"}`)
		return len(evictions(ctx, t, e, ns)) == 1 && skipped != "", nil
	}), "one eviction and one refusal; evictions %v", evictions(ctx, t, e, ns))
	time.Sleep(5 * time.Second) // a few more sweeps of both agents: still one
	assert.Len(t, evictions(ctx, t, e, ns), 1)
	st := ledger(ctx, t, e, lns)
	require.Len(t, st.Heals, 1)
	t.Logf("healed %s by %s; the other agent was refused", st.Heals[0].Name, st.Heals[0].By)
	_ = e.node.Recapture(ns, one.Name)
	_ = n2.Recapture(ns, two.Name)
	// Pods of the second node go before it does.
	_ = e.cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	_ = waitNamespaceDeleted(ctx, e, ns)
}

// singles creates n one-replica Deployments w0..w<n-1> pinned to the node (one controller
// each: the backoff of one never holds back another) and returns their pods.
func singles(ctx context.Context, t *testing.T, e *env, ns string, n int) []corev1.Pod {
	t.Helper()
	for i := range n {
		pinned(ctx, t, e, ns, fmt.Sprintf("w%d", i), e.node.Name(), 1, nil)
	}
	return waitPods(ctx, t, e, ns, n, enrolled)
}

// massOrphanAgent starts the agent for the canary scenarios: a breaker that 8 orphans trip
// whatever else runs on the node, limits out of the way.
func massOrphanAgent(lns string) []string {
	return []string{"--auto-repair", "--meshmedic-namespace", lns, "--breaker-min-pods", "8", "--breaker-fraction", "0.25",
		"--cluster-max-heals", "-1", "--namespace-max-heals", "-1"}
}

// safetyMassOrphanCanary: mass-orphan-canary. 8 of 10 pods orphaned on a node whose ztunnel
// and istio-cni are Ready: one canary is healed first; its replacement comes back captured,
// the canary passes, and the other 7 are healed within the per-sweep budgets.
func safetyMassOrphanCanary(ctx context.Context, t *testing.T, e *env) {
	const ns = "safety-canary"
	lns := ledgerNamespace(ctx, t, e, "mm-canary")
	agentNamespace(ctx, t, e, ns)
	pods := singles(ctx, t, e, ns, 10)
	url, _, _ := startAgent(ctx, t, e, agentRun{args: massOrphanAgent(lns)})
	for _, p := range pods[:8] {
		require.NoError(t, e.node.Flush(ns, p.Name))
	}
	// The canary: exactly one eviction while the others wait.
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		return len(evictions(ctx, t, e, ns)) >= 1, nil
	}))
	canary := evictions(ctx, t, e, ns)
	require.Len(t, canary, 1, "one canary first")
	st := ledger(ctx, t, e, lns)
	require.Contains(t, st.Canaries, e.node.Name())
	assert.Equal(t, ns+"/"+canary[0], st.Canaries[e.node.Name()].Pod)
	assert.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		return len(eventsWith(ctx, t, e, ns, heal.ReasonWaitingForCanary)) > 0, nil
	}), "the others wait for the canary")

	// The replacement is captured: the canary passes, and the rest are healed.
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		return len(evictions(ctx, t, e, ns)) == 8, nil
	}), "all 8 orphans healed after the canary; evictions %v", evictions(ctx, t, e, ns))
	assert.Equal(t, heal.CanaryPassed, ledger(ctx, t, e, lns).Canaries[e.node.Name()].State)
	var passed bool
	for _, ev := range nodeEvents(ctx, t, e, e.node.Name()) {
		passed = passed || ev.Reason == heal.ReasonCanaryPassed
	}
	assert.True(t, passed, "an Event on the Node says the canary passed")
	assert.Equal(t, "1", metric(t, url, `meshmedic_canary_verdicts_total{verdict="passed"}`))
	waitPods(ctx, t, e, ns, 10, func(p *corev1.Pod) bool { st, _ := podCondition(p); return st == corev1.ConditionTrue })
}

// safetyMassOrphanNodeBroken: mass-orphan-node-broken. The same mass orphaning, but the
// node's istio-cni stand-in no longer enrolls new pods: the canary's replacement is not
// captured either, so the canary fails, the node stops — a Warning Event on the Node, the
// heal-mode metric at stop — and nothing more is evicted.
func safetyMassOrphanNodeBroken(ctx context.Context, t *testing.T, e *env) {
	const ns = "safety-broken"
	lns := ledgerNamespace(ctx, t, e, "mm-broken")
	agentNamespace(ctx, t, e, ns)
	pods := singles(ctx, t, e, ns, 10)
	url, _, _ := startAgent(ctx, t, e, agentRun{args: massOrphanAgent(lns)})
	e.node.SetCapturing(false)
	t.Cleanup(func() { e.node.SetCapturing(true) })
	for _, p := range pods[:8] {
		require.NoError(t, e.node.Flush(ns, p.Name))
	}
	// The replacement stays un-annotated: not-enrolled once the grace period (30 s) is
	// over, then confirmed.
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		return ledger(ctx, t, e, lns).Canaries[e.node.Name()].State == heal.CanaryFailed, nil
	}), "the canary fails")
	var warned *corev1.Event
	for _, ev := range nodeEvents(ctx, t, e, e.node.Name()) {
		if ev.Reason == heal.ReasonCanaryFailed {
			warned = &ev
		}
	}
	require.NotNil(t, warned, "a Warning Event on the Node")
	assert.Equal(t, corev1.EventTypeWarning, warned.Type)
	assert.Contains(t, warned.Message, "restart its istio-cni pod")
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return metric(t, url, `meshmedic_node_heal_mode{mode="stop"}`) == "1", nil
	}), "meshmedic_node_heal_mode{mode=stop} is 1")
	time.Sleep(10 * time.Second) // several full re-checks
	assert.Len(t, evictions(ctx, t, e, ns), 1, "nothing but the canary is evicted")
	assert.NotEmpty(t, eventsWith(ctx, t, e, ns, heal.ReasonRefusedNodeBreaker))
}

// safetyIstioCNINotReady: istio-cni-not-ready-refuses. With the node's istio-cni pod
// crash-looping (ztunnel Ready), an orphan is not evicted — pods replaced now would not be
// enrolled — and is healed once istio-cni is Ready again.
func safetyIstioCNINotReady(ctx context.Context, t *testing.T, e *env) {
	const ns = "safety-cni"
	lns := ledgerNamespace(ctx, t, e, "mm-cni")
	agentNamespace(ctx, t, e, ns)
	pinned(ctx, t, e, ns, "web", e.node.Name(), 1, nil)
	pod := waitPods(ctx, t, e, ns, 1, enrolled)[0]
	cni := "istio-cni-node-" + e.node.Name()
	require.NoError(t, e.node.SetCrashLooping(ctx, "istio-system", cni, true))
	t.Cleanup(func() { _ = e.node.SetCrashLooping(context.Background(), "istio-system", cni, false) })
	url, _, _ := startAgent(ctx, t, e, agentRun{args: fastAgent(lns)})
	require.NoError(t, e.node.Flush(ns, pod.Name))

	require.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		return hasEvent(ctx, t, e, ns, pod.Name, heal.ReasonRefusedNodeBreaker), nil
	}), "refused: the node's istio-cni is not Ready")
	assert.Equal(t, "1", metric(t, url, `meshmedic_node_heal_mode{mode="stop"}`))
	evs, err := e.cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, ev := range evs.Items {
		if ev.Reason == heal.ReasonRefusedNodeBreaker {
			assert.Contains(t, ev.Message, "istio-cni is not Ready")
		}
	}
	time.Sleep(5 * time.Second)
	got, err := e.cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, pod.UID, got.UID, "not evicted while istio-cni crash-loops")

	require.NoError(t, e.node.SetCrashLooping(ctx, "istio-system", cni, false))
	waitGone(ctx, t, e, pod, time.Minute)
	waitReplacedAndCaptured(ctx, t, e, ns, 1, pod)
}

// safetyToggleInterrupted: toggle-interrupted-restores. Ctrl-C while `repair --strategy
// toggle` waits for istio-cni to take the pod out: the dataplane-mode label is put back.
func safetyToggleInterrupted(ctx context.Context, t *testing.T, e *env) {
	const ns = "safety-toggle"
	lns := ledgerNamespace(ctx, t, e, "mm-toggle")
	agentNamespace(ctx, t, e, ns)
	pinned(ctx, t, e, ns, "app", e.node.Name(), 1, func(_ *corev1.PodSpec, m *metav1.ObjectMeta) {
		m.Labels[enroll.LabelDataplaneMode] = enroll.DataplaneModeAmbient
	})
	pod := waitPods(ctx, t, e, ns, 1, enrolled)[0]
	require.NoError(t, e.node.Flush(ns, pod.Name))
	// istio-cni is slow today: it will not take the pod out, so the toggle waits.
	e.node.SetCapturing(false)
	t.Cleanup(func() { e.node.SetCapturing(true) })

	args := append([]string{"repair", "-n", ns, "--strategy", "toggle", "--yes", "--prober", "node-local", "--node", e.node.Name(),
		"--confirm", "1s", "--meshmedic-namespace", lns, "--breaker-min-pods", "1000"}, e.kube()...)
	cmd := exec.CommandContext(ctx, e.bin, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := e.cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		return err == nil && p.Labels[enroll.LabelDataplaneMode] == enroll.DataplaneModeNone, nil
	}), "the toggle set the label to none:\n%s", out.String())
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	err := cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "repair is interrupted:\n%s", out.String())
	t.Logf("exit %d after Ctrl-C:\n%s", ee.ExitCode(), tail(out.String(), 5))
	got, err := e.cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, enroll.DataplaneModeAmbient, got.Labels[enroll.LabelDataplaneMode], "the label is back to what it was")
	e.node.SetCapturing(true)
	require.NoError(t, e.node.Recapture(ns, pod.Name))
}

// safetyStaleCondition: stale-condition-is-unknown. `scan --prober agent` trusts a
// condition only while its node's agent renews its heartbeat: once the agent is gone for a
// few full re-checks, the orphan it reported is unknown, not an orphan.
func safetyStaleCondition(ctx context.Context, t *testing.T, e *env) {
	const ns = "safety-stale"
	lns := ledgerNamespace(ctx, t, e, "mm-stale")
	agentNamespace(ctx, t, e, ns)
	pinned(ctx, t, e, ns, "web", e.node.Name(), 1, nil)
	pod := waitPods(ctx, t, e, ns, 1, enrolled)[0]
	_, _, proc := startAgent(ctx, t, e, agentRun{args: []string{"--meshmedic-namespace", lns}}) // detect only
	require.NoError(t, e.node.Flush(ns, pod.Name))
	t.Cleanup(func() { _ = e.node.Recapture(ns, pod.Name) })
	waitCondition(ctx, t, e, ns, []corev1.Pod{pod}, corev1.ConditionFalse, time.Minute)

	agentScan := func() (scanJSON, Result) {
		return scan(ctx, t, e, "-n", ns, "--prober", "agent", "--confirm", "0", "--meshmedic-namespace", lns)
	}
	out, res := agentScan()
	assert.Equal(t, 1, res.Code, "the running agent vouches for its orphan: %s", res.Stderr)
	assert.Equal(t, "orphaned", classes(out)[ns+"/"+pod.Name])

	require.NoError(t, proc.Signal(syscall.SIGTERM))
	_, _ = proc.Wait()
	// The heartbeat lives three full re-checks (3 s here) and a tick. Then the one pod checked
	// is unknown: nothing was verified, exit 2, saying why.
	var last Result
	require.NoError(t, wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(context.Context) (bool, error) {
		r, err := Run(ctx, e.bin, nil, append([]string{"scan", "-n", ns, "--prober", "agent", "--confirm", "0",
			"--meshmedic-namespace", lns, "-o", "json"}, e.kube()...)...)
		if err != nil {
			return false, err
		}
		last = r
		return r.Code == 2, nil
	}), "the condition of a gone agent becomes unknown: %s", last.Stderr)
	assert.Contains(t, last.Stderr, "heartbeat expired")
	assert.Contains(t, last.Stderr, "nothing was verified")
	assert.NotContains(t, last.Stdout, `"class":"orphaned"`, "no finding on a condition nobody vouches for")
}

// safetyStatusPatchScoped: status-patch-scoped-to-node. With deploy/'s admission policy, a
// token bound to the agent pod of node A patches the status of A's pods, and not of node B's.
func safetyStatusPatchScoped(ctx context.Context, t *testing.T, e *env) {
	const ns = "safety-vap"
	n2 := secondNode(ctx, t, e)
	_ = applyAgentRBAC(ctx, t, e, "base") // the namespace, ServiceAccount and RBAC of the manifests
	var policies []string
	for _, o := range kustomize(ctx, t, "base") {
		if strings.HasPrefix(o.GetKind(), "ValidatingAdmissionPolicy") {
			policies = append(policies, o.GetKind())
			out, errOut, err := kubectl(ctx, t, e, "", toStream(t, []*unstructured.Unstructured{o}), "apply", "--server-side", "-f", "-")
			require.NoError(t, err, "%s\n%s", out, errOut)
			obj := o
			t.Cleanup(func() {
				_, _, _ = kubectl(context.Background(), t, e, "", toStream(t, []*unstructured.Unstructured{obj}), "delete", "-f", "-")
			})
		}
	}
	require.ElementsMatch(t, []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}, policies)

	agentNamespace(ctx, t, e, ns)
	pinned(ctx, t, e, ns, "on-a", e.node.Name(), 1, nil)
	pinned(ctx, t, e, ns, "on-b", n2.Name(), 1, nil)
	waitPods(ctx, t, e, ns, 2, enrolled)
	onA, onB := podsOf(ctx, t, e, ns, "on-a")[0], podsOf(ctx, t, e, ns, "on-b")[0]

	// The agent pod of node A, and a token bound to it as the kubelet would project one.
	agentPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: agentNS, Name: "meshmedic-agent-a"},
		Spec: corev1.PodSpec{NodeName: e.node.Name(), ServiceAccountName: agentSA, TerminationGracePeriodSeconds: ptr.To[int64](0),
			Containers: []corev1.Container{{Name: "agent", Image: "registry.invalid/meshmedic:dev"}}}}
	agentPod, err := e.cs.CoreV1().Pods(agentNS).Create(ctx, agentPod, metav1.CreateOptions{})
	require.NoError(t, err)
	tr, err := e.cs.CoreV1().ServiceAccounts(agentNS).CreateToken(ctx, agentSA, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To[int64](600),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: agentPod.Name, UID: agentPod.UID}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	cfg := rest.AnonymousClientConfig(rest.CopyConfig(e.cp.RESTConfig))
	cfg.BearerToken = tr.Status.Token
	asA, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)

	patch := func(p corev1.Pod) error {
		cond := detect.AmbientCapturedCondition(detect.Finding{Class: detect.ClassCaptured}, time.Now())
		body, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.PodCondition{cond}}})
		_, err := asA.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.StrategicMergePatchType, body, metav1.PatchOptions{}, "status")
		return err
	}
	// The policy may take a moment to be loaded by the API server.
	var errB error
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		errB = patch(onB)
		return errB != nil, nil
	}), "the patch of a node-B pod with node A's token is refused")
	assert.True(t, apierrors.IsForbidden(errB) || apierrors.IsInvalid(errB), "%v", errB)
	assert.Contains(t, errB.Error(), "may only write the status of pods on its own node")
	assert.NoError(t, patch(onA), "node A's agent patches node A's pods")
	// A token that is not bound to a pod (no node claim) is refused too: fail closed.
	anyToken, err := e.cs.CoreV1().ServiceAccounts(agentNS).CreateToken(ctx, agentSA, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To[int64](600)}}, metav1.CreateOptions{})
	require.NoError(t, err)
	cfg.BearerToken = anyToken.Status.Token
	unbound, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	body, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.PodCondition{
		detect.AmbientCapturedCondition(detect.Finding{Class: detect.ClassCaptured}, time.Now())}}})
	_, err = unbound.CoreV1().Pods(ns).Patch(ctx, onA.Name, types.StrategicMergePatchType, body, metav1.PatchOptions{}, "status")
	assert.Error(t, err, "a token without a node claim may not write pod status")
	_ = e.cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	_ = waitNamespaceDeleted(ctx, e, ns)
}

// safetyDrainExclusions: drain-exclusions. Orphans a drain would not move are not evicted —
// safe-to-evict=false, emptyDir data, system-critical priority, meshmedic.io/heal=never —
// each with one Event; meshmedic.io/heal=allow overrides the exclusion.
func safetyDrainExclusions(ctx context.Context, t *testing.T, e *env) {
	const ns = "safety-drain"
	lns := ledgerNamespace(ctx, t, e, "mm-drain")
	agentNamespace(ctx, t, e, ns)
	annotate := func(k, v string) func(*corev1.PodSpec, *metav1.ObjectMeta) {
		return func(_ *corev1.PodSpec, m *metav1.ObjectMeta) { m.Annotations = map[string]string{k: v} }
	}
	emptyDir := func(s *corev1.PodSpec, _ *metav1.ObjectMeta) {
		s.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	}
	cases := map[string]func(*corev1.PodSpec, *metav1.ObjectMeta){
		"safe-to-evict": annotate(heal.AnnotationSafeToEvict, "false"),
		"scratch":       emptyDir,
		"critical":      func(s *corev1.PodSpec, _ *metav1.ObjectMeta) { s.PriorityClassName = "system-cluster-critical" },
		"never":         annotate(heal.AnnotationHeal, heal.HealNever),
		"allowed": func(s *corev1.PodSpec, m *metav1.ObjectMeta) {
			emptyDir(s, m)
			annotate(heal.AnnotationHeal, heal.HealAllow)(s, m)
		},
	}
	for name, tweak := range cases {
		pinned(ctx, t, e, ns, name, e.node.Name(), 1, tweak)
	}
	pods := waitPods(ctx, t, e, ns, len(cases), enrolled)
	_, _, _ = startAgent(ctx, t, e, agentRun{args: fastAgent(lns, "--cluster-max-heals", "-1", "--namespace-max-heals", "-1")})
	for _, p := range pods {
		require.NoError(t, e.node.Flush(ns, p.Name))
	}
	allowed := podsOf(ctx, t, e, ns, "allowed")[0]
	waitGone(ctx, t, e, allowed, time.Minute)
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		return len(eventsWith(ctx, t, e, ns, heal.ReasonRefusedExcluded)) >= 4, nil
	}), "four refusals: %v", eventsWith(ctx, t, e, ns, heal.ReasonRefusedExcluded))
	time.Sleep(7 * time.Second) // more full re-checks: no more Events, no evictions
	refused := eventsWith(ctx, t, e, ns, heal.ReasonRefusedExcluded)
	assert.Len(t, refused, 4, "one Event per pod and cause, not one per sweep: %v", refused)
	assert.Equal(t, []string{allowed.Name}, evictions(ctx, t, e, ns))
	for _, p := range pods {
		if p.UID == allowed.UID {
			continue
		}
		got, err := e.cs.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, p.UID, got.UID, "%s is excluded and stays", p.Name)
		_ = e.node.Recapture(ns, p.Name)
	}
}

// manifestUID is the agent's runAsUser in deploy/base/daemonset.yaml.
func manifestUID(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(), "deploy", "base", "daemonset.yaml"))
	require.NoError(t, err)
	var ds appsv1.DaemonSet
	require.NoError(t, yaml.Unmarshal(b, &ds))
	sc := ds.Spec.Template.Spec.SecurityContext
	require.NotNil(t, sc)
	require.NotNil(t, sc.RunAsUser)
	return int(*sc.RunAsUser)
}

// asUID runs argv as uid:uid with no capabilities (as the DaemonSet runs the agent).
func asUID(ctx context.Context, t *testing.T, uid int, argv ...string) (string, error) {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	require.NoError(t, err)
	id := strconv.Itoa(uid)
	cmd := exec.CommandContext(ctx, setpriv, append([]string{"--reuid=" + id, "--regid=" + id, "--clear-groups",
		"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"}, argv...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// safetyAgentCannotReadSecrets: agent-cannot-read-workload-secrets. The agent, under the uid
// the manifests give it and no capabilities, checks a same-node pod whose app process runs
// as 65532 with a secret in its environment and a 0600 file: it reads the pod's sockets, and
// neither its environ nor its files. (Under 65532, the same reads succeed.)
func safetyAgentCannotReadSecrets(ctx context.Context, t *testing.T, e *env) {
	const ns = "safety-secrets"
	uid := manifestUID(t)
	require.NotEqual(t, 65532, uid)
	lns := ledgerNamespace(ctx, t, e, "mm-secrets")
	agentNamespace(ctx, t, e, ns)
	pinned(ctx, t, e, ns, "db", e.node.Name(), 1, nil)
	pod := waitPods(ctx, t, e, ns, 1, enrolled)[0]
	simPod, err := e.node.Pod(ns, pod.Name)
	require.NoError(t, err)
	app, err := e.node.Sim().AddProcessAs(simPod, 65532, 65532, []string{"DB_PASSWORD=hunter2"})
	require.NoError(t, err)
	// The workload's own file: 0600, owned by 65532, in a directory every uid may traverse
	// (t.TempDir's parent is 0700).
	dir, err := os.MkdirTemp("", "meshmedic-workload-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	secret := filepath.Join(dir, "credentials")
	require.NoError(t, os.WriteFile(secret, []byte("hunter2"), 0o600))
	require.NoError(t, os.Chown(secret, 65532, 65532))

	// The agent as the DaemonSet runs it: that uid, no capabilities, the host's /proc.
	_, logs, _ := startAgent(ctx, t, e, agentRun{capFree: true, uid: uid, args: []string{"--meshmedic-namespace", lns}})
	waitCondition(ctx, t, e, ns, []corev1.Pod{pod}, corev1.ConditionTrue, time.Minute)
	assert.Contains(t, logs.String(), `"netnsIdentity":"proc-net"`)

	proc := func(rel string) string { return fmt.Sprintf("/proc/%d/%s", app, rel) }
	out, err := asUID(ctx, t, uid, "cat", proc("net/tcp6"))
	require.NoError(t, err, "the agent's uid reads the pod's sockets: %s", out)
	assert.Contains(t, out, ":3A99", "ztunnel's 15001 in the pod's table")
	out, err = asUID(ctx, t, uid, "cat", proc("environ"))
	assert.Error(t, err, "the agent's uid must not read a workload's environment")
	assert.NotContains(t, out, "hunter2")
	out, err = asUID(ctx, t, uid, "cat", proc("root")+secret)
	assert.Error(t, err, "the agent's uid must not read a workload's files through /proc/<pid>/root")
	assert.NotContains(t, out, "hunter2")
	// Under 65532, the uid the agent used to run as, both reads succeed: the hole this closes.
	out, err = asUID(ctx, t, 65532, "cat", proc("environ"))
	assert.NoError(t, err)
	assert.Contains(t, out, "hunter2", "as 65532 the environment was readable")
	out, err = asUID(ctx, t, 65532, "cat", proc("root")+secret)
	assert.NoError(t, err)
	assert.Contains(t, out, "hunter2", "as 65532 the file was readable")
}
