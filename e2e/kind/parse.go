package kind

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/meshmedic/meshmedic/ztlog"
)

// ParseSandboxIDs reads `crictl pods -q`: one pod sandbox ID per line.
func ParseSandboxIDs(out string) []string {
	var ids []string
	for line := range strings.Lines(out) {
		if id := strings.TrimSpace(line); id != "" {
			ids = append(ids, id)
		}
	}
	return ids
}

// ParseInspectpPID reads the sandbox (pause) process's PID from `crictl inspectp -o json`
// (containerd puts it at info.pid).
func ParseInspectpPID(data []byte) (int, error) {
	var v struct {
		Info struct {
			PID int `json:"pid"`
		} `json:"info"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return 0, fmt.Errorf("crictl inspectp output: %w", err)
	}
	if v.Info.PID <= 0 {
		return 0, errors.New("crictl inspectp output: no info.pid (is the sandbox running?)")
	}
	return v.Info.PID, nil
}

// ParseListenPorts reads `ss -Htln` (with or without a state filter, which drops the State
// column) and returns the local ports of the LISTEN sockets, sorted, without duplicates.
// Local addresses look like "*:15001", "0.0.0.0:8080", "[::1]:15053",
// "127.0.0.53%lo:53"; a line without one is an error.
func ParseListenPorts(out string) ([]uint16, error) {
	var ports []uint16
	for line := range strings.Lines(out) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		local := ""
		for _, f := range fields {
			if strings.Contains(f, ":") {
				local = f // the first address column is the local one
				break
			}
		}
		i := strings.LastIndexByte(local, ':')
		if i < 0 {
			return nil, fmt.Errorf("ss line %q: no local address", strings.TrimSpace(line))
		}
		p, err := strconv.ParseUint(local[i+1:], 10, 16)
		if err != nil {
			return nil, fmt.Errorf("ss line %q: port: %w", strings.TrimSpace(line), err)
		}
		if j, found := slices.BinarySearch(ports, uint16(p)); !found {
			ports = slices.Insert(ports, j, uint16(p))
		}
	}
	return ports, nil
}

// SSKillFilter is the ss filter that selects the TCP listeners on ports:
// "( sport = :15001 or sport = :15006 )".
func SSKillFilter(ports []uint16) string {
	terms := make([]string, len(ports))
	for i, p := range ports {
		terms[i] = "sport = :" + strconv.Itoa(int(p))
	}
	return "( " + strings.Join(terms, " or ") + " )"
}

// CountIstioRules counts the rules of an iptables-save dump that belong to Istio's in-pod
// redirection: rules in an ISTIO_* chain or jumping to one (ISTIO-FACTS §3). Empty chain
// declarations (":ISTIO_OUTPUT - [0:0]", left behind by `iptables -F`) are not rules.
func CountIstioRules(save string) int {
	n := 0
	for line := range strings.Lines(save) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "-A ") && strings.Contains(line, "ISTIO") {
			n++
		}
	}
	return n
}

// ZtunnelWorkload is one workload of `istioctl ztunnel-config workloads -o json`
// (istioctl/pkg/util/configdump ZtunnelWorkload; only the fields used here).
type ZtunnelWorkload struct {
	Name        string   `json:"name"`
	Namespace   string   `json:"namespace"`
	Node        string   `json:"node"`
	Protocol    string   `json:"protocol"`
	WorkloadIPs []string `json:"workloadIps"`
}

// ParseZtunnelWorkloads reads `istioctl ztunnel-config workloads -o json`.
func ParseZtunnelWorkloads(data []byte) ([]ZtunnelWorkload, error) {
	var out []ZtunnelWorkload
	if err := json.Unmarshal(bytes.TrimSpace(data), &out); err != nil {
		return nil, fmt.Errorf("ztunnel-config workloads output: %w", err)
	}
	return out, nil
}

var versionRE = regexp.MustCompile(`\b\d+\.\d+\.\d+(-[0-9A-Za-z.\-]+)?\b`)

// ParseIstioctlVersion finds the client version in `istioctl version --remote=false`
// ("1.28.0", or "client version: 1.28.0" in older releases).
func ParseIstioctlVersion(out string) (string, error) {
	v := versionRE.FindString(out)
	if v == "" {
		return "", fmt.Errorf("no version in istioctl output %q", strings.TrimSpace(out))
	}
	return v, nil
}

// Object names one Kubernetes object.
type Object struct{ Kind, Namespace, Name string }

// RetagMeshmedic rewrites rendered manifests (`kubectl kustomize`, multi-document YAML) so
// that every container whose image repository is named meshmedic ("ghcr.io/x/meshmedic:v1",
// "meshmedic") runs image instead, with imagePullPolicy IfNotPresent (an image loaded into
// kind is not in any registry). It returns the rewritten manifests and the workloads it
// changed; finding none is an error, since the agent would then not be the build under test.
func RetagMeshmedic(manifests []byte, image string) ([]byte, []Object, error) {
	var out bytes.Buffer
	var changed []Object
	for i, doc := range splitYAML(manifests) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		var obj map[string]any
		if err := json.Unmarshal(js, &obj); err != nil {
			return nil, nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if obj == nil {
			continue
		}
		if retagPodTemplate(obj, image) {
			meta, _ := obj["metadata"].(map[string]any)
			ns, _ := meta["namespace"].(string)
			name, _ := meta["name"].(string)
			kind, _ := obj["kind"].(string)
			changed = append(changed, Object{Kind: kind, Namespace: ns, Name: name})
		}
		y, err := yaml.Marshal(obj)
		if err != nil {
			return nil, nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if out.Len() > 0 {
			out.WriteString("---\n")
		}
		out.Write(y)
	}
	if len(changed) == 0 {
		return nil, nil, errors.New("no container with a meshmedic image in the manifests")
	}
	return out.Bytes(), changed, nil
}

// splitYAML splits a multi-document YAML stream on "---" lines.
func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	for line := range bytes.Lines(b) {
		if t := bytes.TrimRight(line, " \t\r\n"); bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) {
			docs = append(docs, bytes.Clone(cur.Bytes()))
			cur.Reset()
			continue
		}
		cur.Write(line)
	}
	return append(docs, cur.Bytes())
}

// retagPodTemplate rewrites the meshmedic containers of a workload's pod template
// (spec.template.spec) or of a bare pod (spec); it reports whether any was changed.
func retagPodTemplate(obj map[string]any, image string) bool {
	spec, _ := obj["spec"].(map[string]any)
	if obj["kind"] != "Pod" {
		tmpl, _ := spec["template"].(map[string]any)
		spec, _ = tmpl["spec"].(map[string]any)
	}
	if spec == nil {
		return false
	}
	changed := false
	for _, key := range []string{"initContainers", "containers"} {
		cs, _ := spec[key].([]any)
		for _, c := range cs {
			m, _ := c.(map[string]any)
			img, _ := m["image"].(string)
			if m == nil || imageName(img) != "meshmedic" {
				continue
			}
			m["image"], m["imagePullPolicy"] = image, "IfNotPresent"
			changed = true
		}
	}
	return changed
}

// imageName is the last path element of an image reference without tag or digest:
// "ghcr.io/meshmedic/meshmedic:v1@sha256:…" → "meshmedic".
func imageName(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndexByte(ref, '/'); i >= 0 {
		ref = ref[i+1:]
	}
	ref, _, _ = strings.Cut(ref, ":")
	return ref
}

// MTLSEvidence reports whether ztunnel logs hold a completed HBONE connection to dstIP: an
// access record "connection complete" without error whose dst.hbone_addr is on dstIP and
// which names the source's SPIFFE identity. Identities appear only on mTLS connections
// (ISTIO-FACTS §6), so such a record proves the traffic went through ztunnel under mTLS.
func MTLSEvidence(logs io.Reader, dstIP string) (bool, error) {
	want, err := netip.ParseAddr(dstIP)
	if err != nil {
		return false, fmt.Errorf("destination %q: %w", dstIP, err)
	}
	sc := ztlog.NewScanner(bufio.NewReader(logs))
	for sc.Scan() {
		r := sc.Record()
		if r.Target != "access" || r.Message != "connection complete" {
			continue
		}
		if _, failed := r.Get("error"); failed {
			continue
		}
		hbone, _ := r.Get("dst.hbone_addr")
		src, _ := r.Get("src.identity")
		ap, err := netip.ParseAddrPort(hbone)
		if err != nil || src == "" {
			continue
		}
		if ap.Addr().Unmap() == want.Unmap() {
			return true, nil
		}
	}
	return false, sc.Err()
}
