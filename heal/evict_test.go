package heal_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/meshmedic/meshmedic/heal"
	"github.com/meshmedic/meshmedic/heal/healtest"
)

func evictHealer(sim *apiSim, fc *clocktesting.FakeClock, opts ...heal.Option) *heal.Healer {
	s := heal.NewEvict(sim.evicter(), sim.cs.CoreV1(), heal.EvictOptions{Clock: fc})
	return heal.NewHealer(s, opts...)
}

func TestEvict(t *testing.T) {
	ctx := context.Background()
	p := newPod("shop", "cart-1", "n1")

	t.Run("evicted: the pod with that UID is gone", func(t *testing.T) {
		sim := newAPISim(t, p)
		a := evictHealer(sim, clocktesting.NewFakeClock(t0)).Heal(ctx, []heal.Target{orphan(p)}, nil)[0]
		if a.Result != heal.ResultEvicted || a.Err != nil {
			t.Fatalf("got %+v", a)
		}
		if sim.exists("shop", "cart-1") {
			t.Fatal("pod still exists")
		}
		evs := sim.evictionActions()
		if len(evs) != 1 {
			t.Fatalf("%d evictions", len(evs))
		}
		do := evs[0].DeleteOptions
		if do == nil || do.Preconditions == nil || *do.Preconditions.UID != "uid-cart-1" || len(do.DryRun) != 0 {
			t.Fatalf("eviction options %+v", do)
		}
		if evs[0].Namespace != "shop" || evs[0].Name != "cart-1" {
			t.Fatalf("eviction meta %+v", evs[0].ObjectMeta)
		}
	})

	t.Run("dry run sends DryRun=All and leaves the pod", func(t *testing.T) {
		sim := newAPISim(t, p)
		a := evictHealer(sim, clocktesting.NewFakeClock(t0), heal.WithDryRun(true)).Heal(ctx, []heal.Target{orphan(p)}, nil)[0]
		if a.Result != heal.ResultWouldEvict || a.Err != nil {
			t.Fatalf("got %+v", a)
		}
		evs := sim.evictionActions()
		if len(evs) != 1 || !slices.Equal(evs[0].DeleteOptions.DryRun, []string{metav1.DryRunAll}) {
			t.Fatalf("evictions %+v", evs)
		}
		if !sim.exists("shop", "cart-1") {
			t.Fatal("dry run removed the pod")
		}
	})

	for _, dry := range []bool{false, true} {
		t.Run("429 is blocked-by-pdb, dry="+map[bool]string{false: "false", true: "true"}[dry], func(t *testing.T) {
			sim := newAPISim(t, p)
			sim.cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, k8sruntime.Object, error) {
				return true, nil, apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 10)
			})
			a := evictHealer(sim, clocktesting.NewFakeClock(t0), heal.WithDryRun(dry)).Heal(ctx, []heal.Target{orphan(p)}, nil)[0]
			if a.Result != heal.ResultBlockedByPDB || !errors.Is(a.Err, heal.ErrPDBBlocked) || !apierrors.IsTooManyRequests(a.Err) {
				t.Fatalf("got %+v", a)
			}
			if !strings.Contains(a.Detail, "shop/cart-1") {
				t.Fatalf("detail does not name the pod: %q", a.Detail)
			}
		})
	}

	t.Run("403 is failed", func(t *testing.T) {
		sim := newAPISim(t, p)
		sim.cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, k8sruntime.Object, error) {
			return true, nil, apierrors.NewForbidden(podsGR, "cart-1", errors.New("RBAC says no"))
		})
		a := evictHealer(sim, clocktesting.NewFakeClock(t0)).Heal(ctx, []heal.Target{orphan(p)}, nil)[0]
		if a.Result != heal.ResultFailed || !apierrors.IsForbidden(a.Err) || errors.Is(a.Err, heal.ErrPDBBlocked) {
			t.Fatalf("got %+v", a)
		}
	})

	t.Run("404: already gone is evicted (dry run: not-actionable)", func(t *testing.T) {
		sim := newAPISim(t) // no pods
		a := evictHealer(sim, clocktesting.NewFakeClock(t0)).Heal(ctx, []heal.Target{orphan(p)}, nil)[0]
		if a.Result != heal.ResultEvicted || a.Err != nil || !strings.Contains(a.Detail, "already gone") {
			t.Fatalf("got %+v", a)
		}
		a = evictHealer(sim, clocktesting.NewFakeClock(t0), heal.WithDryRun(true)).Heal(ctx, []heal.Target{orphan(p)}, nil)[0]
		if a.Result != heal.ResultNotActionable || !errors.Is(a.Err, heal.ErrAlreadyGone) {
			t.Fatalf("dry run got %+v", a)
		}
	})

	t.Run("409: a same-named replacement is not evicted", func(t *testing.T) {
		replacement := newPod("shop", "cart-1", "n1")
		replacement.UID = "uid-new"
		sim := newAPISim(t, replacement)
		a := evictHealer(sim, clocktesting.NewFakeClock(t0)).Heal(ctx, []heal.Target{orphan(p)}, nil)[0]
		if a.Result != heal.ResultEvicted || !strings.Contains(a.Detail, "replaced") {
			t.Fatalf("got %+v", a)
		}
		if !sim.exists("shop", "cart-1") {
			t.Fatal("the replacement was evicted")
		}
	})

	t.Run("409 on the same pod is failed", func(t *testing.T) {
		sim := newAPISim(t, p)
		sim.cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, k8sruntime.Object, error) {
			return true, nil, apierrors.NewConflict(podsGR, "cart-1", errors.New("pdb update conflict"))
		})
		a := evictHealer(sim, clocktesting.NewFakeClock(t0)).Heal(ctx, []heal.Target{orphan(p)}, nil)[0]
		if a.Result != heal.ResultFailed || !apierrors.IsConflict(a.Err) {
			t.Fatalf("got %+v", a)
		}
	})
}

func TestEvictWaitsForTheUIDToGo(t *testing.T) {
	ctx := context.Background()
	p := newPod("shop", "cart-1", "n1")

	t.Run("pod stays: failed after the timeout", func(t *testing.T) {
		sim := newAPISim(t, p)
		// The API accepts the eviction, but the pod lingers (e.g. a finalizer).
		sim.cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, k8sruntime.Object, error) {
			return true, nil, nil
		})
		fc := clocktesting.NewFakeClock(t0)
		s := heal.NewEvict(sim.evicter(), sim.cs.CoreV1(), heal.EvictOptions{Clock: fc, Timeout: time.Minute, PollInterval: 5 * time.Second})
		r, err := runStepping(t, fc, 5*time.Second, func() evictOut {
			r, err := s.Heal(ctx, orphan(p), false)
			return evictOut{r, err}
		}).unpack()
		if r != heal.ResultFailed || err == nil || !strings.Contains(err.Error(), "still present after 1m0s") {
			t.Fatalf("got %s, %v", r, err)
		}
		if got := fc.Since(t0); got < time.Minute {
			t.Fatalf("gave up after %s of clock time, before the 1m timeout", got)
		}
	})

	t.Run("pod goes after a few reads: evicted", func(t *testing.T) {
		sim := newAPISim(t, p)
		sim.cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, k8sruntime.Object, error) {
			return true, nil, nil
		})
		var gets atomic.Int32
		sim.cs.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, k8sruntime.Object, error) {
			if gets.Add(1) >= 4 {
				return true, nil, apierrors.NewNotFound(podsGR, "cart-1")
			}
			return false, nil, nil
		})
		fc := clocktesting.NewFakeClock(t0)
		s := heal.NewEvict(sim.evicter(), sim.cs.CoreV1(), heal.EvictOptions{Clock: fc})
		r, err := runStepping(t, fc, 2*time.Second, func() evictOut {
			r, err := s.Heal(ctx, orphan(p), false)
			return evictOut{r, err}
		}).unpack()
		if r != heal.ResultEvicted || err != nil || gets.Load() != 4 {
			t.Fatalf("got %s, %v after %d reads", r, err, gets.Load())
		}
	})

	t.Run("pod replaced under the same name: evicted", func(t *testing.T) {
		sim := newAPISim(t, p)
		sim.cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, k8sruntime.Object, error) {
			if a.GetSubresource() != "eviction" {
				return false, nil, nil
			}
			// A StatefulSet recreates the pod at once under the same name.
			r := newPod("shop", "cart-1", "n1")
			r.UID = "uid-new"
			return true, nil, sim.cs.Tracker().Update(podsGVR, r, "shop")
		})
		fc := clocktesting.NewFakeClock(t0)
		s := heal.NewEvict(sim.evicter(), sim.cs.CoreV1(), heal.EvictOptions{Clock: fc})
		r, err := s.Heal(ctx, orphan(p), false)
		if r != heal.ResultEvicted || err != nil {
			t.Fatalf("got %s, %v", r, err)
		}
	})

	t.Run("negative timeout does not wait", func(t *testing.T) {
		cs := fake.NewClientset(p)
		ev := healtest.NewEvicter() // accepts, pod stays
		s := heal.NewEvict(ev, cs.CoreV1(), heal.EvictOptions{Timeout: -1})
		if r, err := s.Heal(ctx, orphan(p), false); r != heal.ResultEvicted || err != nil {
			t.Fatalf("got %s, %v", r, err)
		}
	})
}

type evictOut struct {
	r   heal.Result
	err error
}

func (o evictOut) unpack() (heal.Result, error) { return o.r, o.err }

// apiServer is a loopback HTTP server standing in for the API server's pods endpoints.
type apiServer struct {
	mu       sync.Mutex
	requests []recorded
	handle   func(w http.ResponseWriter, r *http.Request, body []byte)
}

type recorded struct {
	method, path string
	body         []byte
}

func newAPIServer(t *testing.T, handle func(w http.ResponseWriter, r *http.Request, body []byte)) (*apiServer, kubernetes.Interface) {
	t.Helper()
	s := &apiServer{handle: handle}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.requests = append(s.requests, recorded{r.Method, r.URL.Path, body})
		s.mu.Unlock()
		s.handle(w, r, body)
	}))
	t.Cleanup(srv.Close)
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return s, cs
}

func (s *apiServer) recorded() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	st := metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg}
	if code < 300 {
		st.Status = metav1.StatusSuccess
	}
	_ = json.NewEncoder(w).Encode(st)
}

const evictionPath = "/api/v1/namespaces/shop/pods/cart-1/eviction"

// TestNewEvicterDoesNotRetry429: client-go's REST client would retry a 429 carrying
// Retry-After about ten times; heal's Evicter must send exactly one request.
func TestNewEvicterDoesNotRetry429(t *testing.T) {
	var hits atomic.Int32
	srv, cs := newAPIServer(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		hits.Add(1)
		w.Header().Set("Retry-After", "1")
		writeStatus(w, http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests, "Cannot evict pod as it would violate the pod's disruption budget.")
	})
	ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart-1"}}
	err := heal.NewEvicter(cs.PolicyV1().RESTClient()).Evict(context.Background(), ev)
	if !apierrors.IsTooManyRequests(err) {
		t.Fatalf("err = %v, want a 429", err)
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("%d requests sent, want exactly 1", n)
	}
	req := srv.recorded()[0]
	if req.method != http.MethodPost || req.path != evictionPath {
		t.Fatalf("request %s %s, want POST %s", req.method, req.path, evictionPath)
	}
}

// TestEvictOverHTTP runs the evict strategy against a loopback server: the real request
// path, body (dry run, UID precondition) and the wait's GET.
func TestEvictOverHTTP(t *testing.T) {
	p := newPod("shop", "cart-1", "n1")
	srv, cs := newAPIServer(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == evictionPath:
			writeStatus(w, http.StatusCreated, "", "")
		case r.Method == http.MethodGet && r.URL.Path == "/api/v1/namespaces/shop/pods/cart-1":
			writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, `pods "cart-1" not found`)
		default:
			writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "unexpected "+r.Method+" "+r.URL.Path)
		}
	})
	s := heal.NewEvict(heal.NewEvicter(cs.PolicyV1().RESTClient()), cs.CoreV1(), heal.EvictOptions{Clock: clocktesting.NewFakeClock(t0)})

	if r, err := s.Heal(context.Background(), orphan(p), true); r != heal.ResultWouldEvict || err != nil {
		t.Fatalf("dry run: %s, %v", r, err)
	}
	if r, err := s.Heal(context.Background(), orphan(p), false); r != heal.ResultEvicted || err != nil {
		t.Fatalf("real: %s, %v", r, err)
	}
	reqs := srv.recorded()
	if len(reqs) != 3 {
		t.Fatalf("requests %+v", reqs)
	}
	var dry, real policyv1.Eviction
	if err := json.Unmarshal(reqs[0].body, &dry); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(reqs[1].body, &real); err != nil {
		t.Fatal(err)
	}
	if dry.Kind != "Eviction" || dry.APIVersion != "policy/v1" {
		t.Fatalf("body type %s %s", dry.APIVersion, dry.Kind)
	}
	if !slices.Equal(dry.DeleteOptions.DryRun, []string{metav1.DryRunAll}) || len(real.DeleteOptions.DryRun) != 0 {
		t.Fatalf("dryRun: dry %v real %v", dry.DeleteOptions.DryRun, real.DeleteOptions.DryRun)
	}
	if *real.DeleteOptions.Preconditions.UID != p.UID {
		t.Fatalf("precondition %v", real.DeleteOptions.Preconditions)
	}
	if reqs[2].method != http.MethodGet {
		t.Fatalf("third request %s %s, want the GET that confirms the pod is gone", reqs[2].method, reqs[2].path)
	}
}

func TestNewEvicterWithFakeRESTClient(t *testing.T) {
	// A fake clientset's RESTClient is a nil *rest.RESTClient: a clear error, not a panic.
	cs := fake.NewClientset()
	err := heal.NewEvicter(cs.PolicyV1().RESTClient()).Evict(context.Background(), &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "b"}})
	if err == nil || !strings.Contains(err.Error(), "EvicterFunc") {
		t.Fatalf("err = %v", err)
	}
}

func TestHealtestEvicter(t *testing.T) {
	ctx := context.Background()
	a, b, c := newPod("shop", "a", "n1"), newPod("shop", "b", "n1"), newPod("shop", "c", "n1")
	cs := fake.NewClientset(a, b, c)
	boom := errors.New("boom")
	ev := healtest.NewEvicter().WithPods(cs.CoreV1()).BlockWithPDB("shop", "b").FailWith("shop", "c", boom)
	h := heal.NewHealer(heal.NewEvict(ev, cs.CoreV1(), heal.EvictOptions{}))
	got := h.Heal(ctx, []heal.Target{orphan(a), orphan(b), orphan(c)}, nil)
	equal(t, "results", results(got), []heal.Result{heal.ResultEvicted, heal.ResultBlockedByPDB, heal.ResultFailed})
	if !errors.Is(got[2].Err, boom) {
		t.Fatalf("err %v", got[2].Err)
	}
	if len(ev.Evictions()) != 3 {
		t.Fatalf("recorded %d evictions", len(ev.Evictions()))
	}
	if _, err := cs.CoreV1().Pods("shop").Get(ctx, "a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("evicted pod still there: %v", err)
	}
	var pdb *apierrors.StatusError
	if !errors.As(healtest.PDBError("shop", "b"), &pdb) || pdb.ErrStatus.Details.Causes[0].Type != policyv1.DisruptionBudgetCause {
		t.Fatal("PDBError lacks the DisruptionBudget cause")
	}

	// FailAll, and dry runs never delete.
	ev.FailAll(boom)
	if err := ev.Evict(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "x"}}); !errors.Is(err, boom) {
		t.Fatalf("FailAll: %v", err)
	}
	ev.FailAll(nil)
	d := newPod("shop", "d", "n1")
	if _, err := cs.CoreV1().Pods("shop").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dry := heal.NewHealer(heal.NewEvict(ev, cs.CoreV1(), heal.EvictOptions{}), heal.WithDryRun(true))
	if r := dry.Heal(ctx, []heal.Target{orphan(d)}, nil)[0].Result; r != heal.ResultWouldEvict {
		t.Fatalf("dry run %s", r)
	}
	if _, err := cs.CoreV1().Pods("shop").Get(ctx, "d", metav1.GetOptions{}); err != nil {
		t.Fatalf("dry run removed the pod: %v", err)
	}
}
