package heal

import "errors"

// Sentinels for the outcomes callers branch on. Every error the package returns for one
// of these outcomes wraps the sentinel (check with errors.Is) and names the pod.
var (
	// ErrPDBBlocked: the API refused the eviction with 429 TooManyRequests, which is how
	// a PodDisruptionBudget says "not now". It is retried on a later sweep, is not a
	// failure, does not consume a budget and does not start the backoff.
	ErrPDBBlocked = errors.New("eviction blocked by a PodDisruptionBudget")
	// ErrBudgetExhausted: a per-run, per-node or per-namespace budget, or a fleet-wide
	// limit (cluster rate, namespace cap), is spent.
	ErrBudgetExhausted = errors.New("heal budget exhausted")
	// ErrBarePod: the pod has no controller owner, so a restart would not bring it back.
	ErrBarePod = errors.New("pod has no controller owner")
	// ErrBackoff: the pod (or its controller's pods) was healed recently.
	ErrBackoff = errors.New("pod is in heal backoff")
	// ErrNodeBreaker: the node is stopped (NodeStop); the node, not the pod, is the cause.
	ErrNodeBreaker = errors.New("node circuit breaker open")
	// ErrUnknownNotHealed: the target's class is not actionable (unknown, skipped,
	// captured, ...). Unknown is never treated as an orphan.
	ErrUnknownNotHealed = errors.New("finding class is not actionable")
	// ErrCanaryPending: the pod's node is mass-orphaned and another of its pods is the
	// canary; the rest wait for its verdict.
	ErrCanaryPending = errors.New("waiting for the node's canary")
	// ErrExcluded: a drain-style exclusion or the pod's meshmedic.io/heal=never annotation.
	ErrExcluded = errors.New("pod is excluded from healing")
	// ErrAlreadyGone: the target pod (that UID) no longer exists, so there is nothing to
	// do. Strategies return it beside a success Result to explain it; the Healer puts it
	// in Action.Detail and leaves Action.Err nil.
	ErrAlreadyGone = errors.New("pod already gone")
)
