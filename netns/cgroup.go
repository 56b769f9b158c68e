package netns

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// ErrAmbiguousCgroup is returned when one process's cgroup file names two different pods.
// istio-cni treats this as an error for the process too (cni/pkg/nodeagent/podcgroupns.go,
// getPodUIDAndContainerIDFromCGroups), and so do we: the process is not attributed.
var ErrAmbiguousCgroup = errors.New("cgroup file names more than one pod UID")

// PodUIDFromCgroup reads a /proc/<pid>/cgroup file and returns the pod UID it names in
// canonical form (lower-case, dash-separated), or "" when no line names a pod.
//
// Every line is read: hybrid hosts put the pod only on the "0::" line while v1 controllers
// sit at "/", and CRI-O v1 hosts put it only on v1 lines while "0::" points at
// crio.service (ISTIO-FACTS §4). All forms of ISTIO-FACTS §4 are recognised: v1 and v2,
// systemd and cgroupfs drivers, docker/containerd/CRI-O scopes, kind nesting, and paths
// relative to a private cgroup namespace. Two different UIDs → ErrAmbiguousCgroup.
func PodUIDFromCgroup(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	var found [36]byte
	have := false
	for sc.Scan() {
		uid, ok := podUIDInLine(sc.Bytes())
		if !ok {
			continue
		}
		if have && uid != found {
			return "", fmt.Errorf("%w: %s and %s", ErrAmbiguousCgroup, found[:], uid[:])
		}
		found, have = uid, true
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading cgroup file: %w", err)
	}
	if !have {
		return "", nil
	}
	return string(found[:]), nil
}

// podUIDFromCgroupBytes is PodUIDFromCgroup over a buffer (the /proc walk's hot path).
// It returns ok=false with a nil error when no pod is named.
func podUIDFromCgroupBytes(data []byte) (uid [36]byte, ok bool, err error) {
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		u, found := podUIDInLine(line)
		if !found {
			continue
		}
		if ok && u != uid {
			return uid, false, fmt.Errorf("%w: %s and %s", ErrAmbiguousCgroup, uid[:], u[:])
		}
		uid, ok = u, true
	}
	return uid, ok, nil
}

// PodUIDInCgroupLine returns the pod UID named by one cgroup line (or path), canonical.
func PodUIDInCgroupLine(line string) (string, bool) {
	u, ok := podUIDInLine([]byte(line))
	if !ok {
		return "", false
	}
	return string(u[:]), true
}

// podUIDInLine finds "pod" followed by a UID: 32 hex digits grouped 8-4-4-4-12, each group
// boundary optionally separated by '-' or '_' (systemd escapes '-' as '_'), not followed by
// another hex digit. When a line names several pods (nested kubelets) the innermost, last
// one wins: it is the pod the process belongs to at the deepest level.
func podUIDInLine(line []byte) (uid [36]byte, ok bool) {
	for i := 0; i+3 <= len(line); i++ {
		if line[i] != 'p' || line[i+1] != 'o' || line[i+2] != 'd' {
			continue
		}
		if u, n := parseUIDAt(line[i+3:]); n > 0 {
			uid, ok = u, true
			i += 2 + n
		}
	}
	return uid, ok
}

var uidGroups = [5]int{8, 4, 4, 4, 12}

// parseUIDAt parses a UID at the start of b and returns it canonicalised and the number of
// bytes consumed (0 when b does not start with a UID).
func parseUIDAt(b []byte) (uid [36]byte, n int) {
	j, o := 0, 0
	for g, size := range uidGroups {
		if g > 0 {
			if j < len(b) && (b[j] == '-' || b[j] == '_') {
				j++
			}
			uid[o] = '-'
			o++
		}
		for k := 0; k < size; k++ {
			if j >= len(b) {
				return uid, 0
			}
			c := b[j]
			switch {
			case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
			case c >= 'A' && c <= 'F':
				c += 'a' - 'A'
			default:
				return uid, 0
			}
			uid[o] = c
			o++
			j++
		}
	}
	if j < len(b) && isHex(b[j]) {
		return uid, 0
	}
	return uid, j
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
