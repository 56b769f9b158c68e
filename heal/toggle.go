package heal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/utils/clock"

	"github.com/meshmedic/meshmedic/enroll"
)

// ReprobeFunc reads the pod's netns again and says whether it is captured (every required
// ztunnel listener present).
type ReprobeFunc func(ctx context.Context, pod *corev1.Pod) (captured bool, err error)

// ToggleOptions configures the toggle strategy. Reprobe is required; zero values of the
// others take the defaults.
type ToggleOptions struct {
	Reprobe ReprobeFunc
	// Clock times the waits (default: the real clock).
	Clock clock.Clock
	// Timeout bounds each wait: for istio-cni to take the pod out, then for capture to
	// come back (default 1m each).
	Timeout time.Duration
	// PollInterval is how often the pod is read and re-probed while waiting (default 2s).
	PollInterval time.Duration
	// RestoreAttempts bounds the re-read-and-patch attempts when restoring the label meets
	// a 409 (default 3). Each attempt first checks the label is still the "none" this
	// strategy set; anything else means someone else changed it and it is left alone.
	RestoreAttempts int
	// RestoreTimeout bounds putting the label back (default 30s). The restore runs on a
	// context of its own, detached from the caller's cancellation: a Ctrl-C or an agent
	// shutting down during the toggle must not leave the pod out of the mesh.
	RestoreTimeout time.Duration
}

// Toggle re-enrolls a pod without restarting it: it sets the pod label
// istio.io/dataplane-mode=none, waits until istio-cni has taken the pod out of the mesh
// (the redirection annotation is removed and the re-probe shows no capture), restores the
// label to exactly what it was (absent stays absent), and waits until the re-probe shows
// capture back. Every patch is a JSON merge patch carrying the resourceVersion the change
// is based on, so a concurrent change is a 409, never overwritten.
//
// Istio 1.21 ignores the pod label (only the namespace label and the redirection
// annotation select a pod then), so there the first wait times out and the label is put
// back: the result is failed.
type Toggle struct {
	pods corev1client.PodsGetter
	o    ToggleOptions
}

// NewToggle returns the toggle strategy; it fails when o.Reprobe is nil.
func NewToggle(pods corev1client.PodsGetter, o ToggleOptions) (*Toggle, error) {
	if o.Reprobe == nil {
		return nil, errors.New("toggle strategy: Reprobe is required")
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Minute
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 2 * time.Second
	}
	if o.RestoreAttempts <= 0 {
		o.RestoreAttempts = 3
	}
	if o.RestoreTimeout <= 0 {
		o.RestoreTimeout = 30 * time.Second
	}
	return &Toggle{pods: pods, o: o}, nil
}

// Name returns "toggle".
func (*Toggle) Name() string { return StrategyToggle }

// ReplacesPod returns false: the pod keeps running, so bare pods may be toggled.
func (*Toggle) ReplacesPod() bool { return false }

const dataplaneModeNone = "none"

// Heal toggles the label; see Toggle. In a dry run only the first patch is sent, with
// DryRun=All, and the result is would-toggle.
func (s *Toggle) Heal(ctx context.Context, t Target, dryRun bool) (Result, error) {
	p := t.Pod
	if p == nil {
		return ResultFailed, errors.New("toggle: target without a pod")
	}
	ref := podRef(p)
	if p.ResourceVersion == "" {
		// No version to guard with: read the pod, and act only if it is the same pod.
		gone, cur, err := podGone(ctx, s.pods, p)
		if err != nil {
			return ResultFailed, err
		}
		if gone {
			return goneResult(p, ResultNotActionable, "not found before toggling")
		}
		p = cur
	}
	orig, had := p.Labels[enroll.LabelDataplaneMode]
	if had && orig == dataplaneModeNone {
		return ResultNotActionable, fmt.Errorf("pod %s: label %s is already %q (opted out): %w",
			ref, enroll.LabelDataplaneMode, orig, ErrUnknownNotHealed)
	}
	none := dataplaneModeNone
	patch, err := labelPatch(p.ResourceVersion, &none)
	if err != nil {
		return ResultFailed, fmt.Errorf("pod %s: %w", ref, err)
	}
	opts := metav1.PatchOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	if _, err := s.pods.Pods(p.Namespace).Patch(ctx, p.Name, types.MergePatchType, patch, opts); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return goneResult(p, ResultNotActionable, "not found when toggling")
		case apierrors.IsConflict(err):
			return ResultFailed, fmt.Errorf("pod %s: changed since it was checked (resourceVersion %s), not toggled: %w", ref, p.ResourceVersion, err)
		}
		return ResultFailed, fmt.Errorf("pod %s: set label %s=none: %w", ref, enroll.LabelDataplaneMode, err)
	}
	if dryRun {
		return ResultWouldToggle, nil
	}

	// Phase 1: istio-cni's node agent acts on the label only by comparing it with the
	// redirection annotation on the pod it reads at that moment
	// (istio/istio cni/pkg/nodeagent/informers.go, reconcilePod: isEnrolled vs
	// shouldBeEnabled); restoring the label before it has removed the annotation could
	// leave it seeing no change at all. So wait for the annotation to go and for the
	// re-probe to show no capture.
	var lastErr error
	var changed error
	werr := poll(ctx, s.o.Clock, s.o.PollInterval, s.o.Timeout, func(ctx context.Context) (bool, error) {
		cur, err := s.current(ctx, p)
		if err != nil {
			return false, stopIfGone(err, &lastErr)
		}
		if v, ok := cur.Labels[enroll.LabelDataplaneMode]; !ok || v != dataplaneModeNone {
			changed = fmt.Errorf("pod %s: label %s changed by someone else to %q during the toggle; left alone", ref, enroll.LabelDataplaneMode, v)
			return false, changed
		}
		if _, ok := cur.Annotations[enroll.AnnotationRedirection]; ok {
			return false, nil
		}
		captured, err := s.o.Reprobe(ctx, cur)
		if err != nil {
			lastErr = err
			return false, nil
		}
		return !captured, nil
	})
	if changed != nil {
		return ResultFailed, changed
	}
	var phase1 error
	if werr != nil {
		if errors.Is(werr, ErrAlreadyGone) {
			return ResultFailed, werr
		}
		phase1 = fmt.Errorf("pod %s: istio-cni did not take the pod out of the mesh after label none: %w", ref, describeWait(werr, s.o.Timeout, lastErr))
		// Fall through: the label must be put back whatever happened.
	}

	// Phase 2: put the label back exactly — even when ctx was cancelled meanwhile.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.o.RestoreTimeout)
	err = s.restore(rctx, p, orig, had)
	cancel()
	if ctx.Err() != nil && err == nil && phase1 != nil {
		return ResultFailed, fmt.Errorf("pod %s: interrupted (%w); label %s restored", ref, ctx.Err(), enroll.LabelDataplaneMode)
	}
	if err != nil {
		if phase1 != nil {
			return ResultFailed, fmt.Errorf("%w; %w", phase1, err)
		}
		return ResultFailed, err
	}
	if phase1 != nil {
		return ResultFailed, fmt.Errorf("%w (label restored)", phase1)
	}

	// Phase 3: capture must come back.
	lastErr = nil
	werr = poll(ctx, s.o.Clock, s.o.PollInterval, s.o.Timeout, func(ctx context.Context) (bool, error) {
		cur, err := s.current(ctx, p)
		if err != nil {
			return false, stopIfGone(err, &lastErr)
		}
		captured, err := s.o.Reprobe(ctx, cur)
		if err != nil {
			lastErr = err
			return false, nil
		}
		return captured, nil
	})
	if werr != nil {
		return ResultFailed, fmt.Errorf("pod %s: capture did not return after toggle: %w", ref, describeWait(werr, s.o.Timeout, lastErr))
	}
	return ResultToggled, nil
}

// current reads the pod and fails with ErrAlreadyGone when that UID no longer exists.
func (s *Toggle) current(ctx context.Context, p *corev1.Pod) (*corev1.Pod, error) {
	gone, cur, err := podGone(ctx, s.pods, p)
	if err != nil {
		return nil, err
	}
	if gone {
		return nil, fmt.Errorf("pod %s (uid %s) disappeared during the toggle: %w", podRef(p), p.UID, ErrAlreadyGone)
	}
	return cur, nil
}

// stopIfGone ends a wait when the pod is gone; any other read error is remembered and the
// wait goes on.
func stopIfGone(err error, last *error) error {
	if errors.Is(err, ErrAlreadyGone) {
		return err
	}
	*last = err
	return nil
}

// restore puts the label back to orig (removes it when it was absent), guarded by the
// resourceVersion of a fresh read that still shows the "none" this strategy set.
func (s *Toggle) restore(ctx context.Context, p *corev1.Pod, orig string, had bool) error {
	ref := podRef(p)
	want := "absent"
	var value *string
	if had {
		value, want = &orig, fmt.Sprintf("%q", orig)
	}
	stuck := func(err error) error {
		return fmt.Errorf("pod %s: left with label %s=none, restore it to %s by hand: %w", ref, enroll.LabelDataplaneMode, want, err)
	}
	var err error
	for range s.o.RestoreAttempts {
		var cur *corev1.Pod
		cur, err = s.current(ctx, p)
		if err != nil {
			if errors.Is(err, ErrAlreadyGone) {
				return err
			}
			continue
		}
		if v, ok := cur.Labels[enroll.LabelDataplaneMode]; !ok || v != dataplaneModeNone {
			return fmt.Errorf("pod %s: label %s changed by someone else to %q during the toggle; left alone", ref, enroll.LabelDataplaneMode, v)
		}
		patch, perr := labelPatch(cur.ResourceVersion, value)
		if perr != nil {
			return stuck(perr)
		}
		_, err = s.pods.Pods(p.Namespace).Patch(ctx, p.Name, types.MergePatchType, patch, metav1.PatchOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsConflict(err) {
			return stuck(err)
		}
		// 409: the pod changed between the read and the patch (a status update, istio-cni's
		// annotation); read again and re-check before the next attempt.
	}
	return stuck(fmt.Errorf("%d attempts: %w", s.o.RestoreAttempts, err))
}

// labelPatch is a JSON merge patch that sets (value != nil) or removes (nil) the
// dataplane-mode label, guarded by resourceVersion rv.
func labelPatch(rv string, value *string) ([]byte, error) {
	return json.Marshal(map[string]any{
		"metadata": map[string]any{
			"resourceVersion": rv,
			"labels":          map[string]any{enroll.LabelDataplaneMode: value},
		},
	})
}

func describeWait(err error, timeout time.Duration, last error) error {
	if errors.Is(err, errWaitTimeout) {
		err = fmt.Errorf("not seen within %s", timeout)
	}
	if last != nil {
		return fmt.Errorf("%w (last error: %w)", err, last)
	}
	return err
}
