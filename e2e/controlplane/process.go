package controlplane

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// launcher starts child processes from one OS thread that stays locked for the life of the
// control plane. Pdeathsig is delivered when the *thread* that forked the child exits, not the
// process (see PR_SET_PDEATHSIG in prctl(2), golang/go#27505): a child forked from an ordinary
// goroutine would be SIGKILLed as soon as the Go runtime retired that thread, which it does when
// another goroutine (a netns helper, say) exits while locked to it. Pinning the forks to one
// thread that is ours keeps Pdeathsig meaning "the test process died".
type launcher struct {
	reqs chan launchReq
	done chan struct{}
}

type launchReq struct {
	cmd *exec.Cmd
	res chan error
}

func newLauncher() *launcher {
	l := &launcher{reqs: make(chan launchReq), done: make(chan struct{})}
	go l.run()
	return l
}

func (l *launcher) run() {
	// Never unlocked: when run returns, the thread exits with it, and any child still alive at
	// that point gets its Pdeathsig. close is only called after every child has been reaped.
	runtime.LockOSThread()
	defer close(l.done)
	for r := range l.reqs {
		r.res <- r.cmd.Start()
	}
}

func (l *launcher) start(cmd *exec.Cmd) error {
	res := make(chan error, 1)
	select {
	case l.reqs <- launchReq{cmd: cmd, res: res}:
	case <-l.done:
		return errors.New("launcher closed")
	}
	return <-res
}

func (l *launcher) close() {
	close(l.reqs)
	<-l.done
}

// proc is one running component: its own process group, output in a log file (and optionally
// an extra writer).
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	done    chan struct{} // closed once the process has been reaped
	waitErr error         // valid after done
}

// startProc starts bin with args as a process group leader that dies with the launcher's thread.
func startProc(l *launcher, name, bin string, args []string, dir, logPath string, extra io.Writer) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	fmt.Fprintf(f, "=== %s %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	var out io.Writer = f
	if extra != nil {
		out = io.MultiWriter(f, extra)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = childEnv()
	cmd.Stdin = nil
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := l.start(cmd); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, logFile: f, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// childEnv is the test's environment minus what would reconfigure the components behind our
// back: etcd reads every ETCD_* variable as a flag, and client tooling honours KUBECONFIG.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ETCD_") || strings.HasPrefix(kv, "ETCDCTL_") || strings.HasPrefix(kv, "KUBECONFIG=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after grace, and waits until the leader
// is reaped. Only this process's own group is signalled, and only while its leader has not been
// reaped (so the group id cannot have been reused).
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	p.signalGroup(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return
	case <-t.C:
	}
	p.signalGroup(syscall.SIGKILL)
	<-p.done
}

func (p *proc) signalGroup(sig syscall.Signal) {
	if p.exited() {
		return
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		// The group is gone but the leader is not reaped yet, or we could not signal the group:
		// signal the leader through its pidfd-backed handle.
		_ = p.cmd.Process.Signal(sig)
	}
}

// exitError describes how a process ended, with the tail of its log.
// When the log says a port was taken, the error also wraps errAddrInUse.
func (p *proc) exitError() error {
	t := tail(p.logPath, 30)
	err := fmt.Errorf("%s exited (%v); last lines of %s:\n%s", p.name, p.waitErr, p.logPath, t)
	if strings.Contains(t, "address already in use") {
		return fmt.Errorf("%w: %w", errAddrInUse, err)
	}
	return err
}

// tail returns the last n lines of the file at path (best effort).
func tail(path string, n int) string {
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

// prefixWriter writes each complete line to w as "[name] line". Writers made by one
// newPrefixer share a mutex, so lines of different components never interleave mid-line.
type prefixWriter struct {
	mu   *sync.Mutex
	w    io.Writer
	name string
	buf  []byte
}

func newPrefixer(w io.Writer) func(name string) io.Writer {
	mu := &sync.Mutex{}
	return func(name string) io.Writer {
		return &prefixWriter{mu: mu, w: w, name: name}
	}
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		if _, err := fmt.Fprintf(p.w, "[%s] %s\n", p.name, p.buf[:i]); err != nil {
			p.buf = p.buf[i+1:]
			return len(b), nil // the extra log is best effort; never stall the child
		}
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}

// freeLoopbackPorts returns n distinct TCP ports that were free on 127.0.0.1 a moment ago.
func freeLoopbackPorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free loopback port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
