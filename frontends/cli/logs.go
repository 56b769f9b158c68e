package cli

import ucli "github.com/urfave/cli/v2"

func logsCommand(s Streams) *ucli.Command {
	return &ucli.Command{
		Name:        "logs",
		Usage:       "work with ztunnel logs",
		Subcommands: []*ucli.Command{notYet("analyze", "report orphan signals found in ztunnel logs", "the ztlog issue")},
	}
}
