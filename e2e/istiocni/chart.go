package istiocni

import (
	"context"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// What Istio's istio-cni chart installs (manifests/charts/istio-cni of the pinned snapshot,
// rendered with the ambient profile and default values), in one place.
const (
	Namespace      = "istio-system"
	ServiceAccount = "istio-cni"
	ConfigMapName  = "istio-cni-config"
	// DaemonSetPodPrefix is the prefix of the node agent's pod name; the plugin skips pods so
	// named in the agent's namespace (cni/pkg/plugin/plugin.go isCNIPod).
	DaemonSetPodPrefix = "istio-cni-node-"
)

// DefaultEnablementSelector is the chart's ambient.enablementSelectors as the ConfigMap carries
// it (toYaml of values.yaml's list).
const DefaultEnablementSelector = `- podSelector:
    matchLabels:
      istio.io/dataplane-mode: ambient
- namespaceSelector:
    matchLabels:
      istio.io/dataplane-mode: ambient
  podSelector:
    matchExpressions:
    - key: istio.io/dataplane-mode
      operator: NotIn
      values:
      - none
`

// ConfigMapData is the data of istio-cni-config as the chart renders it with the ambient
// profile (templates/configmap-cni.yaml, values.yaml defaults), with overrides applied on top
// (a key mapped to "" is removed). The node agent reads these keys as environment variables
// (envFrom), and meshmedic reads the same ConfigMap: one source for both.
func ConfigMapData(overrides map[string]string) map[string]string {
	d := map[string]string{
		"CURRENT_AGENT_VERSION":                  AgentVersion,
		"AMBIENT_ENABLED":                        "true",
		"AMBIENT_ENABLEMENT_SELECTOR":            DefaultEnablementSelector,
		"AMBIENT_DNS_CAPTURE":                    "true",
		"AMBIENT_IPV6":                           "true",
		"AMBIENT_RECONCILE_POD_RULES_ON_STARTUP": "true",
		"ENABLE_AMBIENT_DETECTION_RETRY":         "false",
		"ISTIO_OWNED_CNI_CONFIG":                 "false",
		"CHAINED_CNI_PLUGIN":                     "true",
		"EXCLUDE_NAMESPACES":                     "kube-system",
		"REPAIR_ENABLED":                         "true",
		"REPAIR_LABEL_PODS":                      "false",
		"REPAIR_DELETE_PODS":                     "false",
		"REPAIR_REPAIR_PODS":                     "true",
		"REPAIR_INIT_CONTAINER_NAME":             "istio-validation",
		"REPAIR_BROKEN_POD_LABEL_KEY":            "cni.istio.io/uninitialized",
		"REPAIR_BROKEN_POD_LABEL_VALUE":          "true",
		"NATIVE_NFTABLES":                        "false",
	}
	for k, v := range overrides {
		if v == "" {
			delete(d, k)
			continue
		}
		d[k] = v
	}
	return d
}

// AgentEnv is the node agent container's environment as the DaemonSet gives it: the ConfigMap
// (envFrom) then the explicit env entries, for the agent's pod on node.
func AgentEnv(data map[string]string, node, podName string) []string {
	var env []string
	for _, k := range slices.Sorted(maps.Keys(data)) {
		env = append(env, k+"="+data[k])
	}
	return append(env,
		"REPAIR_NODE_NAME="+node,
		"REPAIR_RUN_AS_DAEMON=true",
		"REPAIR_SIDECAR_ANNOTATION=sidecar.istio.io/status",
		"NODE_NAME="+node,
		"POD_NAME="+podName,
		"POD_NAMESPACE="+Namespace,
	)
}

// chartRBAC is the chart's ClusterRoles (templates/clusterrole.yaml with ambient.enabled and
// repair.enabled, repairPods=true), each bound to the istio-cni ServiceAccount.
func chartRBAC() []rbacv1.ClusterRole {
	return []rbacv1.ClusterRole{
		{ObjectMeta: metav1.ObjectMeta{Name: "istio-cni"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods", "nodes", "namespaces"}, Verbs: []string{"get", "list", "watch"}},
		}},
		{ObjectMeta: metav1.ObjectMeta{Name: "istio-cni-repair-role"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"watch", "get", "list"}},
		}},
		{ObjectMeta: metav1.ObjectMeta{Name: "istio-cni-ambient"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods/status"}, Verbs: []string{"patch", "update"}},
			{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, ResourceNames: []string{"istio-cni-node"}, Verbs: []string{"get"}},
		}},
	}
}

// Install creates what the chart creates in the API for the node agent: its namespace,
// ServiceAccount, ClusterRoles and bindings (not cluster-admin), and istio-cni-config with data.
// Existing objects are updated to match (idempotent).
func Install(ctx context.Context, cs kubernetes.Interface, data map[string]string) error {
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("namespace %s: %w", Namespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: ServiceAccount}}
	if _, err := cs.CoreV1().ServiceAccounts(Namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("serviceaccount %s/%s: %w", Namespace, ServiceAccount, err)
	}
	for _, cr := range chartRBAC() {
		cr.Labels = map[string]string{"app": "istio-cni", "app.kubernetes.io/name": "istio-cni"}
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &cr, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("clusterrole %s: %w", cr.Name, err)
		}
		crb := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: cr.Name, Labels: cr.Labels},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: Namespace, Name: ServiceAccount}},
		}
		if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("clusterrolebinding %s: %w", cr.Name, err)
		}
	}
	return SetConfig(ctx, cs, data)
}

// SetConfig writes istio-cni-config's data (creating it when missing). The node agent reads it
// at start, as a DaemonSet's envFrom does: restart the agent for a change to take effect.
func SetConfig(ctx context.Context, cs kubernetes.Interface, data map[string]string) error {
	cms := cs.CoreV1().ConfigMaps(Namespace)
	cm, err := cms.Get(ctx, ConfigMapName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: ConfigMapName,
			Labels: map[string]string{"app": "istio-cni"}}, Data: data}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("configmap %s/%s: %w", Namespace, ConfigMapName, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("configmap %s/%s: %w", Namespace, ConfigMapName, err)
	}
	cm.Data = data
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("configmap %s/%s: %w", Namespace, ConfigMapName, err)
	}
	return nil
}
