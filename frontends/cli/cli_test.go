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
	err := app.RunContext(context.Background(), append([]string{"meshmedic"}, args...))
	return out.String(), errOut.String(), err
}
