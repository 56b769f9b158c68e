package cli

import (
	"fmt"
	"regexp"
	"strings"

	ucli "github.com/urfave/cli/v2"
)

// Shell completion. bash and zsh ask the binary itself: urfave/cli answers
// `<words so far> --generate-bash-completion` with the subcommands or the flags that fit, so
// the scripts stay small and never go stale. fish gets urfave/cli's static script (the
// command tree with every flag and its help).

// The scripts are templates over the program name: %[1]s is the name as invoked
// (meshmedic, or kubectl-meshmedic), %[2]s a shell identifier made from it.

const bashCompletion = `# bash completion for %[1]s: source <(%[1]s completion bash)
_%[2]s_complete() {
    local cur="${COMP_WORDS[COMP_CWORD]}"
    local -a words=("${COMP_WORDS[@]:0:COMP_CWORD}")
    case "$cur" in
        -*) words+=("$cur") ;;
    esac
    local IFS=$'\n'
    COMPREPLY=($(compgen -W "$("${words[@]}" --generate-bash-completion 2>/dev/null)" -- "$cur"))
    return 0
}
complete -o bashdefault -o default -F _%[2]s_complete %[1]s
`

const zshCompletion = `#compdef %[1]s
# zsh completion for %[1]s: source <(%[1]s completion zsh) after compinit, or save it as
# _%[1]s in a directory of $fpath.
_%[2]s() {
    local cur="${words[CURRENT]}"
    local -a ask opts
    ask=("${(@)words[1,CURRENT-1]}")
    if [[ "$cur" == -* ]]; then
        ask+=("$cur")
    fi
    opts=("${(@f)$("${ask[@]}" --generate-bash-completion 2>/dev/null)}")
    opts=("${(@)opts:#}")
    if (( ${#opts} )); then
        compadd -a opts
    else
        _files
    fi
}
compdef _%[2]s %[1]s
# Loaded from $fpath, this file is the body of _%[1]s itself: complete right away.
if [[ "${funcstack[1]}" == "_%[1]s" ]]; then
    _%[2]s "$@"
fi
`

var nonIdent = regexp.MustCompile(`[^A-Za-z0-9_]`)

// completionScript returns the completion script for shell, for the program called name.
func completionScript(app *ucli.App, shell string) (string, error) {
	ident := nonIdent.ReplaceAllString(app.Name, "_")
	switch shell {
	case "bash":
		return fmt.Sprintf(bashCompletion, app.Name, ident), nil
	case "zsh":
		return fmt.Sprintf(zshCompletion, app.Name, ident), nil
	case "fish":
		s, err := app.ToFishCompletion()
		if err != nil {
			return "", fmt.Errorf("fish completion: %w", err)
		}
		return s, nil
	}
	return "", usagef("completion %q: want bash, zsh or fish", shell)
}

func completionCommand(s Streams) *ucli.Command {
	return &ucli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "bash|zsh|fish",
		Description: "Prints a script that completes meshmedic's commands and flags:\n\n" +
			"  bash:  source <(meshmedic completion bash)           # e.g. in ~/.bashrc\n" +
			"  zsh:   source <(meshmedic completion zsh)            # after compinit\n" +
			"  fish:  meshmedic completion fish | source            # or save it in ~/.config/fish/completions/meshmedic.fish\n\n" +
			"As a kubectl plugin the same binary is kubectl-meshmedic, and the scripts complete that name.",
		Action: func(c *ucli.Context) error {
			if c.NArg() != 1 {
				return usagef("completion takes one argument: bash, zsh or fish")
			}
			script, err := completionScript(c.App, strings.ToLower(c.Args().First()))
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(s.Out, script)
			return err
		},
	}
}
