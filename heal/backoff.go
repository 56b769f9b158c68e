package heal

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// backoffEntry is the heal history of one backoff key.
type backoffEntry struct {
	attempts int       // heals in the current streak
	last     time.Time // last heal
	until    time.Time // no heal before this
	notified bool      // a skipped-backoff Event was sent for this window
}

// backoffKey is the controller owner's UID when there is one (a replacement pod gets a new
// UID but keeps its owner, so "the pod keeps orphaning" is seen across replacements), else
// the pod's UID. Pods of one controller therefore share a key: siblings found in the same
// Heal call are all healed, but a later call waits for the window.
func backoffKey(p *corev1.Pod) types.UID {
	if c := metav1.GetControllerOf(p); c != nil && c.UID != "" {
		return c.UID
	}
	return p.UID
}

// recordBackoff starts or extends the key's backoff: base, 2*base, 4*base, ... capped at
// max. A streak ends (attempts reset) once the key has gone 2*max without a heal — the
// same rule as client-go's flowcontrol.Backoff.
func (h *Healer) recordBackoff(key types.UID, now time.Time) {
	e, ok := h.backoff[key]
	if !ok || now.Sub(e.last) > 2*h.o.backoffMax {
		e = &backoffEntry{}
		h.backoff[key] = e
	}
	e.attempts++
	e.last = now
	e.until = now.Add(h.backoffDelay(e.attempts))
	e.notified = false
}

func (h *Healer) backoffDelay(attempts int) time.Duration {
	d := h.o.backoffBase
	for i := 1; i < attempts; i++ {
		d *= 2
		if d >= h.o.backoffMax || d <= 0 {
			return h.o.backoffMax
		}
	}
	return min(d, h.o.backoffMax)
}

// gcBackoff forgets keys whose streak has ended, so the map stays bounded.
func (h *Healer) gcBackoff(now time.Time) {
	for k, e := range h.backoff {
		if now.Sub(e.last) > 2*h.o.backoffMax {
			delete(h.backoff, k)
		}
	}
}
