package ztlog

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const fixtures = "../testdata/ztlog"

// want is one expected signal or corroboration: "line kind ip namespace workload"
// (ip for corroborations is the uid).
type want struct {
	line      int
	kind      string
	ip        string
	namespace string
	workload  string
}

func TestFixtures(t *testing.T) {
	cases := []struct {
		file           string
		untimed        bool // pasted without timestamps: records have no time
		stats          Stats
		signals        []want
		corroborations []want
	}{
		// Real lines from public issues (testdata/ztlog/README.md).
		{file: "real/istio-53696-hbone-refused-logui.log", stats: Stats{LinesRead: 1, Records: 1},
			signals: []want{{1, "hbone-refused", "192.168.152.170", "api", "webapp-backend-7dc4469cf6-6qm6b"}}},
		{file: "real/istio-61453-hbone-refused.log", stats: Stats{LinesRead: 1, Records: 1},
			signals: []want{{1, "hbone-refused", "10.42.1.154", "opset-datastore", "cnpg-cluster-1"}}},
		{file: "real/istio-53696-policy-rejection-no-identity.log", stats: Stats{LinesRead: 1, Records: 1},
			signals: []want{{1, "unidentified-policy-rejection", "192.168.240.64", "", ""}}},
		{file: "real/istio-55533-policy-rejection-with-identity.log", stats: Stats{LinesRead: 1, Records: 1}},
		{file: "real/ztunnel-1229-networkpolicy-timeout.log", stats: Stats{LinesRead: 1, Records: 1}},
		{file: "real/ztunnel-1605-plaintext-inbound.log", stats: Stats{LinesRead: 4, Records: 4}},
		{file: "real/istio-52208-multipod-pod-received.log", stats: Stats{LinesRead: 8, Records: 8},
			corroborations: []want{{5, "proxy-started", "3336f814-b191-4b56-9742-952fc1f64cc0", "gitea", "gitea-redis-cluster-1"}}},
		{file: "real/istio-52858-retrying-workload-failed.log", stats: Stats{LinesRead: 2, Records: 2},
			corroborations: []want{{2, "proxy-start-failed", "c9df3bc2-8943-4f2d-8441-9beb07aa0a04", "", ""}}},
		{file: "real/istio-55937-stern-listeners.log", stats: Stats{LinesRead: 8, Records: 8}},
		{file: "real/kiali-6898-legacy-1.21.log", stats: Stats{LinesRead: 2, Records: 2}},
		{file: "real/ztunnel-readme-legacy-access.log", stats: Stats{LinesRead: 1, Records: 1}},
		{file: "real/cilium-41945-debug-spans.log", stats: Stats{LinesRead: 7, Records: 7}},
		{file: "real/istio-53843-cni-iptables-continuation.log", stats: Stats{LinesRead: 8, Records: 2, Continuations: 6}},
		{file: "real/ztunnel-1875-json-truncated.log", stats: Stats{LinesRead: 1, Records: 1}},
		{file: "real/istio-52208-received-netns.log", stats: Stats{LinesRead: 7, Records: 7}, corroborations: []want{
			{1, "proxy-started", "31359d33-70b3-4823-b2c5-26ae61d929a4", "", ""},
			{5, "proxy-started", "3336f814-b191-4b56-9742-952fc1f64cc0", "", ""}}},
		{file: "real/istio-io-14611-legacy-received-netns.log", stats: Stats{LinesRead: 5, Records: 5}, corroborations: []want{
			{2, "proxy-started", "1e054806-e667-4109-a5af-08b3e6ba0c42", "", ""},
			{5, "proxy-started", "1e054806-e667-4109-a5af-08b3e6ba0c42", "", ""}}},
		{file: "real/istio-52487-level-first.log", untimed: true, stats: Stats{LinesRead: 11, Records: 11}, corroborations: []want{
			{2, "proxy-started", "4a7f439b-b4c0-4f11-b6af-7d4bcb4563b0", "worker", "stackstorm-ha-st2actionrunner-5d9fc664c7-fr49p"},
			{5, "proxy-start-failed", "", "", ""}}},
		{file: "real/istio-50072-cni-iptables-restore-failed.log", stats: Stats{LinesRead: 4, Records: 4}, corroborations: []want{
			{2, "cni-iptables-failed", "", "", ""},
			{3, "cni-add-failed", "", "default", "details-v1-698d88b-n42tz"},
			{4, "cni-add-failed", "", "", ""}}},
		{file: "real/istio-53843-cni-no-ztunnel-connection.log", stats: Stats{LinesRead: 6, Records: 6}, corroborations: []want{
			{1, "cni-add-failed", "", "", ""},
			{3, "cni-add-failed", "", "unruly-bacon", "portfolios-web-5dbc6d67f-dxqn6"}}},

		// Own variants, one per ISTIO-FACTS §6 pitfall.
		{file: "variants/prefixes.log", stats: Stats{LinesRead: 6, Records: 6}, signals: []want{
			{1, "hbone-refused", "10.42.1.154", "opset-datastore", "cnpg-cluster-1"},
			{2, "hbone-refused", "10.42.1.154", "opset-datastore", "cnpg-cluster-1"},
			{3, "hbone-refused", "10.42.1.154", "opset-datastore", "cnpg-cluster-1"},
			{4, "hbone-refused", "10.42.1.154", "opset-datastore", "cnpg-cluster-1"},
			{5, "hbone-refused", "10.42.1.154", "opset-datastore", "cnpg-cluster-1"},
			{6, "hbone-refused", "10.42.1.154", "opset-datastore", "cnpg-cluster-1"}}},
		{file: "variants/tabs-as-spaces.log", stats: Stats{LinesRead: 4, Records: 4}, signals: []want{
			{1, "hbone-refused", "10.42.1.154", "opset-datastore", "cnpg-cluster-1"},
			{2, "hbone-refused", "10.42.1.154", "opset-datastore", "cnpg-cluster-1"},
			{3, "hbone-refused", "fd00:10:244::9", "default", "httpbin-5f5b8c6b7d-x2x4q"},
			{4, "unidentified-policy-rejection", "192.168.240.64", "", ""}}},
		{file: "variants/json.log", stats: Stats{LinesRead: 8, Records: 8, Malformed: 1}, signals: []want{
			{1, "hbone-refused", "10.42.1.154", "opset-datastore", "cnpg-cluster-1"},
			{2, "hbone-refused", "10.42.1.154", "opset-datastore", "cnpg-cluster-1"},
			{3, "unidentified-policy-rejection", "10.244.2.14", "shop", "legacy-client-6d9f7c8b5-q2w3e"},
			{8, "hbone-refused", "10.42.1.154", "opset-datastore", "cnpg-cluster-1"}},
			corroborations: []want{{4, "proxy-started", "3336f814-b191-4b56-9742-952fc1f64cc0", "gitea", "gitea-redis-cluster-1"}}},
		{file: "variants/unquoted-1.22.0.log", stats: Stats{LinesRead: 2, Records: 2}, signals: []want{
			{1, "hbone-refused", "10.244.1.9", "default", "productpage-v1-d5789fdfb-c5w2c"},
			{2, "unidentified-policy-rejection", "10.244.7.7", "", ""}}},
		{file: "variants/ipv6.log", stats: Stats{LinesRead: 2, Records: 2}, signals: []want{
			{1, "hbone-refused", "fd00:10:244::9", "default", "httpbin-5f5b8c6b7d-x2x4q"},
			{2, "unidentified-policy-rejection", "fd00:10:244::7", "", ""}}},
		{file: "variants/ansi-legacy.log", stats: Stats{LinesRead: 2, Records: 2}, signals: []want{
			{2, "hbone-refused", "10.244.0.42", "default", "echo-7c9d8b6f5-abcde"}}},
		{file: "variants/invalid-utf8.log", stats: Stats{LinesRead: 3, Records: 2, Continuations: 1}, signals: []want{
			{3, "hbone-refused", "10.0.0.3", "shop", "web-\uFFFD"}}},
		{file: "variants/redacted.log", stats: Stats{LinesRead: 3, Records: 3}, signals: []want{
			{1, "hbone-refused", "", "prod", "api-0"},
			{2, "unidentified-policy-rejection", "", "", ""},
			{3, "hbone-refused", "", "", ""}}},
		{file: "variants/startup-yaml-continuation.log", stats: Stats{LinesRead: 9, Records: 2, Continuations: 7}},
		{file: "variants/false-positives.log", stats: Stats{LinesRead: 9, Records: 9}},
		{file: "variants/lifecycle.log", stats: Stats{LinesRead: 7, Records: 7}, corroborations: []want{
			{1, "cni-netns-not-found", "", "monitoring", "vmalertmanager-0"},
			{2, "proxy-kept", "9c1b7a52-0f3e-4c1a-8d2e-5b6a7c8d9e0f", "", ""},
			{3, "proxy-start-failed", "9c1b7a52-0f3e-4c1a-8d2e-5b6a7c8d9e0f", "", ""},
			{4, "proxy-started", "3336f814-b191-4b56-9742-952fc1f64cc0", "gitea", "gitea-redis-cluster-1"}}},
		{file: "variants/level-first.log", untimed: true, stats: Stats{LinesRead: 9, Records: 4, Continuations: 5}, signals: []want{
			{2, "hbone-refused", "10.42.1.154", "opset-datastore", "cnpg-cluster-1"},
			{3, "unidentified-policy-rejection", "192.168.240.64", "", ""}},
			corroborations: []want{{1, "proxy-started", "1e054806-e667-4109-a5af-08b3e6ba0c42", "", ""}}},
		{file: "variants/cr-only.log", stats: Stats{LinesRead: 3, Records: 3}, signals: []want{
			{1, "unidentified-policy-rejection", "192.168.240.64", "", ""},
			{2, "hbone-refused", "192.168.152.170", "api", "webapp-backend-7dc4469cf6-6qm6b"}},
			corroborations: []want{{3, "proxy-started", "3336f814-b191-4b56-9742-952fc1f64cc0", "gitea", "gitea-redis-cluster-1"}}},
		{file: "variants/mixed.log", stats: Stats{LinesRead: 8, Records: 7, Continuations: 1}, signals: []want{
			{3, "unidentified-policy-rejection", "192.168.240.64", "", ""},
			{5, "hbone-refused", "192.168.152.170", "api", "webapp-backend-7dc4469cf6-6qm6b"},
			{7, "unidentified-policy-rejection", "192.168.240.64", "", ""}},
			corroborations: []want{{6, "proxy-started", "3336f814-b191-4b56-9742-952fc1f64cc0", "gitea", "gitea-redis-cluster-1"}}},
	}
	a, err := NewAnalyzer()
	if err != nil {
		t.Fatal(err)
	}
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.file] = true
		t.Run(c.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join(fixtures, c.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			res, err := a.Analyze(context.Background(), c.file, f)
			if err != nil {
				t.Fatal(err)
			}
			if res.Stats != c.stats {
				t.Errorf("stats = %+v, want %+v", res.Stats, c.stats)
			}
			check := func(what string, got []Signal, wants []want, corro bool) {
				var g []want
				for _, s := range got {
					if s.File != c.file {
						t.Errorf("%s file = %q", what, s.File)
					}
					if s.Time.IsZero() != c.untimed {
						t.Errorf("%s on line %d: time %v (untimed fixture: %v)", what, s.Line, s.Time, c.untimed)
					}
					id := s.IP
					if corro {
						id = s.UID
					}
					g = append(g, want{s.Line, s.Kind, id, s.Namespace, s.Workload})
				}
				if !reflect.DeepEqual(g, wants) {
					t.Errorf("%s:\n got %+v\nwant %+v", what, g, wants)
				}
			}
			check("signals", res.Signals, c.signals, false)
			check("corroborations", res.Corroborations, c.corroborations, true)
			for _, s := range res.Signals {
				if s.Class != ClassOrphan || (s.Side != SideSrc && s.Side != SideDst) {
					t.Errorf("signal %+v has class %s side %s", s, s.Class, s.Side)
				}
			}
			for _, s := range res.Corroborations {
				if s.Class != ClassCorroboration || s.Side != SidePod {
					t.Errorf("corroboration %+v has class %s side %s", s, s.Class, s.Side)
				}
			}
		})
	}
	all, _ := filepath.Glob(filepath.Join(fixtures, "*", "*.log"))
	for _, p := range all {
		rel, _ := filepath.Rel(fixtures, p)
		if !covered[filepath.ToSlash(rel)] {
			t.Errorf("fixture %s has no expectations in TestFixtures", rel)
		}
	}
}

func TestWindow(t *testing.T) {
	f := func(since, until string) (*Result, error) {
		parse := func(s string) time.Time {
			if s == "" {
				return time.Time{}
			}
			tm, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				t.Fatal(err)
			}
			return tm
		}
		a, err := NewAnalyzer(WithWindow(parse(since), parse(until)))
		if err != nil {
			t.Fatal(err)
		}
		fh, err := os.Open(filepath.Join(fixtures, "variants/mixed.log"))
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		return a.Analyze(context.Background(), "mixed.log", fh)
	}
	cases := []struct {
		since, until string
		lines        []int
		outside      int
	}{
		{"", "", []int{3, 5, 7}, 0},
		{"2024-10-30T11:45:00Z", "", []int{3}, 4},
		{"", "2024-10-30T11:45:00Z", []int{5, 7}, 3},
		{"2024-10-30T11:40:00.000001Z", "2024-10-30T11:49:40.421833Z", []int{3, 7}, 5}, // bounds are inclusive
		{"2030-01-01T00:00:00Z", "", nil, 7},
	}
	for _, c := range cases {
		res, err := f(c.since, c.until)
		if err != nil {
			t.Fatal(err)
		}
		var lines []int
		for _, s := range res.Signals {
			lines = append(lines, s.Line)
		}
		if !reflect.DeepEqual(lines, c.lines) || res.OutsideWindow != c.outside || res.Records+res.OutsideWindow != 7 {
			t.Errorf("window [%s, %s]: signals on %v, %d outside, %d records; want %v, %d outside", c.since, c.until, lines, res.OutsideWindow, res.Records, c.lines, c.outside)
		}
	}
}

func TestCandidates(t *testing.T) {
	ts := func(s string) time.Time {
		tm, _ := time.Parse(time.RFC3339, s)
		return tm
	}
	res := &Result{Signals: []Signal{
		{Kind: "unidentified-policy-rejection", Side: SideSrc, IP: "10.0.0.1", Addr: "10.0.0.1:5", Time: ts("2025-01-01T10:00:00Z")},
		{Kind: "hbone-refused", Side: SideDst, IP: "10.0.0.2", Addr: "10.0.0.2:15008", Namespace: "b", Workload: "web-0", Time: ts("2025-01-01T09:00:00Z")},
		{Kind: "hbone-refused", Side: SideDst, IP: "10.0.0.1", Addr: "10.0.0.1:15008", Namespace: "a", Workload: "api-0", Time: ts("2025-01-01T08:00:00Z")},
		{Kind: "unidentified-policy-rejection", Side: SideSrc, IP: "10.0.0.1", Addr: "10.0.0.1:6", Time: ts("2025-01-01T12:00:00Z")},
		{Kind: "hbone-refused", Side: SideDst, Addr: "10.xx.xx.xx:15008", Time: ts("2025-01-01T11:00:00Z")},
	}}
	got := res.Candidates()
	wantC := []Candidate{
		{IP: "10.0.0.1", Namespace: "a", Workload: "api-0", Kinds: []string{"unidentified-policy-rejection", "hbone-refused"}, Sides: []Side{SideSrc, SideDst},
			Count: 3, FirstSeen: ts("2025-01-01T08:00:00Z"), LastSeen: ts("2025-01-01T12:00:00Z")},
		{IP: "10.0.0.2", Namespace: "b", Workload: "web-0", Kinds: []string{"hbone-refused"}, Sides: []Side{SideDst},
			Count: 1, FirstSeen: ts("2025-01-01T09:00:00Z"), LastSeen: ts("2025-01-01T09:00:00Z")},
		{IP: "10.xx.xx.xx", Kinds: []string{"hbone-refused"}, Sides: []Side{SideDst},
			Count: 1, FirstSeen: ts("2025-01-01T11:00:00Z"), LastSeen: ts("2025-01-01T11:00:00Z")},
	}
	if !reflect.DeepEqual(got, wantC) {
		t.Errorf("Candidates:\n got %+v\nwant %+v", got, wantC)
	}

	var merged Result
	merged.Merge(res)
	merged.Merge(&Result{Stats: Stats{LinesRead: 2, Records: 1}, Corroborations: []Signal{{Kind: "proxy-started"}}})
	if len(merged.Signals) != 5 || len(merged.Corroborations) != 1 || merged.LinesRead != 2 || merged.Records != 1 {
		t.Errorf("Merge: %+v", merged)
	}
}

// TestSignaturesAreData shows the table drives matching: a custom table with one new
// signature finds what the shipped one does not, with no code change.
func TestSignaturesAreData(t *testing.T) {
	custom := `{"signatures":[{"name":"dns-bind-failed","class":"corroboration","side":"pod",
	  "description":"d","source":"test","message":{"prefix":["retrying workload failed"]},
	  "conditions":[{"field":"uid","present":true}],"implicate":{"uid":["uid"]},
	  "examples":{"match":[{"line":"x"}],"noMatch":[{"line":"y"}]}}]}`
	sigs, err := LoadSignatures(strings.NewReader(custom))
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAnalyzer(WithSignatures(sigs))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(fixtures, "real/istio-52858-retrying-workload-failed.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := a.Analyze(context.Background(), "f", f)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Corroborations) != 1 || res.Corroborations[0].Kind != "dns-bind-failed" || res.Corroborations[0].UID != "c9df3bc2-8943-4f2d-8441-9beb07aa0a04" {
		t.Fatalf("custom table: %+v", res.Corroborations)
	}
}
