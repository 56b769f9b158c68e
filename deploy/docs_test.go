package deploy

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// miB turns a Kubernetes quantity written in Mi ("64Mi") into the docs' "64 MiB".
func miB(t *testing.T, q any) string {
	t.Helper()
	s, ok := q.(string)
	require.True(t, ok && strings.HasSuffix(s, "Mi"), "quantity %v is not in Mi", q)
	return strings.TrimSuffix(s, "Mi") + " MiB"
}

// docs/operations.md states the agent's memory request and limit; they are the manifests'
// (kustomize base and Helm values), and the security table says what the base does about
// hostPID.
func TestOperationsDocMatchesManifests(t *testing.T) {
	ds := docs(t, "base/daemonset.yaml")[0]
	spec := ds["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	res := spec["containers"].([]any)[0].(map[string]any)["resources"].(map[string]any)
	req := miB(t, res["requests"].(map[string]any)["memory"])
	lim := miB(t, res["limits"].(map[string]any)["memory"])

	var values struct {
		Resources map[string]map[string]any `json:"resources"`
	}
	b, err := os.ReadFile("helm/meshmedic/values.yaml")
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, &values))
	assert.Equal(t, req, miB(t, values.Resources["requests"]["memory"]), "Helm and kustomize requests differ")
	assert.Equal(t, lim, miB(t, values.Resources["limits"]["memory"]), "Helm and kustomize limits differ")

	doc, err := os.ReadFile("../docs/operations.md")
	require.NoError(t, err)
	text := strings.Join(strings.Fields(string(doc)), " ")
	assert.Contains(t, text, "Requests are 20m CPU and "+req+", with a "+lim+" memory limit",
		"docs/operations.md states other memory figures than deploy/base/daemonset.yaml")

	_, hostPID := spec["hostPID"]
	assert.False(t, hostPID, "deploy/base sets hostPID")
	assert.Regexp(t, regexp.MustCompile("\\| `hostPID` \\| not set"), string(doc), "the security table says hostPID is not set")
}
