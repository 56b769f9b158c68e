package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Tests of the real binary in a subprocess: signals while it is blocked, and the shell
// completion scripts driving it.

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// binary builds meshmedic once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "meshmedic-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "meshmedic")
		cmd := exec.Command("go", "build", "-o", builtBin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// liveness is the generous bound a stopped process must exit within (the contract is 2 s;
// this only tells a hang from a slow machine).
const liveness = 20 * time.Second

// started runs cmd (killed at the end of the test if still running).
func started(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
		}
	})
}

// blockedOn waits until cond holds: the process has reached the call the test set up to
// block it (and so is long past installing its signal handling in main).
func blockedOn(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(liveness)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the process never blocked on %s", what)
}

// Syscall numbers for /proc/<pid>/task/*/syscall.
var sysRead, sysOpenat = map[string]int{"amd64": 0, "arm64": 63}, map[string]int{"amd64": 257, "arm64": 56}

// inSyscall reports whether a thread of pid is blocked in syscall nr, with first argument
// arg0 when arg0 >= 0.
func inSyscall(pid, nr, arg0 int) bool {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/syscall", pid))
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) < 2 || f[0] != strconv.Itoa(nr) {
			continue
		}
		if a, err := strconv.ParseInt(strings.TrimPrefix(f[1], "0x"), 16, 64); arg0 < 0 || (err == nil && int(a) == arg0) {
			return true
		}
	}
	return false
}

func readingStdin(pid int) func() bool {
	return func() bool { return inSyscall(pid, sysRead[runtime.GOARCH], 0) }
}

func opening(pid int) func() bool {
	return func() bool { return inSyscall(pid, sysOpenat[runtime.GOARCH], -1) }
}

// hasOpen reports whether pid has path open.
func hasOpen(pid int, path string) func() bool {
	return func() bool {
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
		for _, fd := range fds {
			if l, err := os.Readlink(fd); err == nil && l == path {
				return true
			}
		}
		return false
	}
}

// stop sends sig and waits for the exit code, failing if the process outlives the bound.
func stop(t *testing.T, cmd *exec.Cmd, sig syscall.Signal) int {
	t.Helper()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &ee) && ee.Exited():
			return ee.ExitCode()
		default:
			t.Fatalf("process did not exit normally: %v", err)
		}
	case <-time.After(liveness):
		t.Fatalf("still running %s after %s", liveness, sig)
	}
	return -1
}

func TestSignalStopsBlockedCommands(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()

	t.Run("stdin pipe from sleep 60", func(t *testing.T) {
		// sleep 60 | meshmedic logs analyze
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		sleep := exec.Command("sleep", "60")
		sleep.Stdout = pw
		if err := sleep.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sleep.Process.Kill(); _ = sleep.Wait() })
		pw.Close()
		var stderr bytes.Buffer
		cmd := exec.Command(bin, "logs", "analyze")
		cmd.Stdin, cmd.Stderr = pr, &stderr
		started(t, cmd)
		pr.Close()
		blockedOn(t, "reading stdin", readingStdin(cmd.Process.Pid))
		if code := stop(t, cmd, syscall.SIGINT); code != 130 {
			t.Fatalf("exit %d, want 130; stderr %s", code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "stopped by interrupt") {
			t.Errorf("stderr %q", stderr.String())
		}
	})

	t.Run("FIFO without a writer", func(t *testing.T) {
		fifo := filepath.Join(dir, "nowriter")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "logs", "analyze", fifo)
		started(t, cmd)
		blockedOn(t, "opening the FIFO", opening(cmd.Process.Pid))
		if code := stop(t, cmd, syscall.SIGTERM); code != 143 {
			t.Fatalf("exit %d, want 143 (SIGTERM)", code)
		}
	})

	t.Run("FIFO with a silent writer", func(t *testing.T) {
		fifo := filepath.Join(dir, "silent")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		w, err := os.OpenFile(fifo, os.O_RDWR, 0) // a writer that never writes
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if _, err := w.WriteString("2024-10-29T17:39:45.936188Z\tinfo\tproxy\tstarting\n"); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "logs", "analyze", "-o", "json", fifo)
		started(t, cmd)
		blockedOn(t, "the open FIFO", hasOpen(cmd.Process.Pid, fifo))
		if code := stop(t, cmd, syscall.SIGINT); code != 130 {
			t.Fatalf("exit %d, want 130", code)
		}
	})

	t.Run("stdin is a FIFO", func(t *testing.T) {
		fifo := filepath.Join(dir, "stdin")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(fifo, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd := exec.Command(bin, "logs", "analyze", "-")
		cmd.Stdin = f
		started(t, cmd)
		blockedOn(t, "reading stdin", readingStdin(cmd.Process.Pid))
		if code := stop(t, cmd, syscall.SIGINT); code != 130 {
			t.Fatalf("exit %d, want 130", code)
		}
	})

	t.Run("API call to a server that never answers", func(t *testing.T) {
		kc, conns := blackholeKubeconfig(t)
		for _, args := range [][]string{
			{"scan", "-n", "shop"},
			{"repair", "-n", "shop"},
			{"node", "scan", "--node", "n1", "--proc-root", "/proc"},
		} {
			cmd := exec.Command(bin, append(args, "--kubeconfig", kc)...)
			before := conns.Load()
			started(t, cmd)
			blockedOn(t, "an API call", func() bool { return conns.Load() > before })
			if code := stop(t, cmd, syscall.SIGINT); code != 130 {
				t.Fatalf("%v: exit %d, want 130", args, code)
			}
		}
	})

	t.Run("agent stops gracefully", func(t *testing.T) {
		kc, conns := blackholeKubeconfig(t)
		var stderr bytes.Buffer
		cmd := exec.Command(bin, "agent", "--node", "n1", "--metrics-addr", "", "--kubeconfig", kc)
		cmd.Stderr = &stderr
		started(t, cmd)
		blockedOn(t, "an API call", func() bool { return conns.Load() > 0 })
		if code := stop(t, cmd, syscall.SIGTERM); code != 0 {
			t.Fatalf("agent exit %d on SIGTERM, want 0 (graceful); stderr %s", code, stderr.String())
		}
	})
}

// blackholeKubeconfig points at a loopback listener that accepts connections and never
// says a word: every API call (its TLS handshake) blocks until the request timeout.
func blackholeKubeconfig(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	accepted := new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			accepted.Add(1)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	path := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://%s", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: shop}}]
current-context: x
`, ln.Addr())
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, accepted
}
