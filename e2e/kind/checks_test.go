//go:build kind

package kind

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/meshmedic/meshmedic/e2e"
)

// conditionAmbientCaptured is the pod condition the meshmedic agent publishes.
const conditionAmbientCaptured = "meshmedic.io/AmbientCaptured"

// curl requests the server through its Service from the client pod; nil when it answered 200.
func curl(ctx context.Context) error {
	out, err := kubectl(ctx, "-n", st.ns, "exec", "deploy/"+appClient, "--", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
		"-m", "5", fmt.Sprintf("http://%s.%s:8000/get", appServer, st.ns))
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) != "200" {
		return fmt.Errorf("HTTP %s", out)
	}
	return nil
}

// ztunnelLogs returns the logs since `since` of the ztunnel pod on node.
func ztunnelLogs(ctx context.Context, node string, since time.Time) ([]byte, error) {
	pods, err := st.cs.CoreV1().Pods("istio-system").List(ctx, metav1.ListOptions{
		LabelSelector: "app=ztunnel", FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String()})
	if err != nil {
		return nil, err
	}
	if len(pods.Items) != 1 {
		return nil, fmt.Errorf("%d ztunnel pods on node %s", len(pods.Items), node)
	}
	t := metav1.NewTime(since)
	return st.cs.CoreV1().Pods("istio-system").GetLogs(pods.Items[0].Name, &corev1.PodLogOptions{SinceTime: &t}).DoRaw(ctx)
}

type signal struct {
	Kind, Side, IP, Namespace, Workload string
}

// logsAnalyze runs `meshmedic logs analyze -o json` on a file holding logs.
func logsAnalyze(ctx context.Context, t *testing.T, logs []byte) []signal {
	t.Helper()
	f := filepath.Join(t.TempDir(), "ztunnel.log")
	require.NoError(t, os.WriteFile(f, logs, 0o644))
	res, err := e2e.Run(ctx, st.bin, nil, "logs", "analyze", "-o", "json", f)
	require.NoError(t, err)
	require.NotEqual(t, 2, res.Code, res.Stderr)
	var out struct{ Signals []signal }
	require.NoError(t, json.Unmarshal([]byte(res.Stdout), &out), res.Stdout)
	return out.Signals
}

// waitSignal makes traffic with poke and reads the ztunnel logs of node since `since` until
// `meshmedic logs analyze` reports a signal of kind for ip.
func waitSignal(ctx context.Context, t *testing.T, node string, since time.Time, kind, ip string, poke func()) signal {
	t.Helper()
	var got signal
	var last []signal
	err := wait.PollUntilContextTimeout(ctx, 3*time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		poke()
		logs, err := ztunnelLogs(ctx, node, since)
		if err != nil {
			return false, nil
		}
		last = logsAnalyze(ctx, t, logs)
		for _, s := range last {
			if s.Kind == kind && s.IP == ip {
				got = s
				return true, nil
			}
		}
		return false, nil
	})
	require.NoError(t, err, "no %s signal for %s in ztunnel's logs on %s (signals seen: %+v)", kind, ip, node, last)
	return got
}

// waitMTLS makes traffic until ztunnel's logs on node show a completed HBONE (mTLS)
// connection to ip.
func waitMTLS(ctx context.Context, t *testing.T, node, ip string) {
	t.Helper()
	since := time.Now().Add(-2 * time.Second)
	var lastCurl error
	err := wait.PollUntilContextTimeout(ctx, 3*time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		if lastCurl = curl(ctx); lastCurl != nil {
			return false, nil
		}
		logs, err := ztunnelLogs(ctx, node, since)
		if err != nil {
			return false, nil
		}
		ok, err := MTLSEvidence(bytes.NewReader(logs), ip)
		return ok && err == nil, nil
	})
	require.NoError(t, err, "no mTLS traffic to %s (last curl: %v)", ip, lastCurl)
}

type finding struct {
	Namespace, Name, UID, Class string
	Confirmed                   bool
	Present                     []uint16
}

type scanOut struct {
	Checked  int
	Findings []finding
}

// scan runs `meshmedic scan -n <ns> -o json` (exec prober, the CLI's default).
func scan(ctx context.Context, t *testing.T, extra ...string) (scanOut, e2e.Result) {
	t.Helper()
	res, err := meshmedic(ctx, append([]string{"scan", "-n", st.ns, "-o", "json", "--confirm", "3s"}, extra...)...)
	require.NoError(t, err)
	require.NotEqual(t, 2, res.Code, "scan failed: %s", res.Stderr)
	var out scanOut
	require.NoError(t, json.Unmarshal([]byte(res.Stdout), &out), res.Stdout)
	return out, res
}

type action struct {
	Namespace, Name, Strategy, Result, Detail string
}

// repair runs `meshmedic repair -n <ns> -o json`.
func repair(ctx context.Context, t *testing.T, extra ...string) ([]action, e2e.Result) {
	t.Helper()
	res, err := meshmedic(ctx, append([]string{"repair", "-n", st.ns, "-o", "json", "--confirm", "3s"}, extra...)...)
	require.NoError(t, err)
	require.NotEqual(t, 2, res.Code, "repair failed: %s", res.Stderr)
	var out struct{ Actions []action }
	require.NoError(t, json.Unmarshal([]byte(res.Stdout), &out), res.Stdout)
	return out.Actions, res
}

// ztunnelProtocol is the protocol ztunnel has for the pod (HBONE when enrolled).
func ztunnelProtocol(ctx context.Context, t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	out, err := istioctl(ctx, "ztunnel-config", "workloads", "-o", "json")
	require.NoError(t, err)
	wls, err := ParseZtunnelWorkloads([]byte(out))
	require.NoError(t, err)
	for _, w := range wls {
		if w.Namespace == pod.Namespace && w.Name == pod.Name {
			return w.Protocol
		}
	}
	return ""
}

func podCondition(p *corev1.Pod) (corev1.ConditionStatus, string) {
	for _, c := range p.Status.Conditions {
		if string(c.Type) == conditionAmbientCaptured {
			return c.Status, c.Reason
		}
	}
	return "", ""
}

// waitCondition waits until the pod (that UID) carries the agent's condition with status.
func waitCondition(ctx context.Context, t *testing.T, pod *corev1.Pod, status corev1.ConditionStatus) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := st.cs.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil || p.UID != pod.UID {
			return false, nil
		}
		s, r := podCondition(p)
		last = string(s) + "/" + r
		return s == status, nil
	})
	require.NoError(t, err, "pod %s: %s never %s (last %s)", pod.Name, conditionAmbientCaptured, status, last)
}

// conditionLog records every value of the agent's condition the pod (that UID) goes
// through, from a watch, so that a False the agent publishes just before it evicts the pod
// is not missed between two polls.
type conditionLog struct {
	mu   sync.Mutex
	seen []string // "False/Orphaned"
	gone bool     // the pod with that UID was deleted
}

func watchCondition(ctx context.Context, t *testing.T, pod *corev1.Pod) *conditionLog {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	w, err := st.cs.CoreV1().Pods(pod.Namespace).Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", pod.Name).String(), ResourceVersion: pod.ResourceVersion})
	require.NoError(t, err)
	l := &conditionLog{}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || p.UID != pod.UID {
				continue
			}
			s, r := podCondition(p)
			l.mu.Lock()
			if ev.Type == watch.Deleted {
				l.gone = true
			}
			if s != "" && (len(l.seen) == 0 || l.seen[len(l.seen)-1] != string(s)+"/"+r) {
				l.seen = append(l.seen, string(s)+"/"+r)
			}
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *conditionLog) snapshot() ([]string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.seen...), l.gone
}

// hasEvent reports whether an Event with reason was written about the pod with uid.
func hasEvent(ctx context.Context, uid types.UID, reason string) bool {
	evs, err := st.cs.CoreV1().Events(st.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return false
	}
	for _, ev := range evs.Items {
		if ev.InvolvedObject.UID == uid && ev.Reason == reason {
			return true
		}
	}
	return false
}
