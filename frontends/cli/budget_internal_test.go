package cli

import (
	"flag"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	ucli "github.com/urfave/cli/v2"

	"github.com/meshmedic/meshmedic/heal"
)

// repair hands the budget flags to heal exactly as given: --max-actions 0 is a budget of
// zero (nothing acted on), a negative value is unlimited, and no value is the default.
func TestBudgetFromFlagsPassesValuesThrough(t *testing.T) {
	cmd := repairCommand(Streams{Out: io.Discard, Err: io.Discard})
	parse := func(args ...string) heal.Budget {
		t.Helper()
		set := flag.NewFlagSet("repair", flag.ContinueOnError)
		for _, f := range cmd.Flags {
			require.NoError(t, f.Apply(set))
		}
		require.NoError(t, set.Parse(args))
		return budgetFromFlags(ucli.NewContext(ucli.NewApp(), set, nil))
	}
	assert.Equal(t, heal.Budget{PerRun: 0, PerNode: 0, PerNamespace: 0}, parse("--max-actions", "0", "--max-per-node", "0", "--max-per-namespace", "0"))
	assert.Equal(t, heal.Budget{PerRun: -1, PerNode: 7, PerNamespace: -1}, parse("--max-actions", "-1", "--max-per-node", "7", "--max-per-namespace", "-1"))
	assert.Equal(t, heal.Budget{PerRun: 5, PerNode: 2, PerNamespace: 3}, parse(), "the defaults")
}
