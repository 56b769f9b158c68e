package detect

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// PodLister lists pods; namespace "" means all namespaces.
type PodLister interface {
	ListPods(ctx context.Context, namespace string) ([]corev1.Pod, error)
}

// PodListerFunc adapts a function to PodLister.
type PodListerFunc func(ctx context.Context, namespace string) ([]corev1.Pod, error)

// ListPods implements PodLister.
func (f PodListerFunc) ListPods(ctx context.Context, namespace string) ([]corev1.Pod, error) {
	return f(ctx, namespace)
}

// NamespaceGetter gets one namespace. A namespace that does not exist is reported with an
// error for which apierrors.IsNotFound is true.
type NamespaceGetter interface {
	GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error)
}

// NamespaceGetterFunc adapts a function to NamespaceGetter.
type NamespaceGetterFunc func(ctx context.Context, name string) (*corev1.Namespace, error)

// GetNamespace implements NamespaceGetter.
func (f NamespaceGetterFunc) GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	return f(ctx, name)
}

// APISource implements PodLister and NamespaceGetter over client-go.
type APISource struct {
	pods          corev1client.PodsGetter
	nss           corev1client.NamespacesGetter
	fieldSelector string
	labelSelector string
	pageSize      int64
}

// SourceOption configures an APISource.
type SourceOption func(*APISource)

// WithFieldSelector restricts listed pods, e.g. "spec.nodeName=node-a".
func WithFieldSelector(s string) SourceOption { return func(a *APISource) { a.fieldSelector = s } }

// WithLabelSelector restricts listed pods, e.g. "app=ztunnel".
func WithLabelSelector(s string) SourceOption { return func(a *APISource) { a.labelSelector = s } }

// WithPageSize sets the List page size (default 500; 0 lists in one request).
func WithPageSize(n int64) SourceOption { return func(a *APISource) { a.pageSize = n } }

// NewAPISource returns a PodLister and NamespaceGetter over client-go (e.g.
// clientset.CoreV1() for both). Lists are ordinary, paginated, consistent reads.
func NewAPISource(pods corev1client.PodsGetter, nss corev1client.NamespacesGetter, opts ...SourceOption) *APISource {
	a := &APISource{pods: pods, nss: nss, pageSize: 500}
	for _, o := range opts {
		o(a)
	}
	return a
}

// ListPods implements PodLister.
func (a *APISource) ListPods(ctx context.Context, namespace string) ([]corev1.Pod, error) {
	opts := metav1.ListOptions{FieldSelector: a.fieldSelector, LabelSelector: a.labelSelector, Limit: a.pageSize}
	var out []corev1.Pod
	for {
		list, err := a.pods.Pods(namespace).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("list pods: %w", err)
		}
		out = append(out, list.Items...)
		if list.Continue == "" {
			return out, nil
		}
		opts.Continue = list.Continue
	}
}

// GetNamespace implements NamespaceGetter.
func (a *APISource) GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	ns, err := a.nss.Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get namespace %s: %w", name, err)
	}
	return ns, nil
}
