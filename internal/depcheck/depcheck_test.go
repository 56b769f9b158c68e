// Package depcheck enforces meshmedic's dependency direction (DESIGN.md "Packages"):
// the pure packages never import client-go, and no library package imports a frontend
// or the CLI framework. Modelled on go-containerregistry's internal/depcheck.
package depcheck

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/meshmedic/meshmedic"

// deps returns the transitive imports of pkg (test files excluded), via `go list`.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-json=ImportPath", pkg).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list %s: %v\n%s", pkg, err, ee.Stderr)
		}
		t.Fatalf("go list %s: %v", pkg, err)
	}
	var all []string
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct{ ImportPath string }
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		all = append(all, p.ImportPath)
	}
	if len(all) == 0 {
		t.Fatalf("go list %s returned no packages", pkg)
	}
	return all
}

func TestDependencyDirection(t *testing.T) {
	rules := []struct {
		pkg       string
		forbidden []string
	}{
		{"netns", []string{"k8s.io/client-go", "k8s.io/api", "k8s.io/apimachinery", module + "/frontends", "github.com/urfave/cli"}},
		{"enroll", []string{"k8s.io/client-go", module + "/frontends", "github.com/urfave/cli"}},
		{"ztlog", []string{"k8s.io/client-go", module + "/frontends", "github.com/urfave/cli"}},
		{"detect", []string{module + "/frontends", "github.com/urfave/cli"}},
		{"heal", []string{module + "/frontends", "github.com/urfave/cli"}},
	}
	for _, r := range rules {
		t.Run(r.pkg, func(t *testing.T) {
			for _, d := range deps(t, module+"/"+r.pkg+"/...") {
				for _, f := range r.forbidden {
					if d == f || strings.HasPrefix(d, f+"/") {
						t.Errorf("%s imports %s (forbidden: %s)", r.pkg, d, f)
					}
				}
			}
		})
	}
}

// TestRuleCanFail proves the check sees real imports: the CLI package does import
// urfave/cli, so the same matcher must find it there.
func TestRuleCanFail(t *testing.T) {
	found := false
	for _, d := range deps(t, module+"/frontends/cli") {
		if strings.HasPrefix(d, "github.com/urfave/cli") {
			found = true
		}
	}
	if !found {
		t.Fatal("depcheck did not see frontends/cli importing urfave/cli: the rule cannot fail")
	}
}
