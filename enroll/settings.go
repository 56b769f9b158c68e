package enroll

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// DNSCapture is what is known about ambient DNS capture (AMBIENT_DNS_CAPTURE).
type DNSCapture int

const (
	DNSUnknown DNSCapture = iota // not known: 15053 is optional
	DNSOn                        // known on: 15053 is required
	DNSOff                       // known off: 15053 is not expected
)

func (d DNSCapture) String() string {
	switch d {
	case DNSOn:
		return "on"
	case DNSOff:
		return "off"
	}
	return "unknown"
}

// EnablementSelector is one entry of istio-cni's AMBIENT_ENABLEMENT_SELECTOR (1.27+): a pod
// is selected when its labels match PodSelector and its namespace's labels match
// NamespaceSelector; an empty selector matches everything. Same shape and JSON names as
// istio/istio cni/pkg/util/enablement_selector.go (EnablementSelector).
type EnablementSelector struct {
	PodSelector       metav1.LabelSelector `json:"podSelector"`
	NamespaceSelector metav1.LabelSelector `json:"namespaceSelector"`
}

// DefaultEnablementSelectors returns istio-cni's default AMBIENT_ENABLEMENT_SELECTOR, from
// istio/istio manifests/charts/istio-cni/values.yaml (ambient.enablementSelectors): a pod
// labelled istio.io/dataplane-mode=ambient anywhere, or any pod not labelled
// istio.io/dataplane-mode=none in a namespace labelled istio.io/dataplane-mode=ambient.
// It selects exactly what 1.22–1.26 selected.
func DefaultEnablementSelectors() []EnablementSelector {
	return []EnablementSelector{
		{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{LabelDataplaneMode: DataplaneModeAmbient}}},
		{
			PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: LabelDataplaneMode, Operator: metav1.LabelSelectorOpNotIn, Values: []string{DataplaneModeNone}},
			}},
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{LabelDataplaneMode: DataplaneModeAmbient}},
		},
	}
}

// Settings are istio-cni's settings that decide capture, and the Istio version they run at.
type Settings struct {
	Version        Version // zero = newest known behaviour
	AmbientEnabled bool    // AMBIENT_ENABLED
	// EnablementSelectors is AMBIENT_ENABLEMENT_SELECTOR (used from 1.27). nil means Istio's
	// defaults (DefaultEnablementSelectors); a non-nil empty list selects no pod, as in
	// istio-cni when the key is present but empty.
	EnablementSelectors        []EnablementSelector
	ExcludeNamespaces          []string   // EXCLUDE_NAMESPACES, default ["kube-system"]
	DNSCapture                 DNSCapture // AMBIENT_DNS_CAPTURE
	IPv6                       bool       // AMBIENT_IPV6
	SystemNamespace            string     // default "istio-system"
	NativeNftables             bool       // NATIVE_NFTABLES
	ReconcilePodRulesOnStartup bool       // AMBIENT_RECONCILE_POD_RULES_ON_STARTUP
}

// DefaultSettings is the newest Istio behaviour with ambient enabled, the default
// selectors, EXCLUDE_NAMESPACES=kube-system, system namespace istio-system and DNS capture
// unknown.
func DefaultSettings() Settings {
	return Settings{
		AmbientEnabled:    true,
		ExcludeNamespaces: []string{"kube-system"},
		DNSCapture:        DNSUnknown,
		IPv6:              true,
		SystemNamespace:   "istio-system",
	}
}

// ConfigMapName is the ConfigMap the istio-cni chart installs in Istio's system namespace
// with the settings the node agent runs with.
const ConfigMapName = "istio-cni-config"

// ConfigMap keys of istio-cni-config read by SettingsFromConfigMap (istio/istio
// manifests/charts/istio-cni/templates/configmap-cni.yaml; the agent reads them as
// environment variables, cni/pkg/cmd/root.go).
const (
	KeyAmbientEnabled             = "AMBIENT_ENABLED"
	KeyAmbientEnablementSelector  = "AMBIENT_ENABLEMENT_SELECTOR"
	KeyExcludeNamespaces          = "EXCLUDE_NAMESPACES"
	KeyAmbientDNSCapture          = "AMBIENT_DNS_CAPTURE"
	KeyAmbientIPv6                = "AMBIENT_IPV6"
	KeyNativeNftables             = "NATIVE_NFTABLES"
	KeyReconcilePodRulesOnStartup = "AMBIENT_RECONCILE_POD_RULES_ON_STARTUP"
	KeyCurrentAgentVersion        = "CURRENT_AGENT_VERSION"
)

// ConfigKeyError is a bad value under one ConfigMap key.
type ConfigKeyError struct {
	Key   string
	Value string
	Err   error
}

func (e *ConfigKeyError) Error() string {
	v := e.Value
	if len(v) > 80 {
		v = v[:77] + "..."
	}
	return fmt.Sprintf("key %s: bad value %q: %v", e.Key, v, e.Err)
}

func (e *ConfigKeyError) Unwrap() error { return e.Err }

// configKeys is the overlay table of SettingsFromConfigMap, applied in this order.
var configKeys = []struct {
	key   string
	apply func(s *Settings, value string) error
}{
	{KeyAmbientEnabled, boolKey(func(s *Settings, b bool) { s.AmbientEnabled = b })},
	{KeyAmbientEnablementSelector, func(s *Settings, v string) error {
		sel, err := ParseEnablementSelectors(v)
		s.EnablementSelectors = sel
		return err
	}},
	{KeyExcludeNamespaces, applyExcludeNamespaces},
	{KeyAmbientDNSCapture, boolKey(func(s *Settings, b bool) {
		s.DNSCapture = DNSOff
		if b {
			s.DNSCapture = DNSOn
		}
	})},
	{KeyAmbientIPv6, boolKey(func(s *Settings, b bool) { s.IPv6 = b })},
	{KeyNativeNftables, boolKey(func(s *Settings, b bool) { s.NativeNftables = b })},
	{KeyReconcilePodRulesOnStartup, boolKey(func(s *Settings, b bool) { s.ReconcilePodRulesOnStartup = b })},
	{KeyCurrentAgentVersion, func(s *Settings, v string) error {
		// The image tag of the agent. A custom tag need not be a version, so a tag that
		// does not parse leaves the version alone; an explicit base version always wins.
		if s.Version.IsZero() {
			if parsed, err := ParseVersion(v); err == nil {
				s.Version = parsed
			}
		}
		return nil
	}},
}

// SettingsFromConfigMap overlays the data of the istio-cni-config ConfigMap onto base.
// Keys that are absent leave base's value. Booleans accept strconv.ParseBool's spellings;
// an empty value is false, as istio-cni reads it (viper GetBool). EXCLUDE_NAMESPACES is a
// comma list; AMBIENT_ENABLEMENT_SELECTOR is a YAML or JSON list of
// {podSelector, namespaceSelector} (see ParseEnablementSelectors). CURRENT_AGENT_VERSION
// sets Version only when base.Version is zero and the tag parses.
//
// On any bad value it returns base unchanged and an error that joins one *ConfigKeyError
// per bad key: nothing is half-applied.
func SettingsFromConfigMap(data map[string]string, base Settings) (Settings, error) {
	out := base.clone()
	var errs []error
	for _, k := range configKeys {
		v, ok := data[k.key]
		if !ok {
			continue
		}
		if err := k.apply(&out, v); err != nil {
			errs = append(errs, &ConfigKeyError{Key: k.key, Value: v, Err: err})
		}
	}
	if len(errs) > 0 {
		return base, errors.Join(errs...)
	}
	return out, nil
}

func (s Settings) clone() Settings {
	c := s
	c.ExcludeNamespaces = slices.Clone(s.ExcludeNamespaces)
	if s.EnablementSelectors != nil {
		c.EnablementSelectors = make([]EnablementSelector, len(s.EnablementSelectors))
		for i, sel := range s.EnablementSelectors {
			c.EnablementSelectors[i] = EnablementSelector{
				PodSelector:       *sel.PodSelector.DeepCopy(),
				NamespaceSelector: *sel.NamespaceSelector.DeepCopy(),
			}
		}
	}
	return c
}

func boolKey(set func(*Settings, bool)) func(*Settings, string) error {
	return func(s *Settings, v string) error {
		v = strings.TrimSpace(v)
		if v == "" {
			set(s, false)
			return nil
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("want true or false")
		}
		set(s, b)
		return nil
	}
}

func applyExcludeNamespaces(s *Settings, v string) error {
	list := []string{}
	for _, ns := range strings.Split(v, ",") {
		ns = strings.TrimSpace(ns)
		if ns == "" {
			continue
		}
		if len(validation.IsDNS1123Label(ns)) > 0 {
			return fmt.Errorf("%q is not a namespace name", ns)
		}
		list = append(list, ns)
	}
	s.ExcludeNamespaces = list
	return nil
}

// ParseEnablementSelectors reads AMBIENT_ENABLEMENT_SELECTOR as istio-cni does
// (istio/istio cni/pkg/cmd/root.go: sigs.k8s.io/yaml.Unmarshal into
// []util.EnablementSelector, then NewCompiledEnablementSelectors): a YAML or JSON list of
// {podSelector, namespaceSelector} label selectors. Like istio-cni it ignores unknown
// fields; unlike it, it rejects selectors that do not compile. An empty value or "null"
// gives a non-nil empty list: no pod is selected.
func ParseEnablementSelectors(s string) ([]EnablementSelector, error) {
	out := []EnablementSelector{}
	if err := yaml.Unmarshal([]byte(s), &out); err != nil {
		return nil, fmt.Errorf("not a list of {podSelector, namespaceSelector}: %w", err)
	}
	if out == nil {
		out = []EnablementSelector{}
	}
	if _, err := compileSelectors(out); err != nil {
		return nil, err
	}
	return out, nil
}

// compiledSelector is one EnablementSelector turned into matchers.
type compiledSelector struct {
	pod, namespace labels.Selector
}

// compileSelectors mirrors NewCompiledEnablementSelectors (istio/istio
// cni/pkg/util/enablement_selector.go): an empty selector matches everything.
func compileSelectors(sels []EnablementSelector) ([]compiledSelector, error) {
	out := make([]compiledSelector, 0, len(sels))
	for i := range sels {
		pod, err := metav1.LabelSelectorAsSelector(&sels[i].PodSelector)
		if err != nil {
			return nil, fmt.Errorf("selector %d: podSelector: %w", i, err)
		}
		ns, err := metav1.LabelSelectorAsSelector(&sels[i].NamespaceSelector)
		if err != nil {
			return nil, fmt.Errorf("selector %d: namespaceSelector: %w", i, err)
		}
		out = append(out, compiledSelector{pod: pod, namespace: ns})
	}
	return out, nil
}
