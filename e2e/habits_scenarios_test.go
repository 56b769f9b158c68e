//go:build sandbox

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/meshmedic/meshmedic/e2e/sandbox"
	"github.com/meshmedic/meshmedic/enroll"
)

// habitScenarios are issue 15's checks that need a cluster: everyday CLI habits, the
// demo's first screen, and whether the agent needs hostPID.
func habitScenarios(ctx context.Context, t *testing.T, e *env) {
	t.Run("cli-habits", func(t *testing.T) { scenarioCLIHabits(ctx, t, e) })
	t.Run("demo-istio-cni-config", func(t *testing.T) { scenarioDemoIstioCNIConfig(ctx, t, e) })
	t.Run("hostpid-not-needed", func(t *testing.T) { scenarioHostPIDNotNeeded(ctx, t, e) })
}

// scenarioCLIHabits: -l/--selector narrows the List, --no-headers, the sentence of a clean
// scan, and exit 2 when nothing could be verified.
func scenarioCLIHabits(ctx context.Context, t *testing.T, e *env) {
	const ns = "habits"
	agentNamespace(ctx, t, e, ns) // deleted when the scenario ends
	mkDeployment(ctx, t, e, ns, "front", 2, false)
	mkDeployment(ctx, t, e, ns, "back", 1, false)
	pods := waitPods(ctx, t, e, ns, 3, enrolled)
	run := func(args ...string) Result {
		t.Helper()
		res, err := Run(ctx, e.bin, nil, append(args, e.kube()...)...)
		require.NoError(t, err)
		return res
	}
	local := []string{"--prober", "node-local", "--node", e.node.Name(), "--confirm", "1s"}

	t.Run("selector", func(t *testing.T) {
		res := run(append([]string{"scan", "-n", ns, "-l", "app=front", "-o", "json"}, local...)...)
		require.Equal(t, 0, res.Code, res.Stderr)
		var out scanJSON
		require.NoError(t, json.Unmarshal([]byte(res.Stdout), &out))
		assert.Equal(t, 2, out.Checked, "only app=front was listed")
		res = run(append([]string{"scan", "-n", ns, "--selector", "app in (front,back),app!=front", "-o", "json"}, local...)...)
		require.NoError(t, json.Unmarshal([]byte(res.Stdout), &out))
		assert.Equal(t, 1, out.Checked)
		res = run(append([]string{"scan", "-n", ns, "-l", "app=nothing", "-o", "json"}, local...)...)
		require.NoError(t, json.Unmarshal([]byte(res.Stdout), &out))
		assert.Equal(t, 0, out.Checked)
		assert.Equal(t, 0, res.Code)
	})

	t.Run("clean scan is a sentence", func(t *testing.T) {
		res := run(append([]string{"scan", "-n", ns}, local...)...)
		require.Equal(t, 0, res.Code, res.Stderr)
		assert.Empty(t, res.Stdout, "no empty table")
		assert.Contains(t, res.Stderr, "No findings in 3 pods.")
		// Flags after everything else, as kubectl users type them.
		res = run(append(append([]string{"repair"}, local...), "-n", ns, "-l", "app=back")...)
		require.Equal(t, 0, res.Code, res.Stderr)
		assert.Empty(t, res.Stdout)
		assert.Contains(t, res.Stderr, "No findings in 1 pod.")
	})

	t.Run("no-headers", func(t *testing.T) {
		victim := pods[0]
		require.NoError(t, e.node.Flush(ns, victim.Name))
		t.Cleanup(func() { require.NoError(t, e.node.Recapture(ns, victim.Name)) })
		res := run(append([]string{"scan", "-n", ns, "--no-headers", "-o", "wide"}, local...)...)
		require.Equal(t, 1, res.Code, res.Stderr)
		lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
		require.Len(t, lines, 1, res.Stdout)
		assert.Equal(t, []string{ns, victim.Name, "orphaned"}, strings.Fields(lines[0])[:3], lines[0])
		assert.NotContains(t, res.Stdout, "NAMESPACE")
		res = run(append([]string{"scan", "-n", ns}, local...)...)
		assert.True(t, strings.HasPrefix(res.Stdout, "NAMESPACE"), "headers by default:\n%s", res.Stdout)
	})

	t.Run("nothing verified exits 2", func(t *testing.T) {
		// No agent publishes conditions here: with --prober agent every pod is unknown.
		for _, cmd := range [][]string{{"scan"}, {"repair"}} {
			res := run(append(cmd, "-n", ns, "--prober", "agent", "--confirm", "0s")...)
			assert.Equal(t, 2, res.Code, "%v: %s", cmd, res.Stdout+res.Stderr)
			assert.Contains(t, res.Stderr, "nothing was verified: all 3 pods checked could not be read", "%v", cmd)
		}
	})
}

// scenarioDemoIstioCNIConfig: with the ConfigMap the demo creates, the demo's first command
// (make demo runs it) prints no "not readable" note, nor one about the Istio version.
func scenarioDemoIstioCNIConfig(ctx context.Context, t *testing.T, e *env) {
	args := []string{"scan", "-A", "--prober", "node-local", "--node", e.node.Name(), "--confirm", "1s"}
	res, err := Run(ctx, e.bin, nil, append(args, e.kube()...)...)
	require.NoError(t, err)
	require.Contains(t, res.Stderr, "istio-cni-config not readable", "sanity: the shared sandbox has no ConfigMap")

	require.NoError(t, sandbox.CreateIstioCNIConfig(ctx, e.cs))
	t.Cleanup(func() {
		_ = e.cs.CoreV1().ConfigMaps("istio-system").Delete(context.Background(), enroll.ConfigMapName, metav1.DeleteOptions{})
	})
	res, err = Run(ctx, e.bin, nil, append(args, e.kube()...)...)
	require.NoError(t, err)
	assert.Less(t, res.Code, 2, res.Stderr)
	assert.NotContains(t, res.Stderr, "not readable")
	assert.NotContains(t, res.Stderr, "Istio version not found", "the ConfigMap names the version")
}

// scenarioHostPIDNotNeeded settles whether the agent's default (proc) backend needs the
// host's PID namespace: it runs the agent in a PID namespace of its own — as PID 1, as in a
// pod without hostPID — with only the host's /proc bind-mounted (a hostPath volume), as
// deploy/ runs it (uid 65532, no capabilities), and checks its verdicts on a captured and an
// orphaned pod, then that it stops gracefully on SIGTERM.
func scenarioHostPIDNotNeeded(ctx context.Context, t *testing.T, e *env) {
	const ns = "hostpid"
	pods := agentWorkload(ctx, t, e, ns)
	orphan, captured := pods[0], pods[1]
	require.NoError(t, e.node.Flush(ns, orphan.Name))
	kubeconfig := applyAgentRBAC(ctx, t, e, "base")

	dir, err := os.MkdirTemp("", "meshmedic-hostpid-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	bin := filepath.Join(dir, "meshmedic")
	copyFile(t, e.bin, bin, 0o755)
	kc := filepath.Join(dir, "kubeconfig")
	copyFile(t, kubeconfig, kc, 0o644)
	hostProc := filepath.Join(dir, "host-proc")
	require.NoError(t, os.Mkdir(hostProc, 0o755))
	port := freePort(t)

	for _, tool := range []string{"unshare", "setpriv", "mount"} {
		_, err := exec.LookPath(tool)
		require.NoError(t, err, "%s (util-linux) is needed to build the agent's PID namespace", tool)
	}
	// In new PID and mount namespaces: the host's /proc at host-proc (bind mount, before
	// /proc is replaced), a /proc of the new PID namespace, then the agent as PID 1.
	script := fmt.Sprintf(`set -e
mount --bind /proc %[1]s
mount -t proc proc /proc
exec setpriv --reuid=65532 --regid=65532 --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs \
  %[2]s agent --node %[3]s --proc-root %[1]s --metrics-addr 127.0.0.1:%[4]d --kubeconfig %[5]s \
  --tick 500ms --full-recheck 3s --confirm 1s`, hostProc, bin, e.node.Name(), port, kc)
	var logs strings.Builder
	lw := &lockedWriter{w: &logs}
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount", "--propagation", "private", "sh", "-c", script)
	cmd.Stdout, cmd.Stderr = lw, lw
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", tail(lw.String(), 40))
		}
	})

	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	}), "agent never became ready:\n%s", lw.String())

	// It really is PID 1 of a PID namespace of its own.
	agentPID := childPID(t, cmd.Process.Pid)
	own, err := os.Readlink("/proc/self/ns/pid")
	require.NoError(t, err)
	theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", agentPID))
	require.NoError(t, err)
	assert.NotEqual(t, own, theirs, "the agent shares the test's PID namespace")
	assert.Equal(t, []string{strconv.Itoa(agentPID), "1"}, nsPIDs(t, agentPID), "the agent is PID 1 in its namespace")
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", agentPID))
	assert.Equal(t, "meshmedic", strings.TrimSpace(string(comm)))

	// Its verdicts: the captured pod True, the orphan False (confirmed).
	waitCondition(ctx, t, e, ns, []corev1.Pod{captured}, corev1.ConditionTrue, time.Minute)
	waitCondition(ctx, t, e, ns, []corev1.Pod{orphan}, corev1.ConditionFalse, time.Minute)
	assert.Regexp(t, `meshmedic_findings\{class="orphaned"\} [1-9]`, metricsText(t, url))

	// SIGTERM to the agent (PID 1 of its namespace): it stops gracefully, exit 0, which
	// unshare passes on.
	require.NoError(t, syscall.Kill(agentPID, syscall.SIGTERM))
	select {
	case err := <-done:
		stopped = true
		assert.NoError(t, err, "the agent as PID 1 did not stop cleanly on SIGTERM")
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not stop within 30 s of SIGTERM")
	}
}

// childPID is the only child of pid (unshare --fork's child: the agent, after exec).
func childPID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	require.NoError(t, err)
	f := strings.Fields(string(b))
	require.Len(t, f, 1, "children of %d: %q", pid, b)
	n, err := strconv.Atoi(f[0])
	require.NoError(t, err)
	return n
}

// nsPIDs is the NSpid line of /proc/<pid>/status: the PID in each nested namespace.
func nsPIDs(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
			return strings.Fields(v)
		}
	}
	t.Fatalf("no NSpid in /proc/%d/status", pid)
	return nil
}
