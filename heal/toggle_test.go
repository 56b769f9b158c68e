package heal_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/heal"
)

// cniSim plays istio-cni's node agent on the apiSim: when the label says none it removes
// the redirection annotation; when the label allows capture again it re-enrolls.
type cniSim struct {
	removes  bool // take the pod out on label none
	reenroll bool // capture comes back when the label is restored
	// concurrent, when set, is the label value "someone else" writes right after our
	// first patch.
	concurrent string
	// conflictOnRestore makes the first restore patch answer 409.
	conflictOnRestore bool
}

func (c cniSim) install(sim *apiSim) {
	first := true
	sim.afterPatch = func(p *corev1.Pod) {
		mode, ok := p.Labels[enroll.LabelDataplaneMode]
		if first && c.concurrent != "" {
			p.Labels[enroll.LabelDataplaneMode] = c.concurrent
		}
		if first && c.conflictOnRestore {
			sim.conflicts = 1
		}
		first = false
		switch {
		case ok && mode == "none":
			if c.removes {
				delete(p.Annotations, enroll.AnnotationRedirection)
			}
		case c.reenroll:
			if p.Annotations == nil {
				p.Annotations = map[string]string{}
			}
			p.Annotations[enroll.AnnotationRedirection] = "enabled"
		}
	}
}

// reprobe reports capture from the annotation the simulated istio-cni wrote; an orphan
// starts annotated "enabled" but not captured, so capture counts only after a re-enroll.
func reprobe(sim *apiSim) (heal.ReprobeFunc, *atomic.Int32) {
	var calls atomic.Int32
	reenrolled := false
	return func(ctx context.Context, p *corev1.Pod) (bool, error) {
		calls.Add(1)
		if _, ok := p.Annotations[enroll.AnnotationRedirection]; !ok {
			reenrolled = true // taken out: from now on the annotation tells the truth
			return false, nil
		}
		return reenrolled && p.Annotations[enroll.AnnotationRedirection] == "enabled", nil
	}, &calls
}

func newToggle(t *testing.T, sim *apiSim, fc *clocktesting.FakeClock, rp heal.ReprobeFunc) *heal.Toggle {
	t.Helper()
	s, err := heal.NewToggle(sim.cs.CoreV1(), heal.ToggleOptions{Reprobe: rp, Clock: fc, Timeout: 30 * time.Second, PollInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func runToggle(t *testing.T, s *heal.Toggle, fc *clocktesting.FakeClock, p *corev1.Pod, dry bool) (heal.Result, error) {
	t.Helper()
	return runStepping(t, fc, time.Second, func() evictOut {
		r, err := s.Heal(context.Background(), orphan(p), dry)
		return evictOut{r, err}
	}).unpack()
}

// patchedLabel returns what each patch did to the dataplane-mode label ("<null>" for a
// removal) and the resourceVersion it was guarded by.
func patchedLabel(t *testing.T, pa []byte) (label, rv string) {
	t.Helper()
	var m struct {
		Metadata struct {
			ResourceVersion string             `json:"resourceVersion"`
			Labels          map[string]*string `json:"labels"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(pa, &m); err != nil {
		t.Fatal(err)
	}
	v, ok := m.Metadata.Labels[enroll.LabelDataplaneMode]
	switch {
	case !ok:
		label = "<not in patch>"
	case v == nil:
		label = "<null>"
	default:
		label = *v
	}
	return label, m.Metadata.ResourceVersion
}

func TestToggleRestoresExactly(t *testing.T) {
	cases := []struct {
		name      string
		opts      []podOpt
		wantPatch string // the restore patch's label value
	}{
		{"label absent stays absent", nil, "<null>"},
		{"label ambient stays ambient", []podOpt{withLabel(enroll.LabelDataplaneMode, "ambient")}, "ambient"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newPod("shop", "cart-1", "n1", c.opts...)
			sim := newAPISim(t, p)
			cniSim{removes: true, reenroll: true}.install(sim)
			fc := clocktesting.NewFakeClock(t0)
			rp, _ := reprobe(sim)
			r, err := runToggle(t, newToggle(t, sim, fc, rp), fc, p, false)
			if r != heal.ResultToggled || err != nil {
				t.Fatalf("got %s, %v", r, err)
			}
			patches := sim.patchLog()
			if len(patches) != 2 {
				t.Fatalf("%d patches, want 2", len(patches))
			}
			l0, rv0 := patchedLabel(t, patches[0].Patch)
			l1, rv1 := patchedLabel(t, patches[1].Patch)
			if l0 != "none" || rv0 != "1" {
				t.Fatalf("first patch sets %q guarded by %q, want none guarded by the finding's resourceVersion 1", l0, rv0)
			}
			// The restore is guarded by the version after istio-cni's own change (101 is
			// our patch, 102 istio-cni's annotation removal).
			if l1 != c.wantPatch || rv1 != "102" {
				t.Fatalf("restore patch sets %q guarded by %q, want %q guarded by 102", l1, rv1, c.wantPatch)
			}
			got := sim.get(t, "shop", "cart-1")
			want, had := p.Labels[enroll.LabelDataplaneMode]
			v, has := got.Labels[enroll.LabelDataplaneMode]
			if had != has || v != want {
				t.Fatalf("label after toggle: %q present=%v, want %q present=%v", v, has, want, had)
			}
		})
	}
}

func TestToggleFailures(t *testing.T) {
	t.Run("capture does not return", func(t *testing.T) {
		p := newPod("shop", "cart-1", "n1", withLabel(enroll.LabelDataplaneMode, "ambient"))
		sim := newAPISim(t, p)
		cniSim{removes: true, reenroll: false}.install(sim)
		fc := clocktesting.NewFakeClock(t0)
		rp, _ := reprobe(sim)
		r, err := runToggle(t, newToggle(t, sim, fc, rp), fc, p, false)
		if r != heal.ResultFailed || err == nil || !strings.Contains(err.Error(), "capture did not return after toggle") {
			t.Fatalf("got %s, %v", r, err)
		}
		if v := sim.get(t, "shop", "cart-1").Labels[enroll.LabelDataplaneMode]; v != "ambient" {
			t.Fatalf("label %q after failure, want ambient restored", v)
		}
	})

	t.Run("istio-cni never takes the pod out: label restored, failed", func(t *testing.T) {
		p := newPod("shop", "cart-1", "n1")
		sim := newAPISim(t, p)
		fc := clocktesting.NewFakeClock(t0)
		rp, _ := reprobe(sim)
		r, err := runToggle(t, newToggle(t, sim, fc, rp), fc, p, false)
		if r != heal.ResultFailed || err == nil || !strings.Contains(err.Error(), "did not take the pod out") || !strings.Contains(err.Error(), "label restored") {
			t.Fatalf("got %s, %v", r, err)
		}
		if _, has := sim.get(t, "shop", "cart-1").Labels[enroll.LabelDataplaneMode]; has {
			t.Fatal("label left on the pod; it was absent before")
		}
	})

	t.Run("409 on the first patch: failed, nothing changed", func(t *testing.T) {
		p := newPod("shop", "cart-1", "n1")
		stored := p.DeepCopy()
		stored.ResourceVersion = "7" // changed since detection read it
		sim := newAPISim(t, stored)
		fc := clocktesting.NewFakeClock(t0)
		rp, calls := reprobe(sim)
		r, err := runToggle(t, newToggle(t, sim, fc, rp), fc, p, false)
		if r != heal.ResultFailed || err == nil || !strings.Contains(err.Error(), "changed since it was checked") {
			t.Fatalf("got %s, %v", r, err)
		}
		if n := len(sim.patchLog()); n != 1 || calls.Load() != 0 {
			t.Fatalf("%d patches and %d re-probes after a 409, want 1 and 0", n, calls.Load())
		}
		if _, has := sim.get(t, "shop", "cart-1").Labels[enroll.LabelDataplaneMode]; has {
			t.Fatal("label changed despite the conflict")
		}
	})

	t.Run("409 on the restore: re-read, re-check, patch again", func(t *testing.T) {
		p := newPod("shop", "cart-1", "n1")
		sim := newAPISim(t, p)
		cniSim{removes: true, reenroll: true, conflictOnRestore: true}.install(sim)
		fc := clocktesting.NewFakeClock(t0)
		rp, _ := reprobe(sim)
		r, err := runToggle(t, newToggle(t, sim, fc, rp), fc, p, false)
		if r != heal.ResultToggled || err != nil {
			t.Fatalf("got %s, %v", r, err)
		}
		if n := len(sim.patchLog()); n != 3 {
			t.Fatalf("%d patches, want 3 (set, conflicting restore, restore)", n)
		}
	})

	t.Run("someone else changes the label meanwhile: left alone", func(t *testing.T) {
		p := newPod("shop", "cart-1", "n1")
		sim := newAPISim(t, p)
		cniSim{removes: true, reenroll: true, concurrent: "ambient"}.install(sim)
		fc := clocktesting.NewFakeClock(t0)
		rp, _ := reprobe(sim)
		r, err := runToggle(t, newToggle(t, sim, fc, rp), fc, p, false)
		if r != heal.ResultFailed || err == nil || !strings.Contains(err.Error(), "changed by someone else") {
			t.Fatalf("got %s, %v", r, err)
		}
		if n := len(sim.patchLog()); n != 1 {
			t.Fatalf("%d patches, want 1: the other writer's value must not be overwritten", n)
		}
	})

	t.Run("already opted out: not-actionable", func(t *testing.T) {
		p := newPod("shop", "cart-1", "n1", withLabel(enroll.LabelDataplaneMode, "none"))
		sim := newAPISim(t, p)
		fc := clocktesting.NewFakeClock(t0)
		rp, _ := reprobe(sim)
		r, err := newToggle(t, sim, fc, rp).Heal(context.Background(), orphan(p), false)
		if r != heal.ResultNotActionable || !errors.Is(err, heal.ErrUnknownNotHealed) || len(sim.patchLog()) != 0 {
			t.Fatalf("got %s, %v", r, err)
		}
	})

	t.Run("no Reprobe", func(t *testing.T) {
		if _, err := heal.NewToggle(newAPISim(t).cs.CoreV1(), heal.ToggleOptions{}); err == nil {
			t.Fatal("NewToggle accepted a nil Reprobe")
		}
	})
}

func TestToggleDryRun(t *testing.T) {
	p := newPod("shop", "cart-1", "n1")
	sim := newAPISim(t, p)
	fc := clocktesting.NewFakeClock(t0)
	rp, calls := reprobe(sim)
	h := heal.NewHealer(newToggle(t, sim, fc, rp), heal.WithDryRun(true))
	a := h.Heal(context.Background(), []heal.Target{orphan(p)}, nil)[0]
	if a.Result != heal.ResultWouldToggle || a.Err != nil || a.Strategy != "toggle" {
		t.Fatalf("got %+v", a)
	}
	patches := sim.patchLog()
	if len(patches) != 1 || !slices.Equal(patches[0].PatchOptions.DryRun, []string{metav1.DryRunAll}) {
		t.Fatalf("patches %+v", patches)
	}
	if l, _ := patchedLabel(t, patches[0].Patch); l != "none" {
		t.Fatalf("dry-run patch sets %q", l)
	}
	if _, has := sim.get(t, "shop", "cart-1").Labels[enroll.LabelDataplaneMode]; has || calls.Load() != 0 {
		t.Fatal("dry run changed the pod or re-probed")
	}
}

// TestToggleBarePod: toggling does not destroy the pod, so a bare pod is not refused.
func TestToggleBarePod(t *testing.T) {
	p := newPod("shop", "solo", "n1", bare)
	sim := newAPISim(t, p)
	cniSim{removes: true, reenroll: true}.install(sim)
	fc := clocktesting.NewFakeClock(t0)
	rp, _ := reprobe(sim)
	h := heal.NewHealer(newToggle(t, sim, fc, rp))
	a := runStepping(t, fc, time.Second, func() heal.Action {
		return h.Heal(context.Background(), []heal.Target{{Pod: p, Class: detect.ClassOrphaned}}, nil)[0]
	})
	if a.Result != heal.ResultToggled {
		t.Fatalf("got %+v", a)
	}
}

// TestToggleSlowCapture: capture comes back only after several re-probes; the wait is
// driven by the fake clock.
func TestToggleSlowCapture(t *testing.T) {
	p := newPod("shop", "cart-1", "n1")
	sim := newAPISim(t, p)
	cniSim{removes: true, reenroll: true}.install(sim)
	fc := clocktesting.NewFakeClock(t0)
	base, _ := reprobe(sim)
	var after atomic.Int32
	rp := func(ctx context.Context, p *corev1.Pod) (bool, error) {
		ok, err := base(ctx, p)
		if ok && after.Add(1) < 5 {
			return false, errors.New("netns not readable yet")
		}
		return ok, err
	}
	r, err := runToggle(t, newToggle(t, sim, fc, rp), fc, p, false)
	if r != heal.ResultToggled || err != nil || after.Load() != 5 {
		t.Fatalf("got %s, %v after %d re-probes", r, err, after.Load())
	}
}

// Ctrl-C (or an agent shutting down) while the toggle waits for istio-cni: the label is put
// back anyway, on a context of its own, and the result says it was interrupted.
func TestToggleInterruptedRestores(t *testing.T) {
	p := newPod("shop", "cart-1", "n1", withLabel(enroll.LabelDataplaneMode, "ambient"))
	sim := newAPISim(t, p)
	ctx, cancel := context.WithCancel(context.Background())
	first := true
	sim.afterPatch = func(*corev1.Pod) {
		if first {
			first = false
			cancel() // the user presses Ctrl-C right after the label went to none
		}
	}
	fc := clocktesting.NewFakeClock(t0)
	rp, _ := reprobe(sim)
	r, err := newToggle(t, sim, fc, rp).Heal(ctx, orphan(p), false)
	if r != heal.ResultFailed || err == nil || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "restored") {
		t.Fatalf("got %s, %v", r, err)
	}
	if v := sim.get(t, "shop", "cart-1").Labels[enroll.LabelDataplaneMode]; v != "ambient" {
		t.Fatalf("label %q after an interrupted toggle, want ambient restored", v)
	}
	if n := len(sim.patchLog()); n != 2 {
		t.Fatalf("%d patches, want the change and its restore", n)
	}
}
