//go:build sandbox

package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// safetyChurnNoFalseHeals: churn-no-false-heals. For over two minutes ambient pods come and
// go on a ~100-pod node — rollouts, scale up and down, Jobs that complete — with the agent
// on --auto-repair and its default flags. Pods that are starting or terminating are the
// classic false orphans: nothing may be healed, and no pod may ever be published False.
// The agent's CPU and its API requests are logged (docs/benchmarks.md).
func safetyChurnNoFalseHeals(ctx context.Context, t *testing.T, e *env) {
	const ns = "safety-churn"
	const deployments, replicas = 6, 15
	lns := ledgerNamespace(ctx, t, e, "mm-churn")
	agentNamespace(ctx, t, e, ns)
	for i := range deployments {
		pinned(ctx, t, e, ns, fmt.Sprintf("d%d", i), e.node.Name(), replicas, nil)
	}
	waitPods(ctx, t, e, ns, deployments*replicas, enrolled)

	// Every False the agent ever publishes in the namespace is a false positive here.
	w, err := e.cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	defer w.Stop()
	var mu sync.Mutex
	falses := map[types.UID]string{}
	go func() {
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok {
				if st, reason := podCondition(p); st == corev1.ConditionFalse {
					mu.Lock()
					falses[p.UID] = p.Name + " " + reason
					mu.Unlock()
				}
			}
		}
	}()

	url, _, proc := startAgent(ctx, t, e, agentRun{defaults: true, args: []string{"--auto-repair", "--meshmedic-namespace", lns}})
	cpuStart := metricFloat(t, url, "process_cpu_seconds_total")
	start := time.Now()
	var rounds, jobs int
	for time.Since(start) < 2*time.Minute+10*time.Second {
		d := fmt.Sprintf("d%d", rounds%deployments)
		switch rounds % 4 {
		case 0: // a rollout: every pod of the Deployment is replaced, a quarter at a time
			patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"churn/round":"%d"}}}}}`, rounds)
			_, err := e.cs.AppsV1().Deployments(ns).Patch(ctx, d, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
			require.NoError(t, err)
		case 1: // scale up
			scale(ctx, t, e, ns, d, replicas+5)
		case 2: // a Job whose pods run a few seconds and complete
			jobs++
			churnJob(ctx, t, e, ns, fmt.Sprintf("job-%d", jobs))
		case 3: // scale back down: pods terminate
			scale(ctx, t, e, ns, fmt.Sprintf("d%d", (rounds-2)%deployments), replicas)
		}
		completeJobPods(ctx, t, e, ns, 4*time.Second)
		rounds++
		time.Sleep(3 * time.Second)
	}
	churned := time.Since(start)
	// Whatever the last rounds left half-done has time to be confirmed — and wrongly healed.
	deadline := time.Now().Add(40 * time.Second)
	for time.Now().Before(deadline) {
		completeJobPods(ctx, t, e, ns, 4*time.Second)
		time.Sleep(2 * time.Second)
	}
	elapsed := time.Since(start)
	cpu := metricFloat(t, url, "process_cpu_seconds_total") - cpuStart

	assert.Empty(t, evictions(ctx, t, e, ns), "no heal during churn")
	assert.Empty(t, metric(t, url, `meshmedic_repairs_total{result="evicted",strategy="evict"}`))
	mu.Lock()
	assert.Empty(t, falses, "no pod was ever published False")
	mu.Unlock()
	assert.Empty(t, ledger(ctx, t, e, lns).Heals)

	writes, reads := apiRequests(t, url)
	t.Logf("churn: %d rounds (%d Jobs) over %v, then %v quiet; agent CPU %.2f s (%.2f s/min), pods tracked %s",
		rounds, jobs, churned.Round(time.Second), (elapsed - churned).Round(time.Second), cpu, cpu/elapsed.Minutes(),
		metric(t, url, "meshmedic_pods_tracked"))
	t.Logf("churn: agent API requests: writes %v, reads %v", writes, reads)
	require.Nil(t, proc.Signal(syscall.Signal(0)), "the agent is still running")
}

func scale(ctx context.Context, t *testing.T, e *env, ns, name string, n int32) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
	_, err := e.cs.AppsV1().Deployments(ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	require.NoError(t, err)
}

// churnJob creates a two-pod Job pinned to the node; completeJobPods finishes its pods.
func churnJob(ctx context.Context, t *testing.T, e *env, ns, name string) {
	t.Helper()
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: batchv1.JobSpec{Parallelism: ptr.To[int32](2), Completions: ptr.To[int32](2), TTLSecondsAfterFinished: ptr.To[int32](5),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"job": name}},
				Spec: corev1.PodSpec{NodeName: e.node.Name(), RestartPolicy: corev1.RestartPolicyNever, TerminationGracePeriodSeconds: ptr.To[int64](1),
					Containers: []corev1.Container{{Name: "task", Image: "registry.invalid/task:1"}}},
			}},
	}
	_, err := e.cs.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{})
	require.NoError(t, err)
}

// completeJobPods plays the kubelet of a finished container: Job pods Running for longer
// than after become Succeeded.
func completeJobPods(ctx context.Context, t *testing.T, e *env, ns string, after time.Duration) {
	t.Helper()
	list, err := e.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "job"})
	require.NoError(t, err)
	for i := range list.Items {
		p := &list.Items[i]
		if p.Status.Phase != corev1.PodRunning || p.Status.StartTime == nil || time.Since(p.Status.StartTime.Time) < after {
			continue
		}
		now := metav1.Now()
		p.Status.Phase = corev1.PodSucceeded
		for j := range p.Status.ContainerStatuses {
			p.Status.ContainerStatuses[j].Ready = false
			p.Status.ContainerStatuses[j].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", FinishedAt: now}}
		}
		for j := range p.Status.Conditions {
			if c := &p.Status.Conditions[j]; c.Type == corev1.PodReady || c.Type == corev1.ContainersReady {
				c.Status, c.LastTransitionTime = corev1.ConditionFalse, now
			}
		}
		_, _ = e.cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}) // a conflict: next round
	}
}

func metricFloat(t testing.TB, url, sample string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(metric(t, url, sample), 64)
	require.NoError(t, err, "metric %s", sample)
	return v
}

// apiRequests sums meshmedic_api_requests_total into writes (by verb and resource) and
// reads.
func apiRequests(t testing.TB, url string) (map[string]float64, map[string]float64) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^meshmedic_api_requests_total\{resource="([^"]*)",verb="([^"]*)"\} (\S+)$`)
	writes, reads := map[string]float64{}, map[string]float64{}
	for _, m := range re.FindAllStringSubmatch(metricsText(t, url), -1) {
		v, _ := strconv.ParseFloat(m[3], 64)
		key := m[2] + " " + m[1]
		switch m[2] {
		case "GET", "WATCH":
			reads[key] += v
		default:
			writes[key] += v
		}
	}
	return writes, reads
}
