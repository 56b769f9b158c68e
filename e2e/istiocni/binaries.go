package istiocni

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// DefaultIstioVersion is the istio.io/istio module version build.sh builds by default (keep in
// sync with its default): the newest the Go module proxy serves, a snapshot of the 1.31 line
// (its VERSION file says 1.31; it requires istio.io/api v1.31.0-rc).
const DefaultIstioVersion = "v0.0.0-20260827124520-eed52ebb66ad"

// AgentVersion is the version the sandbox writes as CURRENT_AGENT_VERSION in istio-cni-config,
// shaped like the tag of an Istio development build of that snapshot (release line 1.31); meshmedic
// judges expectations by it (enroll.ParseVersion reads it as 1.31.0).
const AgentVersion = "1.31-alpha.eed52ebb66ad"

// Binary names in the bin directory.
const (
	InstallCNI = "install-cni"     // node agent + installer
	Plugin     = "istio-cni"       // the CNI plugin
	StandIn    = "ztunnel-standin" // meshmedic's ztunnel stand-in
)

// BinDirEnv names a directory holding the three binaries; it overrides the build cache.
const BinDirEnv = "MESHMEDIC_ISTIOCNI_BIN"

// ErrBinariesMissing is returned (wrapped) when istio-cni has not been built.
var ErrBinariesMissing = errors.New("istio-cni binaries not found")

// DefaultBinDir is where build.sh puts the binaries:
// ${MESHMEDIC_CACHE:-$HOME/.cache/meshmedic}/istio-cni/<version>/bin.
func DefaultBinDir() (string, error) {
	root := os.Getenv("MESHMEDIC_CACHE")
	if root == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("istio-cni cache dir: %w", err)
		}
		root = filepath.Join(home, ".cache", "meshmedic")
	}
	v := os.Getenv("MESHMEDIC_ISTIO_VERSION")
	if v == "" {
		v = DefaultIstioVersion
	}
	return filepath.Join(root, "istio-cni", v, "bin"), nil
}

// FindBinaries returns the directory holding install-cni, istio-cni and ztunnel-standin:
// $MESHMEDIC_ISTIOCNI_BIN when set, else the build cache. When the istio binaries are in the
// cache, it runs build.sh, which only rebuilds the stand-in if its sources changed (seconds) and
// otherwise returns at once; it never starts the long istio build (run e2e/istiocni/build.sh or
// make istiocni for that). The error wraps ErrBinariesMissing and says how to build.
func FindBinaries(ctx context.Context) (string, error) {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		if err := checkBinDir(dir, InstallCNI, Plugin, StandIn); err != nil {
			return "", fmt.Errorf("%w (%s=%s: %w)", ErrBinariesMissing, BinDirEnv, dir, err)
		}
		return dir, nil
	}
	dir, err := DefaultBinDir()
	if err != nil {
		return "", err
	}
	if err := checkBinDir(dir, InstallCNI, Plugin); err != nil {
		return "", fmt.Errorf("%w (looked in %s: %w); run e2e/istiocni/build.sh (~10 min cold), or set %s",
			ErrBinariesMissing, dir, err, BinDirEnv)
	}
	_, file, _, _ := runtime.Caller(0)
	cmd := exec.CommandContext(ctx, filepath.Join(filepath.Dir(file), "build.sh"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("e2e/istiocni/build.sh: %w\n%s", err, stderr.String())
	}
	if got := strings.TrimSpace(string(out)); got != dir {
		return "", fmt.Errorf("e2e/istiocni/build.sh built into %s, expected %s", got, dir)
	}
	return dir, checkBinDir(dir, StandIn)
}

func checkBinDir(dir string, names ...string) error {
	for _, n := range names {
		p := filepath.Join(dir, n)
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%s is not an executable file", p)
		}
	}
	return nil
}
