//go:build sandbox

package e2e

import (
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// scenarioRulesInspection: the sandbox node installs istio-cni's in-pod routing set-up with
// every capture (podsim.Redirect). One pod loses it while ztunnel's listeners stay (#56652,
// bypass), one loses its listeners while the set-up stays (blackhole). node scan
// --inspect-rules names both; without it they read captured and orphaned, as before. The
// agent with the netlink backend and --inspect-rules publishes Bypass and Blackhole and
// heals both; the replacements come back with the set-up in place.
func scenarioRulesInspection(ctx context.Context, t *testing.T, e *env) {
	const ns = "rules"
	agentNamespace(ctx, t, e, ns)
	mkDeployment(ctx, t, e, ns, "web", 3, false)
	pods := waitPods(ctx, t, e, ns, 3, enrolled)
	key := func(p corev1.Pod) string { return ns + "/" + p.Name }

	rows, res := nodeScan(ctx, t, e, "--inspect-rules")
	require.Equal(t, 0, res.Code, "a freshly captured workload is clean: %s", res.Stdout)
	for _, p := range pods {
		assert.Equal(t, "captured", rows[key(p)].Class, p.Name)
		assert.Equal(t, "present", rows[key(p)].Rules, "%s: the sandbox's istio-cni set up the routing rules", p.Name)
	}

	bypass, blackhole, healthy := pods[0], pods[1], pods[2]
	require.NoError(t, e.node.Unredirect(ns, bypass.Name))
	require.NoError(t, e.node.Flush(ns, blackhole.Name))

	rows, res = nodeScan(ctx, t, e, "--inspect-rules")
	assert.Equal(t, 1, res.Code, "findings: %s", res.Stderr)
	for p, want := range map[string][2]string{
		key(bypass): {"bypass", "absent"}, key(blackhole): {"blackhole", "present"}, key(healthy): {"captured", "present"},
	} {
		assert.Equal(t, want[0], rows[p].Class, p)
		assert.Equal(t, want[1], rows[p].Rules, p)
	}
	assert.Subset(t, rows[key(bypass)].Listeners, []uint16{15001, 15006, 15008}, "the bypass pod keeps its listeners")

	// Without the capabilities it needs, --inspect-rules is a clear runtime error (exit 2),
	// never a scan that quietly reads no rules.
	out, err := exec.CommandContext(ctx, "setpriv", "--inh-caps=-all", "--bounding-set=-all", "--", e.bin,
		"node", "scan", "--offline", "--inspect-rules", "--proc-root", "/proc").CombinedOutput()
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr, "%s", out)
	assert.Equal(t, 2, exitErr.ExitCode(), "%s", out)
	assert.Contains(t, string(out), "CAP_SYS_ADMIN", "the error names the capabilities")

	// Without inspection the output is what it always was.
	rows, res = nodeScan(ctx, t, e)
	assert.Equal(t, 1, res.Code)
	assert.Equal(t, "captured", rows[key(bypass)].Class, "listeners alone call the bypass captured")
	assert.Equal(t, "orphaned", rows[key(blackhole)].Class)
	assert.Empty(t, rows[key(bypass)].Rules, "no rules field without --inspect-rules")

	// The agent as the netlink deploy mode runs it (root with SYS_ADMIN and SYS_PTRACE; here
	// root with every capability): it publishes the new classes, then heals both pods.
	reasons := watchReasons(ctx, t, e, ns)
	startAgent(ctx, t, e, agentRun{kubeconfig: applyAgentRBAC(ctx, t, e, "overlays/auto-repair"),
		args: []string{"--socket-backend=netlink", "--inspect-rules", "--auto-repair"}})
	waitGone(ctx, t, e, bypass, 2*time.Minute)
	waitGone(ctx, t, e, blackhole, 2*time.Minute)
	assert.Contains(t, reasons(bypass.UID), "Bypass", "published before the eviction")
	assert.Contains(t, reasons(blackhole.UID), "Blackhole", "published before the eviction")
	assert.NotContains(t, reasons(healthy.UID), "Bypass")
	waitReplacedAndCaptured(ctx, t, e, ns, 3, bypass)
	list, err := e.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, p := range list.Items {
		assert.NotEqual(t, blackhole.UID, p.UID)
		for _, c := range p.Status.Conditions {
			if string(c.Type) == condAmbientCaptured {
				assert.Contains(t, c.Message, "rules=present", "%s: %s", p.Name, c.Message)
			}
		}
	}
	rows, res = nodeScan(ctx, t, e, "--inspect-rules")
	for k, r := range rows {
		if strings.HasPrefix(k, ns+"/") {
			assert.Equal(t, "captured", r.Class, k)
		}
	}
}

// watchReasons records, per pod UID of ns, every reason the agent's condition carried.
func watchReasons(ctx context.Context, t *testing.T, e *env, ns string) func(types.UID) []string {
	t.Helper()
	w, err := e.cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	var mu sync.Mutex
	seen := map[types.UID][]string{}
	go func() {
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			if _, reason := podCondition(p); reason != "" {
				mu.Lock()
				if r := seen[p.UID]; len(r) == 0 || r[len(r)-1] != reason {
					seen[p.UID] = append(r, reason)
				}
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(w.Stop)
	return func(uid types.UID) []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen[uid]...)
	}
}
