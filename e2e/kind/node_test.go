//go:build kind

package kind

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshmedic/meshmedic/netns"
)

// A kind node is a Docker container named like the node; everything below runs there with
// `docker exec`, the way an operator on the node would break (and inspect) a pod.

func nodeExec(ctx context.Context, node string, cmd ...string) (string, error) {
	return run(ctx, nil, "docker", append([]string{"exec", node}, cmd...)...)
}

// sandboxPID finds the pod's sandbox (pause) process on its node with crictl.
func sandboxPID(ctx context.Context, pod *corev1.Pod) (int, error) {
	out, err := nodeExec(ctx, pod.Spec.NodeName, "crictl", "pods", "--label", "io.kubernetes.pod.uid="+string(pod.UID), "--state", "ready", "-q")
	if err != nil {
		return 0, err
	}
	ids := ParseSandboxIDs(out)
	if len(ids) != 1 {
		return 0, fmt.Errorf("pod %s/%s: %d ready sandboxes on %s, want 1", pod.Namespace, pod.Name, len(ids), pod.Spec.NodeName)
	}
	out, err = nodeExec(ctx, pod.Spec.NodeName, "crictl", "inspectp", "-o", "json", ids[0])
	if err != nil {
		return 0, err
	}
	pid, err := ParseInspectpPID([]byte(out))
	if err != nil {
		return 0, fmt.Errorf("pod %s/%s sandbox %s: %w", pod.Namespace, pod.Name, ids[0], err)
	}
	return pid, nil
}

// inPodNetns runs cmd on the pod's node inside the pod's network namespace only (the
// node's binaries, the pod's sockets and rules).
func inPodNetns(ctx context.Context, pod *corev1.Pod, cmd ...string) (string, error) {
	pid, err := sandboxPID(ctx, pod)
	if err != nil {
		return "", err
	}
	return nodeExec(ctx, pod.Spec.NodeName, append([]string{"nsenter", "--net=/proc/" + strconv.Itoa(pid) + "/ns/net", "--"}, cmd...)...)
}

// listenPorts lists the TCP ports LISTENing in the pod's netns.
func listenPorts(ctx context.Context, pod *corev1.Pod) ([]uint16, error) {
	out, err := inPodNetns(ctx, pod, "ss", "-Htln")
	if err != nil {
		return nil, err
	}
	return ParseListenPorts(out)
}

func hasAll(have, want []uint16) bool {
	for _, p := range want {
		if !slices.Contains(have, p) {
			return false
		}
	}
	return true
}

func hasAny(have, want []uint16) bool {
	for _, p := range want {
		if slices.Contains(have, p) {
			return true
		}
	}
	return false
}

// flushPorts are ztunnel's in-pod TCP ports: the core listeners and DNS.
var flushPorts = append(append([]uint16(nil), netns.CorePorts...), netns.PortDNS)

// flushListeners destroys every TCP socket on ztunnel's in-pod ports in the pod's netns —
// the listeners and the connections they accepted (pooled HBONE connections included), as a
// sandbox re-created by a reboot has none — with ss -K (sock_destroy; the kernel needs
// CONFIG_INET_DIAG_DESTROY), and checks that nothing listens on the core ports any more.
func flushListeners(ctx context.Context, pod *corev1.Pod) error {
	if _, err := inPodNetns(ctx, pod, "ss", "-K", "-t", SSKillFilter(flushPorts)); err != nil {
		return err
	}
	ports, err := listenPorts(ctx, pod)
	if err != nil {
		return err
	}
	if hasAny(ports, netns.CorePorts) {
		return fmt.Errorf("pod %s/%s: still listening on %v after ss -K (kernel without CONFIG_INET_DIAG_DESTROY?)", pod.Namespace, pod.Name, ports)
	}
	return nil
}

// iptablesSaveAll dumps the rules of every iptables backend the node has: istio-cni may have
// written them with another backend than the node's default iptables.
const iptablesSaveAll = `for s in iptables-save ip6tables-save iptables-legacy-save ip6tables-legacy-save iptables-nft-save ip6tables-nft-save; do
  command -v "$s" >/dev/null 2>&1 && "$s" 2>/dev/null; done; true`

// iptablesFlushAll flushes the nat, mangle and raw tables of every backend (the chains stay,
// empty), which is what a pod sandbox that skipped istio-cni looks like.
const iptablesFlushAll = `for t in iptables ip6tables iptables-legacy ip6tables-legacy iptables-nft ip6tables-nft; do
  command -v "$t" >/dev/null 2>&1 || continue
  for tb in nat mangle raw; do "$t" -t "$tb" -F 2>/dev/null; done; done; true`

// istioRules counts Istio's redirect rules in the pod's netns.
func istioRules(ctx context.Context, pod *corev1.Pod) (int, error) {
	out, err := inPodNetns(ctx, pod, "sh", "-c", iptablesSaveAll)
	if err != nil {
		return 0, err
	}
	return CountIstioRules(out), nil
}

// flushRules removes Istio's redirect rules from the pod's netns and checks they are gone.
func flushRules(ctx context.Context, pod *corev1.Pod) error {
	if _, err := inPodNetns(ctx, pod, "sh", "-c", iptablesFlushAll); err != nil {
		return err
	}
	n, err := istioRules(ctx, pod)
	if err != nil {
		return err
	}
	if n != 0 {
		return fmt.Errorf("pod %s/%s: %d Istio rules left after flushing", pod.Namespace, pod.Name, n)
	}
	return nil
}
