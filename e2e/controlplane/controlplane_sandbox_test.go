//go:build sandbox

package controlplane_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/meshmedic/meshmedic/e2e/controlplane"
)

// startControlPlane starts a control plane for t and stops it in t.Cleanup. Missing binaries
// fail the test under CI=true or MESHMEDIC_REQUIRE_PRIVILEGED=1 and skip it otherwise.
func startControlPlane(t *testing.T) *controlplane.ControlPlane {
	t.Helper()
	bin, err := controlplane.FindBinaries()
	if err != nil {
		if os.Getenv("MESHMEDIC_REQUIRE_PRIVILEGED") == "1" || os.Getenv("CI") == "true" {
			t.Fatalf("control plane required here: %v", err)
		}
		t.Skipf("no control plane binaries (build them with: e2e/controlplane/build.sh): %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	started := time.Now()
	cp, err := controlplane.Start(ctx, controlplane.Options{BinDir: bin, WorkDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Logf("control plane up at %s in %v (work dir %s)", cp.Host, time.Since(started).Round(time.Millisecond), cp.WorkDir)
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range controlplane.Components {
				t.Logf("--- tail of %s ---\n%s", c, tailFile(cp.LogFile(c), 40))
			}
		}
		if err := cp.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	return cp
}

func TestControlPlane(t *testing.T) {
	cp := startControlPlane(t)
	ctx := t.Context()
	cs, err := kubernetes.NewForConfig(cp.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}

	// The admin kubeconfig file works on its own, as the meshmedic binary will use it.
	fileCfg, err := clientcmd.BuildConfigFromFlags("", cp.KubeconfigPath)
	if err != nil {
		t.Fatalf("load %s: %v", cp.KubeconfigPath, err)
	}
	fileCS := kubernetes.NewForConfigOrDie(fileCfg)
	if v, err := fileCS.Discovery().ServerVersion(); err != nil {
		t.Fatalf("server version via kubeconfig file: %v", err)
	} else {
		t.Logf("server version %s", v.GitVersion)
	}

	nodeA, nodeB := "sim-node-a", "sim-node-b"
	for _, n := range []string{nodeA, nodeB} {
		if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create node %s: %v", n, err)
		}
	}
	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "cp-test-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Logf("namespace %s", ns.Name)

	// The ServiceAccount admission plugin refuses pods until the serviceaccount controller (in
	// kube-controller-manager) has created "default".
	waitFor(t, "default ServiceAccount", func() (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})

	// Two guarded pods on node A, one unrelated pod on node B; then make them Running and
	// Ready through the pods/status subresource, as a kubelet would.
	pods := []struct{ name, node, ip string }{
		{"guarded-1", nodeA, "10.244.0.11"},
		{"guarded-2", nodeA, "10.244.0.12"},
		{"other", nodeB, "10.244.1.11"},
	}
	for _, p := range pods {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: ns.Name, Labels: map[string]string{"app": "guarded"}},
			Spec: corev1.PodSpec{
				NodeName:   p.node,
				Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:1", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}},
			},
		}
		if p.node == nodeB {
			pod.Labels = map[string]string{"app": "other"}
		}
		created, err := cs.CoreV1().Pods(ns.Name).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create pod %s: %v", p.name, err)
		}
		// Admission really ran: ServiceAccount and DefaultTolerationSeconds mutate every pod.
		if created.Spec.ServiceAccountName != "default" || len(created.Spec.Tolerations) == 0 {
			t.Fatalf("pod %s was not mutated by admission: serviceAccountName=%q tolerations=%v",
				p.name, created.Spec.ServiceAccountName, created.Spec.Tolerations)
		}
		created.Status = corev1.PodStatus{
			Phase:  corev1.PodRunning,
			PodIP:  p.ip,
			PodIPs: []corev1.PodIP{{IP: p.ip}},
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()},
			},
			ContainerStatuses: []corev1.ContainerStatus{{
				Name: "app", Image: "registry.invalid/app:1", Ready: true,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}},
			}},
		}
		if _, err := cs.CoreV1().Pods(ns.Name).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("update status of pod %s: %v", p.name, err)
		}
	}

	t.Run("fieldSelector spec.nodeName", func(t *testing.T) {
		list, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("spec.nodeName", nodeA).String(),
		})
		if err != nil {
			t.Fatalf("list pods on %s: %v", nodeA, err)
		}
		if got, want := podNames(list.Items), []string{"guarded-1", "guarded-2"}; !slices.Equal(got, want) {
			t.Fatalf("pods on %s = %v, want %v", nodeA, got, want)
		}
	})

	t.Run("events", func(t *testing.T) {
		ev := &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{GenerateName: "guarded-1.", Namespace: ns.Name},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns.Name, Name: "guarded-1", APIVersion: "v1"},
			Reason:         "SandboxTest", Message: "hello", Type: corev1.EventTypeNormal,
			Source: corev1.EventSource{Component: "meshmedic-test"}, FirstTimestamp: metav1.Now(), LastTimestamp: metav1.Now(), Count: 1,
		}
		if _, err := cs.CoreV1().Events(ns.Name).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create event: %v", err)
		}
		list, err := cs.CoreV1().Events(ns.Name).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=guarded-1,reason=SandboxTest"})
		if err != nil || len(list.Items) != 1 {
			t.Fatalf("list events: %d items, err %v", len(list.Items), err)
		}
	})

	t.Run("endpointslices", func(t *testing.T) {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "guarded", Namespace: ns.Name},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "guarded"},
				Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		}
		if _, err := cs.DiscoveryV1().EndpointSlices(ns.Name).List(ctx, metav1.ListOptions{}); err != nil {
			t.Fatalf("list endpointslices: %v", err)
		}
		if _, err := cs.CoreV1().Services(ns.Name).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create service: %v", err)
		}
		// The endpointslice controller of kube-controller-manager fills in the Ready pods' IPs.
		waitFor(t, "EndpointSlice with both pod IPs", func() (bool, error) {
			list, err := cs.DiscoveryV1().EndpointSlices(ns.Name).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=guarded"})
			if err != nil {
				return false, err
			}
			var ips []string
			for _, s := range list.Items {
				for _, e := range s.Endpoints {
					ips = append(ips, e.Addresses...)
				}
			}
			slices.Sort(ips)
			return slices.Equal(ips, []string{"10.244.0.11", "10.244.0.12"}), nil
		})
	})

	t.Run("eviction honours PDB", func(t *testing.T) {
		pdb := &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: "guarded", Namespace: ns.Name},
			Spec: policyv1.PodDisruptionBudgetSpec{
				MinAvailable: ptr.To(intstr.FromInt32(1)),
				Selector:     &metav1.LabelSelector{MatchLabels: map[string]string{"app": "guarded"}},
			},
		}
		if _, err := cs.PolicyV1().PodDisruptionBudgets(ns.Name).Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pdb: %v", err)
		}
		// The disruption controller (kube-controller-manager) computes the status; 2 healthy,
		// 1 required: one disruption allowed.
		waitPDB(t, cs, ns.Name, "guarded", 2, 1)

		// Server-side dry run gives the real answer without evicting.
		if err := evict(ctx, cs, ns.Name, "guarded-1", true); err != nil {
			t.Fatalf("dry-run eviction of guarded-1 with a disruption allowed: %v", err)
		}
		if _, err := cs.CoreV1().Pods(ns.Name).Get(ctx, "guarded-1", metav1.GetOptions{}); err != nil {
			t.Fatalf("guarded-1 after dry-run eviction: %v", err)
		}
		if err := evict(ctx, cs, ns.Name, "guarded-1", false); err != nil {
			t.Fatalf("evict guarded-1 with a disruption allowed: %v", err)
		}
		// Grace period 0 in the eviction: gone at once even without a kubelet.
		waitFor(t, "guarded-1 deleted", func() (bool, error) {
			_, err := cs.CoreV1().Pods(ns.Name).Get(ctx, "guarded-1", metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return true, nil
			}
			return false, err
		})
		waitPDB(t, cs, ns.Name, "guarded", 1, 0)

		err := evict(ctx, cs, ns.Name, "guarded-2", false)
		if !apierrors.IsTooManyRequests(err) {
			t.Fatalf("evict guarded-2 (last healthy pod under minAvailable=1): err = %v, want 429 TooManyRequests", err)
		}
		t.Logf("eviction refused as expected: %v", err)
		if _, err := cs.CoreV1().Pods(ns.Name).Get(ctx, "guarded-2", metav1.GetOptions{}); err != nil {
			t.Fatalf("guarded-2 after refused eviction: %v", err)
		}
	})

	t.Run("serviceaccount RBAC", func(t *testing.T) {
		kc := filepath.Join(t.TempDir(), "reader.kubeconfig")
		if err := cp.KubeconfigForServiceAccount(ctx, ns.Name, "reader", kc); err != nil {
			t.Fatal(err)
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", kc)
		if err != nil {
			t.Fatalf("load %s: %v", kc, err)
		}
		sa := kubernetes.NewForConfigOrDie(cfg)
		// Authenticated as the ServiceAccount (not anonymous, not 401) ...
		review, err := sa.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("self subject review as reader: %v", err)
		}
		if got, want := review.Status.UserInfo.Username, "system:serviceaccount:"+ns.Name+":reader"; got != want {
			t.Fatalf("authenticated as %q, want %q", got, want)
		}
		// ... and without RBAC it may not list pods.
		_, err = sa.CoreV1().Pods(ns.Name).List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("list pods as reader without RBAC: err = %v, want 403 Forbidden", err)
		}
		// Granting a Role makes the same call succeed: RBAC is what decided.
		role := &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Name: "pod-reader", Namespace: ns.Name},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}}},
		}
		if _, err := cs.RbacV1().Roles(ns.Name).Create(ctx, role, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create role: %v", err)
		}
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "pod-reader", Namespace: ns.Name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "pod-reader"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns.Name, Name: "reader"}},
		}
		if _, err := cs.RbacV1().RoleBindings(ns.Name).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create rolebinding: %v", err)
		}
		waitFor(t, "reader may list pods after RoleBinding", func() (bool, error) {
			_, err := sa.CoreV1().Pods(ns.Name).List(ctx, metav1.ListOptions{})
			if apierrors.IsForbidden(err) {
				return false, nil
			}
			return err == nil, err
		})
	})

	t.Run("apiserver restart", func(t *testing.T) {
		before, err := cs.CoreV1().Pods(ns.Name).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := cp.Restart(controlplane.KubeAPIServer); err != nil {
			t.Fatalf("restart apiserver: %v", err)
		}
		// The same client works again and sees the same state (kept in etcd).
		after, err := cs.CoreV1().Pods(ns.Name).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("list pods after apiserver restart: %v", err)
		}
		if got, want := podNames(after.Items), podNames(before.Items); !slices.Equal(got, want) {
			t.Fatalf("pods after restart = %v, want %v", got, want)
		}
		// Writes work too.
		if _, err := cs.CoreV1().ConfigMaps(ns.Name).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after-restart"}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create configmap after restart: %v", err)
		}
	})
}

// evict posts a policy/v1 Eviction with grace period 0. MaxRetries(0) matters: a 429 from a PDB
// carries Retry-After, and client-go's default is to retry it about ten times (~110 s).
func evict(ctx context.Context, cs kubernetes.Interface, ns, name string, dryRun bool) error {
	ev := &policyv1.Eviction{
		ObjectMeta:    metav1.ObjectMeta{Name: name, Namespace: ns},
		DeleteOptions: &metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)},
	}
	if dryRun {
		ev.DeleteOptions.DryRun = []string{metav1.DryRunAll}
	}
	return cs.PolicyV1().RESTClient().Post().
		AbsPath("/api/v1").Namespace(ns).Resource("pods").Name(name).SubResource("eviction").
		MaxRetries(0).Body(ev).Do(ctx).Error()
}

func waitPDB(t *testing.T, cs kubernetes.Interface, ns, name string, healthy, allowed int32) {
	t.Helper()
	waitFor(t, fmt.Sprintf("PDB %s/%s currentHealthy=%d disruptionsAllowed=%d", ns, name, healthy, allowed), func() (bool, error) {
		pdb, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		s := pdb.Status
		if s.ObservedGeneration == pdb.Generation && s.CurrentHealthy == healthy && s.DisruptionsAllowed == allowed {
			return true, nil
		}
		return false, fmt.Errorf("generation %d, status %+v", pdb.Generation, s)
	})
}

// waitFor polls cond until it is true; it fails the test after two minutes (a bound, not a
// timing assertion: the controllers normally answer within a second or two). An error from
// cond does not stop the wait; the last one is reported on failure.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	var lastErr error
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		ok, err := cond()
		if err != nil {
			lastErr = err
			return false, nil
		}
		return ok, nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v (last error: %v)", what, err, lastErr)
	}
}

func podNames(pods []corev1.Pod) []string {
	var names []string
	for _, p := range pods {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	return names
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// BenchmarkStart measures Start (credentials, etcd, apiserver /readyz, controllers /healthz);
// Stop runs outside the timer.
//
//	go test -tags sandbox -run x -bench Start -benchtime 5x ./e2e/controlplane/
func BenchmarkStart(b *testing.B) {
	bin, err := controlplane.FindBinaries()
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		cp, err := controlplane.Start(b.Context(), controlplane.Options{BinDir: bin})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := cp.Stop(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkRestartAPIServer measures Restart("kube-apiserver"): graceful stop, start, /readyz.
//
//	go test -tags sandbox -run x -bench RestartAPIServer -benchtime 5x ./e2e/controlplane/
func BenchmarkRestartAPIServer(b *testing.B) {
	bin, err := controlplane.FindBinaries()
	if err != nil {
		b.Fatal(err)
	}
	cp, err := controlplane.Start(b.Context(), controlplane.Options{BinDir: bin})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cp.Stop() })
	for b.Loop() {
		if err := cp.Restart(controlplane.KubeAPIServer); err != nil {
			b.Fatal(err)
		}
	}
}
