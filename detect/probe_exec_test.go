package detect

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/netns"
	"github.com/meshmedic/meshmedic/netns/netnstest"
)

// fakeExec answers `cat <path>` from files; a path missing from files gets cat's own error.
type fakeExec struct {
	mu        sync.Mutex
	files     map[string]string
	err       error // returned for every call when set
	stderr    string
	calls     []string
	container string
}

func (f *fakeExec) Exec(_ context.Context, _, _, container string, cmd []string) ([]byte, []byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, strings.Join(cmd, " "))
	f.container = container
	if f.err != nil {
		return nil, []byte(f.stderr), f.err
	}
	if len(cmd) != 2 || cmd[0] != "cat" {
		return nil, nil, fmt.Errorf("unexpected command %v", cmd)
	}
	if s, ok := f.files[cmd[1]]; ok {
		return []byte(s), nil, nil
	}
	return nil, []byte("cat: can't open '" + cmd[1] + "': No such file or directory\n"), utilexec.CodeExitError{Err: errors.New("command terminated with exit code 1"), Code: 1}
}

func runningPod() *corev1.Pod {
	p := enabledPod("shop", "app")
	p.Status.ContainerStatuses = []corev1.ContainerStatus{
		{Name: "init-done", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}},
		{Name: "app", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}},
	}
	return &p
}

func TestExecProber(t *testing.T) {
	full := netnstest.TCP6(netnstest.Ztunnel(false, 100)...)
	v4 := netnstest.TCP(netnstest.Listen("0.0.0.0:15001", 1), netnstest.Listen("0.0.0.0:15006", 2), netnstest.Listen("0.0.0.0:15008", 3))
	appOnly := netnstest.TCP(netnstest.Listen("127.0.0.1:15008", 4), netnstest.Listen("0.0.0.0:8080", 5))
	ctx := context.Background()

	t.Run("tcp6 has everything: tcp skipped", func(t *testing.T) {
		x := &fakeExec{files: map[string]string{"/proc/net/tcp6": full, "/proc/net/tcp": appOnly}}
		p, err := NewExecProber(x).Probe(ctx, runningPod())
		require.NoError(t, err)
		assert.Equal(t, []uint16{15001, 15006, 15008}, p.Listeners.Ports)
		assert.Equal(t, netns.TableSkipped, p.Listeners.TCP.Status)
		assert.Equal(t, []string{"cat /proc/net/tcp6"}, x.calls)
		assert.Equal(t, "app", x.container, "first running container")
		assert.Equal(t, SourceExec, p.Source)
		assert.Equal(t, netns.Captured, p.Listeners.Capture(nil))
	})
	t.Run("full reads both", func(t *testing.T) {
		x := &fakeExec{files: map[string]string{"/proc/net/tcp6": full, "/proc/net/tcp": appOnly}}
		_, err := NewExecProber(x, WithExecReadOptions(netns.ReadOptions{Full: true})).Probe(ctx, runningPod())
		require.NoError(t, err)
		assert.Len(t, x.calls, 2)
	})
	t.Run("tcp6 missing is a fact, not an error", func(t *testing.T) {
		x := &fakeExec{files: map[string]string{"/proc/net/tcp": v4}}
		p, err := NewExecProber(x).Probe(ctx, runningPod())
		require.NoError(t, err)
		assert.Equal(t, netns.TableMissing, p.Listeners.TCP6.Status)
		assert.Equal(t, netns.Captured, p.Listeners.Capture(nil))
	})
	t.Run("orphan: an app's loopback 15008 does not count", func(t *testing.T) {
		x := &fakeExec{files: map[string]string{"/proc/net/tcp6": netnstest.TCP6(), "/proc/net/tcp": appOnly}}
		p, err := NewExecProber(x).Probe(ctx, runningPod())
		require.NoError(t, err)
		assert.Equal(t, netns.CaptureNone, p.Listeners.Capture(nil))
	})
	t.Run("garbage is unreadable, so unknown", func(t *testing.T) {
		x := &fakeExec{files: map[string]string{"/proc/net/tcp6": "header\nnot a row\n", "/proc/net/tcp": "header\nzzz\n"}}
		p, err := NewExecProber(x).Probe(ctx, runningPod())
		require.NoError(t, err)
		assert.Equal(t, netns.CaptureUnknown, p.Listeners.Capture(nil))
	})
	t.Run("cat missing", func(t *testing.T) {
		x := &fakeExec{err: errors.New(`command terminated: OCI runtime exec failed: exec failed: unable to start container process: exec: "cat": executable file not found in $PATH: unknown`)}
		_, err := NewExecProber(x).Probe(ctx, runningPod())
		assert.ErrorIs(t, err, ErrNoShell)
		x = &fakeExec{err: utilexec.CodeExitError{Err: errors.New("command terminated with exit code 127"), Code: 127}}
		_, err = NewExecProber(x).Probe(ctx, runningPod())
		assert.ErrorIs(t, err, ErrNoShell)
	})
	t.Run("403", func(t *testing.T) {
		x := &fakeExec{err: errors.New(`pods "app" is forbidden: User "dev" cannot create resource "pods/exec" in API group "" in the namespace "shop"`)}
		_, err := NewExecProber(x).Probe(ctx, runningPod())
		assert.ErrorIs(t, err, ErrForbidden)
		assert.Contains(t, err.Error(), "cannot create pods/exec")
	})
	t.Run("other exec failure makes the table unreadable", func(t *testing.T) {
		x := &fakeExec{err: errors.New("error dialing backend: EOF")}
		p, err := NewExecProber(x).Probe(ctx, runningPod())
		require.NoError(t, err)
		assert.Equal(t, netns.TableUnreadable, p.Listeners.TCP6.Status)
		assert.Equal(t, netns.CaptureUnknown, p.Listeners.Capture(nil))
	})
	t.Run("no running container", func(t *testing.T) {
		pod := runningPod()
		pod.Status.ContainerStatuses = pod.Status.ContainerStatuses[:1]
		_, err := NewExecProber(&fakeExec{}).Probe(ctx, pod)
		assert.ErrorIs(t, err, ErrNoRunningContainer)
	})
}

// TestSPDYExecutorForbidden runs the real client-go exec path against a loopback server
// that answers like an API server refusing pods/exec.
func TestSPDYExecutorForbidden(t *testing.T) {
	var hits sync.Map
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Store(r.URL.Path, true)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"app\" is forbidden: User \"dev\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"shop\"","reason":"Forbidden","details":{"name":"app","kind":"pods"},"code":403}`)
	}))
	t.Cleanup(srv.Close)
	cfg := &rest.Config{Host: srv.URL}
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	p := NewExecProber(NewSPDYExecutor(cfg, cs.CoreV1().RESTClient()))
	_, err = p.Probe(context.Background(), runningPod())
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrForbidden)
	assert.Contains(t, err.Error(), "cannot create pods/exec")
	_, ok := hits.Load("/api/v1/namespaces/shop/pods/app/exec")
	assert.True(t, ok, "the exec subresource was requested")
}

// With DNS capture required, 127.0.0.1:15053 lives in tcp: the Engine's required ports
// reach the prober through the context, so tcp is not skipped.
func TestExecProberRequiredFromEngine(t *testing.T) {
	x := &fakeExec{files: map[string]string{
		"/proc/net/tcp6": netnstest.TCP6(netnstest.Ztunnel(false, 1)...),
		"/proc/net/tcp":  netnstest.TCP(netnstest.Listen("127.0.0.1:15053", 9)),
	}}
	pod := runningPod()
	w := newWorld(*pod)
	s := enroll.DefaultSettings()
	s.DNSCapture = enroll.DNSOn
	rep, err := New(w, w, NewExecProber(x), WithSettings(s)).Scan(context.Background(), "")
	require.NoError(t, err)
	f := rep.Findings[0]
	assert.Equal(t, []uint16{15001, 15006, 15008, 15053}, f.Expected)
	assert.Equal(t, ClassCaptured, f.Class)
	assert.Len(t, x.calls, 2)
}

// The exec probers judge tables by netns's rules: what a kernel would never print, or a
// table with a malformed row where a listener should be, is unknown through the Engine.
func TestExecProberEvidenceIsUnknown(t *testing.T) {
	two6 := netnstest.TCP6(netnstest.Listen("[::]:15001", 1), netnstest.Listen("[::]:15006", 2))
	for _, c := range []struct {
		name      string
		tcp6, tcp string
		want      Class
	}{
		{"proven orphan", netnstest.TCP6(), netnstest.TCP(), ClassOrphaned},
		{"empty output", "", "", ClassUnknown},
		{"headerless rows", two6[strings.IndexByte(two6, '\n')+1:], netnstest.TCP(), ClassUnknown},
		{"malformed row where 15008 should be", two6 + "   2: 00000000000000000000000000000000:3AA0 0000\n", netnstest.TCP(), ClassUnknown},
		{"malformed row, every listener present", netnstest.TCP6(netnstest.Ztunnel(false, 1)...) + "junk\n", netnstest.TCP(), ClassCaptured},
	} {
		t.Run(c.name, func(t *testing.T) {
			x := &fakeExec{files: map[string]string{"/proc/net/tcp6": c.tcp6, "/proc/net/tcp": c.tcp}}
			w := newWorld(*runningPod())
			rep, err := New(w, w, NewExecProber(x)).Scan(context.Background(), "")
			require.NoError(t, err)
			assert.Equal(t, c.want, rep.Findings[0].Class)
		})
	}
}

// blockingExec ignores its context and never returns until released.
type blockingExec struct{ release chan struct{} }

func (b blockingExec) Exec(context.Context, string, string, string, []string) ([]byte, []byte, error) {
	<-b.release
	return nil, nil, errors.New("released")
}

// An Executor that ignores its context cannot hold a probe past the probe's deadline.
func TestExecProberBoundedByContext(t *testing.T) {
	x := blockingExec{release: make(chan struct{})}
	t.Cleanup(func() { close(x.release) })
	ctx, cancel := context.WithCancel(context.Background())
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err = NewExecProber(x).Probe(ctx, runningPod())
	}()
	cancel()
	select {
	case <-done: // liveness bound, not a timing assertion
	case <-time.After(10 * time.Second):
		t.Fatal("Probe has not returned 10 s after its context was cancelled")
	}
	assert.ErrorIs(t, err, context.Canceled)
}
