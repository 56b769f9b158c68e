package heal_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/meshmedic/meshmedic/heal"
)

func deleteActions(sim *apiSim) []k8stesting.DeleteActionImpl {
	var out []k8stesting.DeleteActionImpl
	for _, a := range sim.cs.Actions() {
		if d, ok := a.(k8stesting.DeleteActionImpl); ok {
			out = append(out, d)
		}
	}
	return out
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	p := newPod("shop", "cart-1", "n1")

	t.Run("deleted with a UID precondition", func(t *testing.T) {
		sim := newAPISim(t, p)
		a := heal.NewHealer(heal.NewDelete(sim.cs.CoreV1())).Heal(ctx, []heal.Target{orphan(p)}, nil)[0]
		if a.Result != heal.ResultDeleted || a.Err != nil || a.Strategy != "delete" {
			t.Fatalf("got %+v", a)
		}
		d := deleteActions(sim)
		if len(d) != 1 || d[0].DeleteOptions.Preconditions == nil || *d[0].DeleteOptions.Preconditions.UID != p.UID || len(d[0].DeleteOptions.DryRun) != 0 {
			t.Fatalf("delete actions %+v", d)
		}
		if sim.exists("shop", "cart-1") {
			t.Fatal("pod still exists")
		}
	})

	t.Run("dry run sends DryRun=All", func(t *testing.T) {
		sim := newAPISim(t, p)
		a := heal.NewHealer(heal.NewDelete(sim.cs.CoreV1()), heal.WithDryRun(true)).Heal(ctx, []heal.Target{orphan(p)}, nil)[0]
		if a.Result != heal.ResultWouldDelete || a.Err != nil {
			t.Fatalf("got %+v", a)
		}
		d := deleteActions(sim)
		if len(d) != 1 || !slices.Equal(d[0].DeleteOptions.DryRun, []string{metav1.DryRunAll}) {
			t.Fatalf("delete actions %+v", d)
		}
		if !sim.exists("shop", "cart-1") {
			t.Fatal("dry run deleted the pod")
		}
	})

	t.Run("bare pods refused unless allowed", func(t *testing.T) {
		solo := newPod("shop", "solo", "n1", bare)
		sim := newAPISim(t, solo)
		a := heal.NewHealer(heal.NewDelete(sim.cs.CoreV1())).Heal(ctx, []heal.Target{orphan(solo)}, nil)[0]
		if a.Result != heal.ResultRefusedBarePod || !errors.Is(a.Err, heal.ErrBarePod) || len(deleteActions(sim)) != 0 {
			t.Fatalf("got %+v", a)
		}
		a = heal.NewHealer(heal.NewDelete(sim.cs.CoreV1()), heal.WithAllowBarePods(true)).Heal(ctx, []heal.Target{orphan(solo)}, nil)[0]
		if a.Result != heal.ResultDeleted {
			t.Fatalf("with opt-in: %+v", a)
		}
	})

	t.Run("404 and replaced", func(t *testing.T) {
		sim := newAPISim(t)
		r, err := heal.NewDelete(sim.cs.CoreV1()).Heal(ctx, orphan(p), false)
		if r != heal.ResultDeleted || !errors.Is(err, heal.ErrAlreadyGone) {
			t.Fatalf("404: %s, %v", r, err)
		}
		r, _ = heal.NewDelete(sim.cs.CoreV1()).Heal(ctx, orphan(p), true)
		if r != heal.ResultNotActionable {
			t.Fatalf("404 dry run: %s", r)
		}
		replacement := newPod("shop", "cart-1", "n1")
		replacement.UID = "uid-new"
		sim = newAPISim(t, replacement)
		r, err = heal.NewDelete(sim.cs.CoreV1()).Heal(ctx, orphan(p), false)
		if r != heal.ResultDeleted || !strings.Contains(err.Error(), "replaced") || !sim.exists("shop", "cart-1") {
			t.Fatalf("replaced: %s, %v", r, err)
		}
	})

	t.Run("403 is failed", func(t *testing.T) {
		sim := newAPISim(t, p)
		sim.cs.PrependReactor("delete", "pods", func(k8stesting.Action) (bool, k8sruntime.Object, error) {
			return true, nil, apierrors.NewForbidden(podsGR, "cart-1", errors.New("no"))
		})
		r, err := heal.NewDelete(sim.cs.CoreV1()).Heal(ctx, orphan(p), false)
		if r != heal.ResultFailed || !apierrors.IsForbidden(err) {
			t.Fatalf("got %s, %v", r, err)
		}
	})
}
