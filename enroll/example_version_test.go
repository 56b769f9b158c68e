package enroll_test

import (
	"errors"
	"fmt"

	"github.com/meshmedic/meshmedic/enroll"
)

// ParseVersion reads what a cluster shows: a version, a tag, or a whole image reference
// (the tag after the last ':'). Version-dependent rules ask AtLeast.
func ExampleParseVersion() {
	for _, s := range []string{"1.28.0", "v1.22.1", "1.25.0-beta.1", "docker.io/istio/install-cni:1.24.3-distroless", "latest"} {
		v, err := enroll.ParseVersion(s)
		fmt.Printf("%-46s %-7s pending annotation (1.25+): %v\n", s, v, v.AtLeast(1, 25, 0))
		if err != nil {
			fmt.Println(err)
		}
	}
	_, err := enroll.ParseVersion("istio/ztunnel@sha256:0123abcd")
	fmt.Println(errors.Is(err, enroll.ErrBadVersion), err)
	// Output:
	// 1.28.0                                         1.28.0  pending annotation (1.25+): true
	// v1.22.1                                        1.22.1  pending annotation (1.25+): false
	// 1.25.0-beta.1                                  1.25.0  pending annotation (1.25+): true
	// docker.io/istio/install-cni:1.24.3-distroless  1.24.3  pending annotation (1.25+): false
	// latest                                         latest  pending annotation (1.25+): true
	// true version "istio/ztunnel@sha256:0123abcd": image digests carry no version: not an Istio version
}

// DefaultSettings is what enroll decides with when istio-cni's ConfigMap cannot be read:
// the newest behaviour, Istio's default selectors and exclusions, DNS capture unknown (so
// 15053 is reported but not required).
func ExampleDefaultSettings() {
	s := enroll.DefaultSettings()
	fmt.Println("version:", s.Version)
	fmt.Println("ambient enabled:", s.AmbientEnabled)
	fmt.Println("system namespace:", s.SystemNamespace)
	fmt.Println("excluded namespaces:", s.ExcludeNamespaces)
	fmt.Println("DNS capture:", s.DNSCapture)
	fmt.Println("selectors:", len(enroll.DefaultEnablementSelectors()), "(nil in Settings means these)", s.EnablementSelectors == nil)
	req, opt := enroll.Listeners(s.Version, s.DNSCapture)
	fmt.Println("required listeners:", req, "optional:", opt)
	// Output:
	// version: latest
	// ambient enabled: true
	// system namespace: istio-system
	// excluded namespaces: [kube-system]
	// DNS capture: unknown
	// selectors: 2 (nil in Settings means these) true
	// required listeners: [15001 15006 15008] optional: [15053 15080]
}
