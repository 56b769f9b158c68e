package enroll_test

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshmedic/meshmedic/enroll"
)

func ExampleExpect() {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   "shop",
		Labels: map[string]string{enroll.LabelDataplaneMode: "ambient"},
	}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "cart-0", Namespace: "shop"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: "10.0.0.5"}}},
	}

	s := enroll.DefaultSettings() // newest behaviour, DNS capture unknown
	e := enroll.Expect(pod, ns, s)
	fmt.Println(e.State, e.Reason, e.Required, e.Optional)

	s.Version, _ = enroll.ParseVersion("1.21.4")
	s.DNSCapture = enroll.DNSOn
	e = enroll.Expect(pod, ns, s)
	fmt.Println(e.State, e.Reason, e.Required, e.Optional)

	pod.Labels = map[string]string{enroll.LabelDataplaneMode: "none"}
	s.Version, _ = enroll.ParseVersion("v1.28.1")
	e = enroll.Expect(pod, ns, s)
	fmt.Println(e.State, e.Reason)
	// Output:
	// captured selected [15001 15006 15008] [15053 15080]
	// captured selected [15001 15006 15008 15053 15080] []
	// not-captured opted-out
}

func ExampleSettingsFromConfigMap() {
	data := map[string]string{ // from ConfigMap istio-system/istio-cni-config
		"CURRENT_AGENT_VERSION":       "1.29.1-distroless",
		"AMBIENT_ENABLED":             "true",
		"AMBIENT_DNS_CAPTURE":         "false",
		"EXCLUDE_NAMESPACES":          "kube-system,monitoring",
		"AMBIENT_ENABLEMENT_SELECTOR": `[{"namespaceSelector":{"matchLabels":{"mesh":"on"}}}]`,
	}
	s, err := enroll.SettingsFromConfigMap(data, enroll.DefaultSettings())
	fmt.Println(s.Version, s.DNSCapture, s.ExcludeNamespaces, len(s.EnablementSelectors), err)

	_, err = enroll.SettingsFromConfigMap(map[string]string{"AMBIENT_IPV6": "maybe"}, enroll.DefaultSettings())
	fmt.Println(err)
	// Output:
	// 1.29.1 off [kube-system monitoring] 1 <nil>
	// key AMBIENT_IPV6: bad value "maybe": want true or false
}
