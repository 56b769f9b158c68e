package heal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/utils/clock"
)

// LedgerLeaseName is the Lease that holds the fleet-wide heal ledger in meshmedic's
// namespace; LedgerAnnotation is the annotation on it that holds the state as JSON.
const (
	LedgerLeaseName  = "meshmedic-heal-ledger"
	LedgerAnnotation = "meshmedic.io/heal-ledger"
)

// LeaseLedger is a Ledger kept in one coordination.k8s.io Lease: every agent and every
// `meshmedic repair` of the cluster read it and write it with the Lease's resourceVersion as
// the guard (an update that lost a race gets 409 Conflict, re-reads and re-applies its
// rules), the way leader election and kured's lock use an API object instead of a protocol
// of their own. It is written only when a heal is recorded or undone and when a canary
// changes state — never while nothing is healed. holderIdentity and renewTime name the last
// writer and when it wrote.
type LeaseLedger struct {
	leases          coordinationv1client.LeasesGetter
	namespace, name string
	holder          string
	clock           clock.PassiveClock
	timeout         time.Duration
	attempts        int
}

// LeaseLedgerOption tunes NewLeaseLedger.
type LeaseLedgerOption func(*LeaseLedger)

// LeaseLedgerName sets the Lease's name (default LedgerLeaseName).
func LeaseLedgerName(name string) LeaseLedgerOption { return func(l *LeaseLedger) { l.name = name } }

// LeaseLedgerClock sets the clock for renewTime (default the real clock).
func LeaseLedgerClock(c clock.PassiveClock) LeaseLedgerOption {
	return func(l *LeaseLedger) { l.clock = c }
}

// LeaseLedgerTimeout bounds one Load or Update, retries included (default 15s).
func LeaseLedgerTimeout(d time.Duration) LeaseLedgerOption {
	return func(l *LeaseLedger) { l.timeout = d }
}

// NewLeaseLedger returns a Ledger in the Lease namespace/LedgerLeaseName, written by holder
// (e.g. "agent/<node>" or "cli/<user>@<host>"). The Lease is created on the first write.
// RBAC: get, create and update on leases in that namespace.
func NewLeaseLedger(leases coordinationv1client.LeasesGetter, namespace, holder string, opts ...LeaseLedgerOption) *LeaseLedger {
	l := &LeaseLedger{leases: leases, namespace: namespace, name: LedgerLeaseName, holder: holder,
		clock: clock.RealClock{}, timeout: 15 * time.Second, attempts: 10}
	for _, o := range opts {
		o(l)
	}
	return l
}

func (l *LeaseLedger) where() string { return "lease " + l.namespace + "/" + l.name }

// Load implements Ledger. A missing Lease is an empty ledger; any other failure wraps
// ErrLedgerUnavailable.
func (l *LeaseLedger) Load(ctx context.Context) (LedgerState, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	_, st, err := l.get(ctx)
	return st, err
}

func (l *LeaseLedger) get(ctx context.Context) (*coordinationv1.Lease, LedgerState, error) {
	lease, err := l.leases.Leases(l.namespace).Get(ctx, l.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, LedgerState{}, nil
	}
	if err != nil {
		return nil, LedgerState{}, fmt.Errorf("%s: %w: %w", l.where(), ErrLedgerUnavailable, err)
	}
	st, err := decodeLedger(lease.Annotations[LedgerAnnotation])
	if err != nil {
		return nil, LedgerState{}, fmt.Errorf("%s: annotation %s: %w: %w", l.where(), LedgerAnnotation, ErrLedgerUnavailable, err)
	}
	return lease, st, nil
}

// decodeLedger parses the annotation; an empty one is an empty ledger.
func decodeLedger(s string) (LedgerState, error) {
	var st LedgerState
	if s == "" {
		return st, nil
	}
	if err := json.Unmarshal([]byte(s), &st); err != nil {
		return LedgerState{}, err
	}
	return st, nil
}

// Update implements Ledger: read, apply fn, write with the read's resourceVersion; on a
// conflict (or a create that raced another create) read again and re-apply, a bounded number
// of times with a short jittered pause.
func (l *LeaseLedger) Update(ctx context.Context, fn func(*LedgerState) error) (LedgerState, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	var lastErr error
	for attempt := 0; attempt < l.attempts; attempt++ {
		if attempt > 0 {
			pause := time.Duration(20+rand.IntN(80)) * time.Millisecond * time.Duration(attempt)
			select {
			case <-ctx.Done():
				return LedgerState{}, fmt.Errorf("%s: %w: %w (last: %v)", l.where(), ErrLedgerUnavailable, ctx.Err(), lastErr)
			case <-time.After(pause):
			}
		}
		lease, st, err := l.get(ctx)
		if err != nil {
			return LedgerState{}, err
		}
		before := st.clone()
		if err := fn(&st); err != nil {
			if errors.Is(err, ErrNoChange) {
				return before, nil
			}
			return before, err
		}
		body, err := json.Marshal(st)
		if err != nil {
			return before, fmt.Errorf("%s: encoding: %w", l.where(), err)
		}
		now := metav1.NewMicroTime(l.clock.Now())
		holder := l.holder
		exists := lease != nil
		if !exists {
			lease = &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: l.name, Namespace: l.namespace,
					Labels: map[string]string{"app.kubernetes.io/name": "meshmedic", "app.kubernetes.io/component": "heal-ledger"}},
				Spec: coordinationv1.LeaseSpec{AcquireTime: &now},
			}
		}
		if lease.Annotations == nil {
			lease.Annotations = map[string]string{}
		}
		lease.Annotations[LedgerAnnotation] = string(body)
		lease.Spec.HolderIdentity = &holder
		lease.Spec.RenewTime = &now
		if exists {
			// The read's resourceVersion travels in lease: a write in between is a 409.
			_, err = l.leases.Leases(l.namespace).Update(ctx, lease, metav1.UpdateOptions{})
		} else {
			_, err = l.leases.Leases(l.namespace).Create(ctx, lease, metav1.CreateOptions{})
		}
		switch {
		case err == nil:
			return st, nil
		case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
			lastErr = err
			continue
		default:
			return before, fmt.Errorf("%s: %w: %w", l.where(), ErrLedgerUnavailable, err)
		}
	}
	return LedgerState{}, fmt.Errorf("%s: %w: %d conflicting writes in a row: %w", l.where(), ErrLedgerUnavailable, l.attempts, lastErr)
}
