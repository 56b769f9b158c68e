package detect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/meshmedic/meshmedic/netns"
)

// Executor runs a command in a container of a pod and returns what it printed. A
// non-zero exit should be an error implementing k8s.io/client-go/util/exec.ExitError (as
// remotecommand's is). NewSPDYExecutor is the client-go implementation.
type Executor interface {
	Exec(ctx context.Context, namespace, pod, container string, cmd []string) (stdout, stderr []byte, err error)
}

// ExecOption configures an ExecProber.
type ExecOption func(*ExecProber)

// WithExecReadOptions sets which listeners let the prober skip /proc/net/tcp (Required)
// and whether to read both tables anyway (Full). Default: CorePorts, not Full — each
// table costs an API round trip.
func WithExecReadOptions(o netns.ReadOptions) ExecOption {
	return func(p *ExecProber) { p.read = o }
}

// ExecProber reads a pod's socket tables with `cat /proc/net/tcp6` (and, only when needed,
// `cat /proc/net/tcp`) in the pod's first running container. Every container of a pod
// shares its netns, so any of them shows the tables. It needs `cat` in the image: a
// distroless pod gives ErrNoShell (see NewEphemeralProber).
type ExecProber struct {
	exec Executor
	read netns.ReadOptions
}

// NewExecProber returns an ExecProber running commands through exec.
func NewExecProber(exec Executor, opts ...ExecOption) *ExecProber {
	p := &ExecProber{exec: exec}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Probe implements Prober.
func (p *ExecProber) Probe(ctx context.Context, pod *corev1.Pod) (Probe, error) {
	c := runningContainer(pod)
	if c == "" {
		return Probe{}, fmt.Errorf("pod %s: %w", podName(pod), ErrNoRunningContainer)
	}
	l, err := readTablesByExec(ctx, p.exec, pod, c, readOptionsFor(ctx, p.read))
	if err != nil {
		return Probe{}, err
	}
	return Probe{Listeners: l, Source: SourceExec}, nil
}

// runningContainer is the first container of status.containerStatuses that is running.
func runningContainer(pod *corev1.Pod) string {
	for _, s := range pod.Status.ContainerStatuses {
		if s.State.Running != nil {
			return s.Name
		}
	}
	return ""
}

// readTablesByExec cats tcp6, then tcp when netns's rule (Listeners.NeedTCP) says so.
// Each table goes through netns's table rules and byte cap (Listeners.AddTable).
func readTablesByExec(ctx context.Context, x Executor, pod *corev1.Pod, container string, opt netns.ReadOptions) (netns.Listeners, error) {
	l := netns.Listeners{Ports: []uint16{}}
	var err error
	if l.TCP6, err = catTable(ctx, x, pod, container, "tcp6", &l, opt); err != nil {
		return l, err
	}
	if l.NeedTCP(opt) {
		if l.TCP, err = catTable(ctx, x, pod, container, "tcp", &l, opt); err != nil {
			return l, err
		}
	} else {
		l.TCP = netns.Table{Name: "tcp", Status: netns.TableSkipped}
	}
	return l, nil
}

// catTable runs `cat /proc/net/<name>` and parses it into l. A missing file is
// TableMissing; a missing cat is ErrNoShell; RBAC refusal is ErrForbidden; other failures
// make the table unreadable.
func catTable(ctx context.Context, x Executor, pod *corev1.Pod, container, name string, l *netns.Listeners, opt netns.ReadOptions) (netns.Table, error) {
	path := "/proc/net/" + name
	stdout, stderr, err := execBounded(ctx, x, pod.Namespace, pod.Name, container, []string{"cat", path})
	if err == nil {
		t := l.AddTable(name, bytes.NewReader(stdout), opt)
		if t.Err != nil {
			t.Err = fmt.Errorf("pod %s: cat %s: %w", podName(pod), path, t.Err)
		}
		return t, nil
	}
	if ctx.Err() != nil {
		return netns.Table{}, fmt.Errorf("pod %s: exec cat %s: %w", podName(pod), path, ctx.Err())
	}
	switch execFailure(err, stderr) {
	case failMissing:
		return netns.Table{Name: name, Status: netns.TableMissing}, nil
	case failNoShell:
		return netns.Table{}, fmt.Errorf("pod %s container %s: %w: %w", podName(pod), container, ErrNoShell, err)
	case failForbidden:
		return netns.Table{}, fmt.Errorf("pod %s: cannot create pods/exec: %w: %w", podName(pod), ErrForbidden, err)
	}
	msg := strings.TrimSpace(string(stderr))
	if msg != "" {
		err = fmt.Errorf("%w: %s", err, msg)
	}
	return netns.Table{Name: name, Status: netns.TableUnreadable, Err: fmt.Errorf("pod %s: cat %s: %w", podName(pod), path, err)}, nil
}

// execBounded runs cmd through x and returns when ctx is done even if x does not: an
// Executor that ignores ctx cannot hold a probe past the Engine's per-pod deadline. Its
// goroutine ends whenever x returns (the channel is buffered); what it returns that late
// is dropped. The bytes are bounded by the Executor (SPDYExecutor caps its output) and
// by the table parser's cap.
func execBounded(ctx context.Context, x Executor, namespace, pod, container string, cmd []string) ([]byte, []byte, error) {
	type result struct {
		stdout, stderr []byte
		err            error
	}
	done := make(chan result, 1)
	go func() {
		o, e, err := x.Exec(ctx, namespace, pod, container, cmd)
		done <- result{o, e, err}
	}()
	select {
	case r := <-done:
		return r.stdout, r.stderr, r.err
	case <-ctx.Done():
		select {
		case r := <-done: // it returned too: its own answer
			return r.stdout, r.stderr, r.err
		default:
			return nil, nil, ctx.Err()
		}
	}
}

type failure int

const (
	failOther failure = iota
	failMissing
	failNoShell
	failForbidden
)

// execFailure sorts an exec error: the file is missing (cat ran and said so), cat is
// missing (the runtime's "executable file not found", exit 126/127), RBAC refused.
func execFailure(err error, stderr []byte) failure {
	if apierrors.IsForbidden(err) {
		return failForbidden
	}
	text := err.Error()
	if strings.Contains(text, "forbidden") || strings.Contains(text, "Forbidden") {
		return failForbidden
	}
	if strings.Contains(text, "executable file not found") || strings.Contains(text, "no such file or directory: unknown") ||
		bytes.Contains(stderr, []byte("executable file not found")) {
		return failNoShell
	}
	var ee utilexec.ExitError
	if errors.As(err, &ee) {
		switch ee.ExitStatus() {
		case 126, 127:
			return failNoShell
		}
	}
	if bytes.Contains(stderr, []byte("No such file")) {
		return failMissing
	}
	return failOther
}
