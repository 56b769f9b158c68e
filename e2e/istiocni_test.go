//go:build sandbox

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/meshmedic/meshmedic/e2e/controlplane"
	"github.com/meshmedic/meshmedic/e2e/istiocni"
	"github.com/meshmedic/meshmedic/e2e/sandbox"
	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/internal/podsim"
)

// TestSandboxIstioCNI runs meshmedic against the real istio-cni: its node agent and CNI plugin
// built from istio.io/istio (e2e/istiocni/build.sh), chained into a real bridge + host-local
// conflist that the sandbox node runs through libcni for every pod sandbox, and meshmedic's
// ZDS-speaking ztunnel stand-in. The kubelet role stays simulated (sandbox.Node).
func TestSandboxIstioCNI(t *testing.T) {
	podsim.RequirePrivileged(t)
	strict := os.Getenv("MESHMEDIC_REQUIRE_PRIVILEGED") == "1" || os.Getenv("CI") != ""
	missing := func(what string, err error) {
		if strict {
			t.Fatalf("%s: %v", what, err)
		}
		t.Skipf("%s: %v", what, err)
	}
	bins, err := controlplane.FindBinaries()
	if err != nil {
		missing("control plane binaries (run e2e/controlplane/build.sh)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	cniBin, err := istiocni.FindBinaries(ctx)
	if err != nil {
		missing("istio-cni binaries (run e2e/istiocni/build.sh)", err)
	}
	for _, tool := range []string{"nsenter", "unshare", "chroot", "ss", "ip", "iptables-save", "iptables-legacy-save", "nft", "/usr/lib/cni/bridge"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing("tool "+tool+" (Debian: iproute2 util-linux coreutils iptables nftables containernetworking-plugins)", err)
		}
	}
	require.NoError(t, podsim.CleanupStale())

	cp, err := controlplane.Start(ctx, controlplane.Options{BinDir: bins})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, cp.Stop()) })
	cs, err := kubernetes.NewForConfig(cp.RESTConfig)
	require.NoError(t, err)
	ca, err := os.ReadFile(cp.CACertFile)
	require.NoError(t, err)
	var nodeLog strings.Builder
	lw := &lockedWriter{w: &nodeLog}
	node, err := sandbox.StartNode(ctx, cs, sandbox.Options{Log: lw, RealCNI: &sandbox.RealCNIOptions{
		BinDir: cniBin, APIServer: strings.TrimPrefix(cp.Host, "https://"), CACert: ca}})
	require.NoError(t, err)
	rc := node.RealCNI()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sandbox node log:\n%s", tail(lw.String(), 60))
			t.Logf("istio-cni agent log:\n%s", rc.AgentLog(80))
			t.Logf("ztunnel stand-in log:\n%s", rc.ZtunnelLog(40))
		}
		assert.NoError(t, node.Stop())
		assert.NoError(t, node.Err())
	})
	t.Logf("node netns %s, state %s; conflist after istio-cni's installer:\n%s", rc.NetnsPath(), rc.StateDir(), rc.ConflistJSON())
	bin, err := BuildBinary(ctx, t.TempDir())
	require.NoError(t, err)
	e := &env{cp: cp, cs: cs, node: node, bin: bin}

	t.Run("enrolls", func(t *testing.T) { scenarioRealEnrolls(ctx, t, e) })
	t.Run("expectation-agrees", func(t *testing.T) { scenarioRealExpectationAgrees(ctx, t, e) })
	t.Run("ztunnel-restart", func(t *testing.T) { scenarioRealZtunnelRestart(ctx, t, e) })
	t.Run("toggle", func(t *testing.T) { scenarioRealToggle(ctx, t, e) })
	t.Run("reboot-race-orphan", func(t *testing.T) { scenarioRealRebootRace(ctx, t, e) })
	t.Run("agent-heals", func(t *testing.T) { scenarioRealAgentHeals(ctx, t, e) })
}

// --- ground truth, read from outside the pod -----------------------------------------------------

// truth is what a pod's netns holds, read with the tools an operator would use from the node:
// ss (LISTEN and UNCONN sockets), ip rule, iptables-save (nft and legacy) and nft.
type truth struct {
	Listeners  []uint16 // ztunnel's ports among the sockets: 15001/15006/15008 on a wildcard, 15053 on loopback or wildcard
	FwmarkRule bool     // ip rule "fwmark 0x111/0xfff lookup 100" (istio-cni's in-pod routing rule)
	Iptables   string   // "nft", "legacy" or "" — which iptables holds istio-cni's ISTIO_* chains
	Nftables   bool     // nft tables inet istio-ambient-* (NATIVE_NFTABLES)
	Sockets    string   // ss output, for the log
}

// rules reports whether istio-cni's redirection is in place: the routing rule and the chains.
func (t truth) rules() bool { return t.FwmarkRule && (t.Iptables != "" || t.Nftables) }

func (t truth) String() string {
	return fmt.Sprintf("listeners=%v fwmark-rule=%v iptables=%q nftables=%v", t.Listeners, t.FwmarkRule, t.Iptables, t.Nftables)
}

var ztunnelPorts = []uint16{15001, 15006, 15008, 15053}

// groundTruth reads pod ns/name's current netns from outside.
func groundTruth(ctx context.Context, t *testing.T, e *env, ns, name string) truth {
	t.Helper()
	kp, err := e.node.Pod(ns, name)
	require.NoError(t, err)
	require.NotZero(t, kp.PID, "%s/%s has a sandbox", ns, name)
	require.False(t, kp.Spec.HostNetwork, "ground truth is for pods with a netns of their own")
	path := fmt.Sprintf("/proc/%d/ns/net", kp.PID)
	run := func(args ...string) string {
		out, err := sandbox.NetnsExec(ctx, path, args...)
		require.NoError(t, err, "%s in %s/%s: %s", strings.Join(args, " "), ns, name, out)
		return out
	}
	var tr truth
	tr.Sockets = run("ss", "-Hlntu")
	for _, line := range strings.Split(tr.Sockets, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		local := f[4]
		i := strings.LastIndexByte(local, ':')
		port, err := strconv.Atoi(local[i+1:])
		if err != nil || !slices.Contains(ztunnelPorts, uint16(port)) {
			continue
		}
		host := strings.Trim(local[:i], "[]")
		wild := host == "*" || host == "0.0.0.0" || host == "::"
		loop := host == "127.0.0.1" || host == "::1"
		if (port == 15053 && (wild || loop)) || wild {
			if !slices.Contains(tr.Listeners, uint16(port)) {
				tr.Listeners = append(tr.Listeners, uint16(port))
			}
		}
	}
	slices.Sort(tr.Listeners)
	tr.FwmarkRule = strings.Contains(run("ip", "rule", "show"), "fwmark 0x111/0xfff lookup 100")
	if strings.Contains(run("iptables-save"), ":ISTIO_OUTPUT") {
		tr.Iptables = "nft"
	} else if strings.Contains(run("iptables-legacy-save"), ":ISTIO_OUTPUT") {
		tr.Iptables = "legacy"
	}
	tr.Nftables = strings.Contains(run("nft", "list", "tables"), "istio-ambient")
	return tr
}

// truthClass is the class meshmedic must give a pod enroll expects captured, derived from the
// ground truth alone (detect.Classify's table, with rule inspection): every required listener
// and the rules → captured; listeners without rules → bypass; some listeners → partial; none:
// rules and the annotation enabled → blackhole, no rules → orphaned, not annotated → not-enrolled.
func truthClass(tr truth, annotation string, dns bool) string {
	req := []uint16{15001, 15006, 15008}
	if dns {
		req = append(req, 15053)
	}
	have := 0
	for _, p := range req {
		if slices.Contains(tr.Listeners, p) {
			have++
		}
	}
	switch {
	case have == len(req) && tr.rules():
		return "captured"
	case have == len(req):
		return "bypass"
	case have > 0:
		return "partial"
	case annotation != "enabled":
		return "not-enrolled"
	case tr.rules():
		return "blackhole"
	}
	return "orphaned"
}

func (e *env) dnsCapture() bool {
	return e.node.RealCNI().ConfigData()["AMBIENT_DNS_CAPTURE"] == "true"
}

// --- helpers --------------------------------------------------------------------------------------

// realNamespace makes an ambient (labels non-nil) or plain namespace for one scenario and deletes
// it when the scenario ends, waiting until it is gone.
func realNamespace(ctx context.Context, t *testing.T, e *env, ns string, labels map[string]string) {
	t.Helper()
	mkNamespace(ctx, t, e, ns, labels)
	t.Cleanup(func() {
		_ = e.cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		_ = wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := e.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
	})
}

// mkPod creates a bare pod bound to the sandbox node (no Deployment: each case of the
// differential test is one pod with its own labels and annotations).
func mkPod(ctx context.Context, t *testing.T, e *env, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	pod.Spec.NodeName = e.node.Name()
	pod.Spec.TerminationGracePeriodSeconds = ptr.To[int64](1)
	if len(pod.Spec.Containers) == 0 {
		pod.Spec.Containers = []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}}
	}
	var got *corev1.Pod
	var last error
	// A new namespace's default ServiceAccount appears a moment later.
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, last = e.cs.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
		return last == nil, nil
	})
	require.NoError(t, err, "create pod %s/%s: %v", pod.Namespace, pod.Name, last)
	return got
}

// waitRunning waits until the pod is Running with an IP (the kubelet posted its status), and
// returns it.
func waitRunning(ctx context.Context, t *testing.T, e *env, ns, name string, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		p, err = e.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning && (ok == nil || ok(p)), nil
	})
	require.NoError(t, err, "pod %s/%s: %+v", ns, name, p)
	return p
}

// settings reads istio-cni-config the way meshmedic does (enroll.SettingsFromConfigMap).
func settings(ctx context.Context, t *testing.T, e *env) enroll.Settings {
	t.Helper()
	cm, err := e.cs.CoreV1().ConfigMaps(istiocni.Namespace).Get(ctx, istiocni.ConfigMapName, metav1.GetOptions{})
	require.NoError(t, err)
	s, err := enroll.SettingsFromConfigMap(cm.Data, enroll.DefaultSettings())
	require.NoError(t, err)
	require.False(t, s.Version.IsZero(), "CURRENT_AGENT_VERSION gives the version")
	return s
}

// nodeRows runs node scan --inspect-rules and returns its rows by ns/name.
func nodeRows(ctx context.Context, t *testing.T, e *env) map[string]scanRow {
	t.Helper()
	rows, res := nodeScan(ctx, t, e, "--inspect-rules")
	require.Contains(t, []int{0, 1}, res.Code, "%s\n%s", res.Stdout, res.Stderr)
	return rows
}

// --- enrolls ---------------------------------------------------------------------------------------

// scenarioRealEnrolls: new pods of an ambient namespace go through the real chain; real
// istio-cni installs its rules in their netns, hands them to the stand-in over ZDS and annotates
// them; scan, node scan and the agent all call them captured.
func scenarioRealEnrolls(ctx context.Context, t *testing.T, e *env) {
	const ns = "real-enroll"
	realNamespace(ctx, t, e, ns, map[string]string{enroll.LabelDataplaneMode: enroll.DataplaneModeAmbient})
	mkDeployment(ctx, t, e, ns, "web", 2, false)
	pods := waitPods(ctx, t, e, ns, 2, enrolled)
	rc := e.node.RealCNI()
	_, plugins, err := rc.Conflist()
	require.NoError(t, err)
	assert.Equal(t, []string{"bridge", "portmap", "istio-cni"}, plugins, "istio-cni's installer chained itself last")

	st, err := rc.Control().State(ctx)
	require.NoError(t, err)
	want := []uint16{15001, 15006, 15008}
	if e.dnsCapture() {
		want = append(want, 15053)
	}
	for _, p := range pods {
		tr := groundTruth(ctx, t, e, ns, p.Name)
		t.Logf("%s ip=%s: %s\n%s", p.Name, p.Status.PodIP, tr, tr.Sockets)
		assert.Equal(t, "enabled", p.Annotations[enroll.AnnotationRedirection], "annotated by real istio-cni")
		assert.True(t, tr.FwmarkRule, "%s: istio-cni's routing rule", p.Name)
		assert.NotEmpty(t, tr.Iptables, "%s: istio-cni's iptables chains", p.Name)
		assert.Equal(t, want, tr.Listeners, "%s: the stand-in's listeners", p.Name)
		assert.Equal(t, "captured", truthClass(tr, p.Annotations[enroll.AnnotationRedirection], e.dnsCapture()))
		w, ok := st.Workload(string(p.UID))
		require.True(t, ok, "the stand-in was handed %s over ZDS", p.Name)
		kp, err := e.node.Pod(ns, p.Name)
		require.NoError(t, err)
		assert.Equal(t, kp.Netns, w.Netns, "%s: the netns fd istio-cni sent is the pod's", p.Name)
		assert.Equal(t, "Up", w.State)
		assert.True(t, strings.HasPrefix(p.Status.PodIP, "10.244.0."), "IP from host-local: %s", p.Status.PodIP)
	}
	// ztunnel's admin view (the stand-in's config_dump on localhost:15000 in the node's netns)
	// says Up for both: the view meshmedic does not trust.
	dump, err := rc.ZtunnelConfigDump(ctx)
	require.NoError(t, err)
	ws, _ := dump["workloadState"].(map[string]any)
	for _, p := range pods {
		w, _ := ws[string(p.UID)].(map[string]any)
		assert.Equal(t, "Up", w["state"], "config_dump workloadState of %s", p.Name)
	}
	// The chain's bridge lives in the node's netns, not on the machine.
	out, err := rc.NodeExec(ctx, "ip", "-br", "link", "show", "type", "bridge")
	require.NoError(t, err, out)
	assert.Contains(t, out, "cni0")
	// istio-cni's host rules went to the node's netns.
	out, err = rc.NodeExec(ctx, "iptables-save", "-t", "nat")
	require.NoError(t, err, out)
	legacy, _ := rc.NodeExec(ctx, "iptables-legacy-save", "-t", "nat")
	assert.True(t, strings.Contains(out+legacy, "ISTIO_POSTRT"), "istio-cni's host-probe SNAT chain is in the node's netns:\n%s\n%s", out, legacy)
	ipsets, _ := rc.NodeExec(ctx, "ipset", "list", "-n")
	t.Logf("node netns ipsets: %s", strings.TrimSpace(ipsets))

	out2, res := scan(ctx, t, e, "-n", ns)
	assert.Equal(t, 0, res.Code, "scan: every pod captured\n%s\n%s", res.Stdout, res.Stderr)
	assert.Equal(t, 2, out2.Checked)
	assert.Empty(t, out2.Findings)

	rows := nodeRows(ctx, t, e)
	for _, p := range pods {
		r := rows[ns+"/"+p.Name]
		assert.Equal(t, "captured", r.Class, "node scan %s", p.Name)
		assert.Equal(t, "present", r.Rules, "node scan reads istio-cni's rules for %s", p.Name)
		assert.Equal(t, want, r.Listeners)
	}

	startAgent(ctx, t, e, agentRun{args: []string{"--socket-backend=netlink", "--inspect-rules"}})
	waitCondition(ctx, t, e, ns, pods, corev1.ConditionTrue, time.Minute)
}

// --- expectation-agrees -------------------------------------------------------------------------

// agreeCase is one row of the differential test.
type agreeCase struct {
	name string
	pod  *corev1.Pod
	// fact explains a recorded, understood difference between enroll and real istio-cni; empty
	// means they must agree.
	fact string
}

// realDecision is what real istio-cni did for a pod: its annotation and whether its in-pod
// redirection is in place.
type realDecision struct {
	annotation string
	rules      bool
	ip         bool
}

func (d realDecision) captured() bool { return d.annotation == "enabled" && d.rules }

// scenarioRealExpectationAgrees is a differential test: pods over a matrix of labels,
// annotations, namespaces and istio-cni settings, judged by real istio-cni (annotation and
// in-pod rules, read from outside) and by enroll.Expect for the same objects at the snapshot's
// version. They must agree.
func scenarioRealExpectationAgrees(ctx context.Context, t *testing.T, e *env) {
	ambient := map[string]string{enroll.LabelDataplaneMode: enroll.DataplaneModeAmbient}
	realNamespace(ctx, t, e, "agree-amb", ambient)
	realNamespace(ctx, t, e, "agree-plain", map[string]string{"team": "plain"})
	pod := func(ns, name string, labels, ann map[string]string, mut ...func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, Annotations: ann}}
		for _, m := range mut {
			m(p)
		}
		return p
	}
	mode := func(v string) map[string]string { return map[string]string{enroll.LabelDataplaneMode: v} }
	hostNet := func(p *corev1.Pod) { p.Spec.HostNetwork = true }
	proxy := func(p *corev1.Pod) {
		p.Spec.Containers = []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"},
			{Name: "istio-proxy", Image: "registry.invalid/istio/proxyv2:1.31", Args: []string{"proxy", "sidecar"}}}
	}
	cases := []agreeCase{
		{name: "ns-ambient", pod: pod("agree-amb", "plain", nil, nil)},
		{name: "ns-ambient pod-ambient", pod: pod("agree-amb", "labelled", mode("ambient"), nil)},
		{name: "ns-ambient opt-out none", pod: pod("agree-amb", "optout", mode("none"), nil)},
		{name: "ns-ambient sidecar-status annotation", pod: pod("agree-amb", "sidecar", nil, map[string]string{enroll.AnnotationSidecarStatus: `{"containers":["istio-proxy"]}`})},
		{name: "ns-ambient istio-proxy container only", pod: pod("agree-amb", "proxyonly", nil, nil, proxy)},
		{name: "ns-ambient hostNetwork", pod: pod("agree-amb", "hostnet", nil, nil, hostNet)},
		{name: "ns-ambient 1.21 redirection=disabled annotation", pod: pod("agree-amb", "legacy-disabled", nil, map[string]string{enroll.AnnotationRedirection: "disabled"})},
		{name: "ns-plain", pod: pod("agree-plain", "plain", nil, nil)},
		{name: "ns-plain pod-ambient", pod: pod("agree-plain", "labelled", mode("ambient"), nil)},
		{name: "ns-plain pod-none", pod: pod("agree-plain", "none", mode("none"), nil)},
		{name: "ns-plain pod-ambient hostNetwork", pod: pod("agree-plain", "hostnet", mode("ambient"), nil, hostNet)},
		{name: "istio-system app=ztunnel pod-ambient", pod: pod(istiocni.Namespace, "ztunnel-lookalike", map[string]string{"app": "ztunnel", enroll.LabelDataplaneMode: "ambient"}, nil)},
	}
	// An excluded namespace (EXCLUDE_NAMESPACES=kube-system) labelled ambient.
	ks, err := e.cs.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
	require.NoError(t, err)
	ks.Labels[enroll.LabelDataplaneMode] = enroll.DataplaneModeAmbient
	_, err = e.cs.CoreV1().Namespaces().Update(ctx, ks, metav1.UpdateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		ks, err := e.cs.CoreV1().Namespaces().Get(context.Background(), "kube-system", metav1.GetOptions{})
		if err == nil {
			delete(ks.Labels, enroll.LabelDataplaneMode)
			_, _ = e.cs.CoreV1().Namespaces().Update(context.Background(), ks, metav1.UpdateOptions{})
		}
		_ = e.cs.CoreV1().Pods("kube-system").Delete(context.Background(), "excluded", metav1.DeleteOptions{})
		_ = e.cs.CoreV1().Pods(istiocni.Namespace).Delete(context.Background(), "ztunnel-lookalike", metav1.DeleteOptions{})
	})
	cases = append(cases, agreeCase{name: "excluded namespace kube-system labelled ambient", pod: pod("kube-system", "excluded", nil, nil)})

	results := runAgreeCases(ctx, t, e, "agree-amb", cases)

	// The enablement selectors of istio-cni's settings: only pods labelled mesh=on, anywhere.
	rc := e.node.RealCNI()
	custom := "- podSelector:\n    matchLabels:\n      mesh: \"on\"\n"
	require.NoError(t, rc.SetConfig(ctx, "AMBIENT_ENABLEMENT_SELECTOR", custom))
	rc.StopAgent(syscall.SIGTERM)
	require.NoError(t, rc.StartAgent(ctx))
	t.Cleanup(func() {
		require.NoError(t, rc.SetConfig(context.Background(), "AMBIENT_ENABLEMENT_SELECTOR", istiocni.DefaultEnablementSelector))
		rc.StopAgent(syscall.SIGTERM)
		require.NoError(t, rc.StartAgent(context.Background()))
	})
	realNamespace(ctx, t, e, "agree-sel", nil)
	realNamespace(ctx, t, e, "agree-sel-amb", ambient)
	sel := []agreeCase{
		{name: "custom selector: pod mesh=on in a plain namespace", pod: pod("agree-sel", "meshon", map[string]string{"mesh": "on"}, nil)},
		{name: "custom selector: ambient namespace, pod without mesh=on", pod: pod("agree-sel-amb", "plain", nil, nil)},
		{name: "custom selector: pod-ambient label alone", pod: pod("agree-sel", "labelled", mode("ambient"), nil)},
	}
	results = append(results, runAgreeCases(ctx, t, e, "agree-sel", sel)...)

	// A pod with no IP: ztunnel refuses to ack, so istio-cni fails the CNI ADD (its rules are in,
	// the pod is annotated pending) and the kubelet never reports an IP.
	require.NoError(t, rc.Control().SetAckMode(ctx, istiocni.AckError))
	noIP := mkPod(ctx, t, e, pod("agree-sel", "noip", map[string]string{"mesh": "on"}, nil))
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := e.cs.CoreV1().Pods(noIP.Namespace).Get(ctx, noIP.Name, metav1.GetOptions{})
		return err == nil && p.Annotations[enroll.AnnotationRedirection] == "pending", nil
	}), "istio-cni annotates the pod pending when ztunnel nacks")
	results = append(results, judge(ctx, t, e, agreeCase{name: "no pod IP (ztunnel nacks, CNI ADD fails)", pod: noIP}))
	require.NoError(t, rc.Control().SetAckMode(ctx, istiocni.AckOK))
	p := waitRunning(ctx, t, e, noIP.Namespace, noIP.Name, enrolled)
	t.Logf("after ztunnel acks again, the kubelet's retried ADD captures %s: ip=%s", p.Name, p.Status.PodIP)

	var b strings.Builder
	fmt.Fprintf(&b, "%-55s %-14s %-20s %-28s %s\n", "case", "enroll", "reason", "real istio-cni", "verdict")
	for _, r := range results {
		fmt.Fprintf(&b, "%-55s %-14s %-20s %-28s %s\n", r.c.name, r.exp.State, r.exp.Reason,
			fmt.Sprintf("ann=%q rules=%v ip=%v", r.real.annotation, r.real.rules, r.real.ip), r.verdict)
	}
	t.Logf("differential test, Istio %s (%d cases):\n%s", settings(ctx, t, e).Version, len(results), b.String())
	assert.GreaterOrEqual(t, len(results), 12)
}

type agreeResult struct {
	c       agreeCase
	exp     enroll.Expectation
	real    realDecision
	verdict string
}

// runAgreeCases creates every case's pod, then a sentinel pod that istio-cni captures: the
// kubelet runs sandboxes in order and istio-cni handles their ADDs as they come, so once the
// sentinel is captured every earlier pod has been decided. Then each case is judged.
func runAgreeCases(ctx context.Context, t *testing.T, e *env, sentinelNS string, cases []agreeCase) []agreeResult {
	t.Helper()
	for i := range cases {
		cases[i].pod = mkPod(ctx, t, e, cases[i].pod)
	}
	sentinel := mkPod(ctx, t, e, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: sentinelNS, Name: "sentinel-" + strconv.Itoa(len(cases)),
		Labels: map[string]string{enroll.LabelDataplaneMode: "ambient", "mesh": "on"}}})
	waitRunning(ctx, t, e, sentinel.Namespace, sentinel.Name, enrolled)
	var out []agreeResult
	for _, c := range cases {
		waitRunning(ctx, t, e, c.pod.Namespace, c.pod.Name, func(p *corev1.Pod) bool { return p.Status.PodIP != "" })
		out = append(out, judge(ctx, t, e, c))
	}
	return out
}

// judge compares real istio-cni's decision for c's pod with enroll.Expect on the same objects.
func judge(ctx context.Context, t *testing.T, e *env, c agreeCase) agreeResult {
	t.Helper()
	p, err := e.cs.CoreV1().Pods(c.pod.Namespace).Get(ctx, c.pod.Name, metav1.GetOptions{})
	require.NoError(t, err)
	ns, err := e.cs.CoreV1().Namespaces().Get(ctx, p.Namespace, metav1.GetOptions{})
	require.NoError(t, err)
	exp := enroll.Expect(p, ns, settings(ctx, t, e))
	d := realDecision{annotation: p.Annotations[enroll.AnnotationRedirection], ip: p.Status.PodIP != ""}
	if !p.Spec.HostNetwork {
		d.rules = groundTruth(ctx, t, e, p.Namespace, p.Name).rules()
	}
	r := agreeResult{c: c, exp: exp, real: d, verdict: "agree"}
	agree := true
	switch exp.State {
	case enroll.Captured:
		agree = d.captured()
		assert.True(t, agree, "%s: enroll says captured (%s), real istio-cni: %+v", c.name, exp.Detail, d)
	case enroll.NotCaptured:
		agree = !d.captured() && !d.rules && d.annotation != "enabled"
		assert.True(t, agree, "%s: enroll says not captured (%s: %s), real istio-cni: %+v", c.name, exp.Reason, exp.Detail, d)
	case enroll.Unknown:
		// enroll claims neither: record what istio-cni did (docs/istio-facts-verified.md).
		r.verdict = "enroll unknown; real: " + map[bool]string{true: "captured", false: "not captured"}[d.captured()]
	}
	if !agree {
		r.verdict = "DISAGREE"
	}
	return r
}

// --- ztunnel-restart ------------------------------------------------------------------------------

// scenarioRealZtunnelRestart: the stand-in stops (its listeners vanish from every pod) and
// starts again; istio-cni re-sends its snapshot and the listeners come back. The agent, with
// --auto-repair, heals nothing in the window (the node's ztunnel is not Ready: the breaker
// holds) and ends with every pod captured.
func scenarioRealZtunnelRestart(ctx context.Context, t *testing.T, e *env) {
	const ns = "real-zt-restart"
	realNamespace(ctx, t, e, ns, map[string]string{enroll.LabelDataplaneMode: enroll.DataplaneModeAmbient})
	mkDeployment(ctx, t, e, ns, "web", 2, false)
	pods := waitPods(ctx, t, e, ns, 2, enrolled)
	url, logs, _ := startAgent(ctx, t, e, agentRun{kubeconfig: applyAgentRBAC(ctx, t, e, "overlays/auto-repair"),
		args: []string{"--socket-backend=netlink", "--inspect-rules", "--auto-repair"}})
	waitCondition(ctx, t, e, ns, pods, corev1.ConditionTrue, time.Minute)

	rc := e.node.RealCNI()
	before, err := rc.Control().State(ctx)
	require.NoError(t, err)
	rc.StopZtunnel(syscall.SIGTERM)
	for _, p := range pods {
		assert.Empty(t, groundTruth(ctx, t, e, ns, p.Name).Listeners, "%s: ztunnel's listeners go with it", p.Name)
	}
	rows := nodeRows(ctx, t, e)
	for _, p := range pods {
		assert.Equal(t, "blackhole", rows[ns+"/"+p.Name].Class, "rules stay, listeners gone: %s", p.Name)
	}
	time.Sleep(6 * time.Second) // twelve ticks and two full re-checks with ztunnel down
	for _, p := range pods {
		got, err := e.cs.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
		require.NoError(t, err, "%s still exists", p.Name)
		assert.Equal(t, p.UID, got.UID, "nothing healed while ztunnel restarts")
	}

	require.NoError(t, rc.StartZtunnel(ctx))
	after, err := rc.Control().State(ctx)
	require.NoError(t, err)
	for _, p := range pods {
		w, ok := after.Workload(string(p.UID))
		require.True(t, ok, "istio-cni's snapshot re-sent %s", p.Name)
		assert.Equal(t, "Up", w.State)
		b, _ := before.Workload(string(p.UID))
		assert.Equal(t, b.Netns, w.Netns, "the same netns, from istio-cni's cache")
	}
	assert.Contains(t, rc.ZtunnelLog(200), "received snapshot sent")
	waitCondition(ctx, t, e, ns, pods, corev1.ConditionTrue, time.Minute)
	rows = nodeRows(ctx, t, e)
	for _, p := range pods {
		assert.Equal(t, "captured", rows[ns+"/"+p.Name].Class, p.Name)
	}
	assert.NotContains(t, metricsText(t, url), `meshmedic_repairs_total{result="evicted"`, "no heal in the window")
	t.Logf("agent during the restart:\n%s", grepLines(logs.String(), "breaker", "ztunnel", "not healing"))
}

// --- toggle ------------------------------------------------------------------------------------

// scenarioRealToggle: a pod whose listeners the stand-in lost (ztunnel still says Up) is healed
// by repair --strategy toggle: real istio-cni removes the pod from the mesh (rules out, ZDS Del,
// annotation gone) when it is labelled out, and adds it back (rules, ZDS Add with its netns,
// annotation) when the label returns. The pod keeps its UID and ends captured.
func scenarioRealToggle(ctx context.Context, t *testing.T, e *env) {
	const ns = "real-toggle"
	realNamespace(ctx, t, e, ns, map[string]string{enroll.LabelDataplaneMode: enroll.DataplaneModeAmbient})
	mkDeployment(ctx, t, e, ns, "app", 1, false)
	pod := waitPods(ctx, t, e, ns, 1, enrolled)[0]
	rc := e.node.RealCNI()
	require.NoError(t, rc.Control().Lose(ctx, string(pod.UID)))
	tr := groundTruth(ctx, t, e, ns, pod.Name)
	require.Empty(t, tr.Listeners)
	require.True(t, tr.rules())
	assert.Equal(t, "blackhole", nodeRows(ctx, t, e)[ns+"/"+pod.Name].Class)
	logBefore := len(rc.AgentLog(100000))

	out, res := repair(ctx, t, e, "-n", ns, "--yes", "--strategy", "toggle")
	assert.Equal(t, 0, res.Code, "%s\n%s", res.Stdout, res.Stderr)
	require.Len(t, out.Actions, 1, res.Stdout)
	assert.Equal(t, "toggled", out.Actions[0].Result, out.Actions[0].Detail)

	got := waitRunning(ctx, t, e, ns, pod.Name, enrolled)
	assert.Equal(t, pod.UID, got.UID, "toggle does not restart the pod")
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		return truthClass(groundTruth(ctx, t, e, ns, pod.Name), "enabled", e.dnsCapture()) == "captured", nil
	}), "real istio-cni re-captures the pod")
	agentLog := rc.AgentLog(100000)[logBefore:]
	removed := strings.Index(agentLog, "removing pod from mesh")
	added := strings.LastIndex(agentLog, "adding pod to the mesh")
	assert.True(t, removed >= 0 && added > removed, "istio-cni removed, then re-added the pod:\n%s", grepLines(agentLog, pod.Name))
	assert.Contains(t, rc.ZtunnelLog(200), "pod delete request, shutting down proxy\tuid="+string(pod.UID))
	assert.Equal(t, "captured", nodeRows(ctx, t, e)[ns+"/"+pod.Name].Class)
	_, sres := scan(ctx, t, e, "-n", ns)
	assert.Equal(t, 0, sres.Code, "captured again: %s", sres.Stdout)
}

// --- reboot-race-orphan ----------------------------------------------------------------------------

// rebootOutcome is one pod's state after a played reboot, with meshmedic's class and the class
// the ground truth calls for.
type rebootOutcome struct {
	pod, role, annotation string
	truth                 truth
	want, got             string
}

// reboot plays a node reboot over pods (at least three), the way istio/istio #55968, #57285 and
// #60882 describe it:
//
//  1. power is lost: istio-cni's agent and ztunnel die, every pod sandbox dies with its netns;
//  2. the primary CNI's agent comes up first and rewrites its conflist: istio-cni is no longer
//     chained;
//  3. the kubelet re-creates the sandboxes it gets to before istio-cni is back, through that
//     chain: pods[0] ("fast") with its new IP posted, pods[1] ("slow-status") with its status
//     still carrying the old IP;
//  4. istio-cni's agent starts (with AMBIENT_RECONCILE_POD_RULES_ON_STARTUP = reconcile), builds
//     its start-up snapshot from /host/proc, and chains itself in again; ztunnel connects;
//  5. the kubelet re-creates the remaining sandboxes (pods[2:], "late"), now through istio-cni,
//     and posts slow-status's new IP.
//
// It returns each pod's outcome, with meshmedic's node scan (--inspect-rules) class.
func reboot(ctx context.Context, t *testing.T, e *env, ns string, pods []corev1.Pod, reconcile bool) []rebootOutcome {
	t.Helper()
	require.GreaterOrEqual(t, len(pods), 3)
	rc := e.node.RealCNI()
	require.NoError(t, rc.SetConfig(ctx, "AMBIENT_RECONCILE_POD_RULES_ON_STARTUP", strconv.FormatBool(reconcile)))

	rc.StopZtunnel(syscall.SIGKILL)
	rc.StopAgent(syscall.SIGKILL)
	for _, p := range pods {
		require.NoError(t, e.node.KillSandbox(ns, p.Name))
	}
	require.NoError(t, rc.WritePrimaryConflist())
	require.False(t, rc.Chained(), "the primary CNI dropped istio-cni from the chain")

	fast, slow, late := pods[0], pods[1], pods[2:]
	fastIP, err := e.node.RecreateSandbox(ctx, ns, fast.Name, true)
	require.NoError(t, err)
	_, err = e.node.RecreateSandbox(ctx, ns, slow.Name, false)
	require.NoError(t, err)
	waitRunning(ctx, t, e, ns, fast.Name, func(p *corev1.Pod) bool { return p.Status.PodIP == fastIP.String() })

	require.NoError(t, rc.StartAgent(ctx))
	require.NoError(t, rc.StartZtunnel(ctx))
	for _, p := range late {
		_, err := e.node.RecreateSandbox(ctx, ns, p.Name, true)
		require.NoError(t, err, "the re-created sandbox goes through istio-cni again")
	}
	require.NoError(t, e.node.ReleaseStatus(ns, slow.Name))
	slowIP, err := e.node.PodIP(ns, slow.Name)
	require.NoError(t, err)
	waitRunning(ctx, t, e, ns, slow.Name, func(p *corev1.Pod) bool { return p.Status.PodIP == slowIP.String() })
	for _, p := range late {
		waitRunning(ctx, t, e, ns, p.Name, enrolled)
	}
	// istio-cni reacts to the status updates within its informer's latency; give it time to act
	// on them (it may act on none: that is the point).
	time.Sleep(3 * time.Second)

	rows := nodeRows(ctx, t, e)
	var out []rebootOutcome
	for i, p := range pods {
		role := "late (sandbox after istio-cni was back)"
		switch i {
		case 0:
			role = "fast (sandbox and status before istio-cni)"
		case 1:
			role = "slow-status (sandbox before, status after istio-cni's start-up)"
		}
		cur, err := e.cs.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
		require.NoError(t, err)
		ann := cur.Annotations[enroll.AnnotationRedirection]
		tr := groundTruth(ctx, t, e, ns, p.Name)
		out = append(out, rebootOutcome{pod: p.Name, role: role, annotation: ann, truth: tr,
			want: truthClass(tr, ann, e.dnsCapture()), got: rows[ns+"/"+p.Name].Class})
	}
	return out
}

func logOutcomes(t *testing.T, title string, outs []rebootOutcome) {
	t.Helper()
	var b strings.Builder
	for _, o := range outs {
		fmt.Fprintf(&b, "  %-22s %-62s annotation=%-8q %s → ground truth says %-12s meshmedic says %s\n",
			o.pod, o.role, o.annotation, o.truth, o.want, o.got)
	}
	var orphans []string
	for _, o := range outs {
		if o.want != "captured" {
			orphans = append(orphans, o.pod+" ("+o.want+")")
		}
	}
	sort.Strings(orphans)
	t.Logf("%s\n%s  left broken by real istio-cni: %v", title, b.String(), orphans)
}

// scenarioRealRebootRace: the real mechanism of the reboot orphan, with istio-cni's start-up
// reconciliation off and on. Whatever real istio-cni leaves behind, meshmedic must classify
// every pod as the ground truth read from outside calls for.
func scenarioRealRebootRace(ctx context.Context, t *testing.T, e *env) {
	rc := e.node.RealCNI()
	t.Cleanup(func() {
		_ = rc.SetConfig(context.Background(), "AMBIENT_RECONCILE_POD_RULES_ON_STARTUP", "true")
	})
	for _, reconcile := range []bool{false, true} {
		name := "reconcile-" + map[bool]string{false: "off", true: "on"}[reconcile]
		t.Run(name, func(t *testing.T) {
			ns := "real-reboot-" + map[bool]string{false: "off", true: "on"}[reconcile]
			realNamespace(ctx, t, e, ns, map[string]string{enroll.LabelDataplaneMode: enroll.DataplaneModeAmbient})
			mkDeployment(ctx, t, e, ns, "web", 3, false)
			pods := waitPods(ctx, t, e, ns, 3, enrolled)
			sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
			outs := reboot(ctx, t, e, ns, pods, reconcile)
			logOutcomes(t, fmt.Sprintf("reboot with AMBIENT_RECONCILE_POD_RULES_ON_STARTUP=%v:", reconcile), outs)
			for _, o := range outs {
				assert.Equal(t, o.want, o.got, "%s (%s): meshmedic's class against the ground truth %s", o.pod, o.role, o.truth)
			}
			t.Logf("istio-cni's start-up, as it logged it:\n%s", grepLines(rc.AgentLog(400), "snapshot", "netns", "keep", "reconcil", "rules"))
		})
	}
}

// --- agent-heals ---------------------------------------------------------------------------------

// scenarioRealAgentHeals: after a played reboot (istio-cni's defaults: start-up reconciliation
// on), the agent with --auto-repair evicts the pods real istio-cni left broken, and real
// istio-cni captures their replacements through the chain.
func scenarioRealAgentHeals(ctx context.Context, t *testing.T, e *env) {
	const ns = "real-agent-heals"
	realNamespace(ctx, t, e, ns, map[string]string{enroll.LabelDataplaneMode: enroll.DataplaneModeAmbient})
	mkDeployment(ctx, t, e, ns, "web", 3, false)
	pods := waitPods(ctx, t, e, ns, 3, enrolled)
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	outs := reboot(ctx, t, e, ns, pods, true)
	logOutcomes(t, "reboot before the agent starts:", outs)
	var broken []corev1.Pod
	for i, o := range outs {
		require.Equal(t, o.want, o.got, "%s", o.pod)
		if o.want != "captured" {
			broken = append(broken, pods[i])
		}
	}
	require.NotEmpty(t, broken, "the reboot left at least one pod broken (otherwise there is nothing to heal)")

	startAgent(ctx, t, e, agentRun{kubeconfig: applyAgentRBAC(ctx, t, e, "overlays/auto-repair"),
		args: []string{"--socket-backend=netlink", "--inspect-rules", "--auto-repair"}})
	for _, b := range broken {
		waitGone(ctx, t, e, b, 2*time.Minute)
		assert.True(t, hasEvent(ctx, t, e, ns, b.Name, "MeshmedicEvicted"), "%s evicted by the agent", b.Name)
	}
	final := waitPods(ctx, t, e, ns, 3, enrolled)
	for _, p := range final {
		for _, b := range broken {
			assert.NotEqual(t, b.UID, p.UID)
		}
		tr := groundTruth(ctx, t, e, ns, p.Name)
		assert.Equal(t, "captured", truthClass(tr, "enabled", e.dnsCapture()), "%s: real istio-cni captured it: %s", p.Name, tr)
	}
	waitCondition(ctx, t, e, ns, final, corev1.ConditionTrue, time.Minute)
}
