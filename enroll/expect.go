package enroll

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// In-pod listeners of ztunnel (ISTIO-FACTS §2).
const (
	PortOutbound uint16 = 15001 // outbound capture
	PortInbound  uint16 = 15006 // inbound plaintext
	PortHBONE    uint16 = 15008 // inbound HBONE
	PortDNS      uint16 = 15053 // DNS proxy (tcp+udp), when DNS capture is on
	PortSOCKS5   uint16 = 15080 // SOCKS5: always in 1.21, opt-in later
)

// Labels and annotations istio-cni reads (istio/api annotation and label packages).
const (
	AnnotationRedirection   = "ambient.istio.io/redirection"
	AnnotationSidecarStatus = "sidecar.istio.io/status"
	LabelDataplaneMode      = "istio.io/dataplane-mode"
	DataplaneModeAmbient    = "ambient"
	DataplaneModeNone       = "none"
	// RedirectionDisabledValue on AnnotationRedirection is the 1.21 per-pod opt-out.
	RedirectionDisabledValue = "disabled"
)

// State is enroll's verdict on whether a pod should be captured.
type State string

const (
	Captured    State = "captured"
	NotCaptured State = "not-captured"
	Unknown     State = "unknown"
)

// Reason names the row of the decision table (ISTIO-FACTS §1) that decided.
type Reason string

const (
	ReasonAmbientDisabled   Reason = "ambient-disabled"
	ReasonHostNetwork       Reason = "host-network"
	ReasonTerminal          Reason = "terminal"
	ReasonHasSidecar        Reason = "has-sidecar"
	ReasonZtunnel           Reason = "ztunnel"
	ReasonNotSelected       Reason = "not-selected"
	ReasonOptedOut          Reason = "opted-out"
	ReasonExcludedNamespace Reason = "excluded-namespace"
	ReasonNoPodIP           Reason = "no-pod-ip"
	ReasonSelected          Reason = "selected"
	// ReasonInvalidInput: no pod, or Settings whose enablement selectors do not compile
	// (istio-cni itself would refuse to start with them). State is Unknown.
	ReasonInvalidInput Reason = "invalid-input"
)

// Expectation is enroll's answer for one pod.
type Expectation struct {
	State  State
	Reason Reason
	// Detail is human text: which selector or label decided, version caveats.
	Detail string
	// Required are the listeners that must exist in the pod's netns when State is Captured
	// (empty otherwise), sorted.
	Required []uint16
	// Optional are ports that may legitimately be there besides Required, sorted.
	Optional []uint16
	// LowConfidence marks rows the facts file marks low confidence, and versions outside
	// the model (before 1.21).
	LowConfidence bool
}

// Version cut-points of ISTIO-FACTS §1 and §2, in one place.
var (
	hostNetworkGuarded  = since(1, 22, 2) // 1.21.x and 1.22.0–1.22.1 have no hostNetwork guard
	labelSelection      = since(1, 22, 0) // 1.21 selects by namespace label + annotation opt-out
	dnsOnByDefault      = since(1, 23, 0) // DNS capture default off in 1.21–1.22
	writesPending       = since(1, 25, 0) // redirection=pending
	enablementSelectors = since(1, 27, 0) // AMBIENT_ENABLEMENT_SELECTOR
	agentHonoursExclude = since(1, 30, 0) // ≤1.29 only the CNI plugin honoured EXCLUDE_NAMESPACES
	hostNetworkRestored = since(1, 30, 4) // the hostNetwork filter lost in 1.27 is back
	socks5Optional      = since(1, 22, 0) // 15080 always in 1.21, opt-in later
	inModel             = since(1, 21, 0) // older versions are judged as 1.21, low confidence
)

func hostNetworkFilterLost(v Version) bool { return enablementSelectors(v) && !hostNetworkRestored(v) }

func since(major, minor, patch int) func(Version) bool {
	return func(v Version) bool { return v.AtLeast(major, minor, patch) }
}

func versionName(v Version) string {
	if v.IsZero() {
		return "newest"
	}
	return v.String()
}

// input is what one decision looks at, prepared once.
type input struct {
	pod      *corev1.Pod
	ns       *corev1.Namespace
	s        Settings
	v        Version
	sel      selection
	selErr   error
	podMode  string // the pod's istio.io/dataplane-mode label ("" if absent)
	hasPodIP bool
}

// selection is the outcome of row 5, computed before the table runs.
type selection struct {
	selected bool
	reason   Reason // ReasonNotSelected or ReasonOptedOut when !selected
	detail   string
}

// row is one row of the decision table; decide reports whether the row matches.
type row struct {
	id     string
	when   string // the condition, as ISTIO-FACTS §1 words it
	decide func(in *input) (Expectation, bool)
}

// table is ISTIO-FACTS §1; the first matching row wins. Row 1 has two halves: on versions
// with istio-cni's hostNetwork guard it decides at once (not captured); on 1.21.x and
// 1.22.0–1.22.1 (no guard) the answer is unknown, and that half ("1u") is placed after
// selection so that an unselected hostNetwork pod (kube-proxy, a CNI agent) is plainly
// not-selected rather than unknown.
var table = []row{
	{"0", "ambient disabled / no istio-cni on the node", rowAmbientDisabled},
	{"1", "spec.hostNetwork (versions with the hostNetwork guard)", rowHostNetwork},
	{"2", "phase Succeeded/Failed", rowTerminal},
	{"3", "annotation sidecar.istio.io/status present", rowSidecar},
	{"4", "namespace == system namespace and label app=ztunnel (unknown when selected anyway)", rowZtunnel},
	{"5", "selection fails", rowSelection},
	{"1u", "spec.hostNetwork on 1.21.x and 1.22.0–1.22.1 (no guard)", rowHostNetworkUnguarded},
	{"6", "namespace in EXCLUDE_NAMESPACES", rowExcludedNamespace},
	{"7", "status.podIPs empty", rowNoPodIP},
	{"8", "otherwise", rowSelected},
}

func rowAmbientDisabled(in *input) (Expectation, bool) {
	if in.s.AmbientEnabled {
		return Expectation{}, false
	}
	return notCaptured(ReasonAmbientDisabled, "ambient is disabled in istio-cni (AMBIENT_ENABLED) or istio-cni is not on the node"), true
}

func rowHostNetwork(in *input) (Expectation, bool) {
	if !in.pod.Spec.HostNetwork || !hostNetworkGuarded(in.v) {
		return Expectation{}, false
	}
	detail := "hostNetwork pods share the node's netns and are never captured"
	if hostNetworkFilterLost(in.v) {
		// ISTIO-FACTS §1: 1.27–1.30.3 lost the filter (restored in
		// cni/pkg/util/enablement_selector.go Matches); the netns finder still skips the host netns.
		detail += fmt.Sprintf("; istio-cni %s lacks the hostNetwork filter (1.27–1.30.3), so it may try to enrol the pod and annotate it, but no listeners can appear", versionName(in.v))
	}
	return notCaptured(ReasonHostNetwork, detail), true
}

func rowTerminal(in *input) (Expectation, bool) {
	switch in.pod.Status.Phase {
	case corev1.PodSucceeded, corev1.PodFailed:
		return notCaptured(ReasonTerminal, fmt.Sprintf("pod phase is %s", in.pod.Status.Phase)), true
	}
	return Expectation{}, false
}

func rowSidecar(in *input) (Expectation, bool) {
	// istio/istio cni/pkg/util/podutil.go podHasSidecar: the annotation is the only signal.
	if _, ok := in.pod.Annotations[AnnotationSidecarStatus]; !ok {
		return Expectation{}, false
	}
	return notCaptured(ReasonHasSidecar, "pod has an Istio sidecar ("+AnnotationSidecarStatus+" annotation)"), true
}

func rowZtunnel(in *input) (Expectation, bool) {
	// istio/istio cni/pkg/util/podutil.go IsZtunnelPod.
	if in.pod.Namespace != in.s.SystemNamespace || in.pod.Labels["app"] != "ztunnel" {
		return Expectation{}, false
	}
	what := "pod is ztunnel (label app=ztunnel in system namespace " + in.s.SystemNamespace + ")"
	if in.selErr == nil && in.sel.selected {
		// Only the node agent's informers skip ztunnel pods (cni/pkg/nodeagent/informers.go: the
		// start-up snapshot and namespace re-evaluation, 1.21 to master). The CNI plugin and the
		// agent's CNI-add path look at the enablement selector alone, so a ztunnel pod it selects
		// is captured when its sandbox is created and dropped after an agent restart; the real
		// istio-cni of the 1.31 snapshot did capture one (docs/istio-facts-verified.md). Neither
		// answer holds for long: unknown, which is never healed.
		return Expectation{State: Unknown, Reason: ReasonZtunnel, LowConfidence: true, Detail: what +
			", yet selected (" + in.sel.detail + "): istio-cni captures it on sandbox creation but leaves it out of its start-up snapshot; ztunnel's chart labels it " +
			LabelDataplaneMode + "=" + DataplaneModeNone}, true
	}
	return notCaptured(ReasonZtunnel, what), true
}

func rowSelection(in *input) (Expectation, bool) {
	if in.selErr != nil {
		return Expectation{State: Unknown, Reason: ReasonInvalidInput, Detail: in.selErr.Error()}, true
	}
	if in.sel.selected {
		return Expectation{}, false
	}
	return notCaptured(in.sel.reason, in.sel.detail), true
}

func rowHostNetworkUnguarded(in *input) (Expectation, bool) {
	if !in.pod.Spec.HostNetwork || hostNetworkGuarded(in.v) {
		return Expectation{}, false
	}
	return Expectation{State: Unknown, Reason: ReasonHostNetwork,
		Detail: fmt.Sprintf("hostNetwork pod selected for ambient (%s); istio-cni %s has no hostNetwork guard (added in 1.22.2)", in.sel.detail, versionName(in.v))}, true
}

func rowExcludedNamespace(in *input) (Expectation, bool) {
	if !slices.Contains(in.s.ExcludeNamespaces, in.pod.Namespace) {
		return Expectation{}, false
	}
	if agentHonoursExclude(in.v) {
		return notCaptured(ReasonExcludedNamespace, "namespace "+in.pod.Namespace+" is in EXCLUDE_NAMESPACES"), true
	}
	e := captured(in, ReasonExcludedNamespace, fmt.Sprintf(
		"namespace %s is in EXCLUDE_NAMESPACES, but before 1.30 only the CNI plugin honoured it: the node agent captures the pod at its next start-up (%s, low confidence)",
		in.pod.Namespace, in.sel.detail))
	e.LowConfidence = true
	return e, true
}

func rowNoPodIP(in *input) (Expectation, bool) {
	if in.hasPodIP {
		return Expectation{}, false
	}
	return Expectation{State: Unknown, Reason: ReasonNoPodIP, Detail: "pod has no IP yet (" + in.sel.detail + ")"}, true
}

func rowSelected(in *input) (Expectation, bool) {
	return captured(in, ReasonSelected, in.sel.detail), true
}

func notCaptured(r Reason, detail string) Expectation {
	return Expectation{State: NotCaptured, Reason: r, Detail: detail}
}

// captured builds a Captured expectation with the listeners of ISTIO-FACTS §2.
func captured(in *input, r Reason, detail string) Expectation {
	req, opt := Listeners(in.v, in.s.DNSCapture)
	notes := []string{detail}
	if in.s.DNSCapture == DNSUnknown {
		def := "off in 1.21–1.22"
		if dnsOnByDefault(in.v) {
			def = "on from 1.23 unless configured off"
		}
		notes = append(notes, fmt.Sprintf("DNS capture unknown (default %s): %d optional", def, PortDNS))
	}
	notes = append(notes, redirectionNote(in.pod, in.v)...)
	return Expectation{State: Captured, Reason: r, Detail: strings.Join(notes, "; "), Required: req, Optional: opt}
}

// Listeners returns the in-pod listeners a captured pod must have at version v with the
// given DNS capture knowledge (ISTIO-FACTS §2), and those that may legitimately be there.
// Both sorted. 15053 is required only when DNS capture is known on.
func Listeners(v Version, dns DNSCapture) (required, optional []uint16) {
	required = []uint16{PortOutbound, PortInbound, PortHBONE}
	switch dns {
	case DNSOn:
		required = append(required, PortDNS)
	case DNSUnknown:
		optional = append(optional, PortDNS)
	}
	if socks5Optional(v) {
		optional = append(optional, PortSOCKS5)
	} else {
		required = append(required, PortSOCKS5)
	}
	slices.Sort(required)
	slices.Sort(optional)
	return required, optional
}

// redirectionNote explains an annotation value whose meaning depends on the version.
func redirectionNote(pod *corev1.Pod, v Version) []string {
	switch RedirectionState(pod) {
	case RedirectionPending:
		if writesPending(v) {
			return []string{"annotation " + AnnotationRedirection + "=pending: rules installed, ztunnel has not acknowledged yet; istio-cni retries"}
		}
		return []string{"annotation " + AnnotationRedirection + "=pending, which istio-cni writes only from 1.25"}
	case RedirectionDisabled:
		if labelSelection(v) {
			return []string{"annotation " + AnnotationRedirection + "=disabled opts out only in 1.21; since 1.22 opt out with label " + LabelDataplaneMode + "=" + DataplaneModeNone}
		}
	}
	return nil
}

// Expect decides for one pod whether ambient should capture it (ISTIO-FACTS §1) and which
// listeners must then exist (§2). ns may be nil when the namespace is unknown: selection
// then uses only the pod's labels and Detail says so. Expect is pure and safe for
// concurrent use.
func Expect(pod *corev1.Pod, ns *corev1.Namespace, s Settings) Expectation {
	if pod == nil {
		return Expectation{State: Unknown, Reason: ReasonInvalidInput, Detail: "no pod"}
	}
	in := &input{pod: pod, ns: ns, s: s, v: s.Version, podMode: pod.Labels[LabelDataplaneMode]}
	in.hasPodIP = len(pod.Status.PodIPs) > 0 || pod.Status.PodIP != ""
	in.sel, in.selErr = selectPod(in)
	if ns == nil {
		in.sel.detail += "; namespace unknown: decided on pod labels only"
	}

	var e Expectation
	for _, r := range table {
		if got, ok := r.decide(in); ok {
			e = got
			break
		}
	}
	if !inModel(in.v) {
		e.LowConfidence = true
		e.Detail += fmt.Sprintf("; Istio %s predates the model (1.21+): judged as 1.21", versionName(in.v))
	}
	return e
}

// selectPod is row 5's selection for in.v: 1.21 namespace label + annotation opt-out,
// 1.22–1.26 labels (cni/pkg/util/podutil.go PodRedirectionEnabled), 1.27+ enablement
// selectors (cni/pkg/util/enablement_selector.go Matches).
func selectPod(in *input) (selection, error) {
	nsLabels := map[string]string{}
	if in.ns != nil {
		nsLabels = in.ns.Labels
	}
	nsMode := nsLabels[LabelDataplaneMode]
	switch {
	case !labelSelection(in.v):
		if nsMode != DataplaneModeAmbient {
			return selection{reason: ReasonNotSelected, detail: "namespace lacks label " + LabelDataplaneMode + "=" + DataplaneModeAmbient + " (1.21 selects by namespace only)"}, nil
		}
		if in.pod.Annotations[AnnotationRedirection] == RedirectionDisabledValue {
			return selection{reason: ReasonOptedOut, detail: "pod annotation " + AnnotationRedirection + "=" + RedirectionDisabledValue + " (1.21 opt-out)"}, nil
		}
		return selection{selected: true, detail: "namespace label " + LabelDataplaneMode + "=" + DataplaneModeAmbient}, nil

	case !enablementSelectors(in.v):
		switch {
		case in.podMode == DataplaneModeAmbient:
			return selection{selected: true, detail: "pod label " + LabelDataplaneMode + "=" + DataplaneModeAmbient}, nil
		case in.podMode == DataplaneModeNone:
			return selection{reason: ReasonOptedOut, detail: "pod label " + LabelDataplaneMode + "=" + DataplaneModeNone}, nil
		case nsMode == DataplaneModeAmbient:
			return selection{selected: true, detail: "namespace label " + LabelDataplaneMode + "=" + DataplaneModeAmbient}, nil
		}
		return selection{reason: ReasonNotSelected, detail: "neither namespace nor pod labelled " + LabelDataplaneMode + "=" + DataplaneModeAmbient}, nil
	}

	which, compiled := "default enablement selector", defaultSelectors()
	if in.s.EnablementSelectors != nil {
		var err error
		which = "AMBIENT_ENABLEMENT_SELECTOR"
		if compiled, err = compileSelectors(in.s.EnablementSelectors); err != nil {
			return selection{}, fmt.Errorf("enablement selectors: %w", err)
		}
	}
	podSet, nsSet := labels.Set(in.pod.Labels), labels.Set(nsLabels)
	for i, c := range compiled {
		if c.pod.Matches(podSet) && c.namespace.Matches(nsSet) {
			return selection{selected: true, detail: fmt.Sprintf("%s %d matched (%s)", which, i, describeSelector(c))}, nil
		}
	}
	if in.podMode == DataplaneModeNone {
		return selection{reason: ReasonOptedOut, detail: fmt.Sprintf("pod label %s=%s; no %s matched", LabelDataplaneMode, DataplaneModeNone, which)}, nil
	}
	return selection{reason: ReasonNotSelected, detail: fmt.Sprintf("no %s matched (%d selectors)", which, len(compiled))}, nil
}

// defaultSelectors is DefaultEnablementSelectors compiled once.
var defaultSelectors = sync.OnceValue(func() []compiledSelector {
	c, err := compileSelectors(DefaultEnablementSelectors())
	if err != nil {
		panic("enroll: default enablement selectors do not compile: " + err.Error())
	}
	return c
})

func describeSelector(c compiledSelector) string {
	var parts []string
	if p := c.pod.String(); p != "" {
		parts = append(parts, "pod "+p)
	}
	if n := c.namespace.String(); n != "" {
		parts = append(parts, "namespace "+n)
	}
	if len(parts) == 0 {
		return "matches every pod"
	}
	return strings.Join(parts, ", ")
}
