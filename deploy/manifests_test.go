// Package deploy holds no code: these tests keep the manifests under deploy/ honest against
// the binary they run. Every metric name a PrometheusRule expression uses is registered by
// the agent; every flag the DaemonSet passes (kustomize base, overlays, components and every
// branch of the Helm template) is defined on `meshmedic agent`; the Helm chart's rules are the
// kustomize ones; the Dockerfile builds the binary the way the Makefile does. The sandbox
// scenario e2e/deploy_scenarios_test.go validates the rendered objects against a real API server.
package deploy

import (
	"context"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/frontends/agent"
	"github.com/meshmedic/meshmedic/frontends/cli"
	"github.com/meshmedic/meshmedic/heal"
	nt "github.com/meshmedic/meshmedic/netns/netnstest"
)

// docs reads a multi-document YAML file into generic objects.
func docs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var out []map[string]any
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		var m map[string]any
		require.NoError(t, yaml.Unmarshal([]byte(d), &m), "%s", path)
		if m != nil {
			out = append(out, m)
		}
	}
	return out
}

// ruleExprs returns alert name → expression of a PrometheusRule spec's groups.
func ruleExprs(t *testing.T, spec map[string]any) map[string]string {
	t.Helper()
	out := map[string]string{}
	groups, _ := spec["groups"].([]any)
	require.NotEmpty(t, groups, "no rule groups")
	for _, g := range groups {
		rules, _ := g.(map[string]any)["rules"].([]any)
		for _, r := range rules {
			rm := r.(map[string]any)
			name, _ := rm["alert"].(string)
			expr, _ := rm["expr"].(string)
			require.NotEmpty(t, name)
			require.NotEmpty(t, expr, "alert %s has no expr", name)
			out[name] = expr
		}
	}
	return out
}

func kustomizeRule(t *testing.T) map[string]any {
	t.Helper()
	d := docs(t, "monitoring/prometheusrule.yaml")
	require.Len(t, d, 1)
	require.Equal(t, "PrometheusRule", d[0]["kind"])
	return d[0]["spec"].(map[string]any)
}

var metricName = regexp.MustCompile(`\bmeshmedic_[a-z0-9_]+`)

// missingMetrics lists the meshmedic_* names used in exprs that registered does not hold.
func missingMetrics(exprs map[string]string, registered map[string]bool) []string {
	var missing []string
	for alert, expr := range exprs {
		for _, n := range metricName.FindAllString(expr, -1) {
			if !registered[n] {
				missing = append(missing, alert+": "+n)
			}
		}
	}
	sort.Strings(missing)
	return missing
}

type recordingStrategy struct{}

func (recordingStrategy) Name() string { return heal.StrategyEvict }
func (recordingStrategy) Heal(context.Context, heal.Target, bool) (heal.Result, error) {
	return heal.ResultEvicted, nil
}

func ambientPod(ns, name, uid string, labels map[string]string, owned bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid), Labels: labels,
			Annotations: map[string]string{enroll.AnnotationRedirection: "enabled"}},
		Spec: corev1.PodSpec{NodeName: "n1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	if owned {
		yes := true
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: name + "-rs", UID: "rs-" + types.UID(uid), Controller: &yes}}
	}
	return p
}

// agentMetricNames runs a real agent (fake clientset, proc tree, auto-repair with a recording
// strategy) until every metric family the rules can use has samples — vector families appear
// in Gather only once a label set is used — and returns the registered sample names
// (histograms with their _bucket, _sum and _count series).
func agentMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	const ok1, ok2, orphan = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222", "33333333-3333-3333-3333-333333333333"
	tree := nt.NewTree(t)
	for i, uid := range []string{ok1, ok2} {
		tree.Add(nt.Proc{PID: 10 + i, Cgroup: nt.KubepodsCgroup(uid), Start: uint64(5 + i), Netns: uint64(4026532001 + i),
			TCP: nt.Ptr(nt.TCP()), TCP6: nt.Ptr(nt.TCP6(nt.Ztunnel(false, uint64(100*(i+1)))...))})
	}
	tree.Add(nt.Proc{PID: 20, Cgroup: nt.KubepodsCgroup(orphan), Start: 9, Netns: 4026532009, TCP: nt.Ptr(nt.TCP()), TCP6: nt.Ptr(nt.TCP6())})
	objs := []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{enroll.LabelDataplaneMode: "ambient"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}},
		ambientPod("shop", "ok1", ok1, nil, true), ambientPod("shop", "ok2", ok2, nil, true), ambientPod("shop", "orphan", orphan, nil, true),
		ambientPod("istio-system", "ztunnel-n1", "44444444-4444-4444-4444-444444444444", map[string]string{"app": "ztunnel"}, true),
	}
	cs := fake.NewClientset(objs...)
	cs.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview).DeepCopy()
		r.Status.Allowed = true
		return true, r, nil
	})
	a, err := agent.New(cs, agent.Config{NodeName: "n1", ProcRoot: tree.Root, Tick: 10 * time.Millisecond,
		FullRecheck: 10 * time.Millisecond, Confirm: time.Millisecond, AutoRepair: true,
		Settings: enroll.DefaultSettings(), IstioNamespace: "istio-system", Strategy: recordingStrategy{}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	want := []string{"meshmedic_findings", "meshmedic_repairs_total"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		names := map[string]bool{}
		mfs, err := a.Registry().Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			names[mf.GetName()] = true
			if mf.GetType().String() == "HISTOGRAM" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					names[mf.GetName()+s] = true
				}
			}
		}
		if !slices.ContainsFunc(want, func(n string) bool { return !names[n] }) {
			return names
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent never produced %v; it has %v", want, names)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Every meshmedic_* name in an alert expression is a metric the agent registers.
func TestPrometheusRuleMetricsExistInAgentRegistry(t *testing.T) {
	exprs := ruleExprs(t, kustomizeRule(t))
	used := 0
	for _, e := range exprs {
		used += len(metricName.FindAllString(e, -1))
	}
	require.GreaterOrEqual(t, used, 5, "the rules name fewer meshmedic metrics than expected: %v", exprs)
	names := agentMetricNames(t)
	assert.Empty(t, missingMetrics(exprs, names), "metric names used by deploy/monitoring that the agent does not register")
	// The check can fail: a name the agent does not have is reported.
	assert.Equal(t, []string{"X: meshmedic_no_such_metric"}, missingMetrics(map[string]string{"X": "meshmedic_no_such_metric > 0"}, names))
}

// The Helm chart's rules file is the kustomize PrometheusRule's spec.
func TestHelmRulesEqualKustomizeRules(t *testing.T) {
	b, err := os.ReadFile("helm/meshmedic/files/prometheus-rules.yaml")
	require.NoError(t, err)
	var helm map[string]any
	require.NoError(t, yaml.Unmarshal(b, &helm))
	assert.Equal(t, kustomizeRule(t), helm)
}

// agentFlags are the names (and aliases) of `meshmedic agent`'s flags and the env vars they read.
func agentFlags(t *testing.T) (flags, envs map[string]bool) {
	t.Helper()
	app := cli.NewApp("meshmedic", cli.BuildInfo{}, cli.Streams{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard})
	cmd := app.Command("agent")
	require.NotNil(t, cmd, "meshmedic has no agent command")
	flags, envs = map[string]bool{}, map[string]bool{}
	for _, f := range cmd.Flags {
		for _, n := range f.Names() {
			flags[n] = true
		}
		if ev, ok := f.(interface{ GetEnvVars() []string }); ok {
			for _, e := range ev.GetEnvVars() {
				envs[e] = true
			}
		}
	}
	require.True(t, flags["proc-root"], "sanity: agent flags %v", flags)
	return flags, envs
}

var flagArg = regexp.MustCompile(`^--?([a-zA-Z0-9][a-zA-Z0-9-]*)`)

// patchArgs returns the values a kustomization's JSON6902 patches append to the container args.
func patchArgs(t *testing.T, path string) []string {
	t.Helper()
	var k struct {
		Patches []struct{ Patch string } `json:"patches"`
	}
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, &k))
	var out []string
	for _, p := range k.Patches {
		var ops []struct {
			Op, Path string
			Value    any
		}
		require.NoError(t, yaml.Unmarshal([]byte(p.Patch), &ops), "%s", path)
		for _, op := range ops {
			if strings.HasSuffix(op.Path, "/args/-") {
				out = append(out, op.Value.(string))
			}
		}
	}
	return out
}

// Every flag the manifests pass exists on `meshmedic agent`: the base DaemonSet, the
// auto-repair overlay, the netlink component, and every `- --flag` line of the Helm template
// (all its branches, without rendering). The env vars the DaemonSet sets are read by a flag.
func TestDaemonSetArgsAreAgentFlags(t *testing.T) {
	flags, envs := agentFlags(t)
	var ds map[string]any
	for _, d := range docs(t, "base/daemonset.yaml") {
		if d["kind"] == "DaemonSet" {
			ds = d
		}
	}
	require.NotNil(t, ds)
	spec := ds["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	c := spec["containers"].([]any)[0].(map[string]any)
	var baseArgs []string
	for _, a := range c["args"].([]any) {
		baseArgs = append(baseArgs, a.(string))
	}
	require.Equal(t, "agent", baseArgs[0], "the DaemonSet must run the agent subcommand")
	for _, e := range c["env"].([]any) {
		name := e.(map[string]any)["name"].(string)
		if name != "GOMEMLIMIT" { // read by the Go runtime
			assert.True(t, envs[name], "env %s is read by no agent flag", name)
		}
	}

	tmpl, err := os.ReadFile("helm/meshmedic/templates/daemonset.yaml")
	require.NoError(t, err)
	var helmArgs []string
	for _, m := range regexp.MustCompile(`(?m)^\s+- (--[a-z0-9-]+)`).FindAllStringSubmatch(string(tmpl), -1) {
		helmArgs = append(helmArgs, m[1])
	}
	require.GreaterOrEqual(t, len(helmArgs), 8, "the Helm template's flags were not found: %v", helmArgs)

	sources := map[string][]string{
		"base/daemonset.yaml":                                baseArgs[1:],
		"overlays/auto-repair":                               patchArgs(t, "overlays/auto-repair/kustomization.yaml"),
		"components/socket-backend-netlink":                  patchArgs(t, "components/socket-backend-netlink/kustomization.yaml"),
		"helm/meshmedic/templates/daemonset.yaml (branches)": helmArgs,
	}
	for src, args := range sources {
		require.NotEmpty(t, args, src)
		for _, a := range args {
			m := flagArg.FindStringSubmatch(a)
			if assert.NotNil(t, m, "%s: %q is not a flag", src, a) {
				assert.True(t, flags[m[1]], "%s passes --%s, which `meshmedic agent` does not define", src, m[1])
			}
		}
	}
}

// The image's build line is the Makefile's build target: static, trimmed, the same -X stamps,
// on distroless as uid 65532 with the binary as entrypoint.
func TestDockerfileBuildsLikeMakefile(t *testing.T) {
	mk, err := os.ReadFile("../Makefile")
	require.NoError(t, err)
	df, err := os.ReadFile("Dockerfile")
	require.NoError(t, err)
	xflags := regexp.MustCompile(`-X (main\.[a-zA-Z]+)=`)
	var makeX, dockerX []string
	for _, m := range xflags.FindAllStringSubmatch(string(mk), -1) {
		makeX = append(makeX, m[1])
	}
	for _, m := range xflags.FindAllStringSubmatch(string(df), -1) {
		dockerX = append(dockerX, m[1])
	}
	require.NotEmpty(t, makeX)
	assert.ElementsMatch(t, makeX, dockerX, "-X stamps: Makefile vs Dockerfile")
	for _, s := range []string{"CGO_ENABLED=0", "-trimpath", "./frontends/meshmedic", "-s -w"} {
		assert.Contains(t, string(mk), s)
		assert.Contains(t, string(df), s)
	}
	final := string(df[strings.LastIndex(string(df), "\nFROM "):])
	assert.Contains(t, final, "FROM gcr.io/distroless/static-debian12:nonroot")
	assert.Contains(t, final, "USER 65532")
	assert.Contains(t, final, `ENTRYPOINT ["/ko-app/meshmedic"]`, "the ko image's layout (.ko.yaml)")
	assert.Regexp(t, `(?m)^FROM (--platform=\S+ )?golang:1\.26 AS build$`, string(df))
}
