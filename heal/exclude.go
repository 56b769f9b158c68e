package heal

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// AnnotationHeal on a pod overrides meshmedic's choice for it: HealNever keeps every
// strategy away from the pod; HealAllow lets destructive strategies heal it despite the
// drain-style exclusions (not despite the bare-pod refusal).
const (
	AnnotationHeal = "meshmedic.io/heal"
	HealNever      = "never"
	HealAllow      = "allow"
)

// Drain-style exclusions, as the cluster autoscaler and `kubectl drain` honour them.
const (
	// AnnotationSafeToEvict "false" is the cluster autoscaler's "do not move this pod".
	AnnotationSafeToEvict = "cluster-autoscaler.kubernetes.io/safe-to-evict"
	// SystemCriticalPriority is the priority of system-cluster-critical and above
	// (k8s.io/kubernetes/pkg/apis/scheduling.SystemCriticalPriority).
	SystemCriticalPriority int32 = 2_000_000_000
)

// Excluded says why a destructive heal (evict, delete) must leave pod p alone, the way a
// drain would: annotated safe-to-evict=false, holding emptyDir data (gone with the pod:
// kubectl drain refuses without --delete-emptydir-data, descheduler without
// evictLocalStoragePods), or of system-critical priority. "" when none applies or the pod
// is annotated meshmedic.io/heal=allow.
func Excluded(p *corev1.Pod) string {
	if p.Annotations[AnnotationHeal] == HealAllow {
		return ""
	}
	if p.Annotations[AnnotationSafeToEvict] == "false" {
		return "annotated " + AnnotationSafeToEvict + "=false"
	}
	for _, v := range p.Spec.Volumes {
		if v.EmptyDir != nil {
			return fmt.Sprintf("emptyDir volume %q holds data that would be lost", v.Name)
		}
	}
	switch {
	case p.Spec.PriorityClassName == "system-node-critical" || p.Spec.PriorityClassName == "system-cluster-critical":
		return "priority class " + p.Spec.PriorityClassName
	case p.Spec.Priority != nil && *p.Spec.Priority >= SystemCriticalPriority:
		return fmt.Sprintf("system-critical priority %d", *p.Spec.Priority)
	}
	return ""
}
