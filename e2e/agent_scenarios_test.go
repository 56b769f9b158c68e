//go:build sandbox

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/meshmedic/meshmedic/enroll"
)

const condAmbientCaptured = "meshmedic.io/AmbientCaptured"

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startAgent runs the real binary's agent subcommand against the sandbox; it is stopped
// (SIGTERM, then killed) when the test ends.
func startAgent(ctx context.Context, t *testing.T, e *env, args ...string) (metricsURL string, logs *lockedWriter) {
	t.Helper()
	port := freePort(t)
	lw := &lockedWriter{w: &strings.Builder{}}
	full := append([]string{"agent", "--node", e.node.Name(), "--proc-root", "/proc", "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", port),
		"--tick", "500ms", "--full-recheck", "3s", "--confirm", "1s"}, e.kube()...)
	cmd := exec.Command(e.bin, append(full, args...)...)
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
	return metricsURL, lw
}

func podCondition(p *corev1.Pod) (corev1.ConditionStatus, string) {
	for _, c := range p.Status.Conditions {
		if string(c.Type) == condAmbientCaptured {
			return c.Status, c.Reason
		}
	}
	return "", ""
}

func metricsText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// scenarioAgent: agent-detects-and-heals. The real binary runs as the node's agent; a pod
// whose listeners are flushed is detected, its condition goes False, it is evicted under
// --auto-repair, and its replacement is captured with the condition True.
func scenarioAgent(ctx context.Context, t *testing.T, e *env) {
	const ns = "agent"
	mkNamespace(ctx, t, e, ns, map[string]string{enroll.LabelDataplaneMode: enroll.DataplaneModeAmbient})
	mkDeployment(ctx, t, e, ns, "web", 2, false)
	enrolled := func(p *corev1.Pod) bool { return p.Annotations[enroll.AnnotationRedirection] == "enabled" }
	pods := waitPods(ctx, t, e, ns, 2, enrolled)
	url, _ := startAgent(ctx, t, e, "--auto-repair")

	// Healthy pods get the condition True.
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, p := range pods {
			got, err := e.cs.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			if st, _ := podCondition(got); st != corev1.ConditionTrue {
				return false, nil
			}
		}
		return true, nil
	}), "captured pods get %s=True", condAmbientCaptured)

	victim := pods[0]
	require.NoError(t, e.node.Flush(ns, victim.Name))
	// Detected, confirmed, evicted: the pod with that UID goes away.
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := e.cs.CoreV1().Pods(ns).Get(ctx, victim.Name, metav1.GetOptions{})
		return err != nil || got.UID != victim.UID, nil
	}), "the orphan was not evicted")
	// Events are written by the agent as it goes: wait for them.
	for _, reason := range []string{"MeshmedicAmbientOrphan", "MeshmedicEvicted"} {
		assert.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			return hasEvent(ctx, t, e, ns, victim.Name, reason), nil
		}), "Event %s for %s", reason, victim.Name)
	}

	// The replacement is captured and published True.
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := e.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(list.Items) != 2 {
			return false, nil
		}
		for _, p := range list.Items {
			if st, _ := podCondition(&p); p.UID == victim.UID || st != corev1.ConditionTrue {
				return false, nil
			}
		}
		return true, nil
	}), "the replacement is captured and published")

	m := metricsText(t, url)
	assert.Contains(t, m, `meshmedic_repairs_total{result="evicted",strategy="evict"} 1`)
	assert.Regexp(t, `meshmedic_confirmed_findings_total [1-9]`, m)
	assert.Contains(t, m, "meshmedic_sweep_duration_seconds_count")
	assert.Contains(t, m, "meshmedic_pods_tracked")
}
