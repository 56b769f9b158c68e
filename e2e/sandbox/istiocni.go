package sandbox

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshmedic/meshmedic/enroll"
)

// IstioCNIConfigMap is istio-cni's ConfigMap as the istio-cni chart renders it with its
// default values and the ambient profile (istio/istio
// manifests/charts/istio-cni/templates/configmap-cni.yaml; the same rendering as
// testdata/enroll/istio-cni-config-1.28.yaml), for an agent of the given version. A real
// install has it; without it meshmedic judges with Istio's defaults and says so.
func IstioCNIConfigMap(namespace, agentVersion string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name: enroll.ConfigMapName, Namespace: namespace,
			Labels: map[string]string{"app": "istio-cni", "istio.io/rev": "default"},
		},
		Data: map[string]string{
			enroll.KeyCurrentAgentVersion: agentVersion,
			enroll.KeyAmbientEnabled:      "true",
			// .Values.ambient.enablementSelectors | toYaml | quote
			enroll.KeyAmbientEnablementSelector: "- podSelector:\n    matchLabels:\n      istio.io/dataplane-mode: ambient\n" +
				"- namespaceSelector:\n    matchLabels:\n      istio.io/dataplane-mode: ambient\n  podSelector:\n" +
				"    matchExpressions:\n    - key: istio.io/dataplane-mode\n      operator: NotIn\n      values:\n      - none\n",
			enroll.KeyAmbientDNSCapture:          "true",
			enroll.KeyAmbientIPv6:                "true",
			enroll.KeyReconcilePodRulesOnStartup: "false",
			"CHAINED_CNI_PLUGIN":                 "true",
			enroll.KeyExcludeNamespaces:          "kube-system",
			"REPAIR_ENABLED":                     "true",
			"REPAIR_LABEL_PODS":                  "false",
			"REPAIR_DELETE_PODS":                 "false",
			"REPAIR_REPAIR_PODS":                 "true",
			"REPAIR_INIT_CONTAINER_NAME":         "istio-validation",
			"REPAIR_BROKEN_POD_LABEL_KEY":        "cni.istio.io/uninitialized",
			"REPAIR_BROKEN_POD_LABEL_VALUE":      "true",
		},
	}
}

// ZtunnelVersion is the Istio version of the sandbox's ztunnel pod image.
const ZtunnelVersion = "1.28.0"

// CreateIstioCNIConfig creates (or replaces) IstioCNIConfigMap in istio-system, for the
// sandbox's Istio version, as a real install has it.
func CreateIstioCNIConfig(ctx context.Context, cs kubernetes.Interface) error {
	const ns = "istio-system"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	cm := IstioCNIConfigMap(ns, ZtunnelVersion)
	_, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		_, err = cs.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("ConfigMap %s/%s: %w", ns, cm.Name, err)
	}
	return nil
}
