// Command meshmedic finds and heals Istio ambient-mesh enrollment orphans. It is the only
// place in the module that picks exit codes: 0 nothing found / all done, 1 findings
// present or an action failed, 2 usage or runtime error, 128+N when signal N stopped the
// command (130 for SIGINT, 143 for SIGTERM; the agent stops gracefully and exits 0).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/meshmedic/meshmedic/frontends/cli"
)

// Set by -ldflags "-X main.version=... -X main.commit=...".
var (
	version string
	commit  string
)

// stopGrace is how long a command may take to return after the first SIGINT/SIGTERM has
// cancelled its context. Commands return on their own well within it (reads of stdin and
// FIFOs are interruptible, API calls carry the context); the grace only bounds what cannot
// be interrupted, so that every command ends within 2 s of the signal. A second signal
// exits at once.
const stopGrace = 1500 * time.Millisecond

func main() {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	name := filepath.Base(os.Args[0])
	streams := cli.Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}
	app := cli.NewApp(name, cli.BuildInfo{Version: version, Commit: commit}, streams)
	st := stopper{name: name, grace: stopGrace, stderr: os.Stderr, exit: os.Exit}
	code := st.run(sigs, func(ctx context.Context) error { return cli.Run(ctx, app, os.Args) })
	signal.Stop(sigs)
	os.Exit(code)
}

// stopper runs a command under the signal rules: the first signal cancels the command's
// context; a second one, or the grace running out, exits at once through exit.
type stopper struct {
	name   string
	grace  time.Duration
	stderr io.Writer
	exit   func(code int) // os.Exit; tests record the call
}

// run runs cmd until it returns and gives its exit code.
func (st stopper) run(sigs <-chan os.Signal, cmd func(ctx context.Context) error) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan os.Signal, 1) // the first signal, once received
	done := make(chan struct{})
	watcher := make(chan struct{})
	go func() {
		defer close(watcher)
		var first os.Signal
		select {
		case first = <-sigs:
		case <-done:
			return
		}
		stopped <- first
		cancel()
		timer := time.NewTimer(st.grace)
		defer timer.Stop()
		select {
		case <-done:
		case s := <-sigs:
			fmt.Fprintf(st.stderr, "%s: %s again: exiting now\n", st.name, s)
			st.exit(signalCode(s))
		case <-timer.C:
			fmt.Fprintf(st.stderr, "%s: still running %s after %s: exiting now\n", st.name, st.grace, first)
			st.exit(signalCode(first))
		}
	}()
	err := cmd(ctx)
	close(done)
	<-watcher

	select {
	case s := <-stopped:
		if err != nil {
			// Whatever the command says now is a consequence of being stopped.
			fmt.Fprintf(st.stderr, "%s: stopped by %s\n", st.name, s)
			return signalCode(s)
		}
		return exitCode(nil) // it finished (the agent: a graceful stop)
	default:
	}
	code := exitCode(err)
	if err != nil && code == 2 {
		fmt.Fprintf(st.stderr, "%s: error: %v\n", st.name, err)
	}
	return code
}

// exitCode maps a command's error to the documented exit codes.
func exitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, cli.ErrFindings):
		return 1
	default:
		return 2
	}
}

// signalCode is the shell's convention for a process ended by a signal: 128 + its number.
func signalCode(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return 2
}
