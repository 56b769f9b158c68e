package detect

import (
	"bytes"
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
)

// maxExecOutput bounds what one exec may print (a pod's tcp6 table is a few KiB; a node's
// could be MiBs on a host-network pod).
const maxExecOutput = 64 << 20

// SPDYExecutor runs commands in pods over the pods/exec subresource, like kubectl exec:
// WebSocket first, SPDY when the server cannot upgrade to WebSocket.
type SPDYExecutor struct {
	config *rest.Config
	client rest.Interface
}

// NewSPDYExecutor returns an Executor over config, building requests with client
// (clientset.CoreV1().RESTClient()).
func NewSPDYExecutor(config *rest.Config, client rest.Interface) *SPDYExecutor {
	return &SPDYExecutor{config: config, client: client}
}

// Exec implements Executor. RBAC refusal comes back as an error for which
// apierrors.IsForbidden or its text ("forbidden") says so.
func (x *SPDYExecutor) Exec(ctx context.Context, namespace, pod, container string, cmd []string) ([]byte, []byte, error) {
	req := x.client.Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	u := req.URL()
	spdy, err := remotecommand.NewSPDYExecutor(x.config, "POST", u)
	if err != nil {
		return nil, nil, fmt.Errorf("pod %s/%s: exec: %w", namespace, pod, err)
	}
	ws, err := remotecommand.NewWebSocketExecutor(x.config, "GET", u.String())
	if err != nil {
		return nil, nil, fmt.Errorf("pod %s/%s: exec: %w", namespace, pod, err)
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("pod %s/%s: exec: %w", namespace, pod, err)
	}
	stdout, stderr := &capped{max: maxExecOutput}, &capped{max: maxExecOutput}
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: stdout, Stderr: stderr})
	if err != nil {
		return stdout.Bytes(), stderr.Bytes(), fmt.Errorf("pod %s/%s container %s: exec %v: %w", namespace, pod, container, cmd, err)
	}
	return stdout.Bytes(), stderr.Bytes(), nil
}

// capped is a buffer that refuses to grow past max.
type capped struct {
	bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if c.Len()+len(p) > c.max {
		return 0, fmt.Errorf("exec output larger than %d bytes", c.max)
	}
	return c.Buffer.Write(p)
}
