package heal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Limits are the heal limits that hold fleet-wide: every process that heals through the same
// Ledger (every node's agent, every `meshmedic repair`) draws from them, and they survive
// restarts. A value of 0 means none may be healed; a negative value means unlimited.
type Limits struct {
	// Window is the sliding window the two rates count over (non-positive: the default).
	Window time.Duration
	// ClusterMax is how many pods may be healed in the whole cluster per Window.
	ClusterMax int
	// NamespaceMax is how many pods of one namespace may be healed per Window.
	NamespaceMax int
}

// DefaultLimits are small on purpose: a fleet where many pods orphan at once has a node-level
// cause that the canary and the node breaker are there to find, and an SRE raises them on
// purpose (flags and Helm values of the same names).
var DefaultLimits = Limits{Window: 10 * time.Minute, ClusterMax: 10, NamespaceMax: 5}

// LedgerState is what a Ledger remembers. It is plain data so that every rule applied to it
// is a pure function, tested without an API server; LeaseLedger stores it as JSON.
type LedgerState struct {
	// Heals are the heals inside the current window, oldest first: the cluster-wide rate and
	// the per-namespace caps count them.
	Heals []HealRecord `json:"heals,omitempty"`
	// Backoff is keyed by backoff key: the controller owner's UID (else the pod's), so a
	// replacement that orphans again waits, whoever healed it.
	Backoff map[types.UID]BackoffRecord `json:"backoff,omitempty"`
	// Canaries is keyed by node name: the node-level canary (see NodeMode).
	Canaries map[string]CanaryRecord `json:"canaries,omitempty"`
}

// HealRecord is one heal that counts against the Limits.
type HealRecord struct {
	At        time.Time `json:"at"`
	Namespace string    `json:"ns"`
	Name      string    `json:"name"`
	UID       types.UID `json:"uid"`
	Node      string    `json:"node,omitempty"`
	Key       types.UID `json:"key"`
	By        string    `json:"by,omitempty"` // the healer instance (agent node, CLI host)
	Canary    bool      `json:"canary,omitempty"`
}

// BackoffRecord is the heal history of one backoff key.
type BackoffRecord struct {
	Attempts int       `json:"n"`
	Last     time.Time `json:"last"`
	Until    time.Time `json:"until"`
	// Batch is the Apply call that last healed the key: its siblings in the same call (pods
	// of one ReplicaSet orphaned together) are not blocked by it.
	Batch string `json:"batch,omitempty"`
}

// CanaryState is where a node's canary is.
type CanaryState string

const (
	// CanaryPending: one pod of the node was healed as a canary; the node waits for a pod
	// created after it to show whether the node enrolls pods correctly.
	CanaryPending CanaryState = "pending"
	// CanaryPassed: a pod created after the canary came back captured; the node's other
	// orphans are healed under the limits.
	CanaryPassed CanaryState = "passed"
	// CanaryFailed: a pod created after the canary came back broken too: the node, not its
	// pods, is the problem, and nothing more is healed there until its ztunnel or istio-cni
	// pod changes (restarts, is replaced) or the node recovers.
	CanaryFailed CanaryState = "failed"
)

// CanaryRecord is the canary of one node.
type CanaryRecord struct {
	State   CanaryState `json:"state"`
	Pod     string      `json:"pod"` // namespace/name of the canary
	UID     types.UID   `json:"uid"`
	Started time.Time   `json:"started"`
	Decided time.Time   `json:"decided,omitzero"`
	// Infra is the node's ztunnel/istio-cni fingerprint (NodeHealth.Infra) when the canary
	// started: a failed canary is retried once it changes.
	Infra  string `json:"infra,omitempty"`
	Detail string `json:"detail,omitempty"`
	By     string `json:"by,omitempty"`
	Batch  string `json:"batch,omitempty"`
}

// Ledger is the memory the safety limits keep across processes, restarts and nodes.
// Implementations: NewMemoryLedger (one process; the default of a Healer) and NewLeaseLedger
// (a coordination.k8s.io Lease, resourceVersion-guarded, shared by every agent and the CLI).
type Ledger interface {
	// Load returns the current state.
	Load(ctx context.Context) (LedgerState, error)
	// Update reads the current state, applies fn to it and stores the result so that no
	// concurrent update is lost (it may call fn again on a fresh state after a conflict, so
	// fn must depend on nothing but its argument). An error from fn is returned as is and
	// nothing is written; ErrNoChange from fn skips the write without an error.
	Update(ctx context.Context, fn func(*LedgerState) error) (LedgerState, error)
}

// ErrNoChange, returned by an Update function, means there is nothing to write.
var ErrNoChange = errors.New("no change")

// ErrLedgerUnavailable wraps every failure to read or write a Ledger. Heals fail closed on
// it: a limit that cannot be read is not a limit that holds.
var ErrLedgerUnavailable = errors.New("heal ledger unavailable")

// MemoryLedger is a Ledger inside one process: what a Healer uses when it is given none.
// Its limits hold across the Healer's calls but not across processes or restarts.
type MemoryLedger struct {
	mu sync.Mutex
	st LedgerState
}

// NewMemoryLedger returns an empty in-process Ledger.
func NewMemoryLedger() *MemoryLedger { return &MemoryLedger{} }

// Load implements Ledger.
func (m *MemoryLedger) Load(context.Context) (LedgerState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.clone(), nil
}

// Update implements Ledger.
func (m *MemoryLedger) Update(_ context.Context, fn func(*LedgerState) error) (LedgerState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.st.clone()
	if err := fn(&st); err != nil {
		if errors.Is(err, ErrNoChange) {
			return m.st.clone(), nil
		}
		return m.st.clone(), err
	}
	m.st = st
	return st.clone(), nil
}

func (s LedgerState) clone() LedgerState {
	out := LedgerState{Heals: slices.Clone(s.Heals)}
	if s.Backoff != nil {
		out.Backoff = make(map[types.UID]BackoffRecord, len(s.Backoff))
		for k, v := range s.Backoff {
			out.Backoff[k] = v
		}
	}
	if s.Canaries != nil {
		out.Canaries = make(map[string]CanaryRecord, len(s.Canaries))
		for k, v := range s.Canaries {
			out.Canaries[k] = v
		}
	}
	return out
}

// Bounds on what a ledger keeps, whatever the limits say: the Lease's annotations must stay
// far below the API server's 256 KiB.
const (
	// MaxLimit is the most heals per window a ledger remembers; higher limits are clamped
	// to it (an unlimited ClusterMax stays unlimited, but a namespace cap then counts only
	// the latest MaxLimit heals).
	MaxLimit          = 250
	maxHealRecords    = MaxLimit
	maxBackoffRecords = 400
	maxCanaryRecords  = 100
	// canaryRecordTTL: a decided canary record older than this is forgotten (the node is
	// judged afresh).
	canaryRecordTTL = 24 * time.Hour
)

// prune drops what no longer counts: heals outside the window, backoff streaks that ended
// (2×max without a heal, as client-go's flowcontrol.Backoff), old canary records, and the
// oldest entries beyond the hard bounds.
func (s *LedgerState) prune(now time.Time, window, backoffMax time.Duration) {
	s.Heals = slices.DeleteFunc(s.Heals, func(h HealRecord) bool { return now.Sub(h.At) >= window || h.At.After(now.Add(window)) })
	// Room for the one record a reserve may add.
	if n := len(s.Heals) - (maxHealRecords - 1); n > 0 {
		s.Heals = slices.Delete(s.Heals, 0, n)
	}
	for k, b := range s.Backoff {
		if now.Sub(b.Last) > 2*backoffMax {
			delete(s.Backoff, k)
		}
	}
	dropOldest(s.Backoff, maxBackoffRecords-1, func(b BackoffRecord) time.Time { return b.Last })
	for n, c := range s.Canaries {
		last := c.Decided
		if last.IsZero() {
			last = c.Started
		}
		if now.Sub(last) > canaryRecordTTL {
			delete(s.Canaries, n)
		}
	}
	dropOldest(s.Canaries, maxCanaryRecords-1, func(c CanaryRecord) time.Time { return c.Started })
}

func dropOldest[K comparable, V any](m map[K]V, limit int, at func(V) time.Time) {
	for len(m) > limit {
		var oldest K
		var t time.Time
		first := true
		for k, v := range m {
			if first || at(v).Before(t) {
				oldest, t, first = k, at(v), false
			}
		}
		delete(m, oldest)
	}
}

// claim is one heal asking the ledger for room.
type claim struct {
	rec    HealRecord
	batch  string
	mode   NodeMode // the node's verdict when the heal was planned
	infra  string   // the node's infra fingerprint, for a canary record
	detail string
	// seen is the node's canary record as the planner saw it: a NodeCanary claim may replace
	// that record (timed out, or failed before the node's infra changed), not a newer one.
	seen *CanaryRecord
}

func (c claim) supersedes(cr CanaryRecord) bool {
	return c.mode == NodeCanary && c.seen != nil && c.seen.UID == cr.UID && c.seen.Started.Equal(cr.Started)
}

// reservation is what reserve changed, so that release can undo it.
type reservation struct {
	claim
	prev    *BackoffRecord // the key's record before, nil when there was none
	started bool           // a canary record was written for this claim
}

// reserve applies the fleet-wide rules to one claim against s and, when they allow it,
// records the heal: the key's backoff (unless a sibling of the same batch already started
// it), the cluster-wide rate, the namespace cap, and the node's canary. It returns a
// refusal wrapping ErrBackoff, ErrBudgetExhausted or ErrCanaryPending otherwise.
func (s *LedgerState) reserve(now time.Time, c claim, l Limits, p backoffPolicy) (reservation, Result, error) {
	s.prune(now, l.Window, p.max)
	r := reservation{claim: c}
	ref := c.rec.Namespace + "/" + c.rec.Name
	if b, ok := s.Backoff[c.rec.Key]; ok && now.Before(b.Until) && b.Batch != c.batch {
		return r, ResultSkippedBackoff, fmt.Errorf("pod %s: its controller's pods were healed %d time(s), last at %s; next attempt after %s: %w",
			ref, b.Attempts, b.Last.UTC().Format(time.RFC3339), b.Until.UTC().Format(time.RFC3339), ErrBackoff)
	}
	if l.ClusterMax >= 0 && len(s.Heals) >= l.ClusterMax {
		return r, ResultSkippedBudget, fmt.Errorf("pod %s: cluster-wide heal rate of %d per %s spent%s: %w",
			ref, l.ClusterMax, l.Window, nextSlot(s.Heals, l.Window), ErrBudgetExhausted)
	}
	if l.NamespaceMax >= 0 {
		var inNS []HealRecord
		for _, h := range s.Heals {
			if h.Namespace == c.rec.Namespace {
				inNS = append(inNS, h)
			}
		}
		if len(inNS) >= l.NamespaceMax {
			return r, ResultSkippedBudget, fmt.Errorf("pod %s: namespace %s's heal cap of %d per %s spent%s: %w",
				ref, c.rec.Namespace, l.NamespaceMax, l.Window, nextSlot(inNS, l.Window), ErrBudgetExhausted)
		}
	}
	node := c.rec.Node
	if cr, ok := s.Canaries[node]; ok && node != "" && cr.State == CanaryPending && cr.Batch != c.batch && !c.supersedes(cr) {
		// Another healer started a canary on this node since this one planned: wait for it.
		return r, ResultWaitingForCanary, fmt.Errorf("pod %s: node %q has a canary in flight (%s, since %s): %w",
			ref, node, cr.Pod, cr.Started.UTC().Format(time.RFC3339), ErrCanaryPending)
	}
	if c.mode == NodeCanary {
		if s.Canaries == nil {
			s.Canaries = map[string]CanaryRecord{}
		}
		s.Canaries[node] = CanaryRecord{State: CanaryPending, Pod: ref, UID: c.rec.UID, Started: now,
			Infra: c.infra, By: c.rec.By, Batch: c.batch, Detail: c.detail}
		r.started = true
		c.rec.Canary = true
		r.rec.Canary = true
	}

	c.rec.At = now
	r.rec.At = now
	s.Heals = append(s.Heals, c.rec)
	if s.Backoff == nil {
		s.Backoff = map[types.UID]BackoffRecord{}
	}
	b, had := s.Backoff[c.rec.Key]
	if had {
		prev := b
		r.prev = &prev
	}
	if !had || b.Batch != c.batch {
		if !had || now.Sub(b.Last) > 2*p.max {
			b = BackoffRecord{}
		}
		b.Attempts++
		b.Until = now.Add(p.delay(b.Attempts))
	}
	b.Last, b.Batch = now, c.batch
	s.Backoff[c.rec.Key] = b
	return r, "", nil
}

// release undoes a reservation whose heal did not happen (blocked by a PDB, the pod already
// gone): it must not spend the limits nor start the backoff. Entries that changed since
// (another healer's) are left alone.
func (s *LedgerState) release(r reservation) {
	s.Heals = slices.DeleteFunc(s.Heals, func(h HealRecord) bool {
		return h.UID == r.rec.UID && h.At.Equal(r.rec.At) && h.Key == r.rec.Key
	})
	if b, ok := s.Backoff[r.rec.Key]; ok && b.Batch == r.batch {
		if r.prev == nil {
			delete(s.Backoff, r.rec.Key)
		} else {
			s.Backoff[r.rec.Key] = *r.prev
		}
	}
	if cr, ok := s.Canaries[r.rec.Node]; ok && r.started && cr.UID == r.rec.UID && cr.State == CanaryPending {
		delete(s.Canaries, r.rec.Node)
	}
}

// nextSlot says when the oldest counted heal leaves the window.
func nextSlot(heals []HealRecord, window time.Duration) string {
	if len(heals) == 0 {
		return ""
	}
	oldest := heals[0].At
	for _, h := range heals[1:] {
		if h.At.Before(oldest) {
			oldest = h.At
		}
	}
	return "; next slot at " + oldest.Add(window).UTC().Format(time.RFC3339)
}

// backoffPolicy is the per-key exponential backoff: base after the first heal, doubling up
// to max.
type backoffPolicy struct{ base, max time.Duration }

func (p backoffPolicy) delay(attempts int) time.Duration {
	d := p.base
	for i := 1; i < attempts; i++ {
		d *= 2
		if d >= p.max || d <= 0 {
			return p.max
		}
	}
	return min(d, p.max)
}
