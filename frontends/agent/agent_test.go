package agent

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/enroll"
	nt "github.com/meshmedic/meshmedic/netns/netnstest"
)

func ambientPod(name, uid string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID(uid),
			Annotations: map[string]string{enroll.AnnotationRedirection: "enabled"}},
		Spec: corev1.PodSpec{NodeName: "n1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

// RunOnce over a proc tree and the fake clientset: the captured pod's condition is
// published True, the orphan's False, and a second sweep with nothing changed writes
// nothing (conditions are patched only when they change).
func TestRunOncePublishesConditions(t *testing.T) {
	const ok, orphan = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
	tree := nt.NewTree(t)
	tree.Add(nt.Proc{PID: 10, Cgroup: nt.KubepodsCgroup(ok), Start: 5, Netns: 4026532001, TCP: nt.Ptr(nt.TCP()), TCP6: nt.Ptr(nt.TCP6(nt.Ztunnel(false, 1)...))})
	tree.Add(nt.Proc{PID: 20, Cgroup: nt.KubepodsCgroup(orphan), Start: 6, Netns: 4026532002, TCP: nt.Ptr(nt.TCP()), TCP6: nt.Ptr(nt.TCP6())})
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{enroll.LabelDataplaneMode: "ambient"}}}
	cs := fake.NewClientset(ns, ambientPod("ok", ok), ambientPod("orphan", orphan))
	patches := map[string]corev1.ConditionStatus{}
	cs.PrependReactor("patch", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pa := a.(k8stesting.PatchAction)
		require.Equal(t, "status", pa.GetSubresource())
		var body struct {
			Status struct{ Conditions []corev1.PodCondition } `json:"status"`
		}
		require.NoError(t, json.Unmarshal(pa.GetPatch(), &body))
		require.Len(t, body.Status.Conditions, 1)
		require.Equal(t, detect.ConditionAmbientCaptured, body.Status.Conditions[0].Type)
		patches[pa.GetName()] = body.Status.Conditions[0].Status
		return true, nil, nil
	})
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	a, err := New(cs, Config{NodeName: "n1", ProcRoot: tree.Root, Confirm: 0, Settings: enroll.DefaultSettings()}, WithClock(clk))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a.informerStart(ctx.Done())
	require.True(t, cache.WaitForCacheSync(ctx.Done(), a.synced...))

	require.NoError(t, a.RunOnce(ctx))
	assert.Equal(t, map[string]corev1.ConditionStatus{"ok": corev1.ConditionTrue, "orphan": corev1.ConditionFalse}, patches)
	assert.True(t, a.ready.Load())

	clear(patches)
	clk.Step(time.Second) // not yet the full re-check: nothing is dirty, nothing is read or written
	require.NoError(t, a.RunOnce(ctx))
	assert.Empty(t, patches)
	clk.Step(2 * time.Minute) // the full re-check: same verdicts, so still no patch
	require.NoError(t, a.RunOnce(ctx))
	assert.Empty(t, patches)
}

func TestNewRequiresNodeAndProcRoot(t *testing.T) {
	_, err := New(fake.NewClientset(), Config{ProcRoot: "/proc"})
	assert.ErrorContains(t, err, "node name")
	_, err = New(fake.NewClientset(), Config{NodeName: "n1", ProcRoot: t.TempDir()})
	assert.ErrorContains(t, err, "not a proc root")
}
