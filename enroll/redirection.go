package enroll

import corev1 "k8s.io/api/core/v1"

// Redirection is the state the node agent wrote into the ambient.istio.io/redirection
// annotation (ISTIO-FACTS §1). It is state, not intent: it survives reboots and sandbox
// re-creation, which is why orphans persist.
type Redirection string

const (
	// RedirectionEnabled: rules installed and ztunnel acknowledged (≤1.24 also written on a
	// partial add).
	RedirectionEnabled Redirection = "enabled"
	// RedirectionPending (1.25+): rules installed, ztunnel has not acknowledged; the agent
	// retries.
	RedirectionPending Redirection = "pending"
	// RedirectionDisabled: the 1.21 per-pod opt-out.
	RedirectionDisabled Redirection = "disabled"
	// RedirectionAbsent: no annotation, the pod is not enrolled.
	RedirectionAbsent Redirection = "absent"
	// RedirectionUnrecognized: a value istio-cni never writes.
	RedirectionUnrecognized Redirection = "unrecognized"
)

// RedirectionState reads the ambient.istio.io/redirection annotation of pod (nil pod:
// absent).
func RedirectionState(pod *corev1.Pod) Redirection {
	if pod == nil {
		return RedirectionAbsent
	}
	v, ok := pod.Annotations[AnnotationRedirection]
	if !ok {
		return RedirectionAbsent
	}
	switch r := Redirection(v); r {
	case RedirectionEnabled, RedirectionPending, RedirectionDisabled:
		return r
	}
	return RedirectionUnrecognized
}

// Enrolled reports whether the annotation claims the pod is enrolled: enabled, or pending
// (rules installed) on versions that write pending.
func (r Redirection) Enrolled(v Version) bool {
	return r == RedirectionEnabled || (r == RedirectionPending && writesPending(v))
}
