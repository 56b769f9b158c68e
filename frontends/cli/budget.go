package cli

import (
	ucli "github.com/urfave/cli/v2"

	"github.com/meshmedic/meshmedic/heal"
)

// budgetFromFlags is repair's heal.Budget: the flag values exactly as given. 0 means that
// nothing is acted on and a negative value means unlimited (heal.WithBudget takes them
// literally); the defaults are the flags' defaults.
func budgetFromFlags(c *ucli.Context) heal.Budget {
	return heal.Budget{PerRun: c.Int("max-actions"), PerNode: c.Int("max-per-node"), PerNamespace: c.Int("max-per-namespace")}
}
