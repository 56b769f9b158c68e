package detect

import (
	"context"
	"errors"
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
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshmedic/meshmedic/netns/netnstest"
)

func countUpdates(cs *fake.Clientset) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == "update" && a.GetSubresource() == "ephemeralcontainers" {
			n++
		}
	}
	return n
}

func TestEphemeralProber(t *testing.T) {
	pod := runningPod()
	cs := fake.NewClientset(pod)
	x := &fakeExec{files: map[string]string{"/proc/net/tcp6": netnstest.TCP6(netnstest.Ztunnel(false, 1)...)}}
	clk := clocktesting.NewFakeClock(t0)
	p := NewEphemeralProber(cs.CoreV1(), x, WithEphemeralWait(10*time.Second, time.Second, clk))
	ctx := context.Background()

	type result struct {
		pr  Probe
		err error
	}
	res := make(chan result, 1)
	go func() { pr, err := p.Probe(ctx, pod); res <- result{pr, err} }()
	waitForWaiter(t, clk) // added, waiting for it to run
	cur, err := cs.CoreV1().Pods("shop").Get(ctx, "app", metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, cur.Spec.EphemeralContainers, 1)
	ec := cur.Spec.EphemeralContainers[0]
	assert.Equal(t, EphemeralContainerName, ec.Name)
	assert.Equal(t, DefaultEphemeralImage, ec.Image)
	cur.Status.EphemeralContainerStatuses = []corev1.ContainerStatus{{Name: EphemeralContainerName,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
	_, err = cs.CoreV1().Pods("shop").UpdateStatus(ctx, cur, metav1.UpdateOptions{})
	require.NoError(t, err)
	clk.Step(time.Second)
	r := <-res
	require.NoError(t, r.err)
	assert.Equal(t, []uint16{15001, 15006, 15008}, r.pr.Listeners.Ports)
	assert.Equal(t, SourceEphemeral, r.pr.Source)
	assert.Equal(t, EphemeralContainerName, x.container)
	assert.Equal(t, 1, countUpdates(cs))

	// Reused: no second container.
	_, err = p.Probe(ctx, pod)
	require.NoError(t, err)
	assert.Equal(t, 1, countUpdates(cs))
}

func TestEphemeralProberNeverRuns(t *testing.T) {
	pod := runningPod()
	cs := fake.NewClientset(pod)
	clk := clocktesting.NewFakeClock(t0)
	p := NewEphemeralProber(cs.CoreV1(), &fakeExec{}, WithEphemeralWait(3*time.Second, time.Second, clk))
	res := make(chan error, 1)
	go func() { _, err := p.Probe(context.Background(), pod); res <- err }()
	for range 3 {
		waitForWaiter(t, clk)
		clk.Step(time.Second)
	}
	err := <-res
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not running after 3s")
}

func TestEphemeralProberForbidden(t *testing.T) {
	pod := runningPod()
	cs := fake.NewClientset(pod)
	cs.PrependReactor("update", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "ephemeralcontainers" {
			return false, nil, nil
		}
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods/ephemeralcontainers"}, "app", errors.New("RBAC"))
	})
	_, err := NewEphemeralProber(cs.CoreV1(), &fakeExec{}).Probe(context.Background(), pod)
	assert.ErrorIs(t, err, ErrForbidden)
	assert.ErrorContains(t, err, "cannot update pods/ephemeralcontainers")
}

func TestEphemeralProberTerminated(t *testing.T) {
	pod := runningPod()
	pod.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: EphemeralContainerName}}}
	pod.Status.EphemeralContainerStatuses = []corev1.ContainerStatus{{Name: EphemeralContainerName,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Completed"}}}}
	cs := fake.NewClientset(pod)
	_, err := NewEphemeralProber(cs.CoreV1(), &fakeExec{}).Probe(context.Background(), pod)
	assert.ErrorContains(t, err, "has terminated (Completed)")
	assert.Zero(t, countUpdates(cs))
}
