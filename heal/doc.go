// Package heal repairs confirmed ambient orphans without making things worse: strategies
// (evict, the default; toggle; delete) behind one safety layer — PDB-honouring eviction,
// budgets, per-pod backoff, a node breaker, bare-pod refusal, server-side dry run, Events.
package heal
