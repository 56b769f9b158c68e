package cli

import (
	"fmt"
	"time"

	ucli "github.com/urfave/cli/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/netns"
)

// istioFlags select the Istio settings enroll judges with.
func istioFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.StringFlag{Name: "istio-namespace", Value: "istio-system", Usage: "Istio's system namespace (where the istio-cni-config ConfigMap lives)"},
		&ucli.StringFlag{Name: "istio-version", Usage: "Istio version to judge expectations by (default: newest behaviour)"},
		&ucli.DurationFlag{Name: "grace", Value: 30 * time.Second, Usage: "how long a new pod may stay un-annotated before it is reported not-enrolled"},
	}
}

// joinNodeScan adds API identity and the enroll verdict to each sandbox, and lists API
// pods of the node that have no sandbox as unknown.
func joinNodeScan(c *ucli.Context, s Streams, out *nodeScanOutput, rep netns.NodeReport) error {
	node := c.String("node")
	if node == "" {
		return usagef("node scan needs --node (or NODE_NAME) to join with the API server; use --offline to skip the API")
	}
	cs, err := clientset(c)
	if err != nil {
		return err
	}
	ctx := c.Context
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String()})
	if err != nil {
		return explainAPIError(ctx, err, "list", "pods", "")
	}
	nsList, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return explainAPIError(ctx, err, "list", "namespaces", "")
	}
	namespaces := make(map[string]*corev1.Namespace, len(nsList.Items))
	for i := range nsList.Items {
		namespaces[nsList.Items[i].Name] = &nsList.Items[i]
	}
	settings := enroll.DefaultSettings()
	istioNS := c.String("istio-namespace")
	settings.SystemNamespace = istioNS
	cm, err := cs.CoreV1().ConfigMaps(istioNS).Get(ctx, "istio-cni-config", metav1.GetOptions{})
	switch {
	case err == nil:
		if settings, err = enroll.SettingsFromConfigMap(cm.Data, settings); err != nil {
			return fmt.Errorf("ConfigMap %s/istio-cni-config: %w", istioNS, err)
		}
	case apierrors.IsNotFound(err), apierrors.IsForbidden(err):
		fmt.Fprintf(s.Err, "note: ConfigMap %s/istio-cni-config not readable (%v); judging with Istio's defaults\n", istioNS, apierrors.ReasonForError(err))
	default:
		return explainAPIError(ctx, err, "get", "configmaps", istioNS)
	}
	if v := c.String("istio-version"); v != "" {
		if settings.Version, err = enroll.ParseVersion(v); err != nil {
			return usagef("--istio-version: %v", err)
		}
	}

	byUID := make(map[string]int, len(rep.Pods))
	for i, p := range rep.Pods {
		byUID[p.PodUID] = i
	}
	now := time.Now()
	for i := range pods.Items {
		pod := &pods.Items[i]
		exp := enroll.Expect(pod, namespaces[pod.Namespace], settings)
		idx, ok := byUID[sandboxUID(pod)]
		var row *nodeScanPod
		ev := detect.Evidence{Expectation: exp, Redirection: pod.Annotations[enroll.AnnotationRedirection], Grace: c.Duration("grace")}
		if ok {
			row = &out.Pods[idx]
			ev.Capture = rep.Pods[idx].Capture
			if ev.Capture != netns.CaptureUnknown && ev.Capture != netns.CaptureHostNetwork {
				ev.Capture = rep.Pods[idx].Listeners.Capture(exp.Required)
			}
		} else {
			if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
				continue
			}
			out.Pods = append(out.Pods, nodeScanPod{UID: string(pod.UID), Listeners: []uint16{}, Capture: string(netns.CaptureUnknown),
				Error: "no sandbox process found under the proc root (wrong --proc-root or --node, or a runtime that drops the infra container)"})
			row = &out.Pods[len(out.Pods)-1]
			ev.Capture = netns.CaptureUnknown
		}
		if st := pod.Status.StartTime; st != nil {
			ev.Unenrolled = now.Sub(st.Time)
		}
		row.Namespace, row.Name = pod.Namespace, pod.Name
		row.Expected, row.Reason = string(exp.State), string(exp.Reason)
		row.Class = string(detect.Classify(ev))
		row.Finding = detect.Class(row.Class).Actionable()
	}
	return nil
}

// sandboxUID is the UID the kubelet uses in cgroup paths: the pod's UID, except for a
// static pod's mirror, whose kubernetes.io/config.mirror annotation holds the real one.
func sandboxUID(pod *corev1.Pod) string {
	if m := pod.Annotations["kubernetes.io/config.mirror"]; m != "" {
		if uid, ok := netns.PodUIDInCgroupLine("pod" + m); ok {
			return uid
		}
	}
	return string(pod.UID)
}
