package heal

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// backoffKey is the controller owner's UID when there is one (a replacement pod gets a new
// UID but keeps its owner, so "the pod keeps orphaning" is seen across replacements), else
// the pod's UID. Pods of one controller therefore share a key: siblings found in the same
// Apply call are all healed (within the budgets), but a later call — by this healer or any
// other sharing the ledger — waits for the window.
func backoffKey(p *corev1.Pod) types.UID {
	if c := metav1.GetControllerOf(p); c != nil && c.UID != "" {
		return c.UID
	}
	return p.UID
}
