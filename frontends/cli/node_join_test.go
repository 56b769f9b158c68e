package cli

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/meshmedic/meshmedic/enroll"
)

func TestFetchNode(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "here"}, Spec: corev1.PodSpec{NodeName: "n1"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "elsewhere"}, Spec: corev1.PodSpec{NodeName: "n2"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istio-cni-config"},
			Data: map[string]string{"EXCLUDE_NAMESPACES": "kube-system,legacy", "AMBIENT_DNS_CAPTURE": "true"}},
	)
	// The fake clientset ignores field selectors; check that we ask for the node's pods.
	var selector string
	cs.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		selector = a.(k8stesting.ListAction).GetListRestrictions().Fields.String()
		return false, nil, nil
	})
	var notes bytes.Buffer
	in, err := fetchNode(ctx, cs, "n1", "istio-system", "1.24.3", &notes)
	require.NoError(t, err)
	assert.Equal(t, "spec.nodeName=n1", selector)
	assert.Contains(t, in.Namespaces, "a")
	assert.Equal(t, []string{"kube-system", "legacy"}, in.Settings.ExcludeNamespaces)
	assert.Equal(t, enroll.DNSOn, in.Settings.DNSCapture)
	assert.Equal(t, "1.24.3", in.Settings.Version.String())
	assert.Empty(t, notes.String())

	// No ConfigMap: defaults, with a note.
	cs2 := fake.NewClientset()
	in, err = fetchNode(ctx, cs2, "n1", "istio-system", "", &notes)
	require.NoError(t, err)
	assert.Contains(t, notes.String(), "judging with Istio's defaults")
	assert.Equal(t, enroll.DefaultSettings().ExcludeNamespaces, in.Settings.ExcludeNamespaces)

	// The version from the ztunnel image tag when no flag says otherwise.
	cs4 := fake.NewClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "ztunnel-x", Labels: map[string]string{"app": "ztunnel"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "istio-proxy", Image: "docker.io/istio/ztunnel:1.26.2-distroless"}}}})
	in, err = fetchNode(ctx, cs4, "n1", "istio-system", "", &notes)
	require.NoError(t, err)
	assert.Equal(t, "1.26.2", in.Settings.Version.String())
	in, err = fetchNode(ctx, cs4, "n1", "istio-system", "1.24.0", &notes)
	require.NoError(t, err)
	assert.Equal(t, "1.24.0", in.Settings.Version.String(), "the flag wins")

	// RBAC denial on pods: the error names the verb and the resource.
	cs3 := fake.NewClientset()
	cs3.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", nil)
	})
	_, err = fetchNode(ctx, cs3, "n1", "istio-system", "", &notes)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `grant verb "list" on resource "pods"`)
	assert.True(t, apierrors.IsForbidden(err), "the API error stays reachable with errors.As")

	// A bad --istio-version is a usage error.
	_, err = fetchNode(ctx, fake.NewClientset(), "n1", "istio-system", "one.two", &notes)
	var ue *UsageError
	assert.ErrorAs(t, err, &ue)
}

func TestJoinNodeScanNeedsNode(t *testing.T) {
	_, _, err := runApp(t, "node", "scan", "--proc-root", "../../testdata/netns/node-a", "--node", "")
	var ue *UsageError
	assert.ErrorAs(t, err, &ue)
}

func runApp(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := NewApp("meshmedic", BuildInfo{}, Streams{In: &bytes.Buffer{}, Out: &out, Err: &errOut})
	err := app.RunContext(context.Background(), append([]string{"meshmedic"}, args...))
	return out.String(), errOut.String(), err
}
