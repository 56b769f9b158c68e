package detect

import (
	"bytes"
	"context"
	"errors"
	"io"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshmedic/meshmedic/netns"
)

// Prober reads what a pod's network namespace shows. Implementations: NewNodeLocalProber
// (procfs on the pod's node), NewExecProber (cat /proc/net/tcp6 inside the pod),
// NewEphemeralProber (the same from an ephemeral debug container) and NewConditionProber
// (the verdict a node agent published on the pod). A Prober must be safe for concurrent
// use and should return promptly when ctx is done.
type Prober interface {
	Probe(ctx context.Context, pod *corev1.Pod) (Probe, error)
}

// ProberFunc adapts a function to Prober.
type ProberFunc func(ctx context.Context, pod *corev1.Pod) (Probe, error)

// Probe implements Prober.
func (f ProberFunc) Probe(ctx context.Context, pod *corev1.Pod) (Probe, error) { return f(ctx, pod) }

// Probe is what one Prober read of one pod found.
type Probe struct {
	Listeners netns.Listeners
	// Netns is the inode of the pod's netns; 0 when the prober cannot know it.
	Netns uint64
	// Source names the prober: "node", "exec", "ephemeral", "condition".
	Source string
	// Class, when set, is a verdict reached elsewhere (a node agent's condition): the
	// Engine takes it as-is instead of judging Listeners. Missing then lists the ports the
	// agent found missing.
	Class   Class
	Missing []uint16
	// Rules is what rule inspection found of istio-cni's in-pod routing set-up; nil when
	// the prober does not inspect rules. RulesErr is why an inspection that was asked for
	// failed (Rules is then nil).
	Rules    *netns.RoutingRules
	RulesErr error
	// RulesVerdict is Finding.Rules as a node agent published it (ConditionProber).
	RulesVerdict string
}

// Prober sources, as found in Probe.Source and Finding.Source.
const (
	SourceNode      = "node"
	SourceExec      = "exec"
	SourceEphemeral = "ephemeral"
	SourceCondition = "condition"
)

// Outcomes callers branch on with errors.Is. Every one of them makes the finding unknown.
var (
	// ErrNoSandbox: no process of the pod was found under the proc root (not started yet,
	// another node, or CRI-O drop_infra_ctr=true). Never "uncaptured".
	ErrNoSandbox = errors.New("no sandbox process found for pod")
	// ErrHostNetwork: the pod's sandbox shares the host netns; its sockets are the host's.
	ErrHostNetwork = errors.New("pod shares the host network namespace")
	// ErrNoShell: the pod has no `cat` to exec (distroless); an ephemeral container may help.
	ErrNoShell = errors.New("no cat binary in the pod's container")
	// ErrNoRunningContainer: no container of the pod is running, so nothing can be exec'd.
	ErrNoRunningContainer = errors.New("no running container to exec into")
	// ErrForbidden: RBAC denied the request the prober needs (pods/exec,
	// pods/ephemeralcontainers).
	ErrForbidden = errors.New("forbidden")
	// ErrNoAgentCondition: the pod carries no meshmedic.io/AmbientCaptured condition (no
	// node agent on its node, or not checked yet).
	ErrNoAgentCondition = errors.New("no " + string(ConditionAmbientCaptured) + " condition on pod")
)

func podName(pod *corev1.Pod) string { return pod.Namespace + "/" + pod.Name }

// ListenersFromTables builds Listeners from the contents of /proc/net/tcp6 and
// /proc/net/tcp as read by some other means (exec, a file); nil means the table was
// missing as a file.
//
// Deprecated: use netns.ListenersFromTables, which holds the rules (a table a kernel would
// never print proves nothing, malformed rows and a cut table prove presence only, every
// read bounded) and reads from an io.Reader. This wrapper calls it with default options.
func ListenersFromTables(tcp6, tcp []byte) netns.Listeners {
	return netns.ListenersFromTables(tableReader(tcp6), tableReader(tcp), netns.ReadOptions{})
}

// tableReader is a reader over b, or nil (a missing table) when b is nil.
func tableReader(b []byte) io.Reader {
	if b == nil {
		return nil
	}
	return bytes.NewReader(b)
}

type requiredKey struct{}

// ContextWithRequired tells a Prober which listeners the Engine will judge the pod on
// (enroll's Expectation.Required), so that a prober which skips /proc/net/tcp when tcp6
// already shows the required listeners does not skip a table that holds one of them
// (127.0.0.1:15053 when DNS capture is required). The Engine sets it for every probe.
func ContextWithRequired(ctx context.Context, required []uint16) context.Context {
	return context.WithValue(ctx, requiredKey{}, required)
}

// RequiredFromContext returns the ports set by ContextWithRequired, or nil.
func RequiredFromContext(ctx context.Context) []uint16 {
	r, _ := ctx.Value(requiredKey{}).([]uint16)
	return r
}

// readOptionsFor is opt with Required taken from ctx when the Engine set it.
func readOptionsFor(ctx context.Context, opt netns.ReadOptions) netns.ReadOptions {
	if r := RequiredFromContext(ctx); len(r) > 0 {
		opt.Required = r
	}
	return opt
}
