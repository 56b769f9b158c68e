//go:build sandbox

package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/heal"
)

type repairJSON struct {
	DryRun   bool `json:"dryRun"`
	Findings []struct {
		Name  string `json:"name"`
		Class string `json:"class"`
	} `json:"findings"`
	Actions []struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
		Strategy  string `json:"strategy"`
		Result    string `json:"result"`
		Detail    string `json:"detail"`
	} `json:"actions"`
}

func repair(ctx context.Context, t *testing.T, e *env, args ...string) (repairJSON, Result) {
	t.Helper()
	if !slices.Contains(args, "--meshmedic-namespace") {
		ensureMeshmedicNS(ctx, t, e) // the heal ledger's namespace (deploy scenarios delete it)
	}
	base := []string{"repair", "--prober", "node-local", "--node", e.node.Name(), "--confirm", "1s", "-o", "json"}
	res, err := Run(ctx, e.bin, nil, append(append(base, e.kube()...), args...)...)
	require.NoError(t, err)
	require.NotEqual(t, 2, res.Code, "repair failed: %s", res.Stderr)
	var out repairJSON
	require.NoError(t, json.Unmarshal([]byte(res.Stdout), &out), res.Stdout)
	return out, res
}

func hasEvent(ctx context.Context, t *testing.T, e *env, ns, pod, reason string) bool {
	t.Helper()
	evs, err := e.cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, ev := range evs.Items {
		if ev.InvolvedObject.Name == pod && ev.Reason == reason {
			return true
		}
	}
	return false
}

func scenarioRepair(ctx context.Context, t *testing.T, e *env) {
	const ns = "heal"
	mkNamespace(ctx, t, e, ns, map[string]string{enroll.LabelDataplaneMode: enroll.DataplaneModeAmbient})
	mkDeployment(ctx, t, e, ns, "svc", 2, false)
	pods := waitPods(ctx, t, e, ns, 2, enrolled)

	t.Run("refuses-without-scope", func(t *testing.T) {
		res, err := Run(ctx, e.bin, nil, append([]string{"repair", "--prober", "node-local", "--node", e.node.Name()}, e.kube()...)...)
		require.NoError(t, err)
		assert.Equal(t, 2, res.Code)
		assert.Contains(t, res.Stderr, "-n NAMESPACE, -A")
	})

	t.Run("dry-run", func(t *testing.T) {
		require.NoError(t, e.node.Flush(ns, pods[0].Name))
		out, res := repair(ctx, t, e, "-n", ns)
		assert.Equal(t, 1, res.Code, "a dry run leaves the finding: exit 1")
		assert.True(t, out.DryRun)
		require.Len(t, out.Actions, 1, res.Stdout)
		assert.Equal(t, "would-evict", out.Actions[0].Result)
		assert.Equal(t, "evict", out.Actions[0].Strategy)
		got, err := e.cs.CoreV1().Pods(ns).Get(ctx, pods[0].Name, metav1.GetOptions{})
		require.NoError(t, err, "the dry run must not evict")
		assert.Equal(t, pods[0].UID, got.UID)
		assert.True(t, hasEvent(ctx, t, e, ns, pods[0].Name, heal.ReasonWouldEvict))
	})

	t.Run("reboot-orphan", func(t *testing.T) {
		out, res := repair(ctx, t, e, "-n", ns, "--yes")
		assert.Equal(t, 0, res.Code, "healed: exit 0\n%s\n%s", res.Stdout, res.Stderr)
		require.Len(t, out.Actions, 1, res.Stdout)
		assert.Equal(t, pods[0].Name, out.Actions[0].Name)
		assert.Equal(t, "evicted", out.Actions[0].Result)
		assert.True(t, hasEvent(ctx, t, e, ns, pods[0].Name, heal.ReasonEvicted))
		// The ReplicaSet's replacement is captured, and a scan is clean again.
		pods = waitPods(ctx, t, e, ns, 2, func(p *corev1.Pod) bool { return p.UID != pods[0].UID && enrolled(p) })
		_, sres := scan(ctx, t, e, "-n", ns)
		assert.Equal(t, 0, sres.Code, sres.Stdout)
	})

	t.Run("pdb-blocks", func(t *testing.T) {
		_, err := e.cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: "svc"},
			Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(2)),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "svc"}}},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		t.Cleanup(func() { _ = e.cs.PolicyV1().PodDisruptionBudgets(ns).Delete(ctx, "svc", metav1.DeleteOptions{}) })
		require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			pdb, err := e.cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "svc", metav1.GetOptions{})
			return err == nil && pdb.Status.ObservedGeneration == pdb.Generation && pdb.Status.CurrentHealthy == 2, nil
		}), "the disruption controller processes the PDB")
		require.NoError(t, e.node.Flush(ns, pods[1].Name))
		t.Cleanup(func() { _ = e.node.Recapture(ns, pods[1].Name) })

		// A ledger of its own: reboot-orphan just healed a replica of this ReplicaSet, and
		// the shared ledger's backoff would (rightly) hold the sibling back.
		lns := ledgerNamespace(ctx, t, e, "mm-pdb")
		start := time.Now()
		out, res := repair(ctx, t, e, "-n", ns, "--yes", "--meshmedic-namespace", lns)
		assert.Equal(t, 1, res.Code, "blocked: the finding stays")
		require.Len(t, out.Actions, 1, res.Stdout)
		assert.Equal(t, "blocked-by-pdb", out.Actions[0].Result)
		assert.Less(t, time.Since(start), 90*time.Second, "client-go's 429 retry loop (~110 s) must be bounded")
		got, err := e.cs.CoreV1().Pods(ns).Get(ctx, pods[1].Name, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, pods[1].UID, got.UID, "not evicted")
		assert.True(t, hasEvent(ctx, t, e, ns, pods[1].Name, heal.ReasonBlockedByPDB))
		// The dry run gets the same, real PDB answer.
		out, _ = repair(ctx, t, e, "-n", ns, "--meshmedic-namespace", lns)
		require.Len(t, out.Actions, 1)
		assert.Equal(t, "blocked-by-pdb", out.Actions[0].Result)
	})

	t.Run("bare-pod-refused", func(t *testing.T) {
		bare := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bare"},
			Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](1),
				Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/bare:1"}}},
		}
		created, err := e.cs.CoreV1().Pods(ns).Create(ctx, bare, metav1.CreateOptions{})
		require.NoError(t, err)
		waitPods(ctx, t, e, ns, 3, enrolled)
		require.NoError(t, e.node.Recapture(ns, pods[1].Name)) // only the bare pod is broken
		require.NoError(t, e.node.Flush(ns, "bare"))
		t.Cleanup(func() { _ = e.node.Recapture(ns, "bare") }) // later scenarios start clean
		out, res := repair(ctx, t, e, "-n", ns, "--yes")
		assert.Equal(t, 1, res.Code)
		require.Len(t, out.Actions, 1, res.Stdout)
		assert.Equal(t, "bare", out.Actions[0].Name)
		assert.Equal(t, "refused-bare-pod", out.Actions[0].Result)
		got, err := e.cs.CoreV1().Pods(ns).Get(ctx, "bare", metav1.GetOptions{})
		require.NoError(t, err, "a bare pod would not come back: it must not be touched")
		assert.Equal(t, created.UID, got.UID)
		assert.True(t, hasEvent(ctx, t, e, ns, "bare", heal.ReasonRefusedBarePod))
	})
}

// scenarioToggle: the toggle strategy takes the pod out of the mesh and back (label
// istio.io/dataplane-mode none, then exactly what it was) without restarting it, and
// confirms with a re-probe that capture returned.
func scenarioToggle(ctx context.Context, t *testing.T, e *env) {
	const ns = "toggle"
	mkNamespace(ctx, t, e, ns, map[string]string{enroll.LabelDataplaneMode: enroll.DataplaneModeAmbient})
	mkDeployment(ctx, t, e, ns, "app", 1, false)
	pod := waitPods(ctx, t, e, ns, 1, enrolled)[0]
	_, hadLabel := pod.Labels[enroll.LabelDataplaneMode]
	require.False(t, hadLabel, "enrolled through its namespace label")

	require.NoError(t, e.node.Flush(ns, pod.Name))
	out, res := repair(ctx, t, e, "-n", ns, "--yes", "--strategy", "toggle")
	assert.Equal(t, 0, res.Code, "%s\n%s", res.Stdout, res.Stderr)
	require.Len(t, out.Actions, 1, res.Stdout)
	assert.Equal(t, "toggled", out.Actions[0].Result, out.Actions[0].Detail)
	got, err := e.cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, pod.UID, got.UID, "toggle does not restart the pod")
	_, hasLabel := got.Labels[enroll.LabelDataplaneMode]
	assert.False(t, hasLabel, "the label is back to exactly what it was: absent")
	_, sres := scan(ctx, t, e, "-n", ns)
	assert.Equal(t, 0, sres.Code, "captured again: %s", sres.Stdout)
	assert.True(t, hasEvent(ctx, t, e, ns, pod.Name, heal.ReasonToggled))
}
