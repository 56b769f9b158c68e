package ztlog

import (
	"strings"
	"testing"
)

// TestShippedSignatures loads every shipped signature and checks it against the
// examples it carries, the way node-problem-detector tests config/kernel-monitor.json:
// each "match" example must yield exactly this signature with the implicated pod the
// example names; each "noMatch" example must not yield it.
func TestShippedSignatures(t *testing.T) {
	sigs, err := ShippedSignatures()
	if err != nil {
		t.Fatalf("shipped signatures do not load: %v", err)
	}
	specs := sigs.Specs()
	if len(specs) < 6 {
		t.Fatalf("shipped table has %d signatures, want at least 6", len(specs))
	}
	required := map[string]struct {
		class Class
		side  Side
		code  string
	}{
		"hbone-refused":                 {ClassOrphan, SideDst, "B"},
		"unidentified-policy-rejection": {ClassOrphan, SideSrc, "A"},
		"proxy-started":                 {ClassCorroboration, SidePod, ""},
		"proxy-kept":                    {ClassCorroboration, SidePod, ""},
		"proxy-start-failed":            {ClassCorroboration, SidePod, ""},
		"cni-netns-not-found":           {ClassCorroboration, SidePod, ""},
	}
	seen := map[string]bool{}
	for _, sp := range specs {
		seen[sp.Name] = true
		if want, ok := required[sp.Name]; ok {
			if sp.Class != want.class || sp.Side != want.side || sp.Code != want.code {
				t.Errorf("%s: class/side/code = %s/%s/%q, want %s/%s/%q", sp.Name, sp.Class, sp.Side, sp.Code, want.class, want.side, want.code)
			}
		}
		t.Run(sp.Name, func(t *testing.T) {
			for i, ex := range sp.Examples.Match {
				got, err := sigs.MatchLine(ex.Line)
				if err != nil {
					t.Fatalf("match[%d] (%s): %v", i, ex.Source, err)
				}
				var hit *Signal
				for j := range got {
					if got[j].Kind == sp.Name {
						if hit != nil {
							t.Errorf("match[%d] (%s): signature fired twice", i, ex.Source)
						}
						hit = &got[j]
					}
				}
				if hit == nil {
					t.Errorf("match[%d] (%s): no %s signal from %q (got %+v)", i, ex.Source, sp.Name, ex.Line, got)
					continue
				}
				if hit.IP != ex.IP || hit.Namespace != ex.Namespace || hit.Workload != ex.Workload || hit.UID != ex.UID {
					t.Errorf("match[%d] (%s): implicated ip=%q ns=%q wl=%q uid=%q, want ip=%q ns=%q wl=%q uid=%q",
						i, ex.Source, hit.IP, hit.Namespace, hit.Workload, hit.UID, ex.IP, ex.Namespace, ex.Workload, ex.UID)
				}
				if hit.Side != sp.Side || hit.Class != sp.Class || hit.Line != 1 {
					t.Errorf("match[%d]: side/class/line = %s/%s/%d", i, hit.Side, hit.Class, hit.Line)
				}
				if hit.Time.IsZero() {
					t.Errorf("match[%d] (%s): signal has no record time", i, ex.Source)
				}
				if sp.Class == ClassOrphan && hit.Detail == "" {
					t.Errorf("match[%d] (%s): orphan signal without detail", i, ex.Source)
				}
			}
			for i, ex := range sp.Examples.NoMatch {
				got, err := sigs.MatchLine(ex.Line)
				if err != nil {
					t.Fatalf("noMatch[%d] (%s): %v", i, ex.Source, err)
				}
				for _, g := range got {
					if g.Kind == sp.Name {
						t.Errorf("noMatch[%d] (%s): %s fired on %q", i, ex.Source, sp.Name, ex.Line)
					}
				}
			}
		})
	}
	for name := range required {
		if !seen[name] {
			t.Errorf("required signature %q is not shipped", name)
		}
	}
}

// TestShippedExamplesAreExclusive checks that no shipped example line of one
// signature makes an orphan signature of another fire: lifecycle lines are never
// orphan signals.
func TestShippedExamplesAreExclusive(t *testing.T) {
	sigs, err := ShippedSignatures()
	if err != nil {
		t.Fatal(err)
	}
	for _, sp := range sigs.Specs() {
		for _, ex := range append(append([]Example(nil), sp.Examples.Match...), sp.Examples.NoMatch...) {
			got, err := sigs.MatchLine(ex.Line)
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range got {
				if g.Kind != sp.Name && g.Class == ClassOrphan {
					t.Errorf("example of %s (%s) also fired orphan signature %s", sp.Name, ex.Source, g.Kind)
				}
			}
		}
	}
}

func TestLoadSignaturesRejectsBadTables(t *testing.T) {
	cases := map[string]string{
		"unknown field":   `{"signatures":[{"name":"x","bogus":1}]}`,
		"no class":        `{"signatures":[{"name":"x","side":"src","description":"d","source":"s","message":{"equals":["m"]},"implicate":{"addr":["a"]},"examples":{"match":[{"line":"l"}],"noMatch":[{"line":"l"}]}}]}`,
		"orphan pod side": `{"signatures":[{"name":"x","class":"orphan-signal","side":"pod","description":"d","source":"s","message":{"equals":["m"]},"implicate":{"addr":["a"]},"examples":{"match":[{"line":"l"}],"noMatch":[{"line":"l"}]}}]}`,
		"addr unguarded":  `{"signatures":[{"name":"x","class":"orphan-signal","side":"src","description":"d","source":"s","message":{"equals":["m"]},"implicate":{"addr":["a"]},"examples":{"match":[{"line":"l"}],"noMatch":[{"line":"l"}]}}]}`,
		"no addr":         `{"signatures":[{"name":"x","class":"orphan-signal","side":"src","description":"d","source":"s","message":{"equals":["m"]},"implicate":{},"examples":{"match":[{"line":"l"}],"noMatch":[{"line":"l"}]}}]}`,
		"matches all":     `{"signatures":[{"name":"x","class":"corroboration","side":"pod","description":"d","source":"s","implicate":{},"examples":{"match":[{"line":"l"}],"noMatch":[{"line":"l"}]}}]}`,
		"two tests":       `{"signatures":[{"name":"x","class":"corroboration","side":"pod","description":"d","source":"s","conditions":[{"field":"f","contains":"a","port":1}],"implicate":{},"examples":{"match":[{"line":"l"}],"noMatch":[{"line":"l"}]}}]}`,
		"no examples":     `{"signatures":[{"name":"x","class":"corroboration","side":"pod","description":"d","source":"s","message":{"equals":["m"]},"implicate":{},"examples":{"match":[],"noMatch":[]}}]}`,
		"unsafe needle":   `{"signatures":[{"name":"x","class":"corroboration","side":"pod","description":"d","source":"s","text":{"contains":["a\"b"]},"implicate":{},"examples":{"match":[{"line":"l"}],"noMatch":[{"line":"l"}]}}]}`,
		"duplicate": `{"signatures":[` +
			`{"name":"x","class":"corroboration","side":"pod","description":"d","source":"s","message":{"equals":["m"]},"implicate":{},"examples":{"match":[{"line":"l"}],"noMatch":[{"line":"l"}]}},` +
			`{"name":"x","class":"corroboration","side":"pod","description":"d","source":"s","message":{"equals":["m"]},"implicate":{},"examples":{"match":[{"line":"l"}],"noMatch":[{"line":"l"}]}}]}`,
	}
	for name, js := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := LoadSignatures(strings.NewReader(js)); err == nil {
				t.Fatalf("LoadSignatures accepted a bad table: %s", js)
			}
		})
	}
	ok := `{"signatures":[{"name":"x","class":"corroboration","side":"pod","description":"d","source":"s","message":{"equals":["m"]},"implicate":{},"examples":{"match":[{"line":"l"}],"noMatch":[{"line":"l"}]}}]}`
	if _, err := LoadSignatures(strings.NewReader(ok)); err != nil {
		t.Fatalf("LoadSignatures rejected a good table: %v", err)
	}
}

// TestSignatureTable adds per-signature cases beyond the shipped examples.
func TestSignatureTable(t *testing.T) {
	const ts = "2025-03-03T03:03:03.000003Z"
	acc := func(level, msg, fields string) string { return ts + "\t" + level + "\taccess\t" + msg + "\t" + fields }
	cases := []struct {
		sig  string
		line string
		hit  bool
		ip   string
	}{
		// hbone-refused (B)
		{"hbone-refused", acc("warn", "connection failed", `src.addr=10.0.0.1:5 dst.addr=10.0.0.9:15008 direction="outbound" error="io error: Connection refused (os error 111)"`), true, "10.0.0.9"},
		{"hbone-refused", acc("error", "connection complete", `dst.addr=10.0.0.9:15008 direction="outbound" error="Connection refused"`), true, "10.0.0.9"},
		{"hbone-refused", acc("error", "connection complete", `dst.addr=10.0.0.9:15008 direction="outbound" error="connection refused"`), false, ""},
		{"hbone-refused", acc("error", "connection complete", `dst.addr=10.0.0.9:15009 direction="outbound" error="io error: Connection refused"`), false, ""},
		{"hbone-refused", acc("error", "connection complete", `dst.addr=10.0.0.9:15008 error="io error: Connection refused"`), false, ""},
		{"hbone-refused", acc("error", "connection opened", `dst.addr=10.0.0.9:15008 direction="outbound" error="io error: Connection refused"`), false, ""},
		{"hbone-refused", acc("error", "connection complete", `dst.addr=10.0.0.9:15008 direction="outbound" dst.workload="a" error="Connection refused"`), true, "10.0.0.9"},
		{"hbone-refused", "2024-01-01T00:00:00Z ERROR access: connection complete dst.addr=10.0.0.9:15008 direction=\"outbound\" error=\"io error: Connection refused (os error 111)\"", true, "10.0.0.9"},
		// unidentified-policy-rejection (A)
		{"unidentified-policy-rejection", acc("error", "connection complete", `src.addr=10.0.0.7:5 dst.addr=10.0.0.8:80 direction="inbound" error="connection closed due to policy rejection: explicitly denied by: istio-system/istio_converted_static_strict"`), true, "10.0.0.7"},
		{"unidentified-policy-rejection", acc("error", "connection complete", `src.addr=10.0.0.7:5 src.identity="" dst.addr=10.0.0.8:80 direction="inbound" error="connection closed due to policy rejection"`), true, "10.0.0.7"},
		{"unidentified-policy-rejection", acc("error", "connection complete", `src.addr=10.0.0.7:5 src.identity="spiffe://cluster.local/ns/a/sa/b" dst.addr=10.0.0.8:80 direction="inbound" error="connection closed due to policy rejection"`), false, ""},
		{"unidentified-policy-rejection", acc("info", "connection complete", `src.addr=10.0.0.7:5 dst.addr=10.0.0.8:80 direction="inbound"`), false, ""},
		{"unidentified-policy-rejection", `{"level":"error","time":"` + ts + `","scope":"access","message":"connection complete","src.addr":"10.0.0.7:5","dst.addr":"10.0.0.8:80","direction":"inbound","error":"connection closed due to policy rejection"}`, true, "10.0.0.7"},
		// lifecycle corroborations
		{"proxy-started", `{"level":"info","time":"` + ts + `","scope":"ztunnel::inpod::statemanager","message":"pod received, starting proxy","uid":"u","name":"n","namespace":"ns"}`, true, ""},
		{"proxy-started", ts + "\tinfo\tinpod::statemanager\tpod received snapshot sent\t", false, ""},
		{"proxy-kept", ts + "\tinfo\tinpod::statemanager\tpod keep received. will not delete it when snapshot is sent\tuid=\"u\"", true, ""},
		{"proxy-start-failed", ts + "\terror\tinpod::workloadmanager:proxy{wl=ns/pod}\tfailed to start proxy\terror=\"x\"", true, ""},
		{"cni-netns-not-found", ts + "\terror\tcni-agent\tfailed to reconcile\terror=\"can't find netns for pod, this is ok if this is a newly created pod (pod not found)\" pod=\"ns/p\"", true, ""},
		{"cni-netns-not-found", ts + "\terror\tcni-agent\tfailed to reconcile\terror=\"can not find netns\"", false, ""},
	}
	sigs, err := ShippedSignatures()
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		got, err := sigs.MatchLine(c.line)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		var hit *Signal
		for j := range got {
			if got[j].Kind == c.sig {
				hit = &got[j]
			}
		}
		if (hit != nil) != c.hit {
			t.Errorf("case %d: %s fired=%v, want %v on %q", i, c.sig, hit != nil, c.hit, c.line)
			continue
		}
		if hit != nil && hit.IP != c.ip {
			t.Errorf("case %d: ip %q, want %q", i, hit.IP, c.ip)
		}
	}
}

func TestImplicatePodRef(t *testing.T) {
	sigs, err := ShippedSignatures()
	if err != nil {
		t.Fatal(err)
	}
	got, err := sigs.MatchLine("2025-03-03T03:03:03Z\terror\tcni-agent\tfailed to reconcile\terror=\"can't find netns for pod, this is ok if this is a newly created pod (pod not found)\" pod=\"monitoring/vmalertmanager-0\"")
	if err != nil || len(got) != 1 {
		t.Fatalf("got %+v, %v", got, err)
	}
	if got[0].Namespace != "monitoring" || got[0].Workload != "vmalertmanager-0" {
		t.Errorf("pod=ns/name not split: %+v", got[0])
	}
	got, _ = sigs.MatchLine("2025-03-03T03:03:03Z\terror\tinpod::workloadmanager:proxy{wl=ns1/pod1}\tfailed to start proxy\tuid=\"u\"")
	if len(got) != 1 || got[0].Namespace != "ns1" || got[0].Workload != "pod1" || got[0].UID != "u" {
		t.Errorf("span wl=ns/pod not used: %+v", got)
	}
}
