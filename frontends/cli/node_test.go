package cli_test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshmedic/meshmedic/frontends/cli"
)

type contractPod struct {
	UID         string   `json:"uid"`
	PID         int      `json:"pid"`
	Netns       uint64   `json:"netns"`
	HostNetwork bool     `json:"hostNetwork"`
	Listeners   []uint16 `json:"listeners"`
	Capture     string   `json:"capture"`
}

func TestNodeScanOfflineGolden(t *testing.T) {
	root := filepath.Join("..", "..", "testdata", "netns", "node-a")
	stdout, stderr, err := run(t, "", "node", "scan", "--offline", "--proc-root", root, "-o", "json")
	// Pod 863b91d4 is partial: a finding (exit 1), not a runtime error.
	require.Error(t, err)
	assert.True(t, errors.Is(err, cli.ErrFindings), "want ErrFindings, got %v", err)

	var got struct {
		Pods []struct {
			contractPod
			Error string `json:"error"`
		} `json:"pods"`
		Problems []string `json:"problems"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &got), stdout)
	var want struct{ Pods []contractPod }
	raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "netns", "node-a.golden.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &want))
	require.Len(t, got.Pods, len(want.Pods))
	for i := range want.Pods {
		assert.Equal(t, want.Pods[i], got.Pods[i].contractPod)
		assert.Equal(t, got.Pods[i].Capture == "unknown", got.Pods[i].Error != "", "pod %s: error iff unknown (%q)", got.Pods[i].UID, got.Pods[i].Error)
	}
	// listeners is [] (never null) when empty.
	assert.Contains(t, stdout, `"listeners": []`)
	require.Len(t, got.Problems, 1)
	assert.Contains(t, got.Problems[0], "pid 9100")
	assert.Contains(t, stderr, "could not be verified")
}

func TestNodeScanOfflineTable(t *testing.T) {
	root := filepath.Join("..", "..", "testdata", "netns", "node-a")
	stdout, _, err := run(t, "", "node", "scan", "--offline", "--proc-root", root)
	require.ErrorIs(t, err, cli.ErrFindings)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	require.Len(t, lines, 8)
	assert.Regexp(t, `^POD UID\s+CAPTURE\s+LISTENERS\s+PID\s+NETNS$`, lines[0])
	assert.Regexp(t, `^863b91d4-4b68-4efa-917f-4b560e3e86aa\s+partial\s+15001,15006\s+4100\s+4026532103$`, lines[4])
}

func TestNodeScanErrors(t *testing.T) {
	_, _, err := run(t, "", "node", "scan", "--offline", "--proc-root", filepath.Join(t.TempDir(), "missing"))
	require.Error(t, err)
	assert.NotErrorIs(t, err, cli.ErrFindings)
	assert.Contains(t, err.Error(), "missing")

	_, _, err = run(t, "", "node", "scan", "--offline", "--proc-root", t.TempDir())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not a proc root")

	_, _, err = run(t, "", "node", "scan", "--offline", "--proc-root", t.TempDir(), "-o", "xml")
	var ue *cli.UsageError
	require.ErrorAs(t, err, &ue)

	// Without --offline, a node name is required.
	t.Setenv("NODE_NAME", "")
	_, _, err = run(t, "", "node", "scan", "--proc-root", filepath.Join("..", "..", "testdata", "netns", "node-a"))
	require.ErrorAs(t, err, &ue)
	assert.Contains(t, err.Error(), "--node")
}

func TestNodeScanClean(t *testing.T) {
	// A tree with only captured pods exits 0.
	root := t.TempDir()
	src := filepath.Join("..", "..", "testdata", "netns", "node-a")
	for _, pid := range []string{"1", "3100", "2101", "2100"} {
		out, err := exec.Command("cp", "-a", filepath.Join(src, pid), root).CombinedOutput()
		require.NoError(t, err, string(out))
	}
	stdout, _, err := run(t, "", "node", "scan", "--offline", "--proc-root", root, "-o", "json")
	require.NoError(t, err, stdout)
	assert.Equal(t, 2, strings.Count(stdout, `"capture": "captured"`))
}
