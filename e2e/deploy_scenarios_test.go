//go:build sandbox

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/meshmedic/meshmedic/e2e/controlplane"
)

// promOperatorModule is the Go module whose example/prometheus-operator-crd holds the real
// monitoring.coreos.com CRDs the PrometheusRule and ServiceMonitor are validated against.
const promOperatorModule = "github.com/prometheus-operator/prometheus-operator@v0.85.0"

const (
	agentNS = "meshmedic-system"
	agentSA = "meshmedic-agent"
)

// repoRoot is the repository's root directory.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// kubectlPath is the kubectl built by e2e/controlplane/build.sh beside the control plane (the
// same k8s.io/kubernetes version); never the one on PATH, which a clean CI machine lacks.
func kubectlPath(t *testing.T) string {
	t.Helper()
	dir, err := controlplane.FindBinaries()
	require.NoError(t, err)
	p := filepath.Join(dir, "kubectl")
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&0o111 == 0 {
		t.Fatalf("kubectl is not in %s (a bin dir built before kubectl was added): run e2e/controlplane/build.sh", dir)
	}
	return p
}

var helmOnce struct {
	sync.Mutex
	path string
}

// helmPath is helm from e2e/tools/build-helm.sh (pinned, built from the Go module proxy into
// ~/.cache/meshmedic/tools; the script returns at once when it is built, else builds it).
func helmPath(t *testing.T) string {
	t.Helper()
	helmOnce.Lock()
	defer helmOnce.Unlock()
	if helmOnce.path != "" {
		return helmOnce.path
	}
	cmd := exec.Command(filepath.Join(repoRoot(), "e2e", "tools", "build-helm.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "e2e/tools/build-helm.sh: %s", stderr.String())
	p := filepath.Join(strings.TrimSpace(string(out)), "helm")
	_, err = os.Stat(p)
	require.NoError(t, err)
	helmOnce.path = p
	return p
}

// runTool runs a tool and returns its stdout; a non-zero exit fails the test with its stderr.
func runTool(ctx context.Context, t *testing.T, stdin []byte, bin string, args ...string) string {
	t.Helper()
	out, errOut, err := runToolErr(ctx, stdin, bin, args...)
	require.NoError(t, err, "%s %s:\n%s", filepath.Base(bin), strings.Join(args, " "), errOut)
	return out
}

func runToolErr(ctx context.Context, stdin []byte, bin string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// kubectl runs the built kubectl as admin (or as the given kubeconfig) with a private
// discovery cache, so nothing is written under $HOME/.kube.
func kubectl(ctx context.Context, t *testing.T, e *env, kubeconfig string, stdin []byte, args ...string) (string, string, error) {
	t.Helper()
	if kubeconfig == "" {
		kubeconfig = e.cp.KubeconfigPath
	}
	return runToolErr(ctx, stdin, kubectlPath(t), append([]string{"--kubeconfig", kubeconfig, "--cache-dir", t.TempDir()}, args...)...)
}

// parseObjects splits a YAML stream into objects (empty documents dropped).
func parseObjects(t *testing.T, stream string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(stream, -1) {
		var m map[string]any
		require.NoError(t, yaml.Unmarshal([]byte(d), &m), "%s", d)
		if len(m) > 0 {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
	return out
}

// toStream joins objects into one YAML stream.
func toStream(t *testing.T, objs []*unstructured.Unstructured) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, o := range objs {
		y, err := yaml.Marshal(o.Object)
		require.NoError(t, err)
		b.WriteString("---\n")
		b.Write(y)
	}
	return b.Bytes()
}

func objKey(o *unstructured.Unstructured) string {
	return fmt.Sprintf("%s %s %s/%s", o.GetAPIVersion(), o.GetKind(), o.GetNamespace(), o.GetName())
}

// kustomize renders deploy/<dir> (a path relative to deploy/, or an absolute directory).
func kustomize(ctx context.Context, t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(repoRoot(), "deploy", dir)
	}
	return parseObjects(t, runTool(ctx, t, nil, kubectlPath(t), "kustomize", dir))
}

// helmTemplate renders the chart into namespace meshmedic-system with --set values.
func helmTemplate(ctx context.Context, t *testing.T, set ...string) []*unstructured.Unstructured {
	t.Helper()
	args := []string{"template", "meshmedic", filepath.Join(repoRoot(), "deploy", "helm", "meshmedic"), "--namespace", agentNS}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return parseObjects(t, runTool(ctx, t, nil, helmPath(t), args...))
}

// dryRunApply sends objs to the real API server as a server-side apply with --dry-run=server:
// schema, defaulting, validation and admission run, nothing is stored.
func dryRunApply(ctx context.Context, t *testing.T, e *env, what string, objs []*unstructured.Unstructured) {
	t.Helper()
	require.NotEmpty(t, objs, what)
	out, errOut, err := kubectl(ctx, t, e, "", toStream(t, objs), "apply", "--server-side", "--dry-run=server",
		"--field-manager=meshmedic-e2e", "-f", "-")
	require.NoError(t, err, "%s: server-side dry-run apply refused:\n%s\n%s", what, errOut, out)
	for _, o := range objs {
		assert.Contains(t, out, strings.ToLower(o.GetKind()), "%s: %s not in kubectl's answer:\n%s", what, objKey(o), out)
	}
	assert.Equal(t, len(objs), strings.Count(out, "(server dry run)"), "%s: one line per object:\n%s", what, out)
}

// helmOnlyLabels are the labels the chart adds that the kustomize manifests do not carry.
var helmOnlyLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}

// normalize returns objects keyed by identity, without Helm's bookkeeping labels.
func normalize(objs []*unstructured.Unstructured) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, o := range objs {
		c := o.DeepCopy()
		labels := c.GetLabels()
		for _, l := range helmOnlyLabels {
			delete(labels, l)
		}
		c.SetLabels(labels)
		out[objKey(c)] = c.Object
	}
	return out
}

// assertSameObjects fails unless a and b hold the same objects with the same content (Helm's
// own labels aside), naming the differing objects and fields.
func assertSameObjects(t *testing.T, what string, kust, helm []*unstructured.Unstructured) {
	t.Helper()
	k, h := normalize(kust), normalize(helm)
	keys := func(m map[string]map[string]any) []string {
		var out []string
		for key := range m {
			out = append(out, key)
		}
		sort.Strings(out)
		return out
	}
	if !assert.Equal(t, keys(k), keys(h), "%s: the same objects", what) {
		return
	}
	for key := range k {
		kj, _ := json.MarshalIndent(k[key], "", "  ")
		hj, _ := json.MarshalIndent(h[key], "", "  ")
		assert.JSONEq(t, string(kj), string(hj), "%s: %s differs between kustomize and helm", what, key)
	}
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// assertAgentSecurity checks the security contract of the base DaemonSet and its RBAC
// (DESIGN.md "Agent"): host /proc read-only and nothing else of the host (no hostPID: see
// TestSandbox/hostpid-not-needed), uid 65532,
// no capabilities, no escalation, read-only root, RuntimeDefault seccomp, and RBAC that cannot
// evict, delete or read secrets.
func assertAgentSecurity(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	ds := find(objs, "DaemonSet", "meshmedic-agent")
	require.NotNil(t, ds)
	spec, _, _ := unstructured.NestedMap(ds.Object, "spec", "template", "spec")
	for _, f := range []string{"hostPID", "hostNetwork", "hostIPC"} {
		assert.NotEqual(t, true, spec[f], f)
	}
	psc := spec["securityContext"].(map[string]any)
	assert.Equal(t, true, psc["runAsNonRoot"])
	// A uid of its own: 65532 is every distroless workload's, whose environ and root/ a
	// same-uid process may read; 0 is root, 65534 nobody.
	assert.NotContains(t, []any{int64(0), int64(65532), int64(65534)}, psc["runAsUser"])
	assert.Equal(t, psc["runAsUser"], psc["runAsGroup"])
	assert.Equal(t, "RuntimeDefault", psc["seccompProfile"].(map[string]any)["type"])
	vols := spec["volumes"].([]any)
	require.Len(t, vols, 1, "one volume: the host's /proc")
	assert.Equal(t, "/proc", vols[0].(map[string]any)["hostPath"].(map[string]any)["path"])
	cs := spec["containers"].([]any)
	require.Len(t, cs, 1)
	c := cs[0].(map[string]any)
	sc := c["securityContext"].(map[string]any)
	assert.Equal(t, false, sc["allowPrivilegeEscalation"])
	assert.Equal(t, true, sc["readOnlyRootFilesystem"])
	assert.NotEqual(t, true, sc["privileged"])
	caps := sc["capabilities"].(map[string]any)
	assert.Equal(t, []any{"ALL"}, caps["drop"])
	assert.Nil(t, caps["add"], "no capability added")
	mounts := c["volumeMounts"].([]any)
	require.Len(t, mounts, 1)
	assert.Equal(t, true, mounts[0].(map[string]any)["readOnly"], "host /proc is mounted read-only")
	assert.Equal(t, "/host/proc", mounts[0].(map[string]any)["mountPath"])
	assert.Contains(t, c["args"], "--proc-root=/host/proc")
	assert.Equal(t, "none", ds.Object["spec"].(map[string]any)["template"].(map[string]any)["metadata"].(map[string]any)["labels"].(map[string]any)["istio.io/dataplane-mode"])
	for _, o := range objs {
		if o.GetKind() != "ClusterRole" && o.GetKind() != "Role" {
			continue
		}
		rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
		for _, r := range rules {
			rm := r.(map[string]any)
			for _, res := range rm["resources"].([]any) {
				assert.NotContains(t, []any{"secrets", "pods/eviction", "pods/exec", "*"}, res, "%s grants %v", o.GetName(), res)
			}
			forbidden := []any{"delete", "deletecollection", "update", "*", "escalate", "bind", "impersonate"}
			if o.GetKind() == "Role" && o.GetNamespace() == agentNS && fmt.Sprint(rm["resources"]) == "[leases]" {
				forbidden = forbidden[:2] // its heartbeat and the heal ledger: leases in its own namespace are updated
			}
			for _, v := range rm["verbs"].([]any) {
				assert.NotContains(t, forbidden, v, "%s grants %v", o.GetName(), v)
			}
		}
	}
}

// applyAgentRBAC renders deploy/<overlay> ("base", "overlays/auto-repair") with the built
// kubectl and really applies (server-side, as admin) its Namespace, ServiceAccount,
// ClusterRole(Binding), Role(Binding) and ConfigMap objects — not the DaemonSet. It returns a
// kubeconfig that authenticates as the meshmedic-system/meshmedic-agent ServiceAccount, so the
// real binary runs with exactly the manifests' permissions. t.Cleanup deletes what was applied
// (cluster-scoped objects, the Role(Binding)s in other namespaces, and the namespace, waiting
// until it is gone) so the next scenario starts without the previous overlay's bindings.
func applyAgentRBAC(ctx context.Context, t *testing.T, e *env, overlay string) (kubeconfig string) {
	t.Helper()
	keep := map[string]bool{"Namespace": true, "ServiceAccount": true, "ClusterRole": true, "ClusterRoleBinding": true,
		"Role": true, "RoleBinding": true, "ConfigMap": true}
	var objs []*unstructured.Unstructured
	for _, o := range kustomize(ctx, t, overlay) {
		if keep[o.GetKind()] {
			objs = append(objs, o)
		}
	}
	require.NotNil(t, find(objs, "ServiceAccount", agentSA), "deploy/%s has no ServiceAccount %s", overlay, agentSA)
	waitNamespaceTerminated(ctx, t, e, agentNS) // a previous scenario's cleanup
	dyn, err := dynamic.NewForConfig(e.cp.RESTConfig)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx := context.Background()
		for i := len(objs) - 1; i >= 0; i-- {
			o := objs[i]
			if o.GetNamespace() == agentNS || o.GetKind() == "Namespace" { // deleteNamespace below
				continue
			}
			gvr := gvrOf(o)
			var err error
			if o.GetNamespace() == "" {
				err = dyn.Resource(gvr).Delete(ctx, o.GetName(), metav1.DeleteOptions{})
			} else {
				err = dyn.Resource(gvr).Namespace(o.GetNamespace()).Delete(ctx, o.GetName(), metav1.DeleteOptions{})
			}
			if err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("cleanup: deleting %s: %v", objKey(o), err)
			}
		}
		if err := deleteNamespace(ctx, e, agentNS); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	out, errOut, err := kubectl(ctx, t, e, "", toStream(t, objs), "apply", "--server-side", "--field-manager=meshmedic-e2e", "-f", "-")
	require.NoError(t, err, "applying the RBAC of deploy/%s:\n%s\n%s", overlay, errOut, out)
	kubeconfig = filepath.Join(t.TempDir(), "meshmedic-agent.kubeconfig")
	require.NoError(t, e.cp.KubeconfigForServiceAccount(ctx, agentNS, agentSA, kubeconfig))
	return kubeconfig
}

// gvrOf maps the kinds applyAgentRBAC and the CRD scenario apply to their resources.
func gvrOf(o *unstructured.Unstructured) schema.GroupVersionResource {
	gv, _ := schema.ParseGroupVersion(o.GetAPIVersion())
	res := map[string]string{"Namespace": "namespaces", "ServiceAccount": "serviceaccounts", "ClusterRole": "clusterroles",
		"ClusterRoleBinding": "clusterrolebindings", "Role": "roles", "RoleBinding": "rolebindings", "ConfigMap": "configmaps",
		"CustomResourceDefinition": "customresourcedefinitions"}[o.GetKind()]
	if res == "" {
		panic("gvrOf: unexpected kind " + o.GetKind())
	}
	return gv.WithResource(res)
}

// waitNamespaceTerminated waits while namespace ns is being deleted (a previous scenario's
// cleanup); a namespace that exists and is not terminating is left alone.
func waitNamespaceTerminated(ctx context.Context, t *testing.T, e *env, ns string) {
	t.Helper()
	cur, err := e.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return
	}
	require.NoError(t, err)
	if cur.DeletionTimestamp != nil {
		require.NoError(t, waitNamespaceDeleted(ctx, e, ns), "namespace %s is terminating", ns)
	}
}

// deleteNamespace deletes namespace ns and waits until it is gone.
func deleteNamespace(ctx context.Context, e *env, ns string) error {
	if err := e.cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting namespace %s: %w", ns, err)
	}
	return waitNamespaceDeleted(ctx, e, ns)
}

func waitNamespaceDeleted(ctx context.Context, e *env, ns string) error {
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := e.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		return fmt.Errorf("namespace %s still present: %w", ns, err)
	}
	return nil
}

// canI asks the API server, as kubeconfig's identity, `kubectl auth can-i args...`.
func canI(ctx context.Context, t *testing.T, e *env, kubeconfig string, args ...string) bool {
	t.Helper()
	out, errOut, err := kubectl(ctx, t, e, kubeconfig, nil, append([]string{"auth", "can-i"}, args...)...)
	switch strings.TrimSpace(out) {
	case "yes":
		require.NoError(t, err)
		return true
	case "no":
		return false
	}
	t.Fatalf("kubectl auth can-i %v: %v\n%s%s", args, err, out, errOut)
	return false
}

// promOperatorCRDs returns the paths of the real PrometheusRule and ServiceMonitor CRDs from the
// prometheus-operator module (downloaded through the Go module proxy into the module cache).
func promOperatorCRDs(ctx context.Context, t *testing.T) []string {
	t.Helper()
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", promOperatorModule)
	cmd.Dir = t.TempDir() // outside any module
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "go mod download %s: %s%s", promOperatorModule, out, stderr.String())
	var mod struct{ Dir, Error string }
	require.NoError(t, json.Unmarshal(out, &mod))
	require.Empty(t, mod.Error)
	var paths []string
	for _, crd := range []string{"prometheusrules", "servicemonitors"} {
		p := filepath.Join(mod.Dir, "example", "prometheus-operator-crd", "monitoring.coreos.com_"+crd+".yaml")
		_, err := os.Stat(p)
		require.NoError(t, err, "%s moved in %s", crd, promOperatorModule)
		paths = append(paths, p)
	}
	return paths
}

// installCRDs really applies the CRD files, waits until they are Established and deletes them
// when the test ends.
func installCRDs(ctx context.Context, t *testing.T, e *env, paths []string) {
	t.Helper()
	var crds []*unstructured.Unstructured
	for _, p := range paths {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		crds = append(crds, parseObjects(t, string(b))...)
	}
	dyn, err := dynamic.NewForConfig(e.cp.RESTConfig)
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, c := range crds {
			if err := dyn.Resource(gvrOf(c)).Delete(context.Background(), c.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("cleanup: deleting CRD %s: %v", c.GetName(), err)
			}
		}
	})
	out, errOut, err := kubectl(ctx, t, e, "", toStream(t, crds), "apply", "--server-side", "--field-manager=meshmedic-e2e", "-f", "-")
	require.NoError(t, err, "installing CRDs:\n%s%s", out, errOut)
	for _, c := range crds {
		out, errOut, err := kubectl(ctx, t, e, "", nil, "wait", "--for=condition=Established", "--timeout=60s", "crd/"+c.GetName())
		require.NoError(t, err, "%s%s", out, errOut)
	}
}

// scenarioDeployManifests: deploy-manifests. The kustomize base, the auto-repair overlay, the
// netlink component and the Helm chart (defaults, autoRepair, socketBackend=netlink) render;
// the chart lints; Helm and kustomize give the same objects; the base keeps the security
// contract; every render passes a server-side dry-run apply (strict field validation,
// admission) on the real API server; the RBAC really grants what the agent needs and nothing
// it must not have; the PrometheusRule and ServiceMonitor pass the real prometheus-operator CRDs.
func scenarioDeployManifests(ctx context.Context, t *testing.T, e *env) {
	helm := helmPath(t)
	chart := filepath.Join(repoRoot(), "deploy", "helm", "meshmedic")

	base := kustomize(ctx, t, "base")
	repair := kustomize(ctx, t, "overlays/auto-repair")
	monitoring := kustomize(ctx, t, "monitoring")
	withNetlink := t.TempDir() // kustomize wants relative paths to other kustomizations
	rel := func(p ...string) string {
		r, err := filepath.Rel(withNetlink, filepath.Join(append([]string{repoRoot(), "deploy"}, p...)...))
		require.NoError(t, err)
		return r
	}
	require.NoError(t, os.WriteFile(filepath.Join(withNetlink, "kustomization.yaml"), []byte(fmt.Sprintf(
		"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\ncomponents:\n  - %s\n",
		rel("base"), rel("components", "socket-backend-netlink"))), 0o644))
	netlink := kustomize(ctx, t, withNetlink)

	t.Run("security", func(t *testing.T) {
		assertAgentSecurity(t, base)
		// The overlay adds exactly the repair ClusterRole, its binding and --auto-repair.
		extra := map[string]bool{}
		for k := range normalize(repair) {
			extra[k] = true
		}
		for k := range normalize(base) {
			assert.True(t, extra[k], "overlay lost %s", k)
			delete(extra, k)
		}
		assert.Equal(t, map[string]bool{
			"rbac.authorization.k8s.io/v1 ClusterRole /meshmedic-agent-repair":        true,
			"rbac.authorization.k8s.io/v1 ClusterRoleBinding /meshmedic-agent-repair": true,
		}, extra)
		args, _, _ := unstructured.NestedSlice(find(repair, "DaemonSet", "meshmedic-agent").Object, "spec", "template", "spec", "containers")
		assert.Equal(t, []any{"agent", "--proc-root=/host/proc", "--auto-repair"}, args[0].(map[string]any)["args"])
	})

	t.Run("helm-lint", func(t *testing.T) {
		runTool(ctx, t, nil, helm, "lint", "--strict", chart)
		runTool(ctx, t, nil, helm, "lint", "--strict", chart, "--set", "autoRepair=true,repairStuck=true,gracePeriod=10m,socketBackend=netlink,prometheusRule.enabled=true,serviceMonitor.enabled=true,namespace.create=true")
		_, errOut, err := runToolErr(ctx, nil, helm, "template", "x", chart, "--set", "repairStuck=true")
		assert.Error(t, err, "repairStuck without autoRepair must not render")
		assert.Contains(t, errOut, "repairStuck needs autoRepair")
	})

	hDefault := helmTemplate(ctx, t, "namespace.create=true")
	hRepair := helmTemplate(ctx, t, "namespace.create=true", "autoRepair=true")
	hNetlink := helmTemplate(ctx, t, "namespace.create=true", "socketBackend=netlink")
	hMonitoring := helmTemplate(ctx, t, "prometheusRule.enabled=true", "serviceMonitor.enabled=true")
	t.Run("helm-equals-kustomize", func(t *testing.T) {
		assertSameObjects(t, "defaults vs deploy/base", base, hDefault)
		var noNS []*unstructured.Unstructured
		for _, o := range base {
			if o.GetKind() != "Namespace" {
				noNS = append(noNS, o)
			}
		}
		assertSameObjects(t, "defaults (namespace.create=false) vs deploy/base without its Namespace", noNS, helmTemplate(ctx, t))
		assertSameObjects(t, "autoRepair=true vs deploy/overlays/auto-repair", repair, hRepair)
		assertSameObjects(t, "socketBackend=netlink vs deploy/base + components/socket-backend-netlink", netlink, hNetlink)
		rule := find(hMonitoring, "PrometheusRule", "meshmedic")
		require.NotNil(t, rule)
		assertSameObjects(t, "prometheusRule.enabled vs deploy/monitoring", monitoring, []*unstructured.Unstructured{rule})
	})

	t.Run("rbac-base", func(t *testing.T) {
		sa := applyAgentRBAC(ctx, t, e, "base")
		for _, q := range [][]string{
			{"list", "pods", "-A"}, {"watch", "pods", "-A"}, {"list", "namespaces"}, {"watch", "namespaces"},
			{"patch", "pods", "--subresource=status", "-A"}, {"create", "events", "-A"},
			{"get", "configmaps/istio-cni-config", "-n", "istio-system"},
			{"create", "leases.coordination.k8s.io", "-n", agentNS}, {"update", "leases.coordination.k8s.io", "-n", agentNS},
		} {
			assert.True(t, canI(ctx, t, e, sa, q...), "detect-only agent must be able to %v", q)
		}
		for _, q := range [][]string{
			{"create", "pods", "--subresource=eviction", "-A"}, {"delete", "pods", "-A"}, {"get", "pods", "-A"},
			{"patch", "pods", "-A"}, {"get", "secrets", "-A"}, {"list", "configmaps", "-n", "istio-system"},
			{"get", "configmaps/other", "-n", "istio-system"}, {"get", "nodes"}, {"create", "pods", "--subresource=exec", "-A"},
			{"patch", "events", "-A"}, {"update", "leases.coordination.k8s.io", "-n", "kube-system"},
			{"delete", "leases.coordination.k8s.io", "-n", agentNS},
		} {
			assert.False(t, canI(ctx, t, e, sa, q...), "detect-only agent must not be able to %v", q)
		}

		// Every render passes a server-side dry run (the namespace now exists).
		for what, objs := range map[string][]*unstructured.Unstructured{
			"deploy/base": base, "deploy/overlays/auto-repair": repair, "deploy/base + netlink component": netlink,
			"helm defaults": hDefault, "helm autoRepair=true": hRepair, "helm socketBackend=netlink": hNetlink,
		} {
			dryRunApply(ctx, t, e, what, objs)
		}
		// The dry run can fail: strict field validation refuses a misspelt field.
		bad := find(base, "DaemonSet", "meshmedic-agent").DeepCopy()
		require.NoError(t, unstructured.SetNestedField(bad.Object, true, "spec", "template", "spec", "hostPid"))
		_, errOut, err := kubectl(ctx, t, e, "", toStream(t, []*unstructured.Unstructured{bad}), "apply", "--server-side", "--dry-run=server", "-f", "-")
		assert.Error(t, err, "a DaemonSet with an unknown field must be refused")
		assert.Contains(t, errOut, "hostPid")
	})

	t.Run("rbac-auto-repair", func(t *testing.T) {
		sa := applyAgentRBAC(ctx, t, e, "overlays/auto-repair")
		for _, q := range [][]string{{"create", "pods", "--subresource=eviction", "-A"}, {"get", "pods", "-A"}, {"patch", "pods", "--subresource=status", "-A"}} {
			assert.True(t, canI(ctx, t, e, sa, q...), "auto-repair agent must be able to %v", q)
		}
		for _, q := range [][]string{{"delete", "pods", "-A"}, {"get", "secrets", "-A"}, {"get", "replicasets", "-A"}, {"update", "pods", "-A"}} {
			assert.False(t, canI(ctx, t, e, sa, q...), "auto-repair agent must not be able to %v", q)
		}
	})

	t.Run("prometheus-operator-crds", func(t *testing.T) {
		installCRDs(ctx, t, e, promOperatorCRDs(ctx, t))
		_ = applyAgentRBAC(ctx, t, e, "base") // the namespace the rule and ServiceMonitor live in
		dryRunApply(ctx, t, e, "deploy/monitoring", monitoring)
		var svcmon []*unstructured.Unstructured
		for _, o := range hMonitoring {
			if k := o.GetKind(); k == "PrometheusRule" || k == "ServiceMonitor" || k == "Service" {
				svcmon = append(svcmon, o)
			}
		}
		require.Len(t, svcmon, 3)
		dryRunApply(ctx, t, e, "helm prometheusRule + serviceMonitor", svcmon)
		// The CRD's schema is enforced: a malformed duration is refused.
		bad := find(monitoring, "PrometheusRule", "meshmedic").DeepCopy()
		groups, _, _ := unstructured.NestedSlice(bad.Object, "spec", "groups")
		rules := groups[0].(map[string]any)["rules"].([]any)
		rules[0].(map[string]any)["for"] = "ten minutes"
		require.NoError(t, unstructured.SetNestedSlice(bad.Object, groups, "spec", "groups"))
		_, errOut, err := kubectl(ctx, t, e, "", toStream(t, []*unstructured.Unstructured{bad}), "apply", "--server-side", "--dry-run=server", "-f", "-")
		assert.Error(t, err, "a PrometheusRule with a malformed duration must be refused")
		assert.Contains(t, errOut, "ten minutes")
	})
}
