//go:build !linux

package netns

import (
	"errors"
	"fmt"
)

// DiagCapabilities are the capabilities DiagReader needs on Linux.
var DiagCapabilities = []string{"CAP_SYS_ADMIN", "CAP_SYS_PTRACE"}

// DiagReader is the netlink sock_diag socket backend. Netlink exists only on Linux: on
// this platform every read fails with an error wrapping errors.ErrUnsupported.
type DiagReader struct {
	root string
}

// NewDiagReader returns a reader whose every read fails on this platform.
func NewDiagReader(fs FS) *DiagReader { return &DiagReader{root: fs.root} }

// Listeners implements SocketReader; it always fails here.
func (r *DiagReader) Listeners(pid int, opt ReadOptions) (Listeners, error) {
	err := fmt.Errorf("pid %d: netlink sock_diag socket backend: %w (Linux only)", pid, errors.ErrUnsupported)
	return Listeners{
		TCP6: Table{Name: "tcp6", Status: TableUnreadable, Err: err},
		TCP:  Table{Name: "tcp", Status: TableUnreadable, Err: err},
	}, err
}
