package heal

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
)

// Strategy names, as they appear in Action.Strategy and on the command line.
const (
	StrategyEvict  = "evict"
	StrategyToggle = "toggle"
	StrategyDelete = "delete"
)

// Evicter sends one policy/v1 Eviction. Implementations must not wait out a 429 themselves:
// the caller decides when to try again.
type Evicter interface {
	Evict(ctx context.Context, ev *policyv1.Eviction) error
}

// EvicterFunc adapts a function to Evicter. Note that client-go's typed
// Evictions(ns).Evict retries a 429 that carries Retry-After up to ten times (about
// 110 s against a real API server); use NewEvicter there, keep EvicterFunc for fakes.
type EvicterFunc func(ctx context.Context, ev *policyv1.Eviction) error

// Evict calls f.
func (f EvicterFunc) Evict(ctx context.Context, ev *policyv1.Eviction) error { return f(ctx, ev) }

// NewEvicter returns an Evicter that POSTs to the pods/eviction subresource through c
// (clientset.PolicyV1().RESTClient()) with MaxRetries(0), so a PodDisruptionBudget's
// 429 comes back at once instead of being retried inside client-go.
func NewEvicter(c rest.Interface) Evicter { return &restEvicter{c: c} }

type restEvicter struct{ c rest.Interface }

func (e *restEvicter) Evict(ctx context.Context, ev *policyv1.Eviction) error {
	if ev == nil {
		return errors.New("evict: nil Eviction")
	}
	if rc, ok := e.c.(*rest.RESTClient); e.c == nil || (ok && rc == nil) {
		// A fake clientset's RESTClient() is a nil *rest.RESTClient.
		return fmt.Errorf("pod %s/%s: evict: no REST client (fake clientsets have none: use EvicterFunc)", ev.Namespace, ev.Name)
	}
	// Same path as client-go's typed Evict (kubernetes/typed/policy/v1/eviction_expansion.go):
	// the subresource lives under /api/v1 even though the body is policy/v1.
	err := e.c.Post().
		AbsPath("/api/v1").
		Namespace(ev.Namespace).
		Resource("pods").
		Name(ev.Name).
		SubResource("eviction").
		MaxRetries(0).
		Body(ev).
		Do(ctx).
		Error()
	// The API's error as it is: the strategy names the pod once (it said "pod x: ... pod x:").
	return err
}

// EvictOptions configures the evict strategy. Zero values take the defaults.
type EvictOptions struct {
	// Clock times the wait for the pod to go (default: the real clock).
	Clock clock.Clock
	// Timeout bounds the wait, after an accepted eviction, for the pod with that UID to be
	// gone or replaced (default 2m). Negative: do not wait.
	Timeout time.Duration
	// PollInterval is how often the pod is read while waiting (default 2s).
	PollInterval time.Duration
}

// Evict restarts a pod through the Eviction API, so PodDisruptionBudgets are honoured.
// It is the default strategy.
type Evict struct {
	evicter Evicter
	pods    corev1client.PodsGetter
	o       EvictOptions
}

// NewEvict returns the evict strategy. pods is used to confirm that the evicted pod is gone.
func NewEvict(e Evicter, pods corev1client.PodsGetter, o EvictOptions) *Evict {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 2 * time.Second
	}
	return &Evict{evicter: e, pods: pods, o: o}
}

// Name returns "evict".
func (*Evict) Name() string { return StrategyEvict }

// ReplacesPod returns true: an evicted bare pod is gone for good.
func (*Evict) ReplacesPod() bool { return true }

// Heal evicts t.Pod (only that UID). A 429 is blocked-by-pdb with ErrPDBBlocked; a pod
// already gone is "evicted" with ErrAlreadyGone as the explanation. After a real eviction
// it waits until the pod with that UID is gone or replaced. In a dry run the Eviction
// carries DryRun=All, so the API's PDB verdict is real.
func (s *Evict) Heal(ctx context.Context, t Target, dryRun bool) (Result, error) {
	p := t.Pod
	if p == nil {
		return ResultFailed, errors.New("evict: target without a pod")
	}
	ref := podRef(p)
	ev := &policyv1.Eviction{
		ObjectMeta:    metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: uidPrecondition(p)},
	}
	if dryRun {
		ev.DeleteOptions.DryRun = []string{metav1.DryRunAll}
	}
	err := s.evicter.Evict(ctx, ev)
	switch {
	case err == nil:
	case IsPDBBlocked(err):
		if errors.Is(err, ErrPDBBlocked) {
			return ResultBlockedByPDB, fmt.Errorf("pod %s: %w", ref, err)
		}
		return ResultBlockedByPDB, fmt.Errorf("pod %s: %w: %w", ref, ErrPDBBlocked, err)
	case apierrors.IsNotFound(err):
		return goneResult(p, goneOutcome(dryRun, ResultEvicted), "not found when evicting")
	case apierrors.IsConflict(err):
		// The UID precondition failed: the name may now belong to a replacement.
		if gone, _, gerr := podGone(ctx, s.pods, p); gerr == nil && gone {
			return goneResult(p, goneOutcome(dryRun, ResultEvicted), "replaced before the eviction")
		}
		return ResultFailed, fmt.Errorf("pod %s: eviction conflict: %w", ref, err)
	default:
		return ResultFailed, fmt.Errorf("pod %s: eviction: %w", ref, err)
	}
	if dryRun {
		return ResultWouldEvict, nil
	}
	if s.o.Timeout < 0 {
		return ResultEvicted, nil
	}

	var lastErr error
	werr := poll(ctx, s.o.Clock, s.o.PollInterval, s.o.Timeout, func(ctx context.Context) (bool, error) {
		gone, _, err := podGone(ctx, s.pods, p)
		if err != nil {
			lastErr = err // transient read errors do not end the wait
			return false, nil
		}
		return gone, nil
	})
	switch {
	case werr == nil:
		return ResultEvicted, nil
	case errors.Is(werr, errWaitTimeout):
		err := fmt.Errorf("pod %s: eviction accepted but uid %s still present after %s (check its grace period and finalizers)", ref, p.UID, s.o.Timeout)
		if lastErr != nil {
			err = fmt.Errorf("%w; last read error: %w", err, lastErr)
		}
		return ResultFailed, err
	default:
		return ResultFailed, fmt.Errorf("pod %s: eviction accepted; stopped waiting for it to go: %w", ref, werr)
	}
}

// IsPDBBlocked reports whether err is a PodDisruptionBudget refusal: ErrPDBBlocked, or the
// Eviction API's 429 TooManyRequests that carries the DisruptionBudget cause (or, from API
// servers older than that cause, says "disruption budget"); see kubernetes
// pkg/registry/core/pod/storage/eviction.go, createTooManyRequestsError. Any other 429 is
// the API server throttling the client (API Priority and Fairness, max-in-flight: a
// "Too many requests" with a Retry-After and no such cause): it says nothing about
// budgets, so it is not reported as blocked-by-pdb.
func IsPDBBlocked(err error) bool {
	if errors.Is(err, ErrPDBBlocked) {
		return true
	}
	if !apierrors.IsTooManyRequests(err) {
		return false
	}
	if apierrors.HasStatusCause(err, policyv1.DisruptionBudgetCause) {
		return true
	}
	var st apierrors.APIStatus
	return errors.As(err, &st) && strings.Contains(strings.ToLower(st.Status().Message), "disruption budget")
}
