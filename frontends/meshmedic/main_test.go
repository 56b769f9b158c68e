package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshmedic/meshmedic/frontends/cli"
)

// recordExit stands in for os.Exit: it records the code and lets the blocked command go.
type recordExit struct {
	mu      sync.Mutex
	codes   []int
	release chan struct{}
}

func (r *recordExit) exit(code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.codes = append(r.codes, code)
	close(r.release)
}

func (r *recordExit) got() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.codes...)
}

// A command that ignores its context (blocked in something no context reaches) is ended by
// the second signal at once, with 128 + that signal.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	rec := &recordExit{release: make(chan struct{})}
	var stderr bytes.Buffer
	st := stopper{name: "meshmedic", grace: time.Hour, stderr: &stderr, exit: rec.exit}
	sigs := make(chan os.Signal, 2)
	cancelled := make(chan struct{})
	code := make(chan int, 1)
	go func() {
		code <- st.run(sigs, func(ctx context.Context) error {
			<-ctx.Done()
			close(cancelled)
			<-rec.release // "blocked" until the process would have exited
			return ctx.Err()
		})
	}()
	sigs <- syscall.SIGINT
	<-cancelled // the first signal cancelled the context
	sigs <- syscall.SIGTERM
	<-code
	if got := rec.got(); len(got) != 1 || got[0] != 143 {
		t.Fatalf("exit codes %v, want one exit(143) for the second signal (SIGTERM)", got)
	}
	if !strings.Contains(stderr.String(), "again: exiting now") {
		t.Errorf("stderr %q", stderr.String())
	}
}

// With no second signal, the grace period ends a command that does not return.
func TestGraceEndsAStuckCommand(t *testing.T) {
	rec := &recordExit{release: make(chan struct{})}
	var stderr bytes.Buffer
	st := stopper{name: "meshmedic", grace: time.Millisecond, stderr: &stderr, exit: rec.exit}
	sigs := make(chan os.Signal, 2)
	code := make(chan int, 1)
	go func() {
		code <- st.run(sigs, func(ctx context.Context) error {
			<-rec.release
			return errors.New("late")
		})
	}()
	sigs <- syscall.SIGINT
	<-code
	if got := rec.got(); len(got) != 1 || got[0] != 130 {
		t.Fatalf("exit codes %v, want exit(130) once the grace ran out", got)
	}
	if !strings.Contains(stderr.String(), "still running") {
		t.Errorf("stderr %q", stderr.String())
	}
}

// A command that returns once its context is cancelled exits 128+signal; one that returns
// nil (the agent's graceful stop) exits 0; without a signal, the documented codes.
func TestExitCodes(t *testing.T) {
	run := func(sig os.Signal, err error) (int, string) {
		var stderr bytes.Buffer
		st := stopper{name: "meshmedic", grace: time.Hour, stderr: &stderr, exit: func(c int) { t.Errorf("exit(%d) called", c) }}
		sigs := make(chan os.Signal, 1)
		if sig != nil {
			sigs <- sig
		}
		return st.run(sigs, func(ctx context.Context) error {
			if sig != nil {
				<-ctx.Done()
			}
			return err
		}), stderr.String()
	}
	for _, c := range []struct {
		sig    os.Signal
		err    error
		code   int
		stderr string
	}{
		{nil, nil, 0, ""},
		{nil, cli.ErrFindings, 1, ""},
		{nil, errors.New("boom"), 2, "meshmedic: error: boom"},
		{syscall.SIGINT, context.Canceled, 130, "stopped by interrupt"},
		{syscall.SIGTERM, context.Canceled, 143, "stopped by terminated"},
		{syscall.SIGTERM, nil, 0, ""},
	} {
		code, stderr := run(c.sig, c.err)
		if code != c.code || (c.stderr == "" && stderr != "") || !strings.Contains(stderr, c.stderr) {
			t.Errorf("signal %v, err %v: code %d stderr %q; want %d %q", c.sig, c.err, code, stderr, c.code, c.stderr)
		}
	}
}
