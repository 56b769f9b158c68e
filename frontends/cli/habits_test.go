package cli_test

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	ucli "github.com/urfave/cli/v2"

	"github.com/meshmedic/meshmedic/frontends/cli"
)

// leafCommands lists every runnable command path of the app ("scan", "node scan", ...).
func leafCommands(t *testing.T) [][]string {
	t.Helper()
	app := cli.NewApp("meshmedic", cli.BuildInfo{}, cli.Streams{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard})
	var out [][]string
	var walk func(cmds []*ucli.Command, path []string)
	walk = func(cmds []*ucli.Command, path []string) {
		for _, c := range cmds {
			p := append(append([]string{}, path...), c.Name)
			if len(c.Subcommands) > 0 {
				walk(c.Subcommands, p)
				continue
			}
			out = append(out, p)
		}
	}
	walk(app.Commands, nil)
	require.GreaterOrEqual(t, len(out), 7)
	return out
}

// Flags after a positional argument are parsed as flags on every command: an unknown flag
// placed after an argument is reported by the flag parser, before the command runs.
func TestFlagsAfterArgumentsOnEveryCommand(t *testing.T) {
	for _, path := range leafCommands(t) {
		t.Run(strings.Join(path, " "), func(t *testing.T) {
			_, _, err := run(t, "", append(path, "some-argument", "--no-such-flag")...)
			var ue *cli.UsageError
			require.ErrorAs(t, err, &ue)
			assert.Contains(t, err.Error(), "flag provided but not defined: -no-such-flag")
			// And a known flag after an argument takes its value: --help prints help.
			out, _, err := run(t, "", append(path, "some-argument", "--help")...)
			require.NoError(t, err)
			assert.Contains(t, out, "USAGE:")
		})
	}
}

func TestLogsAnalyzeFlagsAfterFiles(t *testing.T) {
	mixed := logsFixture("variants/mixed.log")
	for _, args := range [][]string{
		{"logs", "analyze", mixed, "-o", "json"},
		{"logs", "analyze", mixed, "-o=json"},
		{"logs", "analyze", mixed, "--output", "json", "--since", "100000h"},
		{"logs", "-o", "json", "analyze", mixed},
	} {
		out, stderr, err := run(t, "", args...)
		require.ErrorIs(t, err, cli.ErrFindings, "%v: %s", args, stderr)
		var v map[string]any
		require.NoError(t, json.Unmarshal([]byte(out), &v), "%v: not JSON: %s", args, out)
		assert.EqualValues(t, 3, len(v["signals"].([]any)), "%v", args)
	}
}

// `--` ends the flags: what follows is a file, even when it looks like a flag.
func TestDoubleDashEndsFlags(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	raw, err := os.ReadFile(filepath.Join(cwdAtStart, logsFixture("variants/mixed.log")))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "-o"), raw, 0o600))
	out, _, err := run(t, "", "logs", "analyze", "--output", "json", "--", "-o")
	require.ErrorIs(t, err, cli.ErrFindings)
	assert.Contains(t, out, `"file": "-o"`)
	// Without `--`, -o is the output flag and wants a value.
	_, _, err = run(t, "", "logs", "analyze", "-o")
	var ue *cli.UsageError
	require.ErrorAs(t, err, &ue)
}

var cwdAtStart, _ = os.Getwd()

func TestUnknownCommand(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate" for "meshmedic"`},
		{[]string{"frobnicate", "-o", "json"}, `unknown command "frobnicate" for "meshmedic"`},
		{[]string{"node", "frobnicate"}, `unknown command "frobnicate" for "meshmedic node"`},
		{[]string{"logs", "analyse"}, `unknown command "analyse" for "meshmedic logs"`},
	} {
		_, _, err := run(t, "", c.args...)
		var ue *cli.UsageError
		require.ErrorAs(t, err, &ue, "%v", c.args)
		assert.Contains(t, err.Error(), c.want)
		assert.NotContains(t, err.Error(), "No help topic")
	}
	// A bare group prints its subcommands.
	out, _, err := run(t, "", "node")
	require.NoError(t, err)
	assert.Contains(t, out, "scan")
}

// countingAPIServer is a loopback TLS server that answers 404 to everything and counts
// the requests: a usage error must be reported before any of them.
func countingAPIServer(t *testing.T) (kubeconfig string, requests *atomic.Int64) {
	t.Helper()
	requests = new(atomic.Int64)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	path := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: shop}}]
current-context: x
`, srv.URL)
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	return path, requests
}

// Meaningless values are usage errors (exit 2), found before any API call.
func TestBadValuesBeforeAnyAPICall(t *testing.T) {
	kc, requests := countingAPIServer(t)
	for name, args := range map[string][]string{
		"probe-timeout 0":          {"scan", "--probe-timeout", "0"},
		"probe-timeout negative":   {"scan", "--probe-timeout", "-1s"},
		"confirm negative":         {"scan", "--confirm", "-10s"},
		"grace negative":           {"scan", "--grace", "-1m"},
		"request-timeout negative": {"scan", "--request-timeout", "-1s"},
		"concurrency 0":            {"scan", "--concurrency", "0"},
		"since 0":                  {"scan", "--behavioral", "--since", "0s"},
		"selector":                 {"scan", "-l", "app in (web"},
		"istio-version":            {"scan", "--istio-version", "banana"},
		"proc-root node-local":     {"scan", "--prober", "node-local", "--node", "n1", "--proc-root", "/typo"},
		"output":                   {"scan", "-o", "xml"},
		"repair strategy":          {"repair", "-n", "shop", "--strategy", "reboot"},
		"repair eviction-timeout":  {"repair", "-n", "shop", "--eviction-timeout", "-1s"},
		"repair confirm":           {"repair", "-n", "shop", "--confirm", "-1s"},
		"node scan proc-root":      {"node", "scan", "--node", "n1", "--proc-root", "/typo"},
		"node scan istio-version":  {"node", "scan", "--node", "n1", "--proc-root", "../../testdata/netns/node-a", "--istio-version", "x.y"},
		"node scan grace":          {"node", "scan", "--node", "n1", "--proc-root", "../../testdata/netns/node-a", "--grace", "-1s"},
		"agent metrics-addr":       {"agent", "--node", "n1", "--metrics-addr", "9100"},
		"agent metrics-addr port":  {"agent", "--node", "n1", "--metrics-addr", ":99999"},
		"agent tick":               {"agent", "--node", "n1", "--tick", "0"},
		"agent confirm":            {"agent", "--node", "n1", "--confirm", "-1s"},
		"agent proc-root":          {"agent", "--node", "n1", "--proc-root", "/typo"},
		"agent istio-version":      {"agent", "--node", "n1", "--istio-version", "1.x"},
		"agent full-recheck":       {"agent", "--node", "n1", "--full-recheck", "0s"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := run(t, "", append(args, "--kubeconfig", kc)...)
			var ue *cli.UsageError
			require.ErrorAs(t, err, &ue, "want a usage error, got %v", err)
			assert.Zero(t, requests.Load(), "an API request was made before the usage error: %v", err)
		})
	}
}

// --kubeconfig names one file, which must exist (kubectl: "stat /typo: no such file or
// directory"); KUBECONFIG is a list whose missing entries are skipped.
func TestKubeconfigLookup(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	missing := filepath.Join(t.TempDir(), "typo")
	_, _, err := run(t, "", "scan", "-n", "shop", "--kubeconfig", missing)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "stat "+missing+": no such file or directory")

	kc, requests := countingAPIServer(t)
	t.Setenv("KUBECONFIG", missing+string(filepath.ListSeparator)+kc)
	_, _, err = run(t, "", "scan", "-n", "shop", "--request-timeout", "5s")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "no such file")
	assert.Positive(t, requests.Load(), "the existing KUBECONFIG entry was used")

	// Nothing anywhere: no KUBERNETES_MASTER advice, but where meshmedic looked.
	t.Setenv("KUBECONFIG", missing)
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	_, _, err = run(t, "", "scan", "-n", "shop")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "KUBERNETES_MASTER")
	assert.Contains(t, err.Error(), "--kubeconfig")
}

// A failing exec credential plugin is named as such, not as an unreachable server.
func TestExecCredentialPluginFailure(t *testing.T) {
	kc, _ := countingAPIServer(t)
	raw, err := os.ReadFile(kc)
	require.NoError(t, err)
	for name, command := range map[string]string{
		"plugin exits 1":     "false",
		"plugin not found":   "/nonexistent/kubelogin",
		"plugin prints junk": "echo",
	} {
		t.Run(name, func(t *testing.T) {
			cfg := strings.Replace(string(raw), "users: [{name: u, user: {token: t}}]",
				fmt.Sprintf("users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: %q, interactiveMode: Never}}}]", command), 1)
			path := filepath.Join(t.TempDir(), "kubeconfig")
			require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
			_, _, err := run(t, "", "scan", "-n", "shop", "--kubeconfig", path, "--request-timeout", "5s")
			require.Error(t, err)
			assert.Contains(t, err.Error(), "exec credential plugin failed")
			assert.NotContains(t, err.Error(), "cannot reach the API server")
		})
	}
}

func TestVersion(t *testing.T) {
	out, _, err := run(t, "", "--version")
	require.NoError(t, err)
	assert.Contains(t, out, "meshmedic test\n")
	out, _, err = run(t, "", "version", "-o", "json")
	require.NoError(t, err)
	var v map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &v), out)
	for _, k := range []string{"version", "commit", "dirty", "goVersion", "platform"} {
		assert.Contains(t, v, k)
	}
	assert.Equal(t, "test", v["version"])
	_, _, err = run(t, "", "version", "-o", "xml")
	var ue *cli.UsageError
	assert.ErrorAs(t, err, &ue)
}

func TestCompletionCommand(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out, _, err := run(t, "", "completion", shell)
		require.NoError(t, err)
		assert.Contains(t, out, "meshmedic", shell)
		if sh, err := exec.LookPath(shell); err == nil {
			path := filepath.Join(t.TempDir(), "c")
			require.NoError(t, os.WriteFile(path, []byte(out), 0o600))
			b, err := exec.Command(sh, "-n", path).CombinedOutput()
			assert.NoError(t, err, "%s -n: %s", shell, b)
		}
	}
	_, _, err := run(t, "", "completion", "powershell")
	var ue *cli.UsageError
	assert.ErrorAs(t, err, &ue)
	_, _, err = run(t, "", "completion")
	assert.ErrorAs(t, err, &ue)
}

// nodeTree copies some pids of testdata/netns/node-a into a new proc root.
func nodeTree(t *testing.T, pids ...string) string {
	t.Helper()
	root := t.TempDir()
	src := filepath.Join("..", "..", "testdata", "netns", "node-a")
	for _, pid := range append([]string{"1"}, pids...) {
		out, err := exec.Command("cp", "-a", filepath.Join(src, pid), root).CombinedOutput()
		require.NoError(t, err, string(out))
	}
	return root
}

// A node where every pod is unknown verified nothing: exit 2, saying why.
func TestNodeScanNothingVerified(t *testing.T) {
	root := nodeTree(t, "7100", "6100") // unknown, and a host-network pod (not checked)
	out, stderr, err := run(t, "", "node", "scan", "--offline", "--proc-root", root)
	require.Error(t, err)
	assert.ErrorIs(t, err, cli.ErrNothingVerified)
	assert.NotErrorIs(t, err, cli.ErrFindings)
	assert.Contains(t, err.Error(), "all 1 pod checked could not be read")
	assert.Contains(t, err.Error(), "d488cae9-b2a0-11e7-9350-020968147796")
	assert.Contains(t, out, "unknown", "the table still shows the pods")
	assert.Empty(t, stderr, "the error says it all (main prints it)")

	// One pod read is enough for a verdict.
	_, _, err = run(t, "", "node", "scan", "--offline", "--proc-root", nodeTree(t, "7100", "2100", "2101"))
	require.NoError(t, err)
}

func TestNodeScanNoHeadersAndWide(t *testing.T) {
	root := filepath.Join("..", "..", "testdata", "netns", "node-a")
	out, _, err := run(t, "", "node", "scan", "--offline", "--proc-root", root, "--no-headers")
	require.ErrorIs(t, err, cli.ErrFindings)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 7, out)
	assert.NotContains(t, out, "POD UID")

	out, _, err = run(t, "", "node", "scan", "--offline", "--proc-root", root, "-o", "wide")
	require.ErrorIs(t, err, cli.ErrFindings)
	lines = strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 8, out)
	head := strings.Fields(lines[0])
	assert.Equal(t, "ERROR", head[len(head)-1], "every wide column has a header: %q", lines[0])
	for _, l := range lines[1:] {
		if strings.Contains(l, "unknown") {
			assert.NotRegexp(t, `\s-$`, l, "the unknown pod's error is in the ERROR column")
		} else {
			assert.Regexp(t, `\s-$`, l)
		}
	}
}

func TestScanExitCodeOnUsageIsNotFindings(t *testing.T) {
	_, _, err := run(t, "", "scan", "--concurrency", "0")
	assert.False(t, errors.Is(err, cli.ErrFindings))
}

// Pasted logs: lines without timestamps, CR-only endings, non-text input, and a bound on
// what is kept.
func TestLogsAnalyzePastedLogs(t *testing.T) {
	// Level first, no timestamp (istio/istio#52487), on stdin.
	raw, err := os.ReadFile(logsFixture("real/istio-52487-level-first.log"))
	require.NoError(t, err)
	out, _, err := run(t, string(raw), "logs", "analyze", "-o", "json")
	require.NoError(t, err, "corroborations only: exit 0")
	var got struct {
		Records        int              `json:"records"`
		Corroborations []map[string]any `json:"corroborations"`
		Warnings       []map[string]any `json:"warnings"`
		SignalsOmitted int              `json:"signalsOmitted"`
		Signals        []map[string]any `json:"signals"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	assert.Equal(t, 11, got.Records)
	require.Len(t, got.Corroborations, 2)
	assert.Equal(t, "proxy-started", got.Corroborations[0]["kind"])
	assert.Equal(t, "worker", got.Corroborations[0]["namespace"])

	// CR-only line endings.
	out, _, err = run(t, "", "logs", "analyze", "-o", "json", logsFixture("variants/cr-only.log"))
	require.ErrorIs(t, err, cli.ErrFindings)
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	assert.Equal(t, 3, got.Records)
	assert.Len(t, got.Signals, 2)

	// gzip: a warning on stderr and in the JSON, exit 0 (nothing found, but said why).
	var gz strings.Builder
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(raw)
	require.NoError(t, zw.Close())
	path := filepath.Join(t.TempDir(), "ztunnel.log.gz")
	require.NoError(t, os.WriteFile(path, []byte(gz.String()), 0o600))
	out, stderr, err := run(t, "", "logs", "analyze", path, "-o", "json")
	require.NoError(t, err)
	assert.Contains(t, stderr, "gzip input, not text")
	assert.Contains(t, stderr, "zcat")
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	require.Len(t, got.Warnings, 1)
	assert.Equal(t, "gzip", got.Warnings[0]["content"])
	_, stderr, _ = run(t, "", "logs", "analyze", path)
	assert.Contains(t, stderr, "gzip input, not text", "table output warns too")

	// More signals than kept: the rest are counted, the exit code still says findings.
	mixed := logsFixture("variants/mixed.log")
	out, stderr, err = run(t, "", "logs", "analyze", "-o", "json", "--max-signals", "1", mixed)
	require.ErrorIs(t, err, cli.ErrFindings)
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	assert.Len(t, got.Signals, 1)
	assert.Equal(t, 2, got.SignalsOmitted)
	assert.Contains(t, stderr, "the rest counted")
	out, _, err = run(t, "", "logs", "analyze", "--max-signals", "1", mixed)
	require.ErrorIs(t, err, cli.ErrFindings)
	assert.Contains(t, out, "3 orphan signal(s)")
	assert.Contains(t, out, "2 signal(s) not listed")
}
