package detect

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/meshmedic/meshmedic/ztlog"
)

func TestAPISource(t *testing.T) {
	a, b := enabledPod("shop", "a"), enabledPod("plain", "b")
	cs := fake.NewClientset(&a, &b, ambientNS("shop"))
	src := NewAPISource(cs.CoreV1(), cs.CoreV1(), WithLabelSelector("x!=y"), WithFieldSelector("spec.nodeName=node-a"))
	ctx := context.Background()

	pods, err := src.ListPods(ctx, "")
	require.NoError(t, err)
	assert.Len(t, pods, 2)
	pods, err = src.ListPods(ctx, "shop")
	require.NoError(t, err)
	require.Len(t, pods, 1)
	assert.Equal(t, "a", pods[0].Name)
	var sawSelector bool
	for _, act := range cs.Actions() {
		if l, ok := act.(k8stesting.ListAction); ok {
			sawSelector = l.GetListRestrictions().Labels.String() == "x!=y"
		}
	}
	assert.True(t, sawSelector, "label selector sent")

	ns, err := src.GetNamespace(ctx, "shop")
	require.NoError(t, err)
	assert.Equal(t, "ambient", ns.Labels["istio.io/dataplane-mode"])
	_, err = src.GetNamespace(ctx, "plain")
	assert.True(t, apierrors.IsNotFound(err), "NotFound survives wrapping: %v", err)

	// Through the Engine: the missing namespace is not an error, the pod is just judged
	// on its own labels (skipped).
	rep, err := New(src, src, newFakeProber()).Scan(ctx, "")
	require.NoError(t, err)
	assert.Empty(t, rep.Errors)
	assert.Equal(t, ClassSkipped, byName(rep)["b"].Class)
	assert.Equal(t, ClassCaptured, byName(rep)["a"].Class)
}

func TestAPISourceErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("403 on list pods", func(t *testing.T) {
		cs := fake.NewClientset()
		cs.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New(`User "dev" cannot list resource "pods"`))
		})
		src := NewAPISource(cs.CoreV1(), cs.CoreV1())
		_, err := New(src, src, newFakeProber()).Scan(ctx, "")
		require.Error(t, err)
		assert.True(t, apierrors.IsForbidden(err))
		assert.Contains(t, err.Error(), "list pods in all namespaces")
	})
	t.Run("unreachable API server", func(t *testing.T) {
		cs := fake.NewClientset()
		cs.PrependReactor("*", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, errors.New(`Get "https://10.0.0.1:6443/api/v1/pods": dial tcp 10.0.0.1:6443: connect: connection refused`)
		})
		src := NewAPISource(cs.CoreV1(), cs.CoreV1())
		_, err := New(src, src, newFakeProber()).Scan(ctx, "shop")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "list pods in namespace shop")
		assert.Contains(t, err.Error(), "connection refused")
	})
}

func TestZtunnelLogs(t *testing.T) {
	zt := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "ztunnel-x", Labels: map[string]string{"app": "ztunnel"}},
		Spec: corev1.PodSpec{NodeName: "node-a"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	other := enabledPod("shop", "a")
	cs := fake.NewClientset(&zt, &other)
	src := NewAPISource(cs.CoreV1(), cs.CoreV1())
	var logs ztlog.LogSource = NewZtunnelLogs(src, cs.CoreV1())
	ctx := context.Background()
	refs, err := logs.ZtunnelPods(ctx)
	require.NoError(t, err)
	assert.Equal(t, []ztlog.PodRef{{Namespace: "istio-system", Name: "ztunnel-x", Node: "node-a"}}, refs)
	rc, err := logs.Stream(ctx, refs[0], t0.Add(-15*time.Minute))
	require.NoError(t, err)
	body, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	assert.NotEmpty(t, body, "the fake clientset's log body")
	var opts *corev1.PodLogOptions
	for _, act := range cs.Actions() {
		if g, ok := act.(k8stesting.GenericAction); ok && act.GetSubresource() == "log" {
			opts, _ = g.GetValue().(*corev1.PodLogOptions)
		}
	}
	require.NotNil(t, opts, "the log request was made with options")
	{
		require.NotNil(t, opts.SinceTime)
		assert.True(t, opts.SinceTime.Time.Equal(t0.Add(-15*time.Minute)))
	}
}

func TestCandidates(t *testing.T) {
	ok := enabledPod("shop", "reviews-7d9f-abcde")
	ok.Status.PodIPs = []corev1.PodIP{{IP: "10.244.0.5"}, {IP: "fd00::5"}}
	ok.Status.PodIP = "10.244.0.5"
	ok.Labels = map[string]string{"app": "reviews"}
	hostNet := enabledPod("kube-system", "kube-proxy-x")
	hostNet.Spec.HostNetwork = true
	hostNet.Status.PodIP, hostNet.Status.PodIPs = "172.18.0.2", []corev1.PodIP{{IP: "172.18.0.2"}}
	plain := pod("plain", "legacy", "uid-legacy", nil, t0)
	plain.Status.PodIP, plain.Status.PodIPs = "10.244.0.9", []corev1.PodIP{{IP: "10.244.0.9"}}
	done := enabledPod("shop", "job-old")
	done.Status.Phase = corev1.PodSucceeded
	done.Status.PodIP, done.Status.PodIPs = "10.244.0.7", []corev1.PodIP{{IP: "10.244.0.7"}}
	w := newWorld(ok, hostNet, plain, done)
	e := New(w, w, newFakeProber())

	sig := func(ip, ns, wl string) ztlog.Signal {
		return ztlog.Signal{Kind: "unidentified-policy-rejection", Side: ztlog.SideSrc, IP: ip, Namespace: ns, Workload: wl}
	}
	signals := []ztlog.Signal{
		sig("10.244.0.5", "", ""),
		sig("10.244.0.5", "shop", "reviews-7d9f-abcde"), // same pod again: listed once
		sig("fd00::5", "shop", "reviews"),               // by its IPv6 and app label
		sig("10.96.0.1", "", ""),                        // kube-apiserver / SNAT: no pod
		sig("172.18.0.2", "", ""),                       // kubelet probe from the node
		sig("10.244.0.9", "", ""),                       // non-ambient source
		sig("10.244.0.7", "", ""),                       // finished pod, IP reused by nobody
		sig("", "shop", "x"),                            // redacted 10.xx.xx.xx
		sig("10.244.0.5", "other", ""),                  // names another namespace
	}
	pods, rejected, err := e.Candidates(context.Background(), signals)
	require.NoError(t, err)
	require.Len(t, pods, 1)
	assert.Equal(t, "reviews-7d9f-abcde", pods[0].Name)
	reasons := map[string]RejectReason{}
	for _, r := range rejected {
		reasons[r.Signal.IP+"|"+r.Signal.Namespace] = r.Reason
	}
	assert.Equal(t, map[string]RejectReason{
		"10.96.0.1|":       RejectNoPod,
		"172.18.0.2|":      RejectHostNetwork,
		"10.244.0.9|":      RejectNotEnrolled,
		"10.244.0.7|":      RejectNotRunning,
		"|shop":            RejectNoIP,
		"10.244.0.5|other": RejectMismatch,
	}, reasons)

	rep, err := e.ScanPods(context.Background(), pods)
	require.NoError(t, err)
	assert.Equal(t, 1, rep.Checked)

	_, _, err = New(PodListerFunc(func(context.Context, string) ([]corev1.Pod, error) { return nil, errors.New("down") }), w, newFakeProber()).
		Candidates(context.Background(), signals)
	assert.ErrorContains(t, err, "list pods in all namespaces: down")
}
