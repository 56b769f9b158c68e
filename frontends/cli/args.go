package cli

import (
	"context"
	"strings"

	ucli "github.com/urfave/cli/v2"
)

// completionFlag is the hidden flag urfave/cli's shell completion appends as the last
// argument (EnableBashCompletion).
const completionFlag = "--generate-bash-completion"

// Run runs app with args as kubectl users expect: flags are accepted before and after
// positional arguments, and `--` ends the flags (see ReorderArgs). Frontends and tests run
// the app through it.
func Run(ctx context.Context, app *ucli.App, args []string) error {
	return app.RunContext(ctx, ReorderArgs(app, args))
}

// ReorderArgs returns args (args[0] is the program name) with every flag of the command
// being run, and its value, moved ahead of the positional arguments, so that urfave/cli v2
// (which stops parsing flags at the first positional argument) sees them. It uses the
// command tree's own flag definitions to know which flags take a value (`-o json`,
// `--output json`; `-o=json` and bool flags are one token). `--` ends the flags: what follows
// stays positional, and a `--` is kept in front of the positional arguments whenever there
// are any, so one that starts with `-` is never read as a flag. Unknown flags stay among the
// flags, where urfave/cli reports them. The input is not modified.
func ReorderArgs(app *ucli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := make([]string, 0, len(args)+1)
	out = append(out, args[0])
	rest := args[1:]
	complete := false
	if n := len(rest); n > 0 && rest[n-1] == completionFlag {
		complete, rest = true, rest[:n-1]
	}

	// The command path: leading command names, with the flags met on the way kept for the
	// leaf (kubectl accepts `kubectl -n ns get pods`).
	var path []string
	var pending []string // tokens seen before the leaf was known
	cmds := app.Commands
	scope := app.Flags
	i := 0
	for i < len(rest) {
		tok := rest[i]
		if tok == "--" {
			break
		}
		if isFlagToken(tok) {
			pending = append(pending, tok)
			if !strings.Contains(tok, "=") && takesValue(subtreeFlags(scope, cmds), flagName(tok)) && i+1 < len(rest) {
				pending = append(pending, rest[i+1])
				i++
			}
			i++
			continue
		}
		c := findCommand(cmds, tok)
		if c == nil {
			break // a positional argument (or an unknown command: the app reports it)
		}
		path = append(path, tok)
		cmds, scope = c.Subcommands, c.Flags
		i++
		if !isGroup(c) {
			break
		}
	}
	if len(path) == 0 || isGroup(findLeaf(app, path)) {
		// No runnable command (an unknown one, `--version`, help): nothing to reorder, and
		// the app reports an unknown command by name.
		return args
	}

	// The leaf's flags: its own and the app's (help, version).
	leafFlags := append(append([]ucli.Flag{}, scope...), app.Flags...)
	leafFlags = append(leafFlags, ucli.HelpFlag)
	var flags, positional []string
	split := func(toks []string) {
		for j := 0; j < len(toks); j++ {
			tok := toks[j]
			if !isFlagToken(tok) {
				positional = append(positional, tok)
				continue
			}
			flags = append(flags, tok)
			if !strings.Contains(tok, "=") && takesValue(leafFlags, flagName(tok)) && j+1 < len(toks) {
				flags = append(flags, toks[j+1])
				j++
			}
		}
	}
	split(pending)
	tail := rest[i:]
	dashdash := -1
	for j, tok := range tail {
		if tok == "--" {
			dashdash = j
			break
		}
	}
	if dashdash >= 0 {
		split(tail[:dashdash])
		positional = append(positional, tail[dashdash+1:]...)
	} else {
		split(tail)
	}
	for _, f := range flags {
		if f == "-h" || f == "--help" || f == "-help" {
			// Help for the command: its arguments are not help topics.
			positional, dashdash = nil, -1
		}
	}
	out = append(out, path...)
	out = append(out, flags...)
	// urfave/cli turns completion off when it sees `--`: while completing, the positional
	// arguments follow the flags without it (they cannot start with `-` there unless the
	// user typed `--`, which keeps completion off as it should).
	if len(positional) > 0 && (!complete || dashdash >= 0) {
		out = append(out, "--")
	}
	out = append(out, positional...)
	if complete {
		out = append(out, completionFlag)
	}
	return out
}

// isFlagToken: `-x`, `--name`, `--name=value`; a lone `-` (stdin) is an argument.
func isFlagToken(tok string) bool {
	return len(tok) > 1 && tok[0] == '-' && tok != "--"
}

func flagName(tok string) string {
	name := strings.TrimLeft(tok, "-")
	if i := strings.IndexByte(name, '='); i >= 0 {
		name = name[:i]
	}
	return name
}

// isGroup reports whether c only groups subcommands (urfave's own "help" does not count).
func isGroup(c *ucli.Command) bool {
	for _, s := range c.Subcommands {
		if s.Name != "help" {
			return true
		}
	}
	return false
}

func findLeaf(app *ucli.App, path []string) *ucli.Command {
	var c *ucli.Command
	cmds := app.Commands
	for _, name := range path {
		c = findCommand(cmds, name)
		cmds = c.Subcommands
	}
	return c
}

func findCommand(cmds []*ucli.Command, name string) *ucli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// subtreeFlags are the flags of scope and of every command below cmds: while the command
// path is not known yet, a flag may belong to any of them.
func subtreeFlags(scope []ucli.Flag, cmds []*ucli.Command) []ucli.Flag {
	out := append([]ucli.Flag{}, scope...)
	for _, c := range cmds {
		out = append(out, subtreeFlags(c.Flags, c.Subcommands)...)
	}
	return out
}

// takesValue reports whether name is a flag of flags that needs a value (a non-bool flag).
func takesValue(flags []ucli.Flag, name string) bool {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			if d, ok := f.(ucli.DocGenerationFlag); ok {
				return d.TakesValue()
			}
			return true
		}
	}
	return false
}
