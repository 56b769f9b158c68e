package cli

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

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
// (meshmedic, or kubectl-meshmedic when used as a kubectl plugin). Run it with Run, which
// accepts flags after positional arguments as kubectl does.
func NewApp(name string, info BuildInfo, s Streams) *ucli.App {
	app := &ucli.App{
		Name:                 name,
		Usage:                "find and heal Istio ambient-mesh enrollment orphans",
		Reader:               s.In,
		Writer:               s.Out,
		ErrWriter:            s.Err,
		EnableBashCompletion: true,
		HideVersion:          true, // urfave's own -v/--version: meshmedic has --version (kubectl's -v is verbosity)
		Flags:                []ucli.Flag{versionFlag},
		// urfave/cli calls os.Exit from its default handler; meshmedic picks exit
		// codes in main only.
		ExitErrHandler: func(*ucli.Context, error) {},
		OnUsageError: func(_ *ucli.Context, err error, _ bool) error {
			return &UsageError{Err: err}
		},
		Action: func(c *ucli.Context) error {
			if c.Bool("version") {
				_, err := fmt.Fprint(s.Out, resolveVersion(info).text())
				return err
			}
			if c.NArg() > 0 {
				return unknownCommand(c, name)
			}
			return ucli.ShowAppHelp(c)
		},
		Commands: []*ucli.Command{
			scanCommand(s),
			repairCommand(s),
			nodeCommand(s),
			logsCommand(s),
			stopsGracefully(agentCommand(s)),
			versionCommand(info, s),
			completionCommand(s),
		},
	}
	for _, c := range app.Commands {
		setupCommand(c, []string{name})
	}
	return app
}

// stopsGracefully makes a cancelled context (SIGINT/SIGTERM) a clean stop of c: the agent
// is a long-running process, and a DaemonSet pod told to stop has done nothing wrong.
func stopsGracefully(c *ucli.Command) *ucli.Command {
	action := c.Action
	c.Action = func(ctx *ucli.Context) error {
		err := action(ctx)
		if err != nil && ctx.Context.Err() != nil {
			return nil
		}
		return err
	}
	return c
}

// unknownCommand is kubectl's message for a command that does not exist.
func unknownCommand(c *ucli.Context, parent string) error {
	return usagef("unknown command %q for %q (run '%s --help' for the list)", c.Args().First(), parent, parent)
}

// setupCommand gives every command the same usage-error handling and flag checks, every
// group an unknown-subcommand error, and every runnable command positional arguments only
// (a file named "help" is a file).
func setupCommand(c *ucli.Command, parents []string) {
	if c.OnUsageError == nil {
		c.OnUsageError = func(_ *ucli.Context, err error, _ bool) error { return &UsageError{Err: err} }
	}
	path := append(slices.Clip(parents), c.Name)
	if len(c.Subcommands) > 0 {
		full := strings.Join(path, " ")
		c.Action = func(ctx *ucli.Context) error {
			if ctx.NArg() > 0 {
				return unknownCommand(ctx, full)
			}
			return ucli.ShowSubcommandHelp(ctx)
		}
		for _, sub := range c.Subcommands {
			setupCommand(sub, path)
		}
		return
	}
	c.HideHelpCommand = true
	c.Before = validateFlags
}
