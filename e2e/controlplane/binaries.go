package controlplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Default versions built by build.sh; keep in sync with its defaults.
const (
	DefaultKubernetesVersion = "v1.37.2"
	DefaultEtcdVersion       = "v3.7.3"
)

// Component names, as accepted by Restart and LogFile.
const (
	Etcd                  = "etcd"
	KubeAPIServer         = "kube-apiserver"
	KubeControllerManager = "kube-controller-manager"
	KubeScheduler         = "kube-scheduler"
)

// Components lists every component in start order.
var Components = []string{Etcd, KubeAPIServer, KubeControllerManager, KubeScheduler}

// ErrBinariesMissing is returned (wrapped) by FindBinaries when the control-plane binaries are not
// built.
var ErrBinariesMissing = errors.New("control-plane binaries not found")

// BinDirEnv names the environment variable that points at a directory holding the four binaries.
const BinDirEnv = "MESHMEDIC_CONTROLPLANE_BIN"

// DefaultBinDir is where build.sh puts the binaries for the default versions (and the versions
// in MESHMEDIC_K8S_VERSION / MESHMEDIC_ETCD_VERSION when set):
// ${MESHMEDIC_CACHE:-$HOME/.cache/meshmedic}/controlplane/k8s-<v>-etcd-<v>/bin.
func DefaultBinDir() (string, error) {
	root := os.Getenv("MESHMEDIC_CACHE")
	if root == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("control-plane cache dir: %w", err)
		}
		root = filepath.Join(home, ".cache", "meshmedic")
	}
	k8s := envOr("MESHMEDIC_K8S_VERSION", DefaultKubernetesVersion)
	etcd := envOr("MESHMEDIC_ETCD_VERSION", DefaultEtcdVersion)
	return filepath.Join(root, "controlplane", "k8s-"+k8s+"-etcd-"+etcd, "bin"), nil
}

// FindBinaries returns the directory holding etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler: $MESHMEDIC_CONTROLPLANE_BIN when set, else DefaultBinDir. The error wraps
// ErrBinariesMissing and says how to build them.
func FindBinaries() (string, error) {
	dir := os.Getenv(BinDirEnv)
	from := BinDirEnv
	if dir == "" {
		var err error
		if dir, err = DefaultBinDir(); err != nil {
			return "", err
		}
		from = "the build cache"
	}
	if err := checkBinDir(dir); err != nil {
		return "", fmt.Errorf("%w (looked in %s from %s: %w); run e2e/controlplane/build.sh, or set %s",
			ErrBinariesMissing, dir, from, err, BinDirEnv)
	}
	return dir, nil
}

func checkBinDir(dir string) error {
	for _, c := range Components {
		p := filepath.Join(dir, c)
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

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
