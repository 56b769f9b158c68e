package detect

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/utils/clock"

	"github.com/meshmedic/meshmedic/netns"
)

// EphemeralContainerName is the name of the debug container the EphemeralProber adds
// (and reuses when it is already there and running).
const EphemeralContainerName = "meshmedic-probe"

// DefaultEphemeralImage is the image of the debug container: it needs `cat` and `sleep`.
const DefaultEphemeralImage = "busybox:1.36"

// EphemeralOption configures an EphemeralProber.
type EphemeralOption func(*EphemeralProber)

// WithEphemeralImage sets the debug container's image (default busybox:1.36).
func WithEphemeralImage(image string) EphemeralOption {
	return func(p *EphemeralProber) { p.image = image }
}

// WithEphemeralWait bounds how long to wait for the debug container to run (default 60s),
// polling the pod every interval (default 1s) on clk (default the real clock).
func WithEphemeralWait(timeout, interval time.Duration, clk clock.Clock) EphemeralOption {
	return func(p *EphemeralProber) {
		p.wait, p.interval = timeout, interval
		if clk != nil {
			p.clock = clk
		}
	}
}

// WithEphemeralReadOptions is WithExecReadOptions for the ephemeral prober.
func WithEphemeralReadOptions(o netns.ReadOptions) EphemeralOption {
	return func(p *EphemeralProber) { p.read = o }
}

// EphemeralProber reads the socket tables of pods that have no `cat` (distroless) from an
// ephemeral debug container it adds to the pod through the pods/ephemeralcontainers
// subresource, then execs `cat` in it. Every container of a pod shares its netns, so the
// debug container sees the same /proc/net tables.
//
// WARNING: an ephemeral container can NEVER be removed from a pod. Once added, the pod
// carries it (and its image, pulled on the node) until the pod is deleted, and every
// later `kubectl get pod -o yaml` shows it. The container sleeps for a day and is reused
// by later probes while it runs. Construct this prober only when the user asked for it
// explicitly; it needs RBAC for pods/ephemeralcontainers (update) and pods/exec (create).
type EphemeralProber struct {
	pods     corev1client.PodsGetter
	exec     Executor
	image    string
	wait     time.Duration
	interval time.Duration
	clock    clock.Clock
	read     netns.ReadOptions
}

// NewEphemeralProber returns a prober that adds the debug container through pods and
// execs through exec.
func NewEphemeralProber(pods corev1client.PodsGetter, exec Executor, opts ...EphemeralOption) *EphemeralProber {
	p := &EphemeralProber{pods: pods, exec: exec, image: DefaultEphemeralImage, wait: time.Minute, interval: time.Second, clock: clock.RealClock{}}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Probe implements Prober.
func (p *EphemeralProber) Probe(ctx context.Context, pod *corev1.Pod) (Probe, error) {
	if err := p.ensure(ctx, pod); err != nil {
		return Probe{}, err
	}
	l, err := readTablesByExec(ctx, p.exec, pod, EphemeralContainerName, readOptionsFor(ctx, p.read))
	if err != nil {
		return Probe{}, err
	}
	return Probe{Listeners: l, Source: SourceEphemeral}, nil
}

// ensure adds the debug container unless the pod has it, then waits for it to run.
func (p *EphemeralProber) ensure(ctx context.Context, pod *corev1.Pod) error {
	cur, err := p.pods.Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get pod %s: %w", podName(pod), err)
	}
	if cur.UID != pod.UID {
		return fmt.Errorf("pod %s: replaced (uid %s, was %s): %w", podName(pod), cur.UID, pod.UID, ErrNoSandbox)
	}
	if !hasEphemeral(cur) {
		cur.Spec.EphemeralContainers = append(cur.Spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{
				Name:    EphemeralContainerName,
				Image:   p.image,
				Command: []string{"sleep", "86400"},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: new(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
				ImagePullPolicy: corev1.PullIfNotPresent,
			},
		})
		cur, err = p.pods.Pods(pod.Namespace).UpdateEphemeralContainers(ctx, pod.Name, cur, metav1.UpdateOptions{})
		switch {
		case apierrors.IsForbidden(err):
			return fmt.Errorf("pod %s: cannot update pods/ephemeralcontainers: %w: %w", podName(pod), ErrForbidden, err)
		case err != nil:
			return fmt.Errorf("pod %s: add ephemeral container %s: %w", podName(pod), EphemeralContainerName, err)
		}
	}
	deadline := p.clock.Now().Add(p.wait)
	for {
		switch st := ephemeralState(cur); {
		case st.Running != nil:
			return nil
		case st.Terminated != nil:
			return fmt.Errorf("pod %s: ephemeral container %s has terminated (%s) and can never be restarted or removed",
				podName(pod), EphemeralContainerName, st.Terminated.Reason)
		}
		if !p.clock.Now().Before(deadline) {
			return fmt.Errorf("pod %s: ephemeral container %s not running after %s", podName(pod), EphemeralContainerName, p.wait)
		}
		t := p.clock.NewTimer(p.interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("pod %s: waiting for ephemeral container: %w", podName(pod), ctx.Err())
		case <-t.C():
		}
		if cur, err = p.pods.Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("get pod %s: %w", podName(pod), err)
		}
	}
}

func hasEphemeral(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.EphemeralContainers {
		if c.Name == EphemeralContainerName {
			return true
		}
	}
	return false
}

func ephemeralState(pod *corev1.Pod) corev1.ContainerState {
	for _, s := range pod.Status.EphemeralContainerStatuses {
		if s.Name == EphemeralContainerName {
			return s.State
		}
	}
	return corev1.ContainerState{}
}
