package cli_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshmedic/meshmedic/frontends/cli"
)

// unreachableKubeconfig points at a loopback port nothing listens on.
func unreachableKubeconfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: shop}}]
current-context: x
`
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	return path
}

func TestScanUsageErrors(t *testing.T) {
	kc := unreachableKubeconfig(t)
	var ue *cli.UsageError
	for name, args := range map[string][]string{
		"-n with -A":                {"scan", "--kubeconfig", kc, "-n", "a", "-A"},
		"node-local without --node": {"scan", "--kubeconfig", kc, "--prober", "node-local", "--node", "", "--istio-version", "1.24.0"},
		"unknown prober":            {"scan", "--kubeconfig", kc, "--prober", "psychic"},
		"bad output":                {"scan", "--kubeconfig", kc, "-o", "xml"},
		"stray argument":            {"scan", "--kubeconfig", kc, "pods"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := run(t, "", args...)
			require.Error(t, err)
			assert.ErrorAs(t, err, &ue, "checked before any API call: %v", err)
		})
	}
}

func TestScanUnreachableAPIServer(t *testing.T) {
	_, _, err := run(t, "", "scan", "--kubeconfig", unreachableKubeconfig(t), "--request-timeout", "2s")
	require.Error(t, err)
	assert.NotErrorIs(t, err, cli.ErrFindings, "a runtime error is exit 2, never 'findings'")
	assert.Contains(t, err.Error(), "127.0.0.1:1")
}
