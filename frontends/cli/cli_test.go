package cli_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/meshmedic/meshmedic/frontends/cli"
)

// run executes the app in-process like the binary would, returning stdout, stderr and the
// error main would map to an exit code.
func run(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := cli.NewApp("meshmedic", cli.BuildInfo{Version: "test"}, cli.Streams{In: strings.NewReader(stdin), Out: &out, Err: &errOut})
	err := cli.Run(context.Background(), app, append([]string{"meshmedic"}, args...))
	return out.String(), errOut.String(), err
}

// As a kubectl plugin the binary is invoked as kubectl-meshmedic; help and errors use that
// name and every command works the same.
func TestKubectlPluginName(t *testing.T) {
	var out, errOut bytes.Buffer
	app := cli.NewApp("kubectl-meshmedic", cli.BuildInfo{Version: "v1"}, cli.Streams{In: strings.NewReader(""), Out: &out, Err: &errOut})
	if err := app.RunContext(context.Background(), []string{"kubectl-meshmedic", "version"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "meshmedic v1") {
		t.Fatalf("version output %q", out.String())
	}
	out.Reset()
	if err := app.RunContext(context.Background(), []string{"kubectl-meshmedic", "--help"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "kubectl-meshmedic") {
		t.Fatalf("help does not use the plugin name:\n%s", out.String())
	}
}
