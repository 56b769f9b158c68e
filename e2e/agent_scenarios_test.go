//go:build sandbox

package e2e

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/meshmedic/meshmedic/e2e/sandbox"
	"github.com/meshmedic/meshmedic/enroll"
)

const condAmbientCaptured = "meshmedic.io/AmbientCaptured"

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// agentRun says how startAgent runs the agent.
type agentRun struct {
	// kubeconfig to use; "" = the sandbox admin's.
	kubeconfig string
	// capFree runs the agent as the DaemonSet of deploy/ does: a non-root uid (uid, or
	// 65532), no capabilities at all (setpriv), no new privileges.
	capFree bool
	uid     int
	// node is the node the agent runs for; "" = the sandbox's node.
	node string
	// defaults keeps the agent's own --tick, --full-recheck and --confirm instead of the
	// scenarios' fast ones.
	defaults bool
	args     []string
}

// startAgent runs the real binary's agent subcommand against the sandbox; it is stopped
// (SIGTERM, then killed) when the test ends.
func startAgent(ctx context.Context, t testing.TB, e *env, run agentRun) (metricsURL string, logs *lockedWriter, proc *os.Process) {
	t.Helper()
	port := freePort(t)
	lw := &lockedWriter{w: &strings.Builder{}}
	kubeconfig := run.kubeconfig
	if kubeconfig == "" {
		kubeconfig = e.cp.KubeconfigPath
		ensureMeshmedicNS(ctx, t, e) // the deploy scenarios delete it when they end
	}
	bin := e.bin
	var argv []string
	if run.capFree {
		// uid 65532 must be able to reach the binary and the kubeconfig: t.TempDir is 0700.
		dir, err := os.MkdirTemp("", "meshmedic-agent-")
		require.NoError(t, err)
		t.Cleanup(func() { os.RemoveAll(dir) })
		require.NoError(t, os.Chmod(dir, 0o755))
		bin = filepath.Join(dir, "meshmedic")
		copyFile(t, e.bin, bin, 0o755)
		kc := filepath.Join(dir, "kubeconfig")
		copyFile(t, kubeconfig, kc, 0o644)
		kubeconfig = kc
		setpriv, err := exec.LookPath("setpriv")
		require.NoError(t, err, "setpriv (util-linux) runs the agent without capabilities")
		uid := strconv.Itoa(cmp.Or(run.uid, 65532))
		argv = []string{setpriv, "--reuid=" + uid, "--regid=" + uid, "--clear-groups",
			"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", bin}
	} else {
		argv = []string{bin}
	}
	argv = append(argv, "agent", "--node", cmp.Or(run.node, e.node.Name()), "--proc-root", "/proc", "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", port),
		"--kubeconfig", kubeconfig)
	if !run.defaults {
		argv = append(argv, "--tick", "500ms", "--full-recheck", "3s", "--confirm", "1s")
	}
	cmd := exec.Command(argv[0], append(argv[1:], run.args...)...)
	cmd.Stdout, cmd.Stderr = lw, lw
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", tail(lw.String(), 40))
		}
	})
	metricsURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		resp, err := http.Get(metricsURL + "/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	}), "agent never became ready:\n%s", lw.String())
	return metricsURL, lw, cmd.Process
}

// ensureMeshmedicNS makes meshmedic's namespace (the heal ledger's and the heartbeats') exist,
// waiting out a deletion a deploy scenario started.
func ensureMeshmedicNS(ctx context.Context, t testing.TB, e *env) {
	t.Helper()
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		ns, err := e.cs.CoreV1().Namespaces().Get(ctx, meshmedicNS, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = e.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: meshmedicNS}}, metav1.CreateOptions{})
			return err == nil, nil
		case err != nil:
			return false, nil
		}
		return ns.DeletionTimestamp == nil, nil
	}), "namespace %s", meshmedicNS)
}

func copyFile(t testing.TB, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, b, mode))
	require.NoError(t, os.Chmod(to, mode))
}

// agentNamespace makes an ambient namespace for one agent scenario and deletes it when the
// scenario ends, so the next scenario's agent (with --auto-repair) does not meet its pods.
func agentNamespace(ctx context.Context, t *testing.T, e *env, ns string) {
	t.Helper()
	mkNamespace(ctx, t, e, ns, map[string]string{enroll.LabelDataplaneMode: enroll.DataplaneModeAmbient})
	t.Cleanup(func() {
		_ = e.cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		_ = wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := e.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
	})
}

// agentWorkload is an agent scenario's namespace (agentNamespace) with a two-replica
// Deployment "web" whose pods run and are enrolled.
func agentWorkload(ctx context.Context, t *testing.T, e *env, ns string) []corev1.Pod {
	t.Helper()
	agentNamespace(ctx, t, e, ns)
	mkDeployment(ctx, t, e, ns, "web", 2, false)
	return waitPods(ctx, t, e, ns, 2, enrolled)
}

// waitCondition waits until every named pod of ns (by UID when given) has the agent's
// condition with status want, and returns when that happened.
func waitCondition(ctx context.Context, t testing.TB, e *env, ns string, pods []corev1.Pod, want corev1.ConditionStatus, within time.Duration) time.Time {
	t.Helper()
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, within, true, func(ctx context.Context) (bool, error) {
		list, err := e.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		byName := map[string]*corev1.Pod{}
		for i := range list.Items {
			byName[list.Items[i].Name] = &list.Items[i]
		}
		for _, p := range pods {
			got := byName[p.Name]
			if got == nil || got.UID != p.UID {
				return false, nil
			}
			if st, _ := podCondition(got); st != want {
				return false, nil
			}
		}
		return true, nil
	}), "pods %v of %s never got %s=%s", podNames(pods), ns, condAmbientCaptured, want)
	return time.Now()
}

// watchCondition watches ns from now on and records when the pod with uid first carries the
// agent's condition with status want: the agent may evict a pod right after publishing
// False, faster than a poll would see it.
func watchCondition(ctx context.Context, t *testing.T, e *env, ns string, uid types.UID, want corev1.ConditionStatus) func() (time.Time, bool) {
	t.Helper()
	w, err := e.cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	var mu sync.Mutex
	var seen time.Time
	go func() {
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || p.UID != uid {
				continue
			}
			if st, _ := podCondition(p); st == want {
				mu.Lock()
				if seen.IsZero() {
					seen = time.Now()
				}
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(w.Stop)
	return func() (time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		return seen, !seen.IsZero()
	}
}

func podNames(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

// waitGone waits until the pod with victim's UID no longer exists (evicted).
func waitGone(ctx context.Context, t *testing.T, e *env, victim corev1.Pod, within time.Duration) {
	t.Helper()
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, within, true, func(ctx context.Context) (bool, error) {
		got, err := e.cs.CoreV1().Pods(victim.Namespace).Get(ctx, victim.Name, metav1.GetOptions{})
		return err != nil || got.UID != victim.UID, nil
	}), "the orphan %s was not evicted", victim.Name)
}

// waitReplacedAndCaptured waits until ns has n pods, none of them victim, all published True.
func waitReplacedAndCaptured(ctx context.Context, t *testing.T, e *env, ns string, n int, victim corev1.Pod) {
	t.Helper()
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := e.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(list.Items) != n {
			return false, nil
		}
		for _, p := range list.Items {
			if st, _ := podCondition(&p); p.UID == victim.UID || st != corev1.ConditionTrue {
				return false, nil
			}
		}
		return true, nil
	}), "the replacement is captured and published")
}

func podCondition(p *corev1.Pod) (corev1.ConditionStatus, string) {
	for _, c := range p.Status.Conditions {
		if string(c.Type) == condAmbientCaptured {
			return c.Status, c.Reason
		}
	}
	return "", ""
}

func metricsText(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// scenarioAgent: agent-detects-and-heals. The real binary runs as the DaemonSet of deploy/
// does — the ServiceAccount and RBAC of deploy/overlays/auto-repair, uid 65532 and no
// capabilities — as the node's agent; a pod whose listeners are flushed is detected, its
// condition goes False, it is evicted under --auto-repair, and its replacement is captured
// with the condition True.
func scenarioAgent(ctx context.Context, t *testing.T, e *env) {
	const ns = "agent"
	pods := agentWorkload(ctx, t, e, ns)
	// No full re-check and no young re-checks during the scenario: only the socket counters
	// can notice the flush, so the metric below proves that path.
	url, logs, _ := startAgent(ctx, t, e, agentRun{kubeconfig: applyAgentRBAC(ctx, t, e, "overlays/auto-repair"), capFree: true,
		args: []string{"--auto-repair", "--full-recheck", "1h", "--young-rechecks", ""}})
	waitCondition(ctx, t, e, ns, pods, corev1.ConditionTrue, time.Minute)
	assert.Contains(t, logs.String(), `"netnsIdentity":"proc-net"`, "without capabilities the agent names netns by net/dev")

	victim := pods[0]
	published := watchCondition(ctx, t, e, ns, victim.UID, corev1.ConditionFalse)
	flushed := time.Now()
	require.NoError(t, e.node.Flush(ns, victim.Name))
	// Detected and confirmed (condition False), then evicted: the pod with that UID goes away.
	waitGone(ctx, t, e, victim, 2*time.Minute)
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		_, ok := published()
		return ok, nil
	}), "the orphan's condition was published False before it was evicted")
	detected, _ := published()
	t.Logf("flush → condition False in %v (--tick 500ms, --confirm 1s)", detected.Sub(flushed).Round(10*time.Millisecond))
	// Events are written by the agent as it goes: wait for them.
	for _, reason := range []string{"MeshmedicAmbientOrphan", "MeshmedicEvicted"} {
		assert.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			return hasEvent(ctx, t, e, ns, victim.Name, reason), nil
		}), "Event %s for %s", reason, victim.Name)
	}
	waitReplacedAndCaptured(ctx, t, e, ns, 2, victim)

	m := metricsText(t, url)
	assert.Contains(t, m, `meshmedic_repairs_total{result="evicted",strategy="evict"} 1`)
	assert.Regexp(t, `meshmedic_confirmed_findings_total [1-9]`, m)
	assert.Regexp(t, `meshmedic_checks_triggered_total\{trigger="socket-count"\} [1-9]`, m, "the flush was noticed by the socket counters")
	assert.Regexp(t, `meshmedic_pidmap_cache_hits_total [1-9]`, m)
	assert.Contains(t, m, "meshmedic_auto_repair_enabled 1")
	assert.Contains(t, m, "meshmedic_node_breaker_open 0")
	assert.Contains(t, m, "meshmedic_sweep_duration_seconds_count")
	assert.Contains(t, m, "meshmedic_pods_tracked")
}

func enrolled(p *corev1.Pod) bool { return p.Annotations[enroll.AnnotationRedirection] == "enabled" }

// scenarioAgentAPIServerRestart: the API server goes away while a pod loses its listeners.
// The agent keeps running and sweeping, and once the API server is back it publishes the
// finding and heals it.
func scenarioAgentAPIServerRestart(ctx context.Context, t *testing.T, e *env) {
	const ns = "agent-outage"
	pods := agentWorkload(ctx, t, e, ns)
	url, logs, proc := startAgent(ctx, t, e, agentRun{kubeconfig: applyAgentRBAC(ctx, t, e, "overlays/auto-repair"), capFree: true,
		args: []string{"--auto-repair"}})
	waitCondition(ctx, t, e, ns, pods, corev1.ConditionTrue, time.Minute)
	sweeps := func() int {
		m := regexp.MustCompile(`meshmedic_sweep_duration_seconds_count (\d+)`).FindStringSubmatch(metricsText(t, url))
		require.Len(t, m, 2)
		n, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		return n
	}
	before := sweeps()

	victim := pods[0]
	require.NoError(t, e.node.Flush(ns, victim.Name))
	require.NoError(t, e.cp.RestartContext(ctx, "kube-apiserver"))
	require.NoError(t, proc.Signal(syscall.Signal(0)), "the agent survived the outage")
	assert.Greater(t, sweeps(), before, "the agent kept sweeping")

	waitGone(ctx, t, e, victim, 2*time.Minute)
	waitReplacedAndCaptured(ctx, t, e, ns, 2, victim)
	assert.True(t, hasEvent(ctx, t, e, ns, victim.Name, "MeshmedicEvicted"))
	t.Logf("agent log around the outage:\n%s", grepLines(logs.String(), "watch", "resync", "not healing", "sweep failed"))
}

// scenarioAgentRBACLeastPrivilege: with the detect-only RBAC of deploy/base and --auto-repair
// asked for, the agent says clearly that it cannot evict, goes on detecting and publishing,
// and evicts nothing.
func scenarioAgentRBACLeastPrivilege(ctx context.Context, t *testing.T, e *env) {
	const ns = "agent-rbac"
	pods := agentWorkload(ctx, t, e, ns)
	url, logs, _ := startAgent(ctx, t, e, agentRun{kubeconfig: applyAgentRBAC(ctx, t, e, "base"), capFree: true,
		args: []string{"--auto-repair"}})
	waitCondition(ctx, t, e, ns, pods, corev1.ConditionTrue, time.Minute)
	assert.Contains(t, logs.String(), "--auto-repair is OFF: this ServiceAccount cannot create pods/eviction")
	assert.Contains(t, metricsText(t, url), "meshmedic_auto_repair_enabled 0")

	victim := pods[0]
	require.NoError(t, e.node.Flush(ns, victim.Name))
	waitCondition(ctx, t, e, ns, []corev1.Pod{victim}, corev1.ConditionFalse, time.Minute)
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		return hasEvent(ctx, t, e, ns, victim.Name, "MeshmedicAmbientOrphan"), nil
	}), "the detect-only agent still writes the finding's Event")
	time.Sleep(5 * time.Second) // ten ticks and a full re-check: long enough for an eviction to have happened
	got, err := e.cs.CoreV1().Pods(ns).Get(ctx, victim.Name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, victim.UID, got.UID, "a detect-only agent evicts nothing")
	assert.NotContains(t, metricsText(t, url), "meshmedic_repairs_total{")
	require.NoError(t, e.node.Recapture(ns, victim.Name)) // leave the node healthy
	waitCondition(ctx, t, e, ns, []corev1.Pod{victim}, corev1.ConditionTrue, time.Minute)
}

// scenarioAgentReadinessGate: a workload opts in to fail-closed with a readinessGate on the
// agent's condition. Orphaned, its pod goes NotReady and is no longer a ready endpoint of
// its Service; the agent (treating a pod held back only by its gate as Ready) evicts it, and
// the captured replacement is a ready endpoint again.
func scenarioAgentReadinessGate(ctx context.Context, t *testing.T, e *env) {
	const ns = "agent-gated"
	agentNamespace(ctx, t, e, ns)
	d := sandbox.Deployment(sandbox.Workload{Namespace: ns, Name: "web", Replicas: 2,
		ReadinessGates: []corev1.PodConditionType{condAmbientCaptured}})
	_, err := e.cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = e.cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	pods := waitPods(ctx, t, e, ns, 2, enrolled)
	readyIPs := func() map[string]bool {
		slices, err := e.cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=web"})
		require.NoError(t, err)
		out := map[string]bool{}
		for _, s := range slices.Items {
			for _, ep := range s.Endpoints {
				if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
					for _, a := range ep.Addresses {
						out[a] = true
					}
				}
			}
		}
		return out
	}
	// Before the agent runs, the gate holds both pods back: no ready endpoint.
	assert.Empty(t, readyIPs(), "gated pods are not Ready before the agent vouches for them")
	startAgent(ctx, t, e, agentRun{kubeconfig: applyAgentRBAC(ctx, t, e, "overlays/auto-repair"), capFree: true, args: []string{"--auto-repair"}})
	waitCondition(ctx, t, e, ns, pods, corev1.ConditionTrue, time.Minute)
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return len(readyIPs()) == 2, nil
	}), "both captured pods become ready endpoints")

	victim := pods[0]
	require.NoError(t, e.node.Flush(ns, victim.Name))
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return !readyIPs()[victim.Status.PodIP], nil
	}), "the orphan leaves the Service's ready endpoints")
	waitGone(ctx, t, e, victim, 2*time.Minute)
	waitReplacedAndCaptured(ctx, t, e, ns, 2, victim)
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		ips := readyIPs()
		return len(ips) == 2 && !ips[victim.Status.PodIP], nil
	}), "the captured replacement is a ready endpoint again")
}

// grepLines returns the lines of s that contain any of words.
func grepLines(s string, words ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
