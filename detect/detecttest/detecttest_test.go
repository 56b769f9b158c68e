package detecttest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/detect/detecttest"
)

func TestFakesDriveTheEngine(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"istio.io/dataplane-mode": "ambient"}}}
	mk := func(name string) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1"}}
	}
	a, b, c := mk("a"), mk("b"), mk("c")
	a.UID, b.UID, c.UID = "ua", "ub", "uc"
	for _, p := range []*corev1.Pod{&a, &b, &c} {
		p.Annotations = map[string]string{"ambient.istio.io/redirection": "enabled"}
	}
	cl := detecttest.NewCluster([]*corev1.Namespace{ns}, a, b, c)
	pr := detecttest.NewProber()
	pr.Set("shop/b", detecttest.Orphaned())
	pr.Fail("shop/c", errors.New("boom"))
	rep, err := detect.New(cl, cl, pr).Scan(context.Background(), "shop")
	require.NoError(t, err)
	classes := map[string]detect.Class{}
	for _, f := range rep.Findings {
		classes[f.Name] = f.Class
	}
	assert.Equal(t, map[string]detect.Class{"a": detect.ClassCaptured, "b": detect.ClassOrphaned, "c": detect.ClassUnknown}, classes)
	assert.Equal(t, 1, pr.Calls("shop/a"))
	_, err = cl.GetNamespace(context.Background(), "nope")
	assert.Error(t, err)
}
