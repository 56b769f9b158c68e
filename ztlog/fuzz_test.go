package ztlog

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzSeeds adds every fixture line and every shipped example as a seed.
func fuzzSeeds(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join(fixtures, "*", "*.log"))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		for _, l := range bytes.Split(b, []byte{'\n'}) {
			f.Add(l)
		}
	}
	sigs, err := ShippedSignatures()
	if err != nil {
		f.Fatal(err)
	}
	for _, sp := range sigs.Specs() {
		for _, ex := range append(sp.Examples.Match, sp.Examples.NoMatch...) {
			f.Add([]byte(ex.Line))
		}
	}
}

// FuzzScanner feeds arbitrary streams to the tokenizer: it must not panic, must account
// for every line, and every record it returns must hold valid UTF-8.
func FuzzScanner(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		sc := NewScanner(bytes.NewReader(data), WithMaxLineBytes(512))
		n := 0
		for sc.Scan() {
			n++
			r := sc.Record()
			if r.Line < 1 || r.Line > sc.Stats().LinesRead {
				t.Fatalf("record line %d outside 1..%d", r.Line, sc.Stats().LinesRead)
			}
			for _, s := range append([]string{r.Target, r.Message}, fieldStrings(r)...) {
				if !utf8.ValidString(s) {
					t.Fatalf("invalid UTF-8 in record: %q", s)
				}
			}
		}
		if sc.Err() != nil {
			t.Fatalf("Err on an in-memory reader: %v", sc.Err())
		}
		st := sc.Stats()
		if st.Records != n || st.LinesRead != st.Records+st.Continuations+st.LongLines+st.Malformed {
			t.Fatalf("lines not accounted for: %d records scanned, stats %+v", n, st)
		}
		if want := countLines(data); st.LinesRead != want {
			t.Fatalf("LinesRead = %d, want %d", st.LinesRead, want)
		}
	})
}

// countLines counts lines the way a reader that ends a line at "\n", "\r\n" or a lone
// "\r" must: one per ending, plus a last line without one.
func countLines(data []byte) int {
	n := 0
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '\n':
			n++
		case '\r':
			n++
			if i+1 < len(data) && data[i+1] == '\n' {
				i++
			}
		}
	}
	if k := len(data); k > 0 && data[k-1] != '\n' && data[k-1] != '\r' {
		n++
	}
	return n
}

func fieldStrings(r *Record) []string {
	var out []string
	for _, f := range r.Fields {
		out = append(out, f.Key, f.Value)
	}
	for _, s := range r.Spans {
		out = append(out, s.Name)
		for _, f := range s.Fields {
			out = append(out, f.Key, f.Value)
		}
	}
	return out
}

// FuzzAnalyze runs the signature matcher on arbitrary input. Beyond not panicking: a
// signal is only ever reported on a line that has a record header, its line number is
// in range, and the same input read through the Scanner has a record on that line.
func FuzzAnalyze(f *testing.F) {
	fuzzSeeds(f)
	a, err := NewAnalyzer(WithMaxLineBytes(1024))
	if err != nil {
		f.Fatal(err)
	}
	bounded, err := NewAnalyzer(WithMaxLineBytes(1024), WithMaxSignals(2))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := a.Analyze(context.Background(), "fuzz", bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		lines := map[int]bool{}
		sc := NewScanner(bytes.NewReader(data), WithMaxLineBytes(1024))
		for sc.Scan() {
			lines[sc.Record().Line] = true
		}
		for _, s := range append(res.Signals, res.Corroborations...) {
			if s.Line < 1 || s.Line > res.LinesRead {
				t.Fatalf("signal on line %d of %d", s.Line, res.LinesRead)
			}
			if !lines[s.Line] {
				t.Fatalf("signal %s on line %d, which is not a record", s.Kind, s.Line)
			}
			if s.Class == ClassOrphan && s.Side != SideSrc && s.Side != SideDst {
				t.Fatalf("orphan signal with side %q", s.Side)
			}
		}
		_ = res.Candidates()

		// The bound on kept signals loses none of the counts.
		small, err := bounded.Analyze(context.Background(), "fuzz", bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if len(small.Signals) > 2 || len(small.Corroborations) > 2 || len(small.Candidates()) > 2 {
			t.Fatalf("bound of 2 exceeded: %d signals, %d corroborations, %d candidates", len(small.Signals), len(small.Corroborations), len(small.Candidates()))
		}
		if small.TotalSignals() != res.TotalSignals() || len(small.Corroborations)+small.CorroborationsOmitted != len(res.Corroborations)+res.CorroborationsOmitted {
			t.Fatalf("bounded result lost counts: %d/%d signals, %d+%d/%d corroborations", small.TotalSignals(), res.TotalSignals(),
				len(small.Corroborations), small.CorroborationsOmitted, len(res.Corroborations))
		}
		counted := small.CandidatesOmitted()
		for _, c := range small.Candidates() {
			counted += c.Count
		}
		if counted != res.TotalSignals() {
			t.Fatalf("candidates count %d signals, want %d", counted, res.TotalSignals())
		}
	})
}

// FuzzSniff classifies arbitrary leading bytes: never panics, looks at sniffLen bytes at
// most, and recognises the magic numbers whatever follows them.
func FuzzSniff(f *testing.F) {
	f.Add([]byte("2024-10-29T17:39:45.936188Z\tinfo\tproxy\tstarting\n"))
	f.Add([]byte{0x1f, 0x8b, 8, 0})
	f.Add([]byte{0xff, 0xfe, '2', 0, '0', 0})
	f.Add([]byte("2\x000\x002\x004\x00-\x001\x00"))
	f.Add([]byte{0, 1, 2, 3, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		c := Sniff(b)
		if len(b) > sniffLen && Sniff(b[:sniffLen]) != c {
			t.Fatalf("Sniff looked past %d bytes", sniffLen)
		}
		if bytes.HasPrefix(b, []byte{0x1f, 0x8b}) && c != ContentGzip {
			t.Fatalf("gzip magic classified %s", c)
		}
		if c == ContentText && bytes.IndexByte(b[:min(len(b), sniffLen)], 0) >= 0 {
			t.Fatalf("text with a NUL byte")
		}
		if w := contentWarning("f", c); (w == nil) != (c == ContentText) {
			t.Fatalf("warning %v for %s", w, c)
		}
	})
}

// FuzzFromMessage: what is read out of a message is a part of it, shaped as promised.
func FuzzFromMessage(f *testing.F) {
	f.Add(`pod WorkloadUid("1e054806-e667-4109-a5af-08b3e6ba0c42") received netns, starting proxy`)
	f.Add(`failed to update POD inpod: default/details-v1-698d88b-n42tz exit status 1`)
	f.Add(`pod: unruly-bacon/portfolios-web-5dbc6d67f-dxqn6 was not enrolled`)
	f.Add(`/host/opt/cni/bin a/ /b x/-y 0123456789abcdef0123456789abcdef01234`)
	f.Fuzz(func(t *testing.T, msg string) {
		if u := uidIn(msg); u != "" && (len(u) != 36 || !isUUID(u) || !strings.Contains(msg, u)) {
			t.Fatalf("uidIn(%q) = %q", msg, u)
		}
		ns, name := podIn(msg)
		if (ns == "") != (name == "") {
			t.Fatalf("podIn(%q) = %q, %q", msg, ns, name)
		}
		if ns != "" && (!strings.Contains(msg, ns+"/"+name) || !isDNSLabel(ns, 63) || strings.ContainsAny(name, " /:")) {
			t.Fatalf("podIn(%q) = %q, %q", msg, ns, name)
		}
	})
}

// FuzzFields checks the k=v tokenizer and the Rust Debug unquoting on arbitrary text.
func FuzzFields(f *testing.F) {
	f.Add(`src.addr=10.0.0.1:1 src.workload="a \"b\" \u{e9}" error=io error: x y=z`)
	f.Add(`a="unterminated \`)
	f.Add(`k=\u{110000} x="\u{ZZ}" y="\u{}"`)
	f.Fuzz(func(t *testing.T, s string) {
		for _, fl := range parseFields(nil, []byte(s)) {
			if len(fl.key) == 0 || !isKeyStart(fl.key[0]) {
				t.Fatalf("bad key %q", fl.key)
			}
			for _, c := range fl.key {
				if !isKeyByte(c) {
					t.Fatalf("bad key %q", fl.key)
				}
			}
			_ = fieldString(fl)
		}
		_ = unquoteDebug(nil, []byte(s))
		_ = parseSpans([]byte(s))
	})
}
