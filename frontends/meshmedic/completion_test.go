package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// requireShell returns the path of shell, failing when CI must have it (.ci/run installs
// zsh and fish) and skipping elsewhere.
func requireShell(t *testing.T, shell string) string {
	t.Helper()
	p, err := exec.LookPath(shell)
	if err != nil {
		if os.Getenv("CI") != "" || os.Getenv("MESHMEDIC_REQUIRE_PRIVILEGED") == "1" {
			t.Fatalf("%s not installed (.ci/run installs it): %v", shell, err)
		}
		t.Skipf("%s not installed", shell)
	}
	return p
}

// completionScript writes `meshmedic completion <shell>` to a file and checks its syntax
// with the shell's own parser (-n).
func completionScript(t *testing.T, bin, shell string) string {
	t.Helper()
	out, err := exec.Command(bin, "completion", shell).Output()
	if err != nil {
		t.Fatalf("completion %s: %v", shell, err)
	}
	path := filepath.Join(t.TempDir(), "completion."+shell)
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	sh := requireShell(t, shell)
	if b, err := exec.Command(sh, "-n", path).CombinedOutput(); err != nil {
		t.Fatalf("%s -n: %v\n%s\n--- script ---\n%s", shell, err, b, out)
	}
	return path
}

// The bash script, sourced into bash and driven as bash's completion would drive it,
// completes subcommands and flags from the binary.
func TestBashCompletion(t *testing.T) {
	bin := binary(t)
	script := completionScript(t, bin, "bash")
	dir := filepath.Dir(bin)
	complete := func(words ...string) []string {
		t.Helper()
		// COMP_WORDS/COMP_CWORD as bash sets them; the last word is the one being completed.
		var quoted []string
		for _, w := range words {
			quoted = append(quoted, "'"+w+"'")
		}
		prog := "source " + script + "\n" +
			"COMP_WORDS=(" + strings.Join(quoted, " ") + "); COMP_CWORD=" + strconv.Itoa(len(words)-1) + "\n" +
			"_meshmedic_complete\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
		cmd := exec.Command("bash", "-c", prog)
		cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.Fields(string(out))
	}
	if got := complete("meshmedic", ""); !slices.Contains(got, "scan") || !slices.Contains(got, "completion") {
		t.Errorf("commands: %v", got)
	}
	if got := complete("meshmedic", "node", ""); !slices.Contains(got, "scan") {
		t.Errorf("node subcommands: %v", got)
	}
	if got := complete("meshmedic", "scan", "--sel"); !slices.Equal(got, []string{"--selector"}) {
		t.Errorf("scan --sel: %v", got)
	}
	// Flags complete after positional arguments too.
	if got := complete("meshmedic", "logs", "analyze", "zt.log", "--out"); !slices.Equal(got, []string{"--output"}) {
		t.Errorf("logs analyze zt.log --out: %v", got)
	}
}

func TestZshCompletionParses(t *testing.T) {
	completionScript(t, binary(t), "zsh")
}

// fish loads the script and answers `complete -C` from it.
func TestFishCompletion(t *testing.T) {
	bin := binary(t)
	script := completionScript(t, bin, "fish")
	out, err := exec.Command(requireShell(t, "fish"), "-c", "source "+script+"; complete -C 'meshmedic sc'").CombinedOutput()
	if err != nil {
		t.Fatalf("fish: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "scan") {
		t.Errorf("fish completes 'meshmedic sc' as %q", out)
	}
	out, err = exec.Command("fish", "-c", "source "+script+"; complete -C 'meshmedic scan --sel'").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--selector") {
		t.Errorf("fish completes 'meshmedic scan --sel' as %q (%v)", out, err)
	}
}
