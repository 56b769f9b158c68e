//go:build sandbox

package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/internal/podsim"
	"github.com/meshmedic/meshmedic/netns"
)

type scanJSON struct {
	Checked  int `json:"checked"`
	Findings []struct {
		Namespace string   `json:"namespace"`
		Name      string   `json:"name"`
		UID       string   `json:"uid"`
		Node      string   `json:"node"`
		IP        string   `json:"ip"`
		Class     string   `json:"class"`
		Expected  []uint16 `json:"expected"`
		Present   []uint16 `json:"present"`
		Ready     bool     `json:"ready"`
		Confirmed bool     `json:"confirmed"`
		Reason    string   `json:"reason"`
	} `json:"findings"`
}

// scan runs `meshmedic scan` with the node-local prober (this machine is the sandbox node).
func scan(ctx context.Context, t *testing.T, e *env, args ...string) (scanJSON, Result) {
	t.Helper()
	base := []string{"scan", "--prober", "node-local", "--node", e.node.Name(), "--confirm", "1s", "-o", "json"}
	res, err := Run(ctx, e.bin, nil, append(append(base, e.kube()...), args...)...)
	require.NoError(t, err)
	require.NotEqual(t, 2, res.Code, "scan failed: %s", res.Stderr)
	var out scanJSON
	require.NoError(t, json.Unmarshal([]byte(res.Stdout), &out), res.Stdout)
	return out, res
}

func classes(out scanJSON) map[string]string {
	m := map[string]string{}
	for _, f := range out.Findings {
		m[f.Namespace+"/"+f.Name] = f.Class
	}
	return m
}

// scenarioScan: reboot-orphan, partial-listeners and not-expected-skipped through the
// real binary.
func scenarioScan(ctx context.Context, t *testing.T, e *env) {
	mkNamespace(ctx, t, e, "scan", map[string]string{enroll.LabelDataplaneMode: enroll.DataplaneModeAmbient})
	mkNamespace(ctx, t, e, "scan-plain", nil)
	mkDeployment(ctx, t, e, "scan", "api", 3, false)
	mkDeployment(ctx, t, e, "scan-plain", "legacy", 1, false)
	pods := waitPods(ctx, t, e, "scan", 3, func(p *corev1.Pod) bool { return p.Annotations[enroll.AnnotationRedirection] == "enabled" })
	waitPods(ctx, t, e, "scan-plain", 1, nil)

	t.Run("clean", func(t *testing.T) {
		out, res := scan(ctx, t, e, "-n", "scan")
		assert.Equal(t, 0, res.Code, res.Stdout+res.Stderr)
		assert.Equal(t, 3, out.Checked)
		assert.Empty(t, out.Findings)
	})
	t.Run("reboot-orphan", func(t *testing.T) {
		require.NoError(t, e.node.Flush("scan", pods[0].Name))
		t.Cleanup(func() { require.NoError(t, e.node.Recapture("scan", pods[0].Name)) })
		out, res := scan(ctx, t, e, "-n", "scan")
		assert.Equal(t, 1, res.Code, res.Stdout+res.Stderr)
		require.Len(t, out.Findings, 1, res.Stdout)
		f := out.Findings[0]
		assert.Equal(t, pods[0].Name, f.Name)
		assert.Equal(t, "orphaned", f.Class)
		assert.True(t, f.Confirmed, "held after the confirm delay")
		assert.Equal(t, string(pods[0].UID), f.UID)
		assert.Equal(t, e.node.Name(), f.Node)
		assert.Equal(t, pods[0].Status.PodIP, f.IP)
		assert.Equal(t, []uint16{15001, 15006, 15008}, f.Expected)
		assert.Empty(t, f.Present)
		assert.True(t, f.Ready, "an orphan is usually still Ready: readiness never hides it")
	})
	t.Run("partial-listeners", func(t *testing.T) {
		require.NoError(t, e.node.Flush("scan", pods[1].Name, podsim.PortInbound))
		t.Cleanup(func() { require.NoError(t, e.node.Recapture("scan", pods[1].Name)) })
		out, res := scan(ctx, t, e, "-n", "scan", "-o", "json")
		assert.Equal(t, 1, res.Code)
		require.Len(t, out.Findings, 1, res.Stdout)
		assert.Equal(t, "partial", out.Findings[0].Class)
		assert.Equal(t, []uint16{15001, 15008, 15053}, out.Findings[0].Present)
		// The table form names the pod too.
		tbl, err := Run(ctx, e.bin, nil, append([]string{"scan", "--prober", "node-local", "--node", e.node.Name(), "--confirm", "0", "-n", "scan"}, e.kube()...)...)
		require.NoError(t, err)
		assert.Equal(t, 1, tbl.Code)
		assert.Contains(t, tbl.Stdout, pods[1].Name)
		assert.Contains(t, tbl.Stdout, "partial")
	})
	t.Run("unknown-namespace", func(t *testing.T) {
		res, err := Run(ctx, e.bin, nil, append([]string{"scan", "--prober", "node-local", "--node", e.node.Name(), "-n", "no-such-ns"}, e.kube()...)...)
		require.NoError(t, err)
		assert.Equal(t, 2, res.Code)
		assert.Contains(t, res.Stderr, `namespace "no-such-ns" not found`)
	})
	t.Run("rbac-denied", func(t *testing.T) {
		kc := filepath.Join(t.TempDir(), "sa.kubeconfig")
		require.NoError(t, e.cp.KubeconfigForServiceAccount(ctx, "default", "no-rights", kc))
		res, err := Run(ctx, e.bin, nil, "scan", "--prober", "node-local", "--node", e.node.Name(), "-n", "scan", "--kubeconfig", kc)
		require.NoError(t, err)
		assert.Equal(t, 2, res.Code, res.Stdout)
		assert.Contains(t, res.Stderr, `grant verb "list" on resource "pods"`, "the error says which verb on which resource")
	})
	t.Run("not-expected-skipped", func(t *testing.T) {
		// A pod outside the mesh has no listeners and is not a finding, even with -A.
		out, res := scan(ctx, t, e, "-A", "--all")
		assert.Equal(t, 0, res.Code, res.Stdout)
		got := classes(out)
		for name, class := range got {
			if len(name) > len("scan-plain/") && name[:len("scan-plain/")] == "scan-plain/" {
				assert.Equal(t, "skipped", class, name)
			}
		}
		assert.Contains(t, got, "scan-plain/"+waitPods(ctx, t, e, "scan-plain", 1, nil)[0].Name)
	})
}

// scenarioEngine: flap-recovers and netns-replaced through the detect library, in-process,
// against the real API server and the real kernel (a one-shot CLI cannot remember a
// previous netns inode; the agent and importers' controllers can).
func scenarioEngine(ctx context.Context, t *testing.T, e *env) {
	pods := waitPods(ctx, t, e, "scan", 3, func(p *corev1.Pod) bool { return p.Annotations[enroll.AnnotationRedirection] == "enabled" })
	fs, err := netns.NewFS("/proc")
	require.NoError(t, err)
	src := detect.NewAPISource(e.cs.CoreV1(), e.cs.CoreV1())
	eng := detect.New(src, src, detect.NewNodeLocalProber(fs, netns.NewProcReader(fs)),
		detect.WithNode(e.node.Name()), detect.WithConfirmDelay(0))
	find := func(r detect.Report, name string) detect.Finding {
		for _, f := range r.Findings {
			if f.Name == name {
				return f
			}
		}
		t.Fatalf("pod %s not in report", name)
		return detect.Finding{}
	}

	t.Run("flap-recovers", func(t *testing.T) {
		name := pods[2].Name
		require.NoError(t, e.node.Flush("scan", name))
		r, err := eng.Scan(ctx, "scan")
		require.NoError(t, err)
		require.Equal(t, detect.ClassOrphaned, find(r, name).Class)
		require.NoError(t, e.node.Recapture("scan", name)) // istio-cni/ztunnel caught up
		r, err = eng.Confirm(ctx, r)
		require.NoError(t, err)
		f := find(r, name)
		assert.Equal(t, detect.ClassCaptured, f.Class, "a flap that recovers is not reported")
		assert.False(t, f.Confirmed)
	})
	t.Run("netns-replaced", func(t *testing.T) {
		name := pods[0].Name
		r, err := eng.Scan(ctx, "scan")
		require.NoError(t, err)
		before := find(r, name)
		require.Equal(t, detect.ClassCaptured, before.Class)
		require.NoError(t, e.node.ReplaceNetns("scan", name))
		t.Cleanup(func() { require.NoError(t, e.node.Recapture("scan", name)) })
		r, err = eng.Scan(ctx, "scan")
		require.NoError(t, err)
		after := find(r, name)
		assert.Equal(t, detect.ClassNetnsReplaced, after.Class)
		assert.Equal(t, before.UID, after.UID, "same pod UID, new sandbox")
		assert.NotEqual(t, before.Netns, after.Netns)
	})
}
