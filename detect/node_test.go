package detect

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/netns"
)

func pod(ns, name, uid string, ann map[string]string, started time.Time) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid), Annotations: ann},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.5", PodIPs: []corev1.PodIP{{IP: "10.244.0.5"}},
			StartTime: &metav1.Time{Time: started}},
	}
}

func listeners(ports ...uint16) netns.Listeners {
	return netns.Listeners{Ports: ports, TCP6: netns.Table{Status: netns.TableOK}, TCP: netns.Table{Status: netns.TableOK}}
}

func TestJoinNode(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	enabled := map[string]string{enroll.AnnotationRedirection: "enabled"}
	ambient := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{enroll.LabelDataplaneMode: "ambient"}}}
	plain := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}}
	static := pod("kube-system", "etcd-node", "99999999-9999-9999-9999-999999999999",
		map[string]string{corev1.MirrorPodAnnotationKey: "0a1b2c3d4e5f60718293a4b5c6d7e8f9"}, now.Add(-time.Hour))
	done := pod("shop", "job", "55555555-5555-5555-5555-555555555555", enabled, now.Add(-time.Hour))
	done.Status.Phase = corev1.PodSucceeded
	in := NodeInput{
		Pods: []corev1.Pod{
			pod("shop", "ok", "11111111-1111-1111-1111-111111111111", enabled, now.Add(-time.Hour)),
			pod("shop", "orphan", "22222222-2222-2222-2222-222222222222", enabled, now.Add(-time.Hour)),
			pod("shop", "new", "33333333-3333-3333-3333-333333333333", nil, now.Add(-time.Second)),
			pod("plain", "web", "44444444-4444-4444-4444-444444444444", nil, now.Add(-time.Hour)),
			pod("shop", "nosandbox", "66666666-6666-6666-6666-666666666666", enabled, now.Add(-time.Hour)),
			static, done,
		},
		Namespaces: map[string]*corev1.Namespace{"shop": ambient, "plain": plain},
		Settings:   enroll.DefaultSettings(),
		Report: netns.NodeReport{Pods: []netns.PodNetns{
			{Sandbox: netns.Sandbox{PodUID: "11111111-1111-1111-1111-111111111111", PID: 10}, Listeners: listeners(15001, 15006, 15008), Capture: netns.Captured},
			{Sandbox: netns.Sandbox{PodUID: "22222222-2222-2222-2222-222222222222", PID: 20}, Listeners: listeners(), Capture: netns.CaptureNone},
			{Sandbox: netns.Sandbox{PodUID: "33333333-3333-3333-3333-333333333333", PID: 30}, Listeners: listeners(), Capture: netns.CaptureNone},
			{Sandbox: netns.Sandbox{PodUID: "44444444-4444-4444-4444-444444444444", PID: 40}, Listeners: listeners(), Capture: netns.CaptureNone},
			{Sandbox: netns.Sandbox{PodUID: "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9", PID: 50, HostNetwork: true}, Capture: netns.CaptureHostNetwork},
			{Sandbox: netns.Sandbox{PodUID: "77777777-7777-7777-7777-777777777777", PID: 70}, Listeners: listeners(15001, 15006, 15008), Capture: netns.Captured},
		}},
		Now:   now,
		Grace: 30 * time.Second,
	}
	got := JoinNode(in)
	classes := map[string]Class{}
	for _, np := range got {
		name := "(no api pod)"
		if np.Pod != nil {
			name = np.Pod.Name
		}
		classes[name] = np.Class
	}
	assert.Equal(t, map[string]Class{
		"ok":           ClassCaptured,
		"orphan":       ClassOrphaned,
		"new":          ClassUnknown, // within grace, not annotated yet
		"web":          ClassSkipped, // not in an ambient namespace
		"nosandbox":    ClassUnknown, // no process found: never "uncaptured"
		"etcd-node":    ClassSkipped, // matched via the mirror annotation; not selected
		"(no api pod)": ClassUnknown,
	}, classes)
	require.Len(t, got, 7, "the terminal pod without a sandbox is left out")
	for _, np := range got {
		if np.Pod != nil && np.Pod.Name == "etcd-node" {
			require.NotNil(t, np.Netns, "static pod joined through its mirror annotation")
			assert.Equal(t, 50, np.Netns.PID)
		}
	}

	// DNS capture known on: 15053 becomes required, so the "ok" pod is partial.
	in.Settings.DNSCapture = enroll.DNSOn
	for _, np := range JoinNode(in) {
		if np.Pod != nil && np.Pod.Name == "ok" {
			assert.Equal(t, ClassPartial, np.Class)
			assert.Contains(t, np.Expectation.Required, uint16(15053))
		}
	}
}

func TestJoinNodeRules(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	enabled := map[string]string{enroll.AnnotationRedirection: "enabled"}
	ambient := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{enroll.LabelDataplaneMode: "ambient"}}}
	present := &netns.RoutingRules{MarkRule4: true, LocalRoute4: true}
	rep := netns.NodeReport{Pods: []netns.PodNetns{
		{Sandbox: netns.Sandbox{PodUID: "11111111-1111-1111-1111-111111111111", PID: 10}, Listeners: listeners(15001, 15006, 15008), Capture: netns.Captured, Rules: present},
		{Sandbox: netns.Sandbox{PodUID: "22222222-2222-2222-2222-222222222222", PID: 20}, Listeners: listeners(15001, 15006, 15008), Capture: netns.Captured, Rules: &netns.RoutingRules{}},
		{Sandbox: netns.Sandbox{PodUID: "33333333-3333-3333-3333-333333333333", PID: 30}, Listeners: listeners(), Capture: netns.CaptureNone, Rules: present},
		{Sandbox: netns.Sandbox{PodUID: "44444444-4444-4444-4444-444444444444", PID: 40}, Listeners: listeners(15001, 15006, 15008), Capture: netns.Captured, RulesErr: errors.New("denied")},
	}}
	got := map[string]Class{}
	for _, np := range JoinNode(NodeInput{
		Pods: []corev1.Pod{
			pod("shop", "ok", "11111111-1111-1111-1111-111111111111", enabled, now.Add(-time.Hour)),
			pod("shop", "bypass", "22222222-2222-2222-2222-222222222222", enabled, now.Add(-time.Hour)),
			pod("shop", "blackhole", "33333333-3333-3333-3333-333333333333", enabled, now.Add(-time.Hour)),
			pod("shop", "unread", "44444444-4444-4444-4444-444444444444", enabled, now.Add(-time.Hour)),
		},
		Namespaces: map[string]*corev1.Namespace{"shop": ambient}, Settings: enroll.DefaultSettings(), Report: rep, Now: now,
	}) {
		got[np.Pod.Name] = np.Class
	}
	assert.Equal(t, map[string]Class{"ok": ClassCaptured, "bypass": ClassBypass, "blackhole": ClassBlackhole, "unread": ClassCaptured}, got)
}
