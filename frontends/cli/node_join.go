package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	ucli "github.com/urfave/cli/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/netns"
)

// istioFlags select the Istio settings enroll judges with.
func istioFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.StringFlag{Name: "istio-namespace", Value: "istio-system", Usage: "Istio's system namespace (where the istio-cni-config ConfigMap lives)"},
		&ucli.StringFlag{Name: "istio-version", Usage: "Istio version to judge expectations by (default: from istio-cni-config, else newest behaviour)"},
		&ucli.DurationFlag{Name: "grace", Value: 30 * time.Second, Usage: "how long a new pod may stay un-annotated before it is reported not-enrolled"},
	}
}

// istioSettings reads the istio-cni-config ConfigMap (defaults, with a note on w, when it
// is absent or not readable) and applies --istio-version.
func istioSettings(ctx context.Context, cs kubernetes.Interface, istioNS, version string, w io.Writer) (enroll.Settings, error) {
	settings := enroll.DefaultSettings()
	settings.SystemNamespace = istioNS
	cm, err := cs.CoreV1().ConfigMaps(istioNS).Get(ctx, enroll.ConfigMapName, metav1.GetOptions{})
	switch {
	case err == nil:
		if settings, err = enroll.SettingsFromConfigMap(cm.Data, settings); err != nil {
			return settings, fmt.Errorf("ConfigMap %s/%s: %w", istioNS, enroll.ConfigMapName, err)
		}
	case apierrors.IsNotFound(err), apierrors.IsForbidden(err):
		fmt.Fprintf(w, "note: ConfigMap %s/%s not readable (%s); judging with Istio's defaults\n", istioNS, enroll.ConfigMapName, apierrors.ReasonForError(err))
	default:
		return settings, explainAPIError(ctx, err, "get", "configmaps", istioNS)
	}
	if version != "" {
		if settings.Version, err = enroll.ParseVersion(version); err != nil {
			return settings, usagef("--istio-version: %v", err)
		}
	} else if settings.Version.IsZero() {
		settings.Version = istioVersionFromImages(ctx, cs, istioNS, w)
	}
	return settings, nil
}

// istioVersionFromImages reads the Istio version from the istio-cni (or ztunnel) pods'
// image tags when they are readable; the zero Version (newest behaviour) otherwise, with a
// note saying so.
func istioVersionFromImages(ctx context.Context, cs kubernetes.Interface, istioNS string, w io.Writer) enroll.Version {
	for _, app := range []string{"istio-cni-node", "ztunnel"} {
		pods, err := cs.CoreV1().Pods(istioNS).List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=" + app})
		if err != nil || len(pods.Items) == 0 {
			pods, err = cs.CoreV1().Pods(istioNS).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		}
		if err != nil || pods == nil {
			continue
		}
		for _, p := range pods.Items {
			for _, c := range p.Spec.Containers {
				if v, err := enroll.ParseVersion(c.Image); err == nil && !v.IsZero() {
					return v
				}
			}
		}
	}
	fmt.Fprintf(w, "note: Istio version not found from istio-cni/ztunnel image tags in %s; judging by the newest Istio behaviour (set --istio-version)\n", istioNS)
	return enroll.Version{}
}

// fetchNode reads what JoinNode needs from the API server.
func fetchNode(ctx context.Context, cs kubernetes.Interface, node, istioNS, version string, w io.Writer) (detect.NodeInput, error) {
	var in detect.NodeInput
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String()})
	if err != nil {
		return in, explainAPIError(ctx, err, "list", "pods", "")
	}
	nsList, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return in, explainAPIError(ctx, err, "list", "namespaces", "")
	}
	in.Pods = pods.Items
	in.Namespaces = make(map[string]*corev1.Namespace, len(nsList.Items))
	for i := range nsList.Items {
		in.Namespaces[nsList.Items[i].Name] = &nsList.Items[i]
	}
	in.Settings, err = istioSettings(ctx, cs, istioNS, version, w)
	return in, err
}

// joinNodeScan adds API identity, enroll's verdict and detect's class to the scan.
func joinNodeScan(c *ucli.Context, s Streams, rep netns.NodeReport) (nodeScanOutput, error) {
	node := c.String("node")
	if node == "" {
		return nodeScanOutput{}, usagef("node scan needs --node (or NODE_NAME) to join with the API server; use --offline to skip the API")
	}
	cs, err := clientset(c)
	if err != nil {
		return nodeScanOutput{}, err
	}
	in, err := fetchNode(c.Context, cs, node, c.String("istio-namespace"), c.String("istio-version"), s.Err)
	if err != nil {
		return nodeScanOutput{}, err
	}
	in.Report, in.Now, in.Grace = rep, time.Now(), c.Duration("grace")
	return nodeScanJoined(detect.JoinNode(in)), nil
}

func nodeScanJoined(pods []detect.NodePod) nodeScanOutput {
	out := nodeScanOutput{Pods: make([]nodeScanPod, 0, len(pods))}
	for _, np := range pods {
		var row nodeScanPod
		if np.Netns != nil {
			row = nodeScanRow(*np.Netns)
		} else {
			row = nodeScanPod{Listeners: []uint16{}, Capture: string(netns.CaptureUnknown),
				Error: "no sandbox process found under the proc root (wrong --proc-root or --node, or a runtime that drops the infra container)"}
		}
		if np.Pod != nil {
			row.UID = string(np.Pod.UID)
			row.Namespace, row.Name = np.Pod.Namespace, np.Pod.Name
			row.Expected, row.Reason = string(np.Expectation.State), string(np.Expectation.Reason)
		}
		row.Class = string(np.Class)
		row.Finding = np.Class.Actionable()
		out.Pods = append(out.Pods, row)
	}
	return out
}
