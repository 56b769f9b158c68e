//go:build sandbox

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/meshmedic/meshmedic/e2e/controlplane"
	"github.com/meshmedic/meshmedic/e2e/sandbox"
	"github.com/meshmedic/meshmedic/internal/podsim"
)

// meshmedicNS is meshmedic's own namespace in the sandbox (the default of
// --meshmedic-namespace).
const meshmedicNS = "meshmedic-system"

// env is the sandbox shared by every scenario of TestSandbox.
type env struct {
	cp   *controlplane.ControlPlane
	cs   kubernetes.Interface
	node *sandbox.Node
	bin  string
}

func (e *env) kube() []string { return []string{"--kubeconfig", e.cp.KubeconfigPath} }

// TestSandbox runs meshmedic's end-to-end scenarios against a real kube-apiserver, etcd,
// controller-manager and scheduler on 127.0.0.1 and a node made of real kernel objects.
// Build the control plane first: e2e/controlplane/build.sh (make e2e does it).
func TestSandbox(t *testing.T) {
	podsim.RequirePrivileged(t)
	bins, err := controlplane.FindBinaries()
	if err != nil {
		if os.Getenv("MESHMEDIC_REQUIRE_PRIVILEGED") == "1" || os.Getenv("CI") != "" {
			t.Fatalf("control plane binaries: %v", err)
		}
		t.Skipf("control plane binaries not built (run e2e/controlplane/build.sh): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	require.NoError(t, podsim.CleanupStale())

	cp, err := controlplane.Start(ctx, controlplane.Options{BinDir: bins})
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
				if b, err := os.ReadFile(cp.LogFile(c)); err == nil {
					t.Logf("%s log tail:\n%s", c, tail(string(b), 30))
				}
			}
		}
		assert.NoError(t, cp.Stop())
	})
	cs, err := kubernetes.NewForConfig(cp.RESTConfig)
	require.NoError(t, err)
	var nodeLog strings.Builder
	node, err := sandbox.StartNode(ctx, cs, sandbox.Options{DNS: true, Log: &lockedWriter{w: &nodeLog}})
	require.NoError(t, err)
	t.Cleanup(func() {
		assert.NoError(t, node.Stop())
		assert.NoError(t, node.Err())
		if t.Failed() {
			t.Logf("sandbox node log:\n%s", tail(nodeLog.String(), 60))
		}
	})
	// meshmedic's own namespace, as an install makes it: the fleet-wide heal ledger and the
	// agents' heartbeats live there.
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: meshmedicNS}}, metav1.CreateOptions{})
	require.NoError(t, err)
	bin, err := BuildBinary(ctx, t.TempDir())
	require.NoError(t, err)
	e := &env{cp: cp, cs: cs, node: node, bin: bin}

	t.Run("node-scan", func(t *testing.T) { scenarioNodeScan(ctx, t, e) })
	t.Run("scan", func(t *testing.T) { scenarioScan(ctx, t, e) })
	t.Run("engine", func(t *testing.T) { scenarioEngine(ctx, t, e) })
	t.Run("repair", func(t *testing.T) { scenarioRepair(ctx, t, e) })
	t.Run("toggle", func(t *testing.T) { scenarioToggle(ctx, t, e) })
	t.Run("agent-detects-and-heals", func(t *testing.T) { scenarioAgent(ctx, t, e) })
	t.Run("apiserver-restart", func(t *testing.T) { scenarioAgentAPIServerRestart(ctx, t, e) })
	t.Run("rbac-least-privilege", func(t *testing.T) { scenarioAgentRBACLeastPrivilege(ctx, t, e) })
	t.Run("readiness-gate", func(t *testing.T) { scenarioAgentReadinessGate(ctx, t, e) })
	t.Run("examples", func(t *testing.T) { scenarioExamples(ctx, t, e) })
	t.Run("deploy-manifests", func(t *testing.T) { scenarioDeployManifests(ctx, t, e) })
	t.Run("rules-inspection", func(t *testing.T) { scenarioRulesInspection(ctx, t, e) })
	t.Run("safety", func(t *testing.T) { scenarioSafety(ctx, t, e) })
	habitScenarios(ctx, t, e) // cli-habits, demo-istio-cni-config, hostpid-not-needed
}

// nodeScan runs `meshmedic node scan` joined with the API, as JSON.
func nodeScan(ctx context.Context, t *testing.T, e *env, extra ...string) (map[string]scanRow, Result) {
	t.Helper()
	args := append([]string{"node", "scan", "--node", e.node.Name(), "--proc-root", "/proc", "-o", "json"}, e.kube()...)
	res, err := Run(ctx, e.bin, nil, append(args, extra...)...)
	require.NoError(t, err)
	require.NotEqual(t, 2, res.Code, "node scan failed: %s", res.Stderr)
	var out struct{ Pods []scanRow }
	require.NoError(t, json.Unmarshal([]byte(res.Stdout), &out), res.Stdout)
	rows := map[string]scanRow{}
	for _, p := range out.Pods {
		if p.Name != "" {
			rows[p.Namespace+"/"+p.Name] = p
		}
	}
	return rows, res
}

type scanRow struct {
	UID         string   `json:"uid"`
	PID         int      `json:"pid"`
	Netns       uint64   `json:"netns"`
	HostNetwork bool     `json:"hostNetwork"`
	Listeners   []uint16 `json:"listeners"`
	Capture     string   `json:"capture"`
	Namespace   string   `json:"namespace"`
	Name        string   `json:"name"`
	Expected    string   `json:"expected"`
	Reason      string   `json:"reason"`
	Class       string   `json:"class"`
	Rules       string   `json:"rules"`
}

func scenarioNodeScan(ctx context.Context, t *testing.T, e *env) {
	mkNamespace(ctx, t, e, "shop", map[string]string{"istio.io/dataplane-mode": "ambient"})
	mkNamespace(ctx, t, e, "plain", nil)
	mkDeployment(ctx, t, e, "shop", "web", 3, false)
	mkDeployment(ctx, t, e, "shop", "hostnet", 1, true)
	mkDeployment(ctx, t, e, "plain", "legacy", 1, false)
	shop := waitPods(ctx, t, e, "shop", 4, func(p *corev1.Pod) bool {
		return p.Spec.HostNetwork || p.Annotations["ambient.istio.io/redirection"] == "enabled"
	})
	waitPods(ctx, t, e, "plain", 1, nil)

	rows, res := nodeScan(ctx, t, e)
	assert.Equal(t, 0, res.Code, "all enrolled pods captured: exit 0\n%s", res.Stdout)
	var web []string
	for _, p := range shop {
		r, ok := rows["shop/"+p.Name]
		require.True(t, ok, "pod %s missing from node scan:\n%s", p.Name, res.Stdout)
		assert.Equal(t, string(p.UID), r.UID)
		if p.Spec.HostNetwork {
			assert.Equal(t, "host-network", r.Capture)
			assert.Equal(t, "skipped", r.Class)
			continue
		}
		web = append(web, p.Name)
		assert.Equal(t, "captured", r.Capture, "%s", p.Name)
		assert.Equal(t, "captured", r.Class)
		assert.Equal(t, []uint16{15001, 15006, 15008, 15053}, r.Listeners)
		kp, err := e.node.Pod("shop", p.Name)
		require.NoError(t, err)
		assert.Equal(t, kp.PID, r.PID)
		assert.Equal(t, kp.Netns, r.Netns)
	}
	for name, r := range rows {
		if strings.HasPrefix(name, "plain/") {
			assert.Equal(t, "skipped", r.Class, name)
			assert.Equal(t, "none", r.Capture, name)
		}
	}
	require.Len(t, web, 3)

	// Faults, the way they happen: all listeners flushed (reboot orphan), one flushed
	// (partial), the sandbox's netns replaced under the same pod UID.
	require.NoError(t, e.node.Flush("shop", web[0]))
	require.NoError(t, e.node.Flush("shop", web[1], podsim.PortHBONE))
	require.NoError(t, e.node.ReplaceNetns("shop", web[2]))
	rows, res = nodeScan(ctx, t, e)
	assert.Equal(t, 1, res.Code, "findings: exit 1\n%s", res.Stdout)
	assert.Equal(t, "orphaned", rows["shop/"+web[0]].Class)
	assert.Equal(t, "none", rows["shop/"+web[0]].Capture)
	assert.Equal(t, "partial", rows["shop/"+web[1]].Class)
	assert.Equal(t, []uint16{15001, 15006, 15053}, rows["shop/"+web[1]].Listeners)
	assert.Equal(t, "orphaned", rows["shop/"+web[2]].Class, "a one-shot scan cannot know the old inode: the empty new netns is an orphan")
	kp, err := e.node.Pod("shop", web[2])
	require.NoError(t, err)
	assert.Equal(t, kp.Netns, rows["shop/"+web[2]].Netns)

	// Offline, the same node shows the same sockets.
	res, err = Run(ctx, e.bin, nil, "node", "scan", "--offline", "--proc-root", "/proc", "-o", "json")
	require.NoError(t, err)
	assert.Equal(t, 1, res.Code, "a partial capture is a finding offline too")
	assert.Contains(t, res.Stdout, rows["shop/"+web[1]].UID)

	// Healing by hand (delete): the ReplicaSet's replacement is captured, the old
	// sandbox is gone from the node.
	old := rows["shop/"+web[0]]
	require.NoError(t, e.cs.CoreV1().Pods("shop").Delete(ctx, web[0], metav1.DeleteOptions{}))
	waitPods(ctx, t, e, "shop", 4, func(p *corev1.Pod) bool {
		return p.Name != web[0] && (p.Spec.HostNetwork || p.Annotations["ambient.istio.io/redirection"] == "enabled")
	})
	rows, _ = nodeScan(ctx, t, e)
	for name, r := range rows {
		assert.NotEqual(t, old.UID, r.UID, "deleted pod %s still listed", name)
	}
	// Restore the others so later scenarios start clean.
	require.NoError(t, e.node.Recapture("shop", web[1]))
	require.NoError(t, e.node.Recapture("shop", web[2]))
	rows, res = nodeScan(ctx, t, e)
	assert.Equal(t, 0, res.Code, "%s", res.Stdout)
}

func mkNamespace(ctx context.Context, t *testing.T, e *env, name string, labels map[string]string) {
	t.Helper()
	_, err := e.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	require.NoError(t, err)
}

func mkDeployment(ctx context.Context, t *testing.T, e *env, ns, name string, replicas int32, hostNetwork bool) {
	t.Helper()
	d := sandbox.Deployment(sandbox.Workload{Namespace: ns, Name: name, Replicas: replicas, HostNetwork: hostNetwork})
	_, err := e.cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
	require.NoError(t, err)
}

// waitPods waits until namespace ns has exactly n Running pods that satisfy ok (nil = any).
func waitPods(ctx context.Context, t *testing.T, e *env, ns string, n int, ok func(*corev1.Pod) bool) []corev1.Pod {
	t.Helper()
	var last []corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := e.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		last = last[:0]
		for i := range list.Items {
			p := &list.Items[i]
			if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || (ok != nil && !ok(p)) {
				continue
			}
			last = append(last, *p)
		}
		return len(last) == n && len(list.Items) == n, nil
	})
	if err != nil {
		all, _ := e.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		var b strings.Builder
		if all != nil {
			for _, p := range all.Items {
				fmt.Fprintf(&b, "\n  %s node=%q phase=%s deleting=%v ann=%v conds=%v", p.Name, p.Spec.NodeName, p.Status.Phase, p.DeletionTimestamp != nil, p.Annotations, p.Status.Conditions)
			}
		}
		rs, _ := e.cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
		if rs != nil {
			for _, r := range rs.Items {
				fmt.Fprintf(&b, "\n  rs %s replicas=%d conds=%v", r.Name, r.Status.Replicas, r.Status.Conditions)
			}
		}
		evs, _ := e.cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
		if evs != nil {
			for _, ev := range evs.Items {
				fmt.Fprintf(&b, "\n  event %s %s: %s", ev.InvolvedObject.Name, ev.Reason, ev.Message)
			}
		}
		t.Fatalf("waiting for %d pods in %s (have %d: %v); node error: %v%s", n, ns, len(last), names(last), e.node.Err(), b.String())
	}
	return last
}

func names(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
