package cli

import ucli "github.com/urfave/cli/v2"

func nodeCommand(s Streams) *ucli.Command {
	return &ucli.Command{
		Name:        "node",
		Usage:       "node-local inspection",
		Subcommands: []*ucli.Command{notYet("scan", "inspect every pod sandbox under --proc-root", "the foundation issue")},
	}
}
