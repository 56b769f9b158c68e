package cli_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshmedic/meshmedic/frontends/cli"
)

func TestRepairUsageErrors(t *testing.T) {
	kc := unreachableKubeconfig(t)
	var ue *cli.UsageError
	for name, args := range map[string][]string{
		"no scope":   {"repair", "--kubeconfig", kc},
		"-n with -A": {"repair", "--kubeconfig", kc, "-n", "a", "-A"},
		"bad output": {"repair", "--kubeconfig", kc, "-n", "a", "-o", "csv"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := run(t, "", args...)
			require.Error(t, err)
			assert.ErrorAs(t, err, &ue, "%v", err)
		})
	}
	// An unreachable API server is a runtime error naming the server, never "findings".
	_, _, err := run(t, "", "repair", "--kubeconfig", kc, "-n", "a", "--request-timeout", "2s")
	require.Error(t, err)
	assert.NotErrorIs(t, err, cli.ErrFindings)
	assert.Contains(t, err.Error(), "127.0.0.1:1")
}
