package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	ucli "github.com/urfave/cli/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeFlags are the kubectl-style connection flags shared by every command that talks to
// the API server.
func kubeFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.StringFlag{Name: "kubeconfig", EnvVars: []string{"KUBECONFIG"}, Usage: "path to the kubeconfig file (default: in-cluster config, then ~/.kube/config)"},
		&ucli.StringFlag{Name: "context", Usage: "kubeconfig context to use"},
		&ucli.DurationFlag{Name: "request-timeout", Value: 30 * time.Second, Usage: "timeout of a single API request"},
	}
}

// namespaceFlags are -n/--namespace and -A/--all-namespaces.
func namespaceFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Usage: "namespace to work in"},
		&ucli.BoolFlag{Name: "all-namespaces", Aliases: []string{"A"}, Usage: "work across all namespaces"},
	}
}

// restConfig loads the client configuration the way kubectl does: --kubeconfig (or
// KUBECONFIG, a list) with --context, else in-cluster, else ~/.kube/config.
func restConfig(c *ucli.Context) (*rest.Config, error) {
	cfg, err := kubeClientConfig(c).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	cfg.Timeout = c.Duration("request-timeout")
	cfg.UserAgent = "meshmedic"
	return cfg, nil
}

// kubeClientConfig is the kubeconfig as kubectl would load it for these flags.
func kubeClientConfig(c *ucli.Context) clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if p := c.String("kubeconfig"); p != "" {
		rules.ExplicitPath = ""
		rules.Precedence = filepathList(p)
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: c.String("context")}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
}

func clientset(c *ucli.Context) (kubernetes.Interface, error) {
	cfg, err := restConfig(c)
	if err != nil {
		return nil, err
	}
	return newClientset(cfg)
}

func newClientset(cfg *rest.Config) (kubernetes.Interface, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating Kubernetes client for %s: %w", cfg.Host, err)
	}
	return cs, nil
}

// explainAPIError turns the API errors people hit into sentences that say what to do:
// an unreachable server names the server, an RBAC denial names the verb and resource.
func explainAPIError(ctx context.Context, err error, verb, resource, namespace string) error {
	if err == nil {
		return nil
	}
	where := resource
	if namespace != "" {
		where = fmt.Sprintf("%s in namespace %q", resource, namespace)
	}
	var ue *url.Error
	var ne net.Error
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("permission denied: cannot %s %s (RBAC: grant verb %q on resource %q): %w", verb, where, verb, resource, err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("the API server rejected our credentials while trying to %s %s: %w", verb, where, err)
	case apierrors.IsNotFound(err):
		return fmt.Errorf("cannot %s %s: not found: %w", verb, where, err)
	case errors.As(err, &ue), errors.As(err, &ne), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("cannot reach the API server to %s %s (check --kubeconfig/--context and that the cluster is up): %w", verb, where, err)
	}
	return fmt.Errorf("%s %s: %w", verb, where, err)
}
