package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
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
		// Not bound to $KUBECONFIG: the variable is a list whose missing entries are skipped,
		// while a path given here must exist (as kubectl has it).
		&ucli.StringFlag{Name: "kubeconfig", Usage: "path to the kubeconfig file; it must exist (default: the files listed in $KUBECONFIG, else ~/.kube/config, else the in-cluster config of a pod)"},
		&ucli.StringFlag{Name: "context", Usage: "kubeconfig context to use"},
		&ucli.DurationFlag{Name: "request-timeout", Value: 30 * time.Second, Usage: "timeout of a single API request (0: none)"},
	}
}

// namespaceFlags are -n/--namespace and -A/--all-namespaces.
func namespaceFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Usage: "namespace to work in"},
		&ucli.BoolFlag{Name: "all-namespaces", Aliases: []string{"A"}, Usage: "work across all namespaces"},
	}
}

// restConfig loads the client configuration the way kubectl does: --kubeconfig (a single
// file that must exist), else $KUBECONFIG (a list; missing entries are skipped), else
// ~/.kube/config, and only when none of them yields a configuration, the in-cluster one.
func restConfig(c *ucli.Context) (*rest.Config, error) {
	cfg, err := kubeClientConfig(c).ClientConfig()
	if err != nil {
		return nil, explainConfigError(c, err)
	}
	cfg.Timeout = c.Duration("request-timeout")
	cfg.UserAgent = "meshmedic"
	return cfg, nil
}

// explainConfigError replaces client-go's advice about KUBERNETES_MASTER (an old
// variable kubectl users never set) with where meshmedic looked.
func explainConfigError(c *ucli.Context, err error) error {
	if clientcmd.IsEmptyConfig(err) {
		where := "~/.kube/config"
		if env := os.Getenv(clientcmd.RecommendedConfigPathEnvVar); env != "" {
			where = "$KUBECONFIG (" + env + ")"
		}
		return fmt.Errorf("no Kubernetes configuration: %s holds none and this is not a pod with a service account (in-cluster); give --kubeconfig", where)
	}
	if p := c.String("kubeconfig"); p != "" {
		return fmt.Errorf("loading kubeconfig %s: %w", p, err)
	}
	return fmt.Errorf("loading kubeconfig: %w", err)
}

// kubeClientConfig is the kubeconfig as kubectl would load it for these flags.
func kubeClientConfig(c *ucli.Context) clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules() // $KUBECONFIG, then ~/.kube/config
	if p := c.String("kubeconfig"); p != "" {
		rules.ExplicitPath = p // clientcmd fails with "stat <path>: no such file or directory"
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
	case isCredentialPluginError(err):
		return fmt.Errorf("the kubeconfig's exec credential plugin failed, so no request reached the API server (run the plugin's command by hand to see why) while trying to %s %s: %w", verb, where, err)
	case errors.As(err, &ue), errors.As(err, &ne), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("cannot reach the API server to %s %s (check --kubeconfig/--context and that the cluster is up): %w", verb, where, err)
	}
	return fmt.Errorf("%s %s: %w", verb, where, err)
}

// isCredentialPluginError recognises a failure of a kubeconfig `exec` credential plugin
// (kubelogin, aws eks get-token, gke-gcloud-auth-plugin, ...). client-go's exec round
// tripper reports it, untyped, as "getting credentials: ..."
// (k8s.io/client-go/plugin/pkg/client/auth/exec/exec.go, RoundTrip), wrapped in the
// request's *url.Error; the plugin's own messages start with "exec: ".
func isCredentialPluginError(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "getting credentials: ") || strings.Contains(msg, "exec plugin: ")
}
