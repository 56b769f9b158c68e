package heal

import (
	"encoding/json"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// FuzzLedgerAnnotation: whatever the Lease's annotation holds (another version's JSON, a
// hand edit, garbage), decoding either fails — and the ledger is then unavailable, so heals
// fail closed — or gives a state the rules can run on without panicking, and after one
// reserve the state stays within the ledger's bounds and encodes again.
func FuzzLedgerAnnotation(f *testing.F) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	seed := LedgerState{
		Heals:    []HealRecord{{At: now.Add(-time.Minute), Namespace: "shop", Name: "web-1", UID: "u1", Node: "n1", Key: "rs1", By: "agent/n1"}},
		Backoff:  map[types.UID]BackoffRecord{"rs1": {Attempts: 2, Last: now.Add(-time.Minute), Until: now.Add(9 * time.Minute), Batch: "b"}},
		Canaries: map[string]CanaryRecord{"n1": {State: CanaryPending, Pod: "shop/web-1", UID: "u1", Started: now.Add(-time.Minute)}},
	}
	b, _ := json.Marshal(seed)
	f.Add(string(b))
	f.Add("")
	f.Add("{}")
	f.Add(`{"heals":[{"at":"0001-01-01T00:00:00Z"}],"backoff":{"":{"n":-5}},"canaries":{"":{"state":"x"}}}`)
	f.Add(`{"heals":null,"backoff":[]}`)
	f.Fuzz(func(t *testing.T, annotation string) {
		st, err := decodeLedger(annotation)
		if err != nil {
			return
		}
		c := claim{rec: HealRecord{Namespace: "shop", Name: "web-2", UID: "u2", Node: "n1", Key: "rs1"}, batch: "fuzz", mode: NodeCanary}
		r, _, err := st.reserve(now, c, Limits{Window: 10 * time.Minute, ClusterMax: 5, NamespaceMax: 3}, backoffPolicy{base: time.Minute, max: time.Hour})
		if len(st.Heals) > maxHealRecords || len(st.Backoff) > maxBackoffRecords || len(st.Canaries) > maxCanaryRecords {
			t.Fatalf("over the bounds: %d heals, %d backoff, %d canaries", len(st.Heals), len(st.Backoff), len(st.Canaries))
		}
		if err == nil {
			st.release(r)
		}
		if _, err := json.Marshal(st); err != nil {
			t.Fatalf("state does not encode again: %v", err)
		}
	})
}
