package podsim

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
)

// RequirePrivilegedEnv, set to "1", turns RequirePrivileged's skip into a failure (CI sets it).
const RequirePrivilegedEnv = "MESHMEDIC_REQUIRE_PRIVILEGED"

var probe = sync.OnceValue(func() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("not root (euid %d)", os.Geteuid())
	}
	s, err := New()
	if err != nil {
		return err
	}
	_, err = s.AddPod(PodSpec{})
	return errors.Join(err, s.Close())
})

// RequirePrivileged skips the test unless this process is root and can make a pod (a cgroup in
// every hierarchy, a netns, a sandbox process); when MESHMEDIC_REQUIRE_PRIVILEGED=1 it calls
// t.Fatalf instead. The probe runs once per process.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	err := probe()
	if err == nil {
		return
	}
	if os.Getenv(RequirePrivilegedEnv) == "1" {
		t.Fatalf("privileged test cannot run (%s=1): %v", RequirePrivilegedEnv, err)
	}
	t.Skipf("privileged test skipped (set %s=1 to fail instead): %v", RequirePrivilegedEnv, err)
}
