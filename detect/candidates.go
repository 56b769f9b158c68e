package detect

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/ztlog"
)

// RejectReason says why a ztunnel log signal does not point at a verifiable pod.
type RejectReason string

// The shapes of ISTIO-FACTS §6 false positives: kube-apiserver → webhooks and SNATed
// sources (no pod has the IP), kubelet probes and hostNetwork sources (node IPs),
// non-ambient sources (not annotated enabled).
const (
	RejectNoIP        RejectReason = "no-ip"         // the log had no parsable IP (redacted)
	RejectNoPod       RejectReason = "no-pod"        // no pod has this IP (apiserver, node, SNAT, gone)
	RejectHostNetwork RejectReason = "host-network"  // the IP is a hostNetwork pod's (the node's)
	RejectNotRunning  RejectReason = "not-running"   // the pod with this IP is not Running
	RejectNotEnrolled RejectReason = "not-enrolled"  // not annotated ambient.istio.io/redirection: enabled
	RejectMismatch    RejectReason = "name-mismatch" // the signal names another namespace/workload
	RejectAmbiguous   RejectReason = "ambiguous"     // several enrolled running pods have this IP
)

// Rejected is a signal Candidates could not tie to a pod worth probing.
type Rejected struct {
	Signal ztlog.Signal
	Reason RejectReason
	// Pod is "namespace/name" of the pod that has the IP, when there is one.
	Pod string
}

// Candidates verifies ztunnel log signals against the cluster's pods (ISTIO-FACTS §6): a
// signal counts only when its IP belongs to a Running, non-hostNetwork pod annotated
// ambient.istio.io/redirection: enabled, whose namespace and workload agree with the
// signal when it names them. It returns those pods (each once, in signal order) for
// ScanPods, and every other signal with the reason. Listing pods failing is an error.
func (e *Engine) Candidates(ctx context.Context, signals []ztlog.Signal) ([]corev1.Pod, []Rejected, error) {
	pods, err := e.pods.ListPods(ctx, "")
	if err != nil {
		return nil, nil, fmt.Errorf("list pods in all namespaces: %w", err)
	}
	byIP := map[netip.Addr][]int{}
	for i := range pods {
		for _, ip := range podIPs(&pods[i]) {
			if a, err := netip.ParseAddr(ip); err == nil {
				byIP[a.Unmap()] = append(byIP[a.Unmap()], i)
			}
		}
	}
	var out []corev1.Pod
	var rejected []Rejected
	taken := map[int]bool{}
	for _, s := range signals {
		i, reason, who := matchSignal(s, pods, byIP)
		if reason != "" {
			rejected = append(rejected, Rejected{Signal: s, Reason: reason, Pod: who})
			continue
		}
		if !taken[i] {
			taken[i] = true
			out = append(out, pods[i])
		}
	}
	return out, rejected, nil
}

func podIPs(p *corev1.Pod) []string {
	if len(p.Status.PodIPs) > 0 {
		out := make([]string, len(p.Status.PodIPs))
		for i, ip := range p.Status.PodIPs {
			out[i] = ip.IP
		}
		return out
	}
	if p.Status.PodIP != "" {
		return []string{p.Status.PodIP}
	}
	return nil
}

func matchSignal(s ztlog.Signal, pods []corev1.Pod, byIP map[netip.Addr][]int) (int, RejectReason, string) {
	a, err := netip.ParseAddr(s.IP)
	if err != nil {
		return 0, RejectNoIP, ""
	}
	idx := byIP[a.Unmap()]
	if len(idx) == 0 {
		return 0, RejectNoPod, ""
	}
	// Judge every pod with the IP; keep the good ones. The first failure explains a
	// rejection (prefer the Running pod's reason: IPs of finished pods are reused).
	var good []int
	var reason RejectReason
	var who string
	for _, i := range idx {
		p := &pods[i]
		r := podRejection(s, p)
		if r == "" {
			good = append(good, i)
			continue
		}
		if reason == "" || p.Status.Phase == corev1.PodRunning {
			reason, who = r, podName(p)
		}
	}
	switch len(good) {
	case 1:
		return good[0], "", ""
	case 0:
		return 0, reason, who
	}
	return 0, RejectAmbiguous, podName(&pods[good[0]])
}

func podRejection(s ztlog.Signal, p *corev1.Pod) RejectReason {
	switch {
	case p.Spec.HostNetwork:
		return RejectHostNetwork
	case p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil:
		return RejectNotRunning
	case p.Annotations[enroll.AnnotationRedirection] != string(enroll.RedirectionEnabled):
		return RejectNotEnrolled
	case s.Namespace != "" && s.Namespace != p.Namespace:
		return RejectMismatch
	case s.Workload != "" && !workloadMatches(s.Workload, p):
		return RejectMismatch
	}
	return ""
}

// workloadMatches: ztunnel logs a pod's workload name, which is the pod name, or — in
// some versions and for some controllers — the owner's name; accept the pod name, a
// generated-name prefix, and the canonical-name labels.
func workloadMatches(w string, p *corev1.Pod) bool {
	if w == p.Name || (p.GenerateName != "" && strings.HasPrefix(p.GenerateName, w)) || strings.HasPrefix(p.Name, w+"-") {
		return true
	}
	for _, k := range []string{"service.istio.io/canonical-name", "app.kubernetes.io/name", "app"} {
		if p.Labels[k] == w {
			return true
		}
	}
	return false
}

// ZtunnelLogs implements ztlog.LogSource over client-go: the ztunnel pods (label
// app=ztunnel, Running, any namespace) from a PodLister and their logs from the pods/log
// subresource.
type ZtunnelLogs struct {
	pods PodLister
	logs corev1client.PodsGetter
}

// NewZtunnelLogs returns a log source. pods lists all namespaces; give it an APISource
// built WithLabelSelector("app=ztunnel") to avoid listing every pod (the label is checked
// again here either way).
func NewZtunnelLogs(pods PodLister, logs corev1client.PodsGetter) *ZtunnelLogs {
	return &ZtunnelLogs{pods: pods, logs: logs}
}

var _ ztlog.LogSource = (*ZtunnelLogs)(nil)

// ZtunnelPods implements ztlog.LogSource.
func (z *ZtunnelLogs) ZtunnelPods(ctx context.Context) ([]ztlog.PodRef, error) {
	pods, err := z.pods.ListPods(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list ztunnel pods: %w", err)
	}
	var out []ztlog.PodRef
	for _, p := range pods {
		if p.Labels["app"] == "ztunnel" && p.Status.Phase == corev1.PodRunning {
			out = append(out, ztlog.PodRef{Namespace: p.Namespace, Name: p.Name, Node: p.Spec.NodeName})
		}
	}
	return out, nil
}

// Stream implements ztlog.LogSource.
func (z *ZtunnelLogs) Stream(ctx context.Context, pod ztlog.PodRef, since time.Time) (io.ReadCloser, error) {
	opts := &corev1.PodLogOptions{}
	if !since.IsZero() {
		t := metav1.NewTime(since)
		opts.SinceTime = &t
	}
	rc, err := z.logs.Pods(pod.Namespace).GetLogs(pod.Name, opts).Stream(ctx)
	if err != nil {
		return nil, fmt.Errorf("get logs of pod %s: %w", pod, err)
	}
	return rc, nil
}
