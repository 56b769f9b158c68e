package enroll

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// cutVersions holds both sides of every version cut-point of ISTIO-FACTS §1/§2, plus a
// version before the model and the zero Version (newest).
var cutVersions = []Version{
	{1, 20, 8},             // before the model: judged as 1.21, low confidence
	{1, 21, 0}, {1, 21, 6}, // 1.21: namespace label + annotation opt-out, 15080 required, no hostNetwork guard
	{1, 22, 0}, {1, 22, 1}, // labels select; still no hostNetwork guard
	{1, 22, 2}, {1, 22, 8}, // hostNetwork guard
	{1, 23, 0},             // DNS capture default on
	{1, 24, 6}, {1, 25, 0}, // redirection=pending
	{1, 26, 9}, {1, 27, 0}, // enablement selectors; hostNetwork filter lost
	{1, 29, 9}, {1, 30, 0}, // agent honours EXCLUDE_NAMESPACES
	{1, 30, 3}, {1, 30, 4}, // hostNetwork filter restored
	{1, 31, 0}, {2, 0, 0}, {}, // newer, and the zero Version (newest)
}

// until maps version ranges to an answer: the first span whose upTo (inclusive) is at or
// above v applies; a span with the zero upTo covers everything newer.
type span struct {
	upTo Version
	want verdict
}

type verdict struct {
	state  State
	reason Reason
	low    bool
}

func pick(spans []span, v Version) verdict {
	for _, s := range spans {
		if s.upTo.IsZero() || !v.AtLeast(s.upTo.Major, s.upTo.Minor, s.upTo.Patch+1) {
			return s.want
		}
	}
	panic("spans must end with a zero upTo")
}

func always(state State, reason Reason) []span { return []span{{want: verdict{state, reason, false}}} }

// fixtures
func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

var (
	ambientNS = namespace("shop", map[string]string{LabelDataplaneMode: DataplaneModeAmbient})
	plainNS   = namespace("plain", nil)
	systemNS  = namespace("istio-system", map[string]string{LabelDataplaneMode: DataplaneModeAmbient})
	kubeSysNS = namespace("kube-system", map[string]string{LabelDataplaneMode: DataplaneModeAmbient})
	teamNS    = namespace("team", map[string]string{"team": "mesh"})
)

type podOpt func(*corev1.Pod)

func newPod(ns string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns, Labels: map[string]string{}, Annotations: map[string]string{}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.5", PodIPs: []corev1.PodIP{{IP: "10.0.0.5"}}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func label(k, v string) podOpt      { return func(p *corev1.Pod) { p.Labels[k] = v } }
func annotation(k, v string) podOpt { return func(p *corev1.Pod) { p.Annotations[k] = v } }
func phase(ph corev1.PodPhase) podOpt {
	return func(p *corev1.Pod) { p.Status.Phase = ph }
}
func hostNetwork(p *corev1.Pod) { p.Spec.HostNetwork = true }
func noIP(p *corev1.Pod)        { p.Status.PodIP, p.Status.PodIPs = "", nil }

func withSettings(f func(*Settings)) Settings {
	s := DefaultSettings()
	f(&s)
	return s
}

// TestExpectMatrix runs every row of ISTIO-FACTS §1 at every cut-point version.
func TestExpectMatrix(t *testing.T) {
	def := DefaultSettings()
	teamSelectors := withSettings(func(s *Settings) {
		s.EnablementSelectors = []EnablementSelector{{NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": "mesh"}}}}
	})
	cases := []struct {
		name  string
		pod   *corev1.Pod
		ns    *corev1.Namespace
		s     Settings
		spans []span
	}{
		{"row0 ambient disabled", newPod("shop"), ambientNS, withSettings(func(s *Settings) { s.AmbientEnabled = false }),
			always(NotCaptured, ReasonAmbientDisabled)},
		{"row0 beats every other row", newPod("shop", hostNetwork, phase(corev1.PodFailed)), ambientNS, withSettings(func(s *Settings) { s.AmbientEnabled = false }),
			always(NotCaptured, ReasonAmbientDisabled)},
		{"row1 hostNetwork, selected", newPod("shop", hostNetwork), ambientNS, def, []span{
			{Version{1, 22, 1}, verdict{Unknown, ReasonHostNetwork, false}},
			{want: verdict{NotCaptured, ReasonHostNetwork, false}},
		}},
		{"row1 hostNetwork, not selected", newPod("plain", hostNetwork), plainNS, def, []span{
			{Version{1, 22, 1}, verdict{NotCaptured, ReasonNotSelected, false}},
			{want: verdict{NotCaptured, ReasonHostNetwork, false}},
		}},
		{"row1 hostNetwork, no IP", newPod("shop", hostNetwork, noIP), ambientNS, def, []span{
			{Version{1, 22, 1}, verdict{Unknown, ReasonHostNetwork, false}},
			{want: verdict{NotCaptured, ReasonHostNetwork, false}},
		}},
		{"row2 succeeded", newPod("shop", phase(corev1.PodSucceeded)), ambientNS, def, always(NotCaptured, ReasonTerminal)},
		{"row2 failed", newPod("shop", phase(corev1.PodFailed)), ambientNS, def, always(NotCaptured, ReasonTerminal)},
		{"row2 pending is not terminal", newPod("shop", phase(corev1.PodPending)), ambientNS, def, always(Captured, ReasonSelected)},
		{"row3 sidecar annotation", newPod("shop", annotation(AnnotationSidecarStatus, `{"containers":["istio-proxy"]}`)), ambientNS, def,
			always(NotCaptured, ReasonHasSidecar)},
		{"row3 inject label alone is no sidecar", newPod("shop", label("sidecar.istio.io/inject", "true")), ambientNS, def, always(Captured, ReasonSelected)},
		{"row3 istio-proxy container alone is no sidecar", newPod("shop", func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy"})
		}), ambientNS, def, always(Captured, ReasonSelected)},
		{"row4 ztunnel, not selected", newPod("istio-system", label("app", "ztunnel")), namespace("istio-system", nil), def, always(NotCaptured, ReasonZtunnel)},
		{"row4 ztunnel with its chart's opt-out label", newPod("istio-system", label("app", "ztunnel"), label(LabelDataplaneMode, DataplaneModeNone)), systemNS, def, []span{
			{Version{1, 21, 99}, verdict{Unknown, ReasonZtunnel, true}}, // 1.21 selects by namespace only
			{want: verdict{NotCaptured, ReasonZtunnel, false}},
		}},
		// Fixed against the real istio-cni (TestSandboxIstioCNI/expectation-agrees): a selected
		// ztunnel pod is captured by the CNI-add path, which has no ztunnel check, and skipped
		// only by the agent's informers. It was NotCaptured here before.
		{"row4 ztunnel, selected anyway", newPod("istio-system", label("app", "ztunnel")), systemNS, def, []span{{want: verdict{Unknown, ReasonZtunnel, true}}}},
		{"row4 app=ztunnel outside the system namespace", newPod("shop", label("app", "ztunnel")), ambientNS, def, always(Captured, ReasonSelected)},
		{"row4 custom system namespace", newPod("mesh", label("app", "ztunnel")), namespace("mesh", map[string]string{LabelDataplaneMode: DataplaneModeAmbient}),
			withSettings(func(s *Settings) { s.SystemNamespace = "mesh" }), []span{{want: verdict{Unknown, ReasonZtunnel, true}}}},
		{"row4 istio.io/rev is ignored", newPod("shop", label("istio.io/rev", "canary")), ambientNS, def, always(Captured, ReasonSelected)},
		{"row5 nothing labelled", newPod("plain"), plainNS, def, always(NotCaptured, ReasonNotSelected)},
		{"row5 pod label ambient in a plain namespace", newPod("plain", label(LabelDataplaneMode, DataplaneModeAmbient)), plainNS, def, []span{
			{Version{1, 21, 99}, verdict{NotCaptured, ReasonNotSelected, false}},
			{want: verdict{Captured, ReasonSelected, false}},
		}},
		{"row5 pod label none in an ambient namespace", newPod("shop", label(LabelDataplaneMode, DataplaneModeNone)), ambientNS, def, []span{
			{Version{1, 21, 99}, verdict{Captured, ReasonSelected, false}},
			{want: verdict{NotCaptured, ReasonOptedOut, false}},
		}},
		{"row5 pod label none in a plain namespace", newPod("plain", label(LabelDataplaneMode, DataplaneModeNone)), plainNS, def, []span{
			{Version{1, 21, 99}, verdict{NotCaptured, ReasonNotSelected, false}},
			{want: verdict{NotCaptured, ReasonOptedOut, false}},
		}},
		{"row5 annotation disabled in an ambient namespace", newPod("shop", annotation(AnnotationRedirection, "disabled")), ambientNS, def, []span{
			{Version{1, 21, 99}, verdict{NotCaptured, ReasonOptedOut, false}},
			{want: verdict{Captured, ReasonSelected, false}},
		}},
		{"row5 other dataplane-mode value in an ambient namespace", newPod("shop", label(LabelDataplaneMode, "sidecar")), ambientNS, def, always(Captured, ReasonSelected)},
		{"row5 custom selectors: team namespace", newPod("team"), teamNS, teamSelectors, []span{
			{Version{1, 26, 99}, verdict{NotCaptured, ReasonNotSelected, false}},
			{want: verdict{Captured, ReasonSelected, false}},
		}},
		{"row5 custom selectors: ambient namespace", newPod("shop"), ambientNS, teamSelectors, []span{
			{Version{1, 26, 99}, verdict{Captured, ReasonSelected, false}},
			{want: verdict{NotCaptured, ReasonNotSelected, false}},
		}},
		{"row5 custom selectors: pod label none", newPod("plain", label(LabelDataplaneMode, DataplaneModeNone)), plainNS, teamSelectors, []span{
			{Version{1, 21, 99}, verdict{NotCaptured, ReasonNotSelected, false}},
			{want: verdict{NotCaptured, ReasonOptedOut, false}},
		}},
		{"row5 empty selector list selects nothing", newPod("shop"), ambientNS, withSettings(func(s *Settings) { s.EnablementSelectors = []EnablementSelector{} }), []span{
			{Version{1, 26, 99}, verdict{Captured, ReasonSelected, false}},
			{want: verdict{NotCaptured, ReasonNotSelected, false}},
		}},
		{"row5 invalid selectors", newPod("shop"), ambientNS, withSettings(func(s *Settings) {
			s.EnablementSelectors = []EnablementSelector{{PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}}}}
		}), []span{
			{Version{1, 26, 99}, verdict{Captured, ReasonSelected, false}},
			{want: verdict{Unknown, ReasonInvalidInput, false}},
		}},
		{"row6 excluded namespace", newPod("kube-system"), kubeSysNS, def, []span{
			{Version{1, 29, 99}, verdict{Captured, ReasonExcludedNamespace, true}},
			{want: verdict{NotCaptured, ReasonExcludedNamespace, false}},
		}},
		{"row6 excluded but not selected", newPod("kube-system"), namespace("kube-system", nil), def, always(NotCaptured, ReasonNotSelected)},
		{"row6 custom exclude list", newPod("shop"), ambientNS, withSettings(func(s *Settings) { s.ExcludeNamespaces = []string{"shop"} }), []span{
			{Version{1, 29, 99}, verdict{Captured, ReasonExcludedNamespace, true}},
			{want: verdict{NotCaptured, ReasonExcludedNamespace, false}},
		}},
		{"row6 empty exclude list", newPod("kube-system"), kubeSysNS, withSettings(func(s *Settings) { s.ExcludeNamespaces = nil }), always(Captured, ReasonSelected)},
		{"row7 no pod IP", newPod("shop", noIP), ambientNS, def, always(Unknown, ReasonNoPodIP)},
		{"row7 podIP without podIPs", newPod("shop", func(p *corev1.Pod) { p.Status.PodIPs = nil }), ambientNS, def, always(Captured, ReasonSelected)},
		{"row8 selected by namespace", newPod("shop"), ambientNS, def, always(Captured, ReasonSelected)},
	}
	for _, tc := range cases {
		for _, v := range cutVersions {
			t.Run(fmt.Sprintf("%s/%s", tc.name, v), func(t *testing.T) {
				s := tc.s
				s.Version = v
				want := pick(tc.spans, v)
				if !inModel(v) {
					want.low = true
				}
				got := Expect(tc.pod, tc.ns, s)
				if got.State != want.state || got.Reason != want.reason || got.LowConfidence != want.low {
					t.Fatalf("Expect = {%s %s low=%v}, want {%s %s low=%v}\ndetail: %s", got.State, got.Reason, got.LowConfidence, want.state, want.reason, want.low, got.Detail)
				}
				if got.Detail == "" {
					t.Error("empty Detail")
				}
				if got.State == Captured {
					req, opt := Listeners(v, s.DNSCapture)
					if !slices.Equal(got.Required, req) || !slices.Equal(got.Optional, opt) {
						t.Errorf("listeners = %v / %v, want %v / %v", got.Required, got.Optional, req, opt)
					}
				} else if len(got.Required) != 0 {
					t.Errorf("Required = %v for state %s", got.Required, got.State)
				}
			})
		}
	}
}

func TestListeners(t *testing.T) {
	tests := []struct {
		v        Version
		dns      DNSCapture
		req, opt []uint16
	}{
		{Version{1, 21, 0}, DNSUnknown, []uint16{15001, 15006, 15008, 15080}, []uint16{15053}},
		{Version{1, 21, 6}, DNSOn, []uint16{15001, 15006, 15008, 15053, 15080}, nil},
		{Version{1, 21, 6}, DNSOff, []uint16{15001, 15006, 15008, 15080}, nil},
		{Version{1, 22, 0}, DNSUnknown, []uint16{15001, 15006, 15008}, []uint16{15053, 15080}},
		{Version{1, 22, 0}, DNSOn, []uint16{15001, 15006, 15008, 15053}, []uint16{15080}},
		{Version{1, 23, 0}, DNSUnknown, []uint16{15001, 15006, 15008}, []uint16{15053, 15080}},
		{Version{1, 23, 0}, DNSOff, []uint16{15001, 15006, 15008}, []uint16{15080}},
		{Version{}, DNSOn, []uint16{15001, 15006, 15008, 15053}, []uint16{15080}},
	}
	for _, tc := range tests {
		req, opt := Listeners(tc.v, tc.dns)
		if !slices.Equal(req, tc.req) || !slices.Equal(opt, tc.opt) {
			t.Errorf("Listeners(%v, %v) = %v / %v, want %v / %v", tc.v, tc.dns, req, opt, tc.req, tc.opt)
		}
	}
}

// TestExpectDetail checks the version caveats Detail must carry, on both sides of each cut.
func TestExpectDetail(t *testing.T) {
	tests := []struct {
		name    string
		v       Version
		pod     *corev1.Pod
		ns      *corev1.Namespace
		s       Settings
		want    []string
		notWant []string
	}{
		{"hostNetwork 1.26.9: no regression", Version{1, 26, 9}, newPod("shop", hostNetwork), ambientNS, DefaultSettings(), nil, []string{"1.27–1.30.3"}},
		{"hostNetwork 1.27.0: regression", Version{1, 27, 0}, newPod("shop", hostNetwork), ambientNS, DefaultSettings(), []string{"1.27–1.30.3", "lacks the hostNetwork filter"}, nil},
		{"hostNetwork 1.30.3: regression", Version{1, 30, 3}, newPod("shop", hostNetwork), ambientNS, DefaultSettings(), []string{"1.27–1.30.3"}, nil},
		{"hostNetwork 1.30.4: restored", Version{1, 30, 4}, newPod("shop", hostNetwork), ambientNS, DefaultSettings(), nil, []string{"1.27–1.30.3"}},
		{"hostNetwork newest: restored", Version{}, newPod("shop", hostNetwork), ambientNS, DefaultSettings(), nil, []string{"1.27–1.30.3"}},
		{"hostNetwork 1.22.1: no guard", Version{1, 22, 1}, newPod("shop", hostNetwork), ambientNS, DefaultSettings(), []string{"no hostNetwork guard"}, nil},
		{"DNS default 1.22", Version{1, 22, 8}, newPod("shop"), ambientNS, DefaultSettings(), []string{"DNS capture unknown (default off in 1.21–1.22)"}, nil},
		{"DNS default 1.23", Version{1, 23, 0}, newPod("shop"), ambientNS, DefaultSettings(), []string{"DNS capture unknown (default on from 1.23"}, nil},
		{"DNS known", Version{1, 23, 0}, newPod("shop"), ambientNS, withSettings(func(s *Settings) { s.DNSCapture = DNSOn }), nil, []string{"DNS capture unknown"}},
		{"pending 1.24", Version{1, 24, 6}, newPod("shop", annotation(AnnotationRedirection, "pending")), ambientNS, DefaultSettings(), []string{"writes only from 1.25"}, nil},
		{"pending 1.25", Version{1, 25, 0}, newPod("shop", annotation(AnnotationRedirection, "pending")), ambientNS, DefaultSettings(), []string{"ztunnel has not acknowledged"}, nil},
		{"disabled annotation after 1.21", Version{1, 22, 0}, newPod("shop", annotation(AnnotationRedirection, "disabled")), ambientNS, DefaultSettings(), []string{"opts out only in 1.21"}, nil},
		{"default selector named", Version{1, 27, 0}, newPod("shop"), ambientNS, DefaultSettings(), []string{"default enablement selector 1 matched", "istio.io/dataplane-mode notin (none)"}, nil},
		{"configured selector named", Version{1, 27, 0}, newPod("shop"), ambientNS, withSettings(func(s *Settings) { s.EnablementSelectors = DefaultEnablementSelectors() }), []string{"AMBIENT_ENABLEMENT_SELECTOR 1 matched"}, nil},
		{"labels 1.26", Version{1, 26, 9}, newPod("plain", label(LabelDataplaneMode, DataplaneModeAmbient)), plainNS, DefaultSettings(), []string{"pod label istio.io/dataplane-mode=ambient"}, []string{"selector"}},
		{"excluded before 1.30", Version{1, 29, 9}, newPod("kube-system"), kubeSysNS, DefaultSettings(), []string{"before 1.30 only the CNI plugin honoured it"}, nil},
		{"before the model", Version{1, 20, 8}, newPod("shop"), ambientNS, DefaultSettings(), []string{"predates the model"}, nil},
		{"namespace unknown", Version{}, newPod("shop", label(LabelDataplaneMode, DataplaneModeAmbient)), nil, DefaultSettings(), []string{"namespace unknown: decided on pod labels only"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.s
			s.Version = tc.v
			d := Expect(tc.pod, tc.ns, s).Detail
			for _, w := range tc.want {
				if !strings.Contains(d, w) {
					t.Errorf("Detail %q lacks %q", d, w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(d, w) {
					t.Errorf("Detail %q has %q", d, w)
				}
			}
		})
	}
}

func TestExpectNilNamespace(t *testing.T) {
	for _, v := range cutVersions {
		s := DefaultSettings()
		s.Version = v
		labelled := Expect(newPod("shop", label(LabelDataplaneMode, DataplaneModeAmbient)), nil, s)
		bare := Expect(newPod("shop"), nil, s)
		wantLabelled := Captured
		if !labelSelection(v) {
			wantLabelled = NotCaptured // 1.21 selects by namespace only
		}
		if labelled.State != wantLabelled || bare.State != NotCaptured || bare.Reason != ReasonNotSelected {
			t.Errorf("%s: labelled %s/%s, bare %s/%s", v, labelled.State, labelled.Reason, bare.State, bare.Reason)
		}
		for _, e := range []Expectation{labelled, bare} {
			if !strings.Contains(e.Detail, "namespace unknown") {
				t.Errorf("%s: Detail %q does not say the namespace is unknown", v, e.Detail)
			}
		}
	}
}

func TestExpectNilPod(t *testing.T) {
	e := Expect(nil, ambientNS, DefaultSettings())
	if e.State != Unknown || e.Reason != ReasonInvalidInput {
		t.Fatalf("Expect(nil) = %+v", e)
	}
}

func TestExpectDoesNotModifyInputs(t *testing.T) {
	pod := newPod("shop", hostNetwork)
	s := DefaultSettings()
	s.Version = Version{1, 21, 0}
	before := pod.DeepCopy()
	nsBefore := ambientNS.DeepCopy()
	_ = Expect(pod, ambientNS, s)
	if pod.String() != before.String() || ambientNS.String() != nsBefore.String() {
		t.Fatal("Expect modified its inputs")
	}
}

func TestRedirectionState(t *testing.T) {
	tests := []struct {
		pod  *corev1.Pod
		want Redirection
	}{
		{nil, RedirectionAbsent},
		{newPod("shop"), RedirectionAbsent},
		{newPod("shop", annotation(AnnotationRedirection, "enabled")), RedirectionEnabled},
		{newPod("shop", annotation(AnnotationRedirection, "pending")), RedirectionPending},
		{newPod("shop", annotation(AnnotationRedirection, "disabled")), RedirectionDisabled},
		{newPod("shop", annotation(AnnotationRedirection, "")), RedirectionUnrecognized},
		{newPod("shop", annotation(AnnotationRedirection, "Enabled")), RedirectionUnrecognized},
	}
	for _, tc := range tests {
		if got := RedirectionState(tc.pod); got != tc.want {
			t.Errorf("RedirectionState(%v) = %q, want %q", tc.pod.GetAnnotations(), got, tc.want)
		}
	}
	for _, tc := range []struct {
		r    Redirection
		v    Version
		want bool
	}{
		{RedirectionEnabled, Version{1, 21, 0}, true},
		{RedirectionPending, Version{1, 24, 6}, false},
		{RedirectionPending, Version{1, 25, 0}, true},
		{RedirectionPending, Version{}, true},
		{RedirectionDisabled, Version{}, false},
		{RedirectionAbsent, Version{}, false},
		{RedirectionUnrecognized, Version{}, false},
	} {
		if got := tc.r.Enrolled(tc.v); got != tc.want {
			t.Errorf("%q.Enrolled(%v) = %v, want %v", tc.r, tc.v, got, tc.want)
		}
	}
}

// TestDefaultSelectorsEquivalentToLabels checks the claim of ISTIO-FACTS §1 that the 1.27+
// defaults select what 1.22–1.26 selected, over every combination of label values.
func TestDefaultSelectorsEquivalentToLabels(t *testing.T) {
	values := []string{"", DataplaneModeAmbient, DataplaneModeNone, "other"}
	for _, podMode := range values {
		for _, nsMode := range values {
			var opts []podOpt
			if podMode != "" {
				opts = append(opts, label(LabelDataplaneMode, podMode))
			}
			var nsLabels map[string]string
			if nsMode != "" {
				nsLabels = map[string]string{LabelDataplaneMode: nsMode}
			}
			ns := namespace("x", nsLabels)
			pod := newPod("x", opts...)
			old, cur := DefaultSettings(), DefaultSettings()
			old.Version = Version{1, 26, 9}
			cur.Version = Version{1, 27, 0}
			a, b := Expect(pod, ns, old), Expect(pod, ns, cur)
			if a.State != b.State || a.Reason != b.Reason {
				t.Errorf("pod=%q ns=%q: 1.26 %s/%s, 1.27 %s/%s", podMode, nsMode, a.State, a.Reason, b.State, b.Reason)
			}
		}
	}
}

// TestTableOrder pins the decision table to the row order of ISTIO-FACTS §1, with the
// unguarded-hostNetwork half of row 1 after selection.
func TestTableOrder(t *testing.T) {
	var ids []string
	for _, r := range table {
		if r.when == "" || r.decide == nil {
			t.Errorf("row %s is incomplete", r.id)
		}
		ids = append(ids, r.id)
	}
	if want := []string{"0", "1", "2", "3", "4", "5", "1u", "6", "7", "8"}; !slices.Equal(ids, want) {
		t.Fatalf("rows %v, want %v", ids, want)
	}
}
