package detect

import (
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/netns"
)

// Finding is the Engine's verdict on one pod. Its JSON is the `scan -o json` contract
// (DESIGN.md "Frontends"): namespace, name, uid, node, ip, class, expected, present and
// ready are fixed; the rest may grow, never be renamed.
type Finding struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	UID       types.UID `json:"uid"`
	Node      string    `json:"node"`
	IP        string    `json:"ip"`
	Class     Class     `json:"class"`
	// Expected are the listeners enroll requires (empty, never null, when none).
	Expected []uint16 `json:"expected"`
	// Present are the ztunnel listeners found (empty, never null, when none or not probed).
	Present []uint16 `json:"present"`
	// Ready is the pod's Ready condition. Readiness is recorded, never used to hide a
	// finding: an orphan is often still Ready.
	Ready bool `json:"ready"`

	Reason  enroll.Reason `json:"reason,omitempty"` // enroll's reason (selected, host-network, ...)
	Detail  string        `json:"detail,omitempty"`
	Capture netns.Capture `json:"capture,omitempty"` // the listener verdict; empty when not probed
	Missing []uint16      `json:"missing,omitempty"`
	Netns   uint64        `json:"netns,omitempty"` // netns inode, when the prober knows it
	// Rules is rule inspection's verdict on istio-cni's in-pod routing set-up: present,
	// absent, partial, or unknown when the inspection failed; absent from the JSON when
	// rules were not inspected.
	Rules string `json:"rules,omitempty"`
	// NotReadyFor is how long the pod has not been Ready (from the Ready condition's
	// lastTransitionTime), as a Go duration string ("1m30s"); absent when Ready or unknown.
	NotReadyFor Duration `json:"notReadyFor,omitempty"`
	// FirstSeen is when this Engine first saw the pod in an actionable class, in the
	// current run of consecutive actionable observations; absent otherwise.
	FirstSeen time.Time `json:"firstSeen,omitzero"`
	// Confirmations counts consecutive actionable observations by this Engine (Scan and
	// Confirm each count one); 0 when the pod is not actionable.
	Confirmations int `json:"confirmations"`
	// Confirmed is set by Engine.Settle (and Confirm, which Settles after a re-probe): the
	// finding has been seen actionable at least twice, the confirm delay apart. Only
	// confirmed findings are healed.
	Confirmed bool   `json:"confirmed"`
	Error     string `json:"error,omitempty"`
	Source    string `json:"source,omitempty"` // the prober that read the pod
	// Err is the probe error behind Error, for errors.Is.
	Err error `json:"-"`
}

// RulesUnknown is Finding.Rules when rule inspection was asked for but failed.
const RulesUnknown = "unknown"

// Actionable reports whether the finding's class is one that may be healed.
func (f Finding) Actionable() bool { return f.Class.Actionable() }

// Key is "namespace/name".
func (f Finding) Key() string { return f.Namespace + "/" + f.Name }

// Report is the result of one Scan (or Confirm).
type Report struct {
	// Checked is the number of pods looked at; every one has a Finding.
	Checked int `json:"checked"`
	// Findings, one per pod checked, sorted by namespace then name.
	Findings []Finding `json:"findings"`
	// Errors are per-pod and per-namespace problems that did not stop the scan; each
	// names its object.
	Errors []error `json:"-"`
}

// Actionable returns the findings whose class may be healed.
func (r Report) Actionable() []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Actionable() {
			out = append(out, f)
		}
	}
	return out
}

// Duration is a time.Duration that marshals as a Go duration string ("1m30s").
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// readiness returns the pod's Ready condition and, when not Ready, for how long.
func readiness(pod *corev1.Pod, now time.Time) (bool, time.Duration) {
	for _, c := range pod.Status.Conditions {
		if c.Type != corev1.PodReady {
			continue
		}
		if c.Status == corev1.ConditionTrue {
			return true, 0
		}
		if c.LastTransitionTime.IsZero() {
			return false, 0
		}
		return false, max(now.Sub(c.LastTransitionTime.Time), 0)
	}
	return false, 0
}

func podIP(pod *corev1.Pod) string {
	if pod.Status.PodIP != "" {
		return pod.Status.PodIP
	}
	if len(pod.Status.PodIPs) > 0 {
		return pod.Status.PodIPs[0].IP
	}
	return ""
}

func nonNil(p []uint16) []uint16 {
	if p == nil {
		return []uint16{}
	}
	return p
}
