package heal

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// podGone reports whether the pod with p's UID no longer exists: not found, or the name
// now belongs to a pod with another UID (a replacement). kubectl's drain uses the same
// rule (k8s.io/kubectl/pkg/drain, waitForDelete).
func podGone(ctx context.Context, pods corev1client.PodsGetter, p *corev1.Pod) (bool, *corev1.Pod, error) {
	cur, err := pods.Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true, nil, nil
	}
	if err != nil {
		return false, nil, fmt.Errorf("pod %s: get: %w", podRef(p), err)
	}
	if p.UID != "" && cur.UID != p.UID {
		return true, cur, nil
	}
	return false, cur, nil
}

// goneResult is the outcome r for a target whose pod is already gone, explained by an
// error wrapping ErrAlreadyGone.
func goneResult(p *corev1.Pod, r Result, how string) (Result, error) {
	return r, fmt.Errorf("pod %s (uid %s): %s: %w", podRef(p), p.UID, how, ErrAlreadyGone)
}

// goneOutcome is done in a real run (the pod is gone, which is what was wanted) and
// not-actionable in a dry run (there is nothing to try).
func goneOutcome(dryRun bool, done Result) Result {
	if dryRun {
		return ResultNotActionable
	}
	return done
}

// uidPrecondition makes a delete or eviction apply only to the pod the finding was about,
// never to a same-named replacement.
func uidPrecondition(p *corev1.Pod) *metav1.Preconditions {
	if p.UID == "" {
		return nil
	}
	uid := p.UID
	return &metav1.Preconditions{UID: &uid}
}
