// Package heal fixes confirmed ambient orphans without making things worse: eviction
// that honours PodDisruptionBudgets, budgets, per-pod backoff, bare-pod refusal,
// server-side dry run and an Event for every action.
package heal
