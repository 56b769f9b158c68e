package sandbox

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/meshmedic/meshmedic/enroll"
)

// Workload is a Deployment the demo creates.
type Workload struct {
	Namespace, Name string
	Replicas        int32
	HostNetwork     bool
	// ReadinessGates are condition types added as the pods' readinessGates (e.g.
	// meshmedic.io/AmbientCaptured: the pod is Ready only while the agent says it is captured).
	ReadinessGates []corev1.PodConditionType
}

// DemoWorkloads: an ambient namespace with a few services, and a namespace outside the mesh.
var DemoWorkloads = []Workload{
	{Namespace: "shop", Name: "frontend", Replicas: 2},
	{Namespace: "shop", Name: "cart", Replicas: 2},
	{Namespace: "shop", Name: "checkout", Replicas: 1},
	{Namespace: "legacy", Name: "batch", Replicas: 1},
}

// DemoNamespaces maps the demo's namespaces to their labels.
var DemoNamespaces = map[string]map[string]string{
	"shop":   {enroll.LabelDataplaneMode: enroll.DataplaneModeAmbient},
	"legacy": nil,
}

// CreateWorkloads creates namespaces and Deployments (idempotent) and waits until every
// pod runs and every ambient pod is annotated enabled.
func CreateWorkloads(ctx context.Context, cs kubernetes.Interface, namespaces map[string]map[string]string, ws []Workload) error {
	for ns, labels := range namespaces {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("namespace %s: %w", ns, err)
		}
	}
	want := map[string]int{}
	for _, w := range ws {
		d := Deployment(w)
		_, err := cs.AppsV1().Deployments(w.Namespace).Create(ctx, d, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("deployment %s/%s: %w", w.Namespace, w.Name, err)
		}
		want[w.Namespace] += int(w.Replicas)
	}
	return wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		for ns, n := range want {
			pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, nil
			}
			ready := 0
			for _, p := range pods.Items {
				ambient := namespaces[ns][enroll.LabelDataplaneMode] == enroll.DataplaneModeAmbient && !p.Spec.HostNetwork
				if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil &&
					(!ambient || p.Annotations[enroll.AnnotationRedirection] == "enabled") {
					ready++
				}
			}
			if ready != n {
				return false, nil
			}
		}
		return true, nil
	})
}

// Deployment is the sandbox's Deployment for w: pods labelled app=<name>, one container
// whose image is never pulled (the sandbox node runs no containers), a 1 s grace period.
func Deployment(w Workload) *appsv1.Deployment {
	labels := map[string]string{"app": w.Name}
	var gates []corev1.PodReadinessGate
	for _, c := range w.ReadinessGates {
		gates = append(gates, corev1.PodReadinessGate{ConditionType: c})
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.Namespace, Name: w.Name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(w.Replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					HostNetwork:                   w.HostNetwork,
					ReadinessGates:                gates,
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					Containers:                    []corev1.Container{{Name: "app", Image: "registry.invalid/" + w.Name + ":1"}},
				},
			},
		},
	}
}
