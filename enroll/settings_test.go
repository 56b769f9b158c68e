package enroll

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

func TestDefaultSettings(t *testing.T) {
	s := DefaultSettings()
	if !s.AmbientEnabled || !s.Version.IsZero() || s.DNSCapture != DNSUnknown || s.SystemNamespace != "istio-system" ||
		!reflect.DeepEqual(s.ExcludeNamespaces, []string{"kube-system"}) || s.EnablementSelectors != nil {
		t.Fatalf("DefaultSettings() = %+v", s)
	}
}

func TestSettingsFromConfigMapAbsentKeysKeepBase(t *testing.T) {
	base := DefaultSettings()
	base.Version = Version{1, 26, 1}
	base.DNSCapture = DNSOn
	got, err := SettingsFromConfigMap(map[string]string{"REPAIR_ENABLED": "true", "UNRELATED": "x"}, base)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, base) {
		t.Fatalf("got %+v, want base %+v", got, base)
	}
	got, err = SettingsFromConfigMap(nil, base)
	if err != nil || !reflect.DeepEqual(got, base) {
		t.Fatalf("nil data: got %+v, %v", got, err)
	}
}

// TestSettingsFromConfigMapChartDefaults reads a ConfigMap rendered from the chart's
// template: the selector that comes out is Istio's default.
func TestSettingsFromConfigMapChartDefaults(t *testing.T) {
	raw, err := os.ReadFile("../testdata/enroll/istio-cni-config-1.28.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		t.Fatal(err)
	}
	base := DefaultSettings()
	base.AmbientEnabled = false
	got, err := SettingsFromConfigMap(cm.Data, base)
	if err != nil {
		t.Fatal(err)
	}
	want := base
	want.Version = Version{1, 28, 2}
	want.AmbientEnabled = true
	want.EnablementSelectors = DefaultEnablementSelectors()
	want.DNSCapture = DNSOn
	want.IPv6 = true
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
}

func TestSettingsFromConfigMapValues(t *testing.T) {
	tests := []struct {
		name  string
		data  map[string]string
		check func(t *testing.T, s Settings)
	}{
		{"ambient off", map[string]string{KeyAmbientEnabled: "false"}, func(t *testing.T, s Settings) {
			if s.AmbientEnabled {
				t.Error("AmbientEnabled still true")
			}
		}},
		{"bool spellings", map[string]string{KeyAmbientIPv6: "0", KeyNativeNftables: "TRUE", KeyReconcilePodRulesOnStartup: " 1 "}, func(t *testing.T, s Settings) {
			if s.IPv6 || !s.NativeNftables || !s.ReconcilePodRulesOnStartup {
				t.Errorf("got IPv6=%v nft=%v reconcile=%v", s.IPv6, s.NativeNftables, s.ReconcilePodRulesOnStartup)
			}
		}},
		{"empty bool is false, as istio-cni reads it", map[string]string{KeyAmbientEnabled: "", KeyAmbientDNSCapture: ""}, func(t *testing.T, s Settings) {
			if s.AmbientEnabled || s.DNSCapture != DNSOff {
				t.Errorf("got AmbientEnabled=%v DNS=%v", s.AmbientEnabled, s.DNSCapture)
			}
		}},
		{"dns on", map[string]string{KeyAmbientDNSCapture: "true"}, func(t *testing.T, s Settings) {
			if s.DNSCapture != DNSOn {
				t.Errorf("DNS = %v", s.DNSCapture)
			}
		}},
		{"dns off", map[string]string{KeyAmbientDNSCapture: "false"}, func(t *testing.T, s Settings) {
			if s.DNSCapture != DNSOff {
				t.Errorf("DNS = %v", s.DNSCapture)
			}
		}},
		{"exclude list", map[string]string{KeyExcludeNamespaces: " kube-system, istio-system ,,monitoring"}, func(t *testing.T, s Settings) {
			if want := []string{"kube-system", "istio-system", "monitoring"}; !reflect.DeepEqual(s.ExcludeNamespaces, want) {
				t.Errorf("ExcludeNamespaces = %q, want %q", s.ExcludeNamespaces, want)
			}
		}},
		{"exclude empty", map[string]string{KeyExcludeNamespaces: ""}, func(t *testing.T, s Settings) {
			if s.ExcludeNamespaces == nil || len(s.ExcludeNamespaces) != 0 {
				t.Errorf("ExcludeNamespaces = %#v, want empty", s.ExcludeNamespaces)
			}
		}},
		{"selector JSON", map[string]string{KeyAmbientEnablementSelector: `[{"namespaceSelector":{"matchLabels":{"team":"mesh"}}}]`}, func(t *testing.T, s Settings) {
			want := []EnablementSelector{{NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": "mesh"}}}}
			if !reflect.DeepEqual(s.EnablementSelectors, want) {
				t.Errorf("EnablementSelectors = %+v", s.EnablementSelectors)
			}
		}},
		{"selector YAML flow style, as in values.yaml", map[string]string{KeyAmbientEnablementSelector: "- podSelector:\n    matchLabels: {istio.io/dataplane-mode: ambient}\n- podSelector:\n    matchExpressions:\n    - { key: istio.io/dataplane-mode, operator: NotIn, values: [none] }\n  namespaceSelector:\n    matchLabels: {istio.io/dataplane-mode: ambient}\n"}, func(t *testing.T, s Settings) {
			if !reflect.DeepEqual(s.EnablementSelectors, DefaultEnablementSelectors()) {
				t.Errorf("EnablementSelectors = %+v", s.EnablementSelectors)
			}
		}},
		{"selector null selects nothing", map[string]string{KeyAmbientEnablementSelector: "null"}, func(t *testing.T, s Settings) {
			if s.EnablementSelectors == nil || len(s.EnablementSelectors) != 0 {
				t.Errorf("EnablementSelectors = %#v, want non-nil empty", s.EnablementSelectors)
			}
		}},
		{"selector unknown fields ignored, as istio-cni does", map[string]string{KeyAmbientEnablementSelector: `[{"podSelector":{"matchExpression":[]}}]`}, func(t *testing.T, s Settings) {
			if len(s.EnablementSelectors) != 1 {
				t.Errorf("EnablementSelectors = %#v", s.EnablementSelectors)
			}
		}},
		{"agent version sets a zero base version", map[string]string{KeyCurrentAgentVersion: "1.24.3-distroless"}, func(t *testing.T, s Settings) {
			if s.Version != (Version{1, 24, 3}) {
				t.Errorf("Version = %v", s.Version)
			}
		}},
		{"custom agent tag is not an error", map[string]string{KeyCurrentAgentVersion: "my-build"}, func(t *testing.T, s Settings) {
			if !s.Version.IsZero() {
				t.Errorf("Version = %v", s.Version)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := SettingsFromConfigMap(tc.data, DefaultSettings())
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s)
		})
	}
}

func TestSettingsFromConfigMapExplicitVersionWins(t *testing.T) {
	base := DefaultSettings()
	base.Version = Version{1, 26, 0}
	s, err := SettingsFromConfigMap(map[string]string{KeyCurrentAgentVersion: "1.28.0"}, base)
	if err != nil || s.Version != base.Version {
		t.Fatalf("got %v, %v; want %v", s.Version, err, base.Version)
	}
}

func TestSettingsFromConfigMapBadValues(t *testing.T) {
	tests := []struct {
		name string
		data map[string]string
		keys []string // keys the error must name, in the order of configKeys
	}{
		{"bool", map[string]string{KeyAmbientEnabled: "yes"}, []string{KeyAmbientEnabled}},
		{"ipv6", map[string]string{KeyAmbientIPv6: "maybe"}, []string{KeyAmbientIPv6}},
		{"dns", map[string]string{KeyAmbientDNSCapture: "on"}, []string{KeyAmbientDNSCapture}},
		{"nft", map[string]string{KeyNativeNftables: "2"}, []string{KeyNativeNftables}},
		{"reconcile", map[string]string{KeyReconcilePodRulesOnStartup: "tru"}, []string{KeyReconcilePodRulesOnStartup}},
		{"namespace", map[string]string{KeyExcludeNamespaces: "kube-system,Kube_System"}, []string{KeyExcludeNamespaces}},
		{"selector not yaml", map[string]string{KeyAmbientEnablementSelector: "- podSelector: {"}, []string{KeyAmbientEnablementSelector}},
		{"selector not a list", map[string]string{KeyAmbientEnablementSelector: "podSelector: {}"}, []string{KeyAmbientEnablementSelector}},
		{"selector bad operator", map[string]string{KeyAmbientEnablementSelector: `[{"podSelector":{"matchExpressions":[{"key":"a","operator":"Near","values":["b"]}]}}]`}, []string{KeyAmbientEnablementSelector}},
		{"selector bad label key", map[string]string{KeyAmbientEnablementSelector: `[{"namespaceSelector":{"matchLabels":{"bad key!":"x"}}}]`}, []string{KeyAmbientEnablementSelector}},
		{"two bad keys, good ones not applied", map[string]string{KeyAmbientEnabled: "false", KeyAmbientIPv6: "maybe", KeyExcludeNamespaces: "UPPER"}, []string{KeyExcludeNamespaces, KeyAmbientIPv6}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := DefaultSettings()
			base.Version = Version{1, 27, 0}
			got, err := SettingsFromConfigMap(tc.data, base)
			if err == nil {
				t.Fatalf("no error; got %+v", got)
			}
			if !reflect.DeepEqual(got, base) {
				t.Errorf("half-applied: got %+v, want base %+v", got, base)
			}
			for _, k := range tc.keys {
				if !strings.Contains(err.Error(), k) {
					t.Errorf("error %q does not name key %s", err, k)
				}
			}
			var kerr *ConfigKeyError
			if !errors.As(err, &kerr) || kerr.Key != tc.keys[0] {
				t.Errorf("errors.As(*ConfigKeyError) = %v, key %q", kerr, tc.keys[0])
			}
		})
	}
}

func TestSettingsFromConfigMapDoesNotAliasBase(t *testing.T) {
	base := DefaultSettings()
	base.EnablementSelectors = DefaultEnablementSelectors()
	got, err := SettingsFromConfigMap(map[string]string{KeyAmbientIPv6: "false"}, base)
	if err != nil {
		t.Fatal(err)
	}
	got.ExcludeNamespaces[0] = "changed"
	got.EnablementSelectors[0].PodSelector.MatchLabels[LabelDataplaneMode] = "changed"
	if base.ExcludeNamespaces[0] != "kube-system" || base.EnablementSelectors[0].PodSelector.MatchLabels[LabelDataplaneMode] != DataplaneModeAmbient {
		t.Fatalf("base was modified through the result: %+v", base)
	}
}

func TestParseEnablementSelectors(t *testing.T) {
	got, err := ParseEnablementSelectors(`[{"podSelector":{"matchLabels":{"istio.io/dataplane-mode":"ambient"}}}]`)
	if err != nil {
		t.Fatal(err)
	}
	if want := DefaultEnablementSelectors()[:1]; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for _, in := range []string{"", "null", "[]", "  \n"} {
		got, err := ParseEnablementSelectors(in)
		if err != nil || got == nil || len(got) != 0 {
			t.Errorf("ParseEnablementSelectors(%q) = %#v, %v; want non-nil empty", in, got, err)
		}
	}
}

// FuzzSettingsFromConfigMapSelector fuzzes the AMBIENT_ENABLEMENT_SELECTOR parser through
// SettingsFromConfigMap: never a panic, nothing half-applied on error, and whatever it
// accepts, Expect can use.
func FuzzSettingsFromConfigMapSelector(f *testing.F) {
	for _, s := range []string{
		"", "null", "[]", "{}", "- podSelector: {",
		`[{"podSelector":{"matchLabels":{"istio.io/dataplane-mode":"ambient"}}}]`,
		`[{"podSelector":{"matchExpressions":[{"key":"a","operator":"NotIn","values":["b"]}]},"namespaceSelector":{}}]`,
		`[{"podSelector":{"matchExpressions":[{"key":"a","operator":"Exists","values":["b"]}]}}]`,
		"- podSelector:\n    matchLabels: {istio.io/dataplane-mode: ambient}\n- podSelector:\n    matchExpressions:\n    - { key: istio.io/dataplane-mode, operator: NotIn, values: [none] }\n  namespaceSelector:\n    matchLabels: {istio.io/dataplane-mode: ambient}\n",
		"&a [*a]", "- !!binary aGVsbG8=",
	} {
		f.Add(s)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "app", Labels: map[string]string{"a": "b", LabelDataplaneMode: DataplaneModeAmbient}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}}},
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app", Labels: map[string]string{LabelDataplaneMode: DataplaneModeAmbient}}}
	f.Fuzz(func(t *testing.T, sel string) {
		base := DefaultSettings()
		got, err := SettingsFromConfigMap(map[string]string{KeyAmbientEnablementSelector: sel}, base)
		if err != nil {
			var kerr *ConfigKeyError
			if !errors.As(err, &kerr) || kerr.Key != KeyAmbientEnablementSelector {
				t.Fatalf("error %v does not name %s", err, KeyAmbientEnablementSelector)
			}
			if !reflect.DeepEqual(got, base) {
				t.Fatalf("half-applied on error: %+v", got)
			}
			return
		}
		if got.EnablementSelectors == nil {
			t.Fatalf("accepted %q but left selectors nil (= defaults)", sel)
		}
		e := Expect(pod, ns, got)
		if e.Reason == ReasonInvalidInput {
			t.Fatalf("accepted %q but Expect rejects it: %s", sel, e.Detail)
		}
	})
}
