// Command meshmedic finds and heals Istio ambient-mesh enrollment orphans. It is the only
// place in the module that picks exit codes: 0 nothing found / all done, 1 findings
// present or an action failed, 2 usage or runtime error.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/meshmedic/meshmedic/frontends/cli"
)

// Set by -ldflags "-X main.version=... -X main.commit=...".
var (
	version string
	commit  string
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	streams := cli.Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}
	app := cli.NewApp(filepath.Base(os.Args[0]), cli.BuildInfo{Version: version, Commit: commit}, streams)
	err := app.RunContext(ctx, os.Args)
	code := exitCode(err)
	if err != nil && code == 2 {
		fmt.Fprintf(os.Stderr, "%s: error: %v\n", app.Name, err)
	}
	stop()
	os.Exit(code)
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
