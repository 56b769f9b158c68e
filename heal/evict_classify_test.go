package heal_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshmedic/meshmedic/heal"
	"github.com/meshmedic/meshmedic/heal/healtest"
)

// A 429 is a PodDisruptionBudget refusal only when it says so; the API server throttling
// the client (API Priority and Fairness) is not a PDB block.
func TestIsPDBBlockedClassification(t *testing.T) {
	pdbCause := apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 10)
	pdbCause.ErrStatus.Details.Causes = []metav1.StatusCause{{Type: policyv1.DisruptionBudgetCause, Message: "The disruption budget svc needs 2 healthy pods and has 2 currently"}}
	// What client-go makes of APF's plain-text 429 (Retry-After header, no Status body).
	apf := apierrors.NewGenericServerResponse(http.StatusTooManyRequests, "POST", schema.GroupResource{Resource: "pods"}, "web-1", "Too many requests, please try again later.", 1, true)
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"DisruptionBudget cause", pdbCause, true},
		{"older API server: the message only", apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 10), true},
		{"healtest.PDBError", healtest.PDBError("shop", "web-1"), true},
		{"ErrPDBBlocked", fmt.Errorf("pod shop/web-1: %w", heal.ErrPDBBlocked), true},
		{"wrapped PDB 429", fmt.Errorf("pod shop/web-1: evict: %w", pdbCause), true},
		{"APF throttling", apf, false},
		{"a bare 429 with Retry-After", apierrors.NewTooManyRequests("the server has received too many requests and has asked us to try again later", 1), false},
		{"forbidden", apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "web-1", errors.New("no")), false},
		{"nil", nil, false},
	} {
		if got := heal.IsPDBBlocked(c.err); got != c.want {
			t.Errorf("%s: IsPDBBlocked = %v, want %v (%v)", c.name, got, c.want, c.err)
		}
	}
}

// Through the real REST evicter: a 429 from API Priority and Fairness (plain text with a
// Retry-After, as apiserver's tooManyRequests writes it) fails the eviction, it is not
// blocked-by-pdb; a PDB's 429 is.
func TestEvictAPFThrottlingIsNotPDB(t *testing.T) {
	var apfMode atomic.Bool
	apfMode.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if apfMode.Load() {
			w.Header().Set("Retry-After", "1")
			w.Header().Set("X-Kubernetes-PF-FlowSchema-UID", "e0b4c1b2-0000-4000-8000-000000000001")
			http.Error(w, "Too many requests, please try again later.", http.StatusTooManyRequests)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Cannot evict pod as it would violate the pod's disruption budget.","reason":"TooManyRequests","details":{"causes":[{"reason":"DisruptionBudget","message":"The disruption budget svc needs 2 healthy pods and has 2 currently"}],"retryAfterSeconds":10},"code":429}`)
	}))
	defer srv.Close()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", UID: "u1"}}
	ev := heal.NewEvict(heal.NewEvicter(cs.CoreV1().RESTClient()), cs.CoreV1(), heal.EvictOptions{})
	res, err := ev.Heal(context.Background(), heal.Target{Pod: pod}, true)
	if res != heal.ResultFailed || errors.Is(err, heal.ErrPDBBlocked) || heal.IsPDBBlocked(err) {
		t.Fatalf("APF 429: result %s, err %v; want failed, not a PDB block", res, err)
	}
	if n := strings.Count(err.Error(), "shop/web-1"); n != 1 {
		t.Fatalf("the pod is named %d times in %q, want once", n, err)
	}
	apfMode.Store(false)
	res, err = ev.Heal(context.Background(), heal.Target{Pod: pod}, true)
	if res != heal.ResultBlockedByPDB || !errors.Is(err, heal.ErrPDBBlocked) {
		t.Fatalf("PDB 429: result %s, err %v; want blocked-by-pdb", res, err)
	}
}
