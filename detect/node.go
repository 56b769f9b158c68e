package detect

import (
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/netns"
)

// NodePod is one pod of a node-local view: the API's pod (nil when a sandbox has no API
// pod), what its netns shows (nil when the API pod has no sandbox), enroll's expectation
// and the resulting class.
type NodePod struct {
	Pod         *corev1.Pod
	Netns       *netns.PodNetns
	Expectation enroll.Expectation
	Class       Class
	Capture     netns.Capture // judged on Expectation.Required
}

// NodeInput is everything JoinNode needs, already fetched.
type NodeInput struct {
	Pods       []corev1.Pod                 // the API's pods bound to the node
	Namespaces map[string]*corev1.Namespace // by name; a missing entry means unknown
	Settings   enroll.Settings
	Report     netns.NodeReport
	Now        time.Time
	Grace      time.Duration // how long a pod may run un-annotated before it is not-enrolled
}

// JoinNode matches the API's pods with the sandboxes found on the node (by the UID the
// kubelet puts in cgroup paths: the pod UID, or a static pod's config hash from its
// mirror annotation) and classifies each. Sandboxes without an API pod are returned with
// Pod nil and Class unknown; terminal API pods without a sandbox are left out.
func JoinNode(in NodeInput) []NodePod {
	byUID := make(map[string]int, len(in.Report.Pods))
	for i, p := range in.Report.Pods {
		byUID[p.PodUID] = i
	}
	used := make([]bool, len(in.Report.Pods))
	out := make([]NodePod, 0, len(in.Pods)+len(in.Report.Pods))
	for i := range in.Pods {
		pod := &in.Pods[i]
		exp := enroll.Expect(pod, in.Namespaces[pod.Namespace], in.Settings)
		ev := Evidence{Expectation: exp, Redirection: pod.Annotations[enroll.AnnotationRedirection], Grace: in.Grace}
		if st := pod.Status.StartTime; st != nil {
			ev.Unenrolled = in.Now.Sub(st.Time)
		}
		np := NodePod{Pod: pod, Expectation: exp}
		if idx, ok := byUID[SandboxUID(pod)]; ok {
			used[idx] = true
			np.Netns = &in.Report.Pods[idx]
			ev.Capture = np.Netns.Capture
			if ev.Capture != netns.CaptureUnknown && ev.Capture != netns.CaptureHostNetwork && len(exp.Required) > 0 {
				ev.Capture = np.Netns.Listeners.Capture(exp.Required)
			}
			if np.Netns.Rules != nil {
				ev.Rules = np.Netns.Rules.State()
			}
		} else {
			if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
				continue
			}
			ev.Capture = netns.CaptureUnknown
		}
		np.Capture = ev.Capture
		np.Class = Classify(ev)
		out = append(out, np)
	}
	for i := range in.Report.Pods {
		if !used[i] {
			out = append(out, NodePod{Netns: &in.Report.Pods[i], Capture: in.Report.Pods[i].Capture, Class: ClassUnknown})
		}
	}
	return out
}

// SandboxUID is the UID the kubelet uses in cgroup paths: the pod's UID, except for a
// static pod's mirror, whose kubernetes.io/config.mirror annotation holds the real one.
func SandboxUID(pod *corev1.Pod) string {
	if m := pod.Annotations[corev1.MirrorPodAnnotationKey]; m != "" {
		if uid, ok := netns.PodUIDInCgroupLine("pod" + m); ok {
			return uid
		}
	}
	return string(pod.UID)
}
