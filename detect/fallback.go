package detect

import (
	"context"
	"errors"

	corev1 "k8s.io/api/core/v1"
)

// FallbackProber probes with Primary and, when Primary fails with an error for which When
// returns true, with Secondary. The CLI uses it to reach distroless pods: exec first, and
// an ephemeral container only where exec found no cat (and only when the user allowed it).
type FallbackProber struct {
	Primary, Secondary Prober
	When               func(error) bool
}

// Probe implements Prober.
func (f FallbackProber) Probe(ctx context.Context, pod *corev1.Pod) (Probe, error) {
	p, err := f.Primary.Probe(ctx, pod)
	if err == nil || f.Secondary == nil || f.When == nil || !f.When(err) {
		return p, err
	}
	p2, err2 := f.Secondary.Probe(ctx, pod)
	if err2 != nil {
		return p2, errors.Join(err, err2)
	}
	return p2, nil
}
