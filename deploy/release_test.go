package deploy

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// The release path: one version (the VERSION file) for the image tag, the chart and the krew
// manifest; a release workflow that builds, checksums, signs and publishes; a ko config that
// builds the image the way the Makefile builds the binary. The workflow cannot run here:
// these tests check what can be checked without it.

var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$`)

func version(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../VERSION")
	require.NoError(t, err)
	v := strings.TrimSpace(string(b))
	require.Regexp(t, semver, v, "VERSION holds a semantic version without the v")
	return v
}

func yamlFile(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, into), path)
}

func TestVersionOnePlace(t *testing.T) {
	v := version(t)
	var chart struct{ Version, AppVersion string }
	yamlFile(t, "helm/meshmedic/Chart.yaml", &chart)
	assert.Equal(t, v, chart.Version, "Chart.yaml version")
	assert.Equal(t, "v"+v, chart.AppVersion, "Chart.yaml appVersion (the image tag)")

	var values struct {
		Image struct{ Repository, Tag string } `json:"image"`
	}
	yamlFile(t, "helm/meshmedic/values.yaml", &values)
	assert.Empty(t, values.Image.Tag, "values.yaml image.tag must stay empty: it defaults to appVersion")

	var kust struct {
		Images []struct{ Name, NewTag string } `json:"images"`
	}
	yamlFile(t, "base/kustomization.yaml", &kust)
	require.Len(t, kust.Images, 1)
	assert.Equal(t, values.Image.Repository, kust.Images[0].Name, "kustomize and Helm name the same image")
	assert.Equal(t, "v"+v, kust.Images[0].NewTag, "kustomize image tag")

	ko := koConfig(t)
	assert.Contains(t, ko.Builds[0].Ldflags, "-X main.version={{.Env.VERSION}}")
}

type koBuild struct {
	ID      string   `json:"id"`
	Dir     string   `json:"dir"`
	Main    string   `json:"main"`
	Env     []string `json:"env"`
	Flags   []string `json:"flags"`
	Ldflags []string `json:"ldflags"`
}

type koFile struct {
	DefaultBaseImage string    `json:"defaultBaseImage"`
	DefaultPlatforms []string  `json:"defaultPlatforms"`
	Builds           []koBuild `json:"builds"`
}

func koConfig(t *testing.T) koFile {
	t.Helper()
	var k koFile
	yamlFile(t, "../.ko.yaml", &k)
	require.Len(t, k.Builds, 1)
	return k
}

// The ko image is the Dockerfile's: same base, same static build, same -X stamps; the main
// package exists; both architectures.
func TestReleaseKoConfig(t *testing.T) {
	k := koConfig(t)
	df, err := os.ReadFile("Dockerfile")
	require.NoError(t, err)
	froms := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(string(df), -1)
	require.NotEmpty(t, froms)
	assert.Equal(t, froms[len(froms)-1][1], k.DefaultBaseImage, "ko and the Dockerfile use the same base image")
	assert.Subset(t, k.DefaultPlatforms, []string{"linux/amd64", "linux/arm64"})
	b := k.Builds[0]
	st, err := os.Stat("../" + strings.TrimPrefix(b.Main, "./"))
	require.NoError(t, err, "ko main %s", b.Main)
	assert.True(t, st.IsDir())
	assert.Contains(t, b.Env, "CGO_ENABLED=0")
	assert.Contains(t, b.Flags, "-trimpath")
	mk, err := os.ReadFile("../Makefile")
	require.NoError(t, err)
	xs := func(s string) []string {
		var out []string
		for _, m := range regexp.MustCompile(`-X (main\.\w+)=`).FindAllStringSubmatch(s, -1) {
			out = append(out, m[1])
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	assert.Equal(t, xs(string(mk)), xs(strings.Join(b.Ldflags, " ")), "-X stamps: Makefile vs .ko.yaml")
}

// The workflow runs on version tags, checks the tag against VERSION, builds with make dist
// and ko, signs keylessly, and publishes; every action is pinned to a version.
func TestReleaseWorkflow(t *testing.T) {
	raw, err := os.ReadFile("../.github/workflows/release.yml")
	require.NoError(t, err)
	// YAML 1.1 reads the key `on` as true: sigs.k8s.io/yaml hands it over as "true".
	var top map[string]any
	require.NoError(t, yaml.Unmarshal(raw, &top))
	on, ok := top["on"]
	if !ok {
		on = top["true"]
	}
	assert.Equal(t, map[string]any{"push": map[string]any{"tags": []any{"v*"}}}, on, "runs on version tags")
	var wf struct {
		Permissions map[string]string `json:"permissions"`
		Jobs        map[string]struct {
			Env   map[string]string `json:"env"`
			Steps []struct {
				Name string            `json:"name"`
				Uses string            `json:"uses"`
				Run  string            `json:"run"`
				With map[string]any    `json:"with"`
				Env  map[string]string `json:"env"`
			} `json:"steps"`
		} `json:"jobs"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &wf))
	assert.Equal(t, map[string]string{"contents": "write", "packages": "write", "id-token": "write"}, wf.Permissions)
	require.Len(t, wf.Jobs, 1)
	var runs []string
	for _, job := range wf.Jobs {
		assert.Equal(t, "ghcr.io/meshmedic/meshmedic", job.Env["KO_DOCKER_REPO"], "the image the manifests reference")
		for _, s := range job.Steps {
			if s.Uses != "" {
				assert.Regexp(t, `^[\w.-]+/[\w.-]+@v\d+(\.\d+)*$`, s.Uses, "actions are pinned to a release")
			}
			for k, v := range s.With {
				if k == "version" || k == "cosign-release" {
					assert.Regexp(t, `^v\d+\.\d+\.\d+$`, v, "%s %s is pinned", s.Uses, k)
				}
			}
			runs = append(runs, s.Run)
		}
	}
	all := strings.Join(runs, "\n")
	for _, want := range []string{`"v$(cat VERSION)"`, "make release-check", "make dist", "ko build", "--platform linux/amd64,linux/arm64",
		"cosign sign --yes", "cosign sign-blob --yes", "gh release create", "dist/checksums.txt", "dist/meshmedic.yaml"} {
		assert.Contains(t, all, want)
	}
	for _, f := range []string{"../VERSION", "../.ko.yaml", "krew/meshmedic.yaml", "../frontends/meshmedic/main.go"} {
		_, err := os.Stat(f)
		assert.NoError(t, err, "the workflow needs %s", f)
	}
	mk, err := os.ReadFile("../Makefile")
	require.NoError(t, err)
	for _, target := range []string{"dist:", "release-check:"} {
		assert.Contains(t, string(mk), "\n"+target, "Makefile target %s", target)
	}
}

// krewPlugin is the part of krew's Plugin (index.krew.googlecontainertools.github.com
// v1alpha2) that krew validates.
type krewPlugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		Homepage         string `json:"homepage"`
		ShortDescription string `json:"shortDescription"`
		Description      string `json:"description"`
		Caveats          string `json:"caveats"`
		Platforms        []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			Sha256 string `json:"sha256"`
			Bin    string `json:"bin"`
		} `json:"platforms"`
	} `json:"spec"`
}

// makePlatforms is the Makefile's PLATFORMS: the archives make dist builds.
func makePlatforms(t *testing.T) []string {
	t.Helper()
	mk, err := os.ReadFile("../Makefile")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^PLATFORMS \?= (.+)$`).FindStringSubmatch(string(mk))
	require.NotNil(t, m, "Makefile PLATFORMS")
	return strings.Fields(m[1])
}

// renderKrew fills the template as make dist does (sed over {{VERSION}} and
// {{SHA256_<os>_<arch>}}).
func renderKrew(t *testing.T, tmpl, tag string, sums map[string]string) string {
	t.Helper()
	out := strings.ReplaceAll(tmpl, "{{VERSION}}", tag)
	for p, sum := range sums {
		out = strings.ReplaceAll(out, "{{SHA256_"+strings.ReplaceAll(p, "/", "_")+"}}", sum)
	}
	return out
}

// The krew manifest template: placeholders where make dist fills them, and, filled, a
// manifest krew accepts (name, semantic version with v, one platform per release archive with
// a valid selector, an https URI of that archive, a SHA-256, a bin).
func TestKrewManifest(t *testing.T) {
	raw, err := os.ReadFile("krew/meshmedic.yaml")
	require.NoError(t, err)
	tmpl := string(raw)
	platforms := makePlatforms(t)
	for _, p := range platforms {
		assert.Contains(t, tmpl, "{{SHA256_"+strings.ReplaceAll(p, "/", "_")+"}}", "placeholder for %s", p)
	}
	for _, ph := range regexp.MustCompile(`\{\{[^}]*\}\}`).FindAllString(tmpl, -1) {
		ok := ph == "{{VERSION}}"
		for _, p := range platforms {
			ok = ok || ph == "{{SHA256_"+strings.ReplaceAll(p, "/", "_")+"}}"
		}
		assert.True(t, ok, "placeholder %s is not filled by make dist", ph)
	}

	tag := "v" + version(t)
	sums := map[string]string{}
	for i, p := range platforms {
		sums[p] = fmt.Sprintf("%064x", i+1)
	}
	var m krewPlugin
	require.NoError(t, yaml.UnmarshalStrict([]byte(renderKrew(t, tmpl, tag, sums)), &m, yaml.DisallowUnknownFields), "the filled manifest")
	assert.Equal(t, "krew.googlecontainertools.github.com/v1alpha2", m.APIVersion)
	assert.Equal(t, "Plugin", m.Kind)
	assert.Regexp(t, `^[a-z0-9][a-z0-9-]*$`, m.Metadata.Name, "krew plugin names")
	assert.Equal(t, "meshmedic", m.Metadata.Name)
	assert.Equal(t, tag, m.Spec.Version)
	assert.Regexp(t, `^v`+semver.String()[1:], m.Spec.Version)
	assert.True(t, strings.HasPrefix(m.Spec.Homepage, "https://"))
	assert.NotEmpty(t, m.Spec.ShortDescription)
	assert.LessOrEqual(t, len(m.Spec.ShortDescription), 50, "krew asks for a short description of 50 characters at most")
	assert.NotEmpty(t, m.Spec.Description)
	require.Len(t, m.Spec.Platforms, len(platforms), "one platform per release archive")
	seen := map[string]bool{}
	for _, p := range m.Spec.Platforms {
		ml := p.Selector.MatchLabels
		assert.Len(t, ml, 2, "selector on os and arch")
		assert.Contains(t, []string{"linux", "darwin", "windows"}, ml["os"])
		assert.Contains(t, []string{"amd64", "arm64", "386", "arm", "ppc64le", "s390x"}, ml["arch"])
		key := ml["os"] + "/" + ml["arch"]
		assert.False(t, seen[key], "two platforms select %s", key)
		seen[key] = true
		assert.Contains(t, platforms, key, "make dist builds no archive for %s", key)
		want := fmt.Sprintf("https://github.com/meshmedic/meshmedic/releases/download/%s/meshmedic_%s_%s_%s.tar.gz", tag, tag, ml["os"], ml["arch"])
		assert.Equal(t, want, p.URI, "the URI is the archive make dist names and the workflow uploads")
		assert.Regexp(t, `^[0-9a-f]{64}$`, p.Sha256)
		assert.Equal(t, sums[key], p.Sha256, "the sum of that platform's archive")
		assert.Equal(t, "meshmedic", p.Bin, "the binary at the archive's root")
	}
}
