package heal

import (
	"context"
	"errors"
	"time"

	"k8s.io/utils/clock"
)

// errWaitTimeout is returned by poll when the condition did not hold in time.
var errWaitTimeout = errors.New("timed out")

// poll calls cond now and then every interval on clk until it returns true, returns an
// error, ctx ends, or timeout (measured on clk) passes. It never sleeps on the wall clock,
// so tests drive it by stepping a fake clock.
func poll(ctx context.Context, clk clock.Clock, interval, timeout time.Duration, cond func(context.Context) (bool, error)) error {
	deadline := clk.Now().Add(timeout)
	for {
		done, err := cond(ctx)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		left := deadline.Sub(clk.Now())
		if left <= 0 {
			return errWaitTimeout
		}
		t := clk.NewTimer(min(interval, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C():
		}
	}
}
