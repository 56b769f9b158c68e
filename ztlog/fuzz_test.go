package ztlog

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
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
		want := bytes.Count(data, []byte{'\n'})
		if len(data) > 0 && data[len(data)-1] != '\n' {
			want++
		}
		if st.LinesRead != want {
			t.Fatalf("LinesRead = %d, want %d", st.LinesRead, want)
		}
	})
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
