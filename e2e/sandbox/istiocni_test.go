package sandbox

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshmedic/meshmedic/enroll"
)

// The demo's ConfigMap is the chart's rendering (the one testdata/enroll holds, checked by
// hand against the template), and enroll reads it without error.
func TestIstioCNIConfigMapIsTheChartsRendering(t *testing.T) {
	raw, err := os.ReadFile("../../testdata/enroll/istio-cni-config-1.28.yaml")
	require.NoError(t, err)
	var want corev1.ConfigMap
	require.NoError(t, yaml.Unmarshal(raw, &want))
	got := IstioCNIConfigMap("istio-system", "1.28.2")
	assert.Equal(t, want.Name, got.Name)
	assert.Equal(t, want.Namespace, got.Namespace)
	assert.Equal(t, want.Labels, got.Labels)
	assert.Equal(t, want.Data, got.Data)

	s, err := enroll.SettingsFromConfigMap(IstioCNIConfigMap("istio-system", ZtunnelVersion).Data, enroll.DefaultSettings())
	require.NoError(t, err)
	assert.Equal(t, ZtunnelVersion, s.Version.String())
	assert.Equal(t, enroll.DNSOn, s.DNSCapture)
}
