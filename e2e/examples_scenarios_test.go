//go:build sandbox

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/heal"
)

// buildExample builds examples/<name> (the programs operator authors copy) into dir.
func buildExample(ctx context.Context, t *testing.T, dir, name string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	out := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./examples/"+name)
	cmd.Dir = filepath.Dir(filepath.Dir(file))
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build ./examples/%s:\n%s", name, b)
	return out
}

type oneshotJSON struct {
	Checked  int `json:"checked"`
	Findings []struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
		UID       string `json:"uid"`
		Class     string `json:"class"`
		Confirmed bool   `json:"confirmed"`
	} `json:"findings"`
}

// logLines parses the controller's JSON log lines (funcr) and returns those whose msg is msg.
func logLines(t *testing.T, stderr, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// scenarioExamples: examples/oneshot and examples/controller, built with `go build` as a
// user would, run against the sandbox with the node-local prober (this machine is the node).
func scenarioExamples(ctx context.Context, t *testing.T, e *env) {
	ensureMeshmedicNS(ctx, t, e) // the controller keeps its heal ledger there
	dir := t.TempDir()
	oneshot := buildExample(ctx, t, dir, "oneshot")
	controller := buildExample(ctx, t, dir, "controller")
	local := []string{"-prober", "node-local", "-node", e.node.Name(), "-proc-root", "/proc", "-confirm", "1s", "-kubeconfig", e.cp.KubeconfigPath}
	runOneshot := func(t *testing.T, ns string, extra ...string) (oneshotJSON, Result) {
		t.Helper()
		res, err := Run(ctx, oneshot, nil, append(append([]string{"-n", ns, "-o", "json"}, local...), extra...)...)
		require.NoError(t, err)
		require.NotEqual(t, 2, res.Code, "oneshot failed: %s", res.Stderr)
		var out oneshotJSON
		require.NoError(t, json.Unmarshal([]byte(res.Stdout), &out), res.Stdout)
		return out, res
	}

	t.Run("oneshot", func(t *testing.T) {
		const ns = "ex-oneshot"
		mkNamespace(ctx, t, e, ns, map[string]string{enroll.LabelDataplaneMode: enroll.DataplaneModeAmbient})
		mkDeployment(ctx, t, e, ns, "web", 2, false)
		pods := waitPods(ctx, t, e, ns, 2, enrolled)

		out, res := runOneshot(t, ns)
		assert.Equal(t, 0, res.Code, "all captured: exit 0\n%s%s", res.Stdout, res.Stderr)
		assert.Equal(t, 2, out.Checked)
		assert.Empty(t, out.Findings)

		require.NoError(t, e.node.Flush(ns, pods[0].Name))
		t.Cleanup(func() { _ = e.node.Recapture(ns, pods[0].Name) })
		out, res = runOneshot(t, ns)
		assert.Equal(t, 1, res.Code, "an orphan: exit 1\n%s%s", res.Stdout, res.Stderr)
		require.Len(t, out.Findings, 1, res.Stdout)
		assert.Equal(t, pods[0].Name, out.Findings[0].Name)
		assert.Equal(t, string(pods[0].UID), out.Findings[0].UID)
		assert.Equal(t, "orphaned", out.Findings[0].Class)
		assert.True(t, out.Findings[0].Confirmed, "held after the confirm delay")

		// The table names it too.
		tbl, err := Run(ctx, oneshot, nil, append([]string{"-n", ns}, local...)...)
		require.NoError(t, err)
		assert.Equal(t, 1, tbl.Code)
		assert.Regexp(t, ns+`\s+`+pods[0].Name+`\s+orphaned`, tbl.Stdout)
	})

	t.Run("controller", func(t *testing.T) {
		const ns = "ex-controller"
		mkNamespace(ctx, t, e, ns, map[string]string{enroll.LabelDataplaneMode: enroll.DataplaneModeAmbient})
		mkDeployment(ctx, t, e, ns, "api", 2, false)
		pods := waitPods(ctx, t, e, ns, 2, enrolled)
		victim := pods[0]
		require.NoError(t, e.node.Flush(ns, victim.Name))
		ctrl := append([]string{"-once", "-namespace", ns}, local...)
		healLog := func(t *testing.T, res Result) map[string]any {
			t.Helper()
			lines := logLines(t, res.Stderr, "heal")
			require.Len(t, lines, 1, "one heal decision:\n%s", res.Stderr)
			assert.Equal(t, ns+"/"+victim.Name, lines[0]["pod"])
			assert.Equal(t, "orphaned", lines[0]["class"])
			return lines[0]
		}

		// Dry run (the default): the server-side dry run is accepted, nothing changes.
		res, err := Run(ctx, controller, nil, ctrl...)
		require.NoError(t, err)
		assert.Equal(t, 1, res.Code, "a dry run leaves the finding: exit 1\n%s", res.Stderr)
		l := healLog(t, res)
		assert.Equal(t, string(heal.ResultWouldEvict), l["result"])
		assert.Equal(t, true, l["dryRun"])
		got, err := e.cs.CoreV1().Pods(ns).Get(ctx, victim.Name, metav1.GetOptions{})
		require.NoError(t, err, "the dry run must not evict")
		assert.Equal(t, victim.UID, got.UID)
		assert.True(t, hasEvent(ctx, t, e, ns, victim.Name, heal.ReasonWouldEvict))

		// -yes: evicted through the Eviction API, the ReplicaSet's replacement is captured.
		res, err = Run(ctx, controller, nil, append(ctrl, "-yes")...)
		require.NoError(t, err)
		assert.Equal(t, 0, res.Code, "healed: exit 0\n%s", res.Stderr)
		l = healLog(t, res)
		assert.Equal(t, string(heal.ResultEvicted), l["result"], fmt.Sprint(l["detail"]))
		assert.Equal(t, false, l["dryRun"])
		assert.True(t, hasEvent(ctx, t, e, ns, victim.Name, heal.ReasonEvicted))
		waitPods(ctx, t, e, ns, 2, func(p *corev1.Pod) bool { return p.UID != victim.UID && enrolled(p) })
		out, sres := runOneshot(t, ns)
		assert.Equal(t, 0, sres.Code, "the replacement is captured: %s", sres.Stdout)
		assert.Equal(t, 2, out.Checked)

		// Nothing left: a further cycle heals nothing and exits 0.
		res, err = Run(ctx, controller, nil, append(ctrl, "-yes")...)
		require.NoError(t, err)
		assert.Equal(t, 0, res.Code, res.Stderr)
		assert.Empty(t, logLines(t, res.Stderr, "heal"))
	})
}
