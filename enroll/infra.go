package enroll

import corev1 "k8s.io/api/core/v1"

// Labels of the node-level Istio pods as Istio's Helm charts set them
// (manifests/charts/ztunnel/templates/daemonset.yaml: app=ztunnel;
// manifests/charts/istio-cni/templates/daemonset.yaml: k8s-app=istio-cni-node, and
// app=istio-cni-node on older charts). They say which pod is which kind, not that it is
// trustworthy: callers also check the namespace the pod runs in.
const (
	LabelApp         = "app"
	LabelK8sApp      = "k8s-app"
	AppZtunnel       = "ztunnel"
	AppIstioCNI      = "istio-cni-node"
	LabelSelZtunnel  = LabelApp + "=" + AppZtunnel
	LabelSelIstioCNI = LabelK8sApp + "=" + AppIstioCNI
)

// IsZtunnelPod reports whether p is labelled as a ztunnel pod.
func IsZtunnelPod(p *corev1.Pod) bool { return p != nil && p.Labels[LabelApp] == AppZtunnel }

// IsIstioCNIPod reports whether p is labelled as an istio-cni node agent pod.
func IsIstioCNIPod(p *corev1.Pod) bool {
	return p != nil && (p.Labels[LabelK8sApp] == AppIstioCNI || p.Labels[LabelApp] == AppIstioCNI)
}
