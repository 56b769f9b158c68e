package cli

import (
	"errors"
	"fmt"
	"io"
	"runtime"

	ucli "github.com/urfave/cli/v2"
)

// ErrFindings is returned (wrapped) by a command that ran to completion and found
// something a person must look at: orphans, signals, a failed action. Exit code 1.
var ErrFindings = errors.New("findings present")

// UsageError marks a problem with how the command was called (exit 2).
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usagef(format string, a ...any) error { return &UsageError{Err: fmt.Errorf(format, a...)} }

// BuildInfo is stamped into the binary by the linker (see frontends/meshmedic).
type BuildInfo struct {
	Version string
	Commit  string
}

// Streams are the process's standard streams; tests pass buffers.
type Streams struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
}

// NewApp builds the meshmedic command tree. name is the program name as invoked
// (meshmedic, or kubectl-meshmedic when used as a kubectl plugin).
func NewApp(name string, info BuildInfo, s Streams) *ucli.App {
	app := &ucli.App{
		Name:                 name,
		Usage:                "find and heal Istio ambient-mesh enrollment orphans",
		Reader:               s.In,
		Writer:               s.Out,
		ErrWriter:            s.Err,
		EnableBashCompletion: true,
		HideVersion:          true,
		// urfave/cli calls os.Exit from its default handler; meshmedic picks exit
		// codes in main only.
		ExitErrHandler: func(*ucli.Context, error) {},
		OnUsageError: func(_ *ucli.Context, err error, _ bool) error {
			return &UsageError{Err: err}
		},
		Commands: []*ucli.Command{
			scanCommand(s),
			repairCommand(s),
			nodeCommand(s),
			logsCommand(s),
			agentCommand(s),
			versionCommand(info, s),
		},
	}
	for _, c := range app.Commands {
		setUsageErrorHandler(c)
	}
	return app
}

func setUsageErrorHandler(c *ucli.Command) {
	if c.OnUsageError == nil {
		c.OnUsageError = func(_ *ucli.Context, err error, _ bool) error { return &UsageError{Err: err} }
	}
	for _, sub := range c.Subcommands {
		setUsageErrorHandler(sub)
	}
}

func versionCommand(info BuildInfo, s Streams) *ucli.Command {
	return &ucli.Command{
		Name:  "version",
		Usage: "print version, commit and Go version",
		Action: func(c *ucli.Context) error {
			v, commit := info.Version, info.Commit
			if v == "" {
				v = "devel"
			}
			if commit == "" {
				commit = "unknown"
			}
			_, err := fmt.Fprintf(s.Out, "meshmedic %s\ncommit: %s\ngo: %s %s/%s\n", v, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}
