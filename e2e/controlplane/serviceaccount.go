package controlplane

import (
	"context"
	"fmt"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// serviceAccountTokenTTL is how long a minted token lives: longer than any CI run.
const serviceAccountTokenTTL = 12 * 60 * 60

// KubeconfigForServiceAccount writes to path a kubeconfig that authenticates as the
// ServiceAccount namespace/name with a bound token from the TokenRequest API, so a test can act
// as a least-privilege identity. The ServiceAccount is created when it does not exist (the
// namespace must exist); it gets no RBAC from here.
func (c *ControlPlane) KubeconfigForServiceAccount(ctx context.Context, namespace, name, path string) error {
	cs, err := kubernetes.NewForConfig(c.RESTConfig)
	if err != nil {
		return fmt.Errorf("serviceaccount %s/%s: admin client: %w", namespace, name, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("serviceaccount %s/%s: create: %w", namespace, name, err)
	}
	ttl := int64(serviceAccountTokenTTL)
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("serviceaccount %s/%s: token request: %w", namespace, name, err)
	}
	if tr.Status.Token == "" {
		return fmt.Errorf("serviceaccount %s/%s: token request returned no token", namespace, name)
	}
	user := "system:serviceaccount:" + namespace + ":" + name
	return c.writeKubeconfig(path, user, &clientcmdapi.AuthInfo{Token: tr.Status.Token})
}
