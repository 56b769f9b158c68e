package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"
)

// BuildBinary builds the real meshmedic binary into dir and returns its path; flags are
// extra `go build` flags (e.g. the release image's -trimpath -ldflags=-s -w).
func BuildBinary(ctx context.Context, dir string, flags ...string) (string, error) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	out := filepath.Join(dir, "meshmedic")
	args := append(append([]string{"build"}, flags...), "-o", out, "./frontends/meshmedic")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build meshmedic: %w\n%s", err, b)
	}
	return out, nil
}

// Result is one run of the binary.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Run runs the binary with args and returns its output and exit code. A binary that could
// not be started, or was killed, is an error.
func Run(ctx context.Context, bin string, env []string, args ...string) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.Code = ee.ExitCode()
	default:
		return r, fmt.Errorf("running %s %v: %w\nstderr: %s", bin, args, err, r.Stderr)
	}
	return r, nil
}
