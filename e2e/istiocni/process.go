package istiocni

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Launcher starts child processes from one OS thread that stays locked until Close. Pdeathsig
// is delivered when the *thread* that forked a child exits (PR_SET_PDEATHSIG in prctl(2),
// golang/go#27505); forking from a thread that never returns to the Go scheduler keeps
// Pdeathsig meaning "the test process died" (the control plane's launcher does the same).
type Launcher struct {
	reqs chan launchReq
	done chan struct{}
	once sync.Once
}

type launchReq struct {
	cmd *exec.Cmd
	res chan error
}

// NewLauncher starts the launcher's thread.
func NewLauncher() *Launcher {
	l := &Launcher{reqs: make(chan launchReq), done: make(chan struct{})}
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		defer close(l.done)
		for r := range l.reqs {
			r.res <- r.cmd.Start()
		}
	}()
	return l
}

func (l *Launcher) start(cmd *exec.Cmd) error {
	res := make(chan error, 1)
	select {
	case l.reqs <- launchReq{cmd: cmd, res: res}:
	case <-l.done:
		return errors.New("launcher closed")
	}
	return <-res
}

// Close ends the launcher's thread; every process it started and that still runs gets its
// Pdeathsig (SIGKILL). Stop them first.
func (l *Launcher) Close() {
	l.once.Do(func() { close(l.reqs) })
	<-l.done
}

// Process is a child process in its own process group, its output in a log file.
type Process struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// Spec describes a process for Launcher.Start.
type Spec struct {
	Name    string
	Argv    []string
	Env     []string // nil = this process's environment
	LogPath string   // stdout and stderr are appended here
	Extra   io.Writer
	// NewNetns starts the process in a new network namespace of its own (with only lo, down).
	NewNetns bool
}

// Start starts s as a process-group leader that dies with the launcher's thread.
func (l *Launcher) Start(s Spec) (*Process, error) {
	f, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", s.Name, err)
	}
	fmt.Fprintf(f, "=== %s %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(s.Argv, " "))
	var out io.Writer = f
	if s.Extra != nil {
		out = io.MultiWriter(f, s.Extra)
	}
	cmd := exec.Command(s.Argv[0], s.Argv[1:]...)
	cmd.Env = s.Env
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if s.NewNetns {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNET
	}
	if err := l.start(cmd); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	p := &Process{Name: s.Name, LogPath: s.LogPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// PID is the process's id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended (and been reaped).
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed once the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is how the process ended; valid once Done is closed.
func (p *Process) Err() error { return p.waitErr }

// Stop sends sig to the process group (SIGTERM for a graceful stop, SIGKILL for a node that
// loses power), then SIGKILL after grace, and waits until the leader is reaped. Only this
// process's own group is signalled, and only while its leader is not reaped (so the group id
// cannot have been reused).
func (p *Process) Stop(sig syscall.Signal, grace time.Duration) {
	if p.Exited() {
		return
	}
	p.signal(sig)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return
	case <-t.C:
	}
	p.signal(syscall.SIGKILL)
	<-p.done
}

func (p *Process) signal(sig syscall.Signal) {
	if p.Exited() {
		return
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// Tail returns the last n lines of the process's log (best effort).
func (p *Process) Tail(n int) string { return Tail(p.LogPath, n) }

// Tail returns the last n lines of the file at path (best effort).
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
