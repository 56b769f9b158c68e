package heal

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// Delete deletes the pod outright. It bypasses PodDisruptionBudgets, so it is an explicit
// opt-in only; the default restart is Evict. The delete carries a UID precondition, so a
// same-named replacement is never deleted.
type Delete struct {
	pods corev1client.PodsGetter
}

// NewDelete returns the delete strategy.
func NewDelete(pods corev1client.PodsGetter) *Delete { return &Delete{pods: pods} }

// Name returns "delete".
func (*Delete) Name() string { return StrategyDelete }

// ReplacesPod returns true: a deleted bare pod is gone for good.
func (*Delete) ReplacesPod() bool { return true }

// Heal deletes t.Pod (only that UID); with dryRun the delete carries DryRun=All.
func (s *Delete) Heal(ctx context.Context, t Target, dryRun bool) (Result, error) {
	p := t.Pod
	if p == nil {
		return ResultFailed, errors.New("delete: target without a pod")
	}
	opts := metav1.DeleteOptions{Preconditions: uidPrecondition(p)}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	err := s.pods.Pods(p.Namespace).Delete(ctx, p.Name, opts)
	switch {
	case err == nil:
		if dryRun {
			return ResultWouldDelete, nil
		}
		return ResultDeleted, nil
	case apierrors.IsNotFound(err):
		return goneResult(p, goneOutcome(dryRun, ResultDeleted), "not found when deleting")
	case apierrors.IsConflict(err):
		// The UID precondition failed: the name may now belong to a replacement.
		if gone, _, gerr := podGone(ctx, s.pods, p); gerr == nil && gone {
			return goneResult(p, goneOutcome(dryRun, ResultDeleted), "replaced before the delete")
		}
	}
	return ResultFailed, fmt.Errorf("pod %s: delete: %w", podRef(p), err)
}
