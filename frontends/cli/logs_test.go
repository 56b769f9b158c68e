package cli_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/meshmedic/meshmedic/frontends/cli"
)

const logsFixtures = "../../testdata/ztlog"

// logsExit maps an error the way frontends/meshmedic's main does.
func logsExit(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, cli.ErrFindings):
		return 1
	default:
		return 2
	}
}

func logsFixture(name string) string { return filepath.Join(logsFixtures, name) }

// The DESIGN.md contract for `logs analyze -o json`, decoded strictly: these keys must
// exist with these types (more may be added).
type contractSignal struct {
	File      *string `json:"file"`
	Line      *int    `json:"line"`
	Kind      *string `json:"kind"`
	Side      *string `json:"side"`
	IP        *string `json:"ip"`
	Namespace *string `json:"namespace"`
	Workload  *string `json:"workload"`
}

type contractOutput struct {
	LinesRead      *int             `json:"linesRead"`
	Records        *int             `json:"records"`
	Signals        []contractSignal `json:"signals"`
	Corroborations []map[string]any `json:"corroborations"`
	Candidates     []struct {
		IP        string   `json:"ip"`
		Namespace string   `json:"namespace"`
		Workload  string   `json:"workload"`
		Count     int      `json:"count"`
		FirstSeen string   `json:"firstSeen"`
		LastSeen  string   `json:"lastSeen"`
		Kinds     []string `json:"kinds"`
	} `json:"candidates"`
}

func TestLogsAnalyzeJSONContract(t *testing.T) {
	mixed := logsFixture("variants/mixed.log")
	out, stderr, err := run(t, "", "logs", "analyze", "-o", "json", mixed)
	if code := logsExit(err); code != 1 {
		t.Fatalf("exit %d (err %v), want 1: orphan signals found", code, err)
	}
	if stderr != "" {
		t.Errorf("unexpected stderr: %q", stderr)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, out)
	}
	var got contractOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if got.LinesRead == nil || *got.LinesRead != 8 || got.Records == nil || *got.Records != 7 {
		t.Errorf("linesRead/records = %v/%v, want 8/7", got.LinesRead, got.Records)
	}
	type sig struct {
		File, Kind, Side, IP, Namespace, Workload string
		Line                                      int
	}
	var sigs []sig
	for i, s := range got.Signals {
		if s.File == nil || s.Line == nil || s.Kind == nil || s.Side == nil || s.IP == nil || s.Namespace == nil || s.Workload == nil {
			t.Fatalf("signal %d misses a contract key: %s", i, out)
		}
		sigs = append(sigs, sig{*s.File, *s.Kind, *s.Side, *s.IP, *s.Namespace, *s.Workload, *s.Line})
	}
	want := []sig{
		{mixed, "unidentified-policy-rejection", "src", "192.168.240.64", "", "", 3},
		{mixed, "hbone-refused", "dst", "192.168.152.170", "api", "webapp-backend-7dc4469cf6-6qm6b", 5},
		{mixed, "unidentified-policy-rejection", "src", "192.168.240.64", "", "", 7},
	}
	if !reflect.DeepEqual(sigs, want) {
		t.Errorf("signals:\n got %+v\nwant %+v", sigs, want)
	}
	// namespace/workload are empty strings, not absent, when the log does not name them.
	if !strings.Contains(out, `"namespace": ""`) || !strings.Contains(out, `"workload": ""`) {
		t.Errorf("empty namespace/workload must be written as \"\":\n%s", out)
	}
	if len(got.Corroborations) != 1 || got.Corroborations[0]["kind"] != "proxy-started" || got.Corroborations[0]["line"] != float64(6) {
		t.Errorf("corroborations = %+v", got.Corroborations)
	}
	if len(got.Candidates) != 2 {
		t.Fatalf("candidates = %+v", got.Candidates)
	}
	c := got.Candidates[0]
	if c.IP != "192.168.240.64" || c.Count != 2 || c.FirstSeen != "2024-10-30T11:40:00.000001Z" || c.LastSeen != "2024-10-30T11:49:40.421833Z" {
		t.Errorf("first candidate = %+v (newest-first paste must still give first<last)", c)
	}
}

func TestLogsAnalyzeExitCodes(t *testing.T) {
	fp := logsFixture("variants/false-positives.log")
	lifecycle := logsFixture("variants/lifecycle.log")
	dir := t.TempDir()
	unreadable := filepath.Join(dir, "locked.log")
	if err := os.WriteFile(unreadable, []byte("x\n"), 0o000); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		stdin    string
		args     []string
		code     int
		errHas   string
		outEmpty bool
	}{
		{name: "no signals", args: []string{fp}, code: 0},
		{name: "corroborations alone are not findings", args: []string{"-o", "json", lifecycle}, code: 0},
		{name: "signals", args: []string{logsFixture("real/istio-61453-hbone-refused.log")}, code: 1},
		{name: "missing file named", args: []string{fp, filepath.Join(dir, "nope.log")}, code: 2, errHas: "nope.log", outEmpty: true},
		{name: "directory", args: []string{dir}, code: 2, errHas: dir, outEmpty: true},
		{name: "bad output", args: []string{"-o", "yaml", fp}, code: 2, errHas: "--output", outEmpty: true},
		{name: "bad since", args: []string{"--since", "yesterday", fp}, code: 2, errHas: "--since", outEmpty: true},
		{name: "negative duration", args: []string{"--until", "-5m", fp}, code: 2, errHas: "--until", outEmpty: true},
		{name: "until before since", args: []string{"--since", "2025-01-02T00:00:00Z", "--until", "2025-01-01T00:00:00Z", fp}, code: 2, errHas: "before", outEmpty: true},
		{name: "unknown flag", args: []string{"--bogus", fp}, code: 2, outEmpty: true},
		{name: "stdin by default", stdin: "2024-10-30T11:49:40.421833Z error access connection complete src.addr=192.168.240.64:55909 dst.addr=192.168.14.30:5050 direction=\"inbound\" error=\"connection closed due to policy rejection\"\n", code: 1},
		{name: "stdin as -", stdin: "nothing to see\n", args: []string{"-"}, code: 0},
	}
	if os.Geteuid() != 0 { // root reads mode-000 files
		cases = append(cases, struct {
			name     string
			stdin    string
			args     []string
			code     int
			errHas   string
			outEmpty bool
		}{name: "unreadable file named", args: []string{unreadable}, code: 2, errHas: "locked.log", outEmpty: true})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, _, err := run(t, c.stdin, append([]string{"logs", "analyze"}, c.args...)...)
			if code := logsExit(err); code != c.code {
				t.Fatalf("exit %d (err %v), want %d", code, err, c.code)
			}
			if c.code == 1 {
				var ue *cli.UsageError
				if errors.As(err, &ue) {
					t.Errorf("findings reported as a usage error: %v", err)
				}
			}
			if c.errHas != "" && (err == nil || !strings.Contains(err.Error(), c.errHas)) {
				t.Errorf("error %v does not name %q", err, c.errHas)
			}
			if c.outEmpty && out != "" {
				t.Errorf("stdout must stay empty on an error, got %q", out)
			}
		})
	}
}

func TestLogsAnalyzeStdinFileName(t *testing.T) {
	b, err := os.ReadFile(logsFixture("variants/mixed.log"))
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, string(b), "logs", "analyze", "-o", "json", "-")
	if logsExit(err) != 1 {
		t.Fatalf("err = %v", err)
	}
	var got struct {
		Signals []struct {
			File string `json:"file"`
			Line int    `json:"line"`
		} `json:"signals"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Signals) != 3 || got.Signals[0].File != "-" || got.Signals[0].Line != 3 {
		t.Errorf("stdin signals = %+v, want file \"-\"", got.Signals)
	}
}

func TestLogsAnalyzeLineNumbersPerFile(t *testing.T) {
	a, b := logsFixture("real/istio-61453-hbone-refused.log"), logsFixture("variants/mixed.log")
	out, _, err := run(t, "", "logs", "analyze", "-o", "json", a, b)
	if logsExit(err) != 1 {
		t.Fatalf("err = %v", err)
	}
	var got struct {
		LinesRead int `json:"linesRead"`
		Signals   []struct {
			File string `json:"file"`
			Line int    `json:"line"`
		} `json:"signals"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if got.LinesRead != 9 || len(got.Signals) != 4 || got.Signals[0].File != a || got.Signals[0].Line != 1 || got.Signals[1].File != b || got.Signals[1].Line != 3 {
		t.Errorf("got %+v", got)
	}
}

func TestLogsAnalyzeWindow(t *testing.T) {
	mixed := logsFixture("variants/mixed.log")
	out, _, err := run(t, "", "logs", "analyze", "-o", "json", "--since", "2024-10-30T11:45:00Z", "--until", "2024-10-30T12:00:00Z", mixed)
	if logsExit(err) != 1 {
		t.Fatalf("err = %v", err)
	}
	var got struct {
		Records       int `json:"records"`
		OutsideWindow int `json:"outsideWindow"`
		Signals       []struct {
			Line int `json:"line"`
		} `json:"signals"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Signals) != 1 || got.Signals[0].Line != 3 || got.Records != 2 || got.OutsideWindow != 5 {
		t.Errorf("got %+v", got)
	}
	// A duration means "now minus": these 2024 records are all older than 15m ago.
	_, _, err = run(t, "", "logs", "analyze", "--since", "15m", mixed)
	if logsExit(err) != 0 {
		t.Errorf("--since 15m on old logs: err = %v, want exit 0", err)
	}
}

func TestLogsAnalyzeTable(t *testing.T) {
	out, stderr, err := run(t, "", "logs", "analyze", logsFixture("variants/mixed.log"))
	if logsExit(err) != 1 {
		t.Fatalf("err = %v", err)
	}
	for _, wantLine := range []string{
		"CANDIDATE IP", "192.168.240.64", "webapp-backend-7dc4469cf6-6qm6b",
		"mixed.log:5", "hbone-refused", "proxy-started",
		"3 orphan signal(s), 2 candidate pod(s), 1 corroboration(s) in 8 line(s) (7 records, 1 continuation line(s))",
	} {
		if !strings.Contains(out, wantLine) {
			t.Errorf("table output lacks %q:\n%s", wantLine, out)
		}
	}
	if stderr != "" {
		t.Errorf("stderr = %q", stderr)
	}
	out, _, err = run(t, "", "logs", "analyze", logsFixture("variants/false-positives.log"))
	if err != nil || !strings.HasPrefix(out, "0 orphan signal(s)") {
		t.Errorf("clean run: err %v, out %q", err, out)
	}
}

func TestLogsAnalyzeLongLineWarning(t *testing.T) {
	long := strings.Repeat("x", 300<<10)
	out, stderr, err := run(t, long+"\n", "logs", "analyze", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "skipped 1 line") || !strings.Contains(out, `"longLines": 1`) {
		t.Errorf("stderr %q, out %s", stderr, out)
	}
}
