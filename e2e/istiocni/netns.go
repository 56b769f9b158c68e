package istiocni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNetns runs fn on an OS thread that has joined the network namespace at path (for example
// /proc/<pid>/ns/net), then returns the thread to this process's netns. Sockets fn creates stay
// in that netns, and processes it forks start there. If the way back fails, the goroutine ends
// still locked and the Go runtime ends that thread with it: no thread of this process stays in a
// foreign netns.
func InNetns(path string, fn func() error) error {
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("enter netns %s: %w", path, err)
	}
	defer target.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter netns %s: setns: %w", path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", path, err))
			return // still locked: the runtime ends this thread
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// DialInNetns dials a TCP address from inside the netns at path (the connection's socket lives
// there); usable as an http.Transport's DialContext.
func DialInNetns(ctx context.Context, path, addr string) (net.Conn, error) {
	var c net.Conn
	err := InNetns(path, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}
