package ztlog

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"unicode/utf16"
)

// oneByteReader hands out its input one byte per Read: every line ending falls on a
// buffer boundary at some point.
type oneByteReader struct{ b []byte }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	p[0] = r.b[0]
	r.b = r.b[1:]
	return 1, nil
}

// CR-only, CRLF and LF endings, mixed, split across reads in every possible place, and
// around a skipped long line, give the same lines.
func TestCREndings(t *testing.T) {
	recs := []string{sigB, "2024-10-30T11:50:00.000001Z\tinfo\tztunnel\tstarting", sigB}
	for name, in := range map[string]string{
		"CR only":           strings.Join(recs, "\r") + "\r",
		"CR only, no final": strings.Join(recs, "\r"),
		"CRLF":              strings.Join(recs, "\r\n") + "\r\n",
		"LF":                strings.Join(recs, "\n") + "\n",
		"mixed":             recs[0] + "\r" + recs[1] + "\r\n" + recs[2] + "\n",
	} {
		for _, r := range map[string]func() io.Reader{
			"whole":        func() io.Reader { return strings.NewReader(in) },
			"byte by byte": func() io.Reader { return &oneByteReader{b: []byte(in)} },
		} {
			sc := NewScanner(r())
			var lines []int
			for sc.Scan() {
				lines = append(lines, sc.Record().Line)
				if v, _ := sc.Record().Get("error"); strings.ContainsAny(v, "\r\n") {
					t.Errorf("%s: line ending leaked into a field: %q", name, v)
				}
			}
			if st := sc.Stats(); fmt.Sprint(lines) != "[1 2 3]" || st.LinesRead != 3 || st.Continuations != 0 {
				t.Errorf("%s: records on lines %v, stats %+v", name, lines, st)
			}
		}
	}
	// A CR-only stream longer than the buffer: many lines per buffer, none lost, no line
	// treated as over-long.
	var b strings.Builder
	for i := 0; i < 5000; i++ {
		b.WriteString(sigB)
		b.WriteByte('\r')
	}
	a, _ := NewAnalyzer(WithMaxLineBytes(4096))
	res, err := a.Analyze(context.Background(), "cr.log", strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if res.LinesRead != 5000 || res.Records != 5000 || res.LongLines != 0 || res.TotalSignals() != 5000 {
		t.Errorf("CR-only stream: %+v, %d signals", res.Stats, res.TotalSignals())
	}
	// A long line ended by CR, then CRLF split by the buffer boundary.
	long := strings.Repeat("x", 5000)
	res, err = a.Analyze(context.Background(), "long.log", &oneByteReader{b: []byte(sigB + "\r" + long + "\r\n" + sigB + "\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	if res.LinesRead != 3 || res.LongLines != 1 || res.Records != 2 || len(res.Signals) != 2 || res.Signals[1].Line != 3 {
		t.Errorf("long line between CR endings: %+v, signals %+v", res.Stats, res.Signals)
	}
}

func utf16le(s string) []byte {
	var b bytes.Buffer
	for _, u := range utf16.Encode([]rune(s)) {
		b.WriteByte(byte(u))
		b.WriteByte(byte(u >> 8))
	}
	return b.Bytes()
}

// Input that is not text is named in a warning instead of giving 0 signals silently.
func TestNonTextInputWarns(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(sigB + "\n"))
	_ = zw.Close()
	bom := append([]byte{0xff, 0xfe}, utf16le(sigB+"\r\n")...)
	bin := make([]byte, 4096)
	for i := range bin {
		bin[i] = byte(i * 7)
	}
	a, _ := NewAnalyzer()
	for _, c := range []struct {
		name string
		in   []byte
		want Content
	}{
		{"gzip", gz.Bytes(), ContentGzip},
		{"UTF-16LE with BOM (PowerShell >)", bom, ContentUTF16},
		{"UTF-16LE without BOM", utf16le(sigB + "\n" + sigB + "\n"), ContentUTF16},
		{"binary", bin, ContentBinary},
		{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0}, ContentZstd},
		{"text", []byte(sigB + "\n"), ContentText},
		{"invalid UTF-8 is still text", []byte("2024-10-29T17:39:45.936188Z\tinfo\tproxy\tcaf\xe9 \xff\xfe\n"), ContentText},
		{"empty", nil, ContentText},
	} {
		if got := Sniff(c.in); got != c.want {
			t.Errorf("%s: Sniff = %s, want %s", c.name, got, c.want)
		}
		res, err := a.Analyze(context.Background(), "in.log", bytes.NewReader(c.in))
		if err != nil {
			t.Fatal(err)
		}
		if c.want == ContentText {
			if len(res.Warnings) != 0 {
				t.Errorf("%s: warnings %+v", c.name, res.Warnings)
			}
			continue
		}
		if len(res.Warnings) != 1 || res.Warnings[0].Content != c.want || res.Warnings[0].File != "in.log" ||
			!strings.Contains(res.Warnings[0].Message, "not text") {
			t.Errorf("%s: warnings %+v", c.name, res.Warnings)
		}
	}
}

// distinctSignals writes n signal B lines, each implicating its own pod IP.
func distinctSignals(w io.Writer, n int) {
	for i := 0; i < n; i++ {
		fmt.Fprintf(w, "2026-08-26T05:11:08.729972Z\terror\taccess\tconnection complete\tsrc.addr=10.42.1.122:34286 dst.addr=10.%d.%d.%d:15008 dst.workload=\"w-%d\" dst.namespace=\"ns\" direction=\"outbound\" error=\"io error: Connection refused (os error 111)\"\n",
			i>>16&0xff, i>>8&0xff, i&0xff, i)
	}
}

// Memory does not grow with the number of signals: beyond the bound they are counted,
// every one of them still counts for its candidate or for the omitted count.
func TestSignalsBounded(t *testing.T) {
	var in bytes.Buffer
	distinctSignals(&in, 30000)
	a, _ := NewAnalyzer(WithMaxSignals(1000))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, err := a.Analyze(context.Background(), "many.log", bytes.NewReader(in.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if len(res.Signals) != 1000 || res.SignalsOmitted != 29000 || res.TotalSignals() != 30000 {
		t.Fatalf("kept %d, omitted %d", len(res.Signals), res.SignalsOmitted)
	}
	cands := res.Candidates()
	if len(cands) != 1000 || res.CandidatesOmitted() != 29000 {
		t.Fatalf("%d candidates, %d signals omitted from them", len(cands), res.CandidatesOmitted())
	}
	// What stays live is the bounded result, not 30,000 signals (they would take > 10 MB).
	if live := int64(after.HeapAlloc) - int64(before.HeapAlloc); live > 4<<20 {
		t.Errorf("%d bytes live after analysing 30,000 signals with a bound of 1,000", live)
	}

	// Merging keeps the bound and the counts.
	var total Result
	total.MaxSignals = 1500
	total.Merge(res)
	total.Merge(res)
	if len(total.Signals) != 1500 || total.TotalSignals() != 60000 || len(total.Candidates()) != 1000 || total.CandidatesOmitted() != 58000 {
		t.Fatalf("merged: %d kept of %d, %d candidates, %d omitted", len(total.Signals), total.TotalSignals(), len(total.Candidates()), total.CandidatesOmitted())
	}
	for _, c := range total.Candidates() {
		if c.Count != 2 {
			t.Fatalf("candidate %s counted %d times, want 2 (once per merged result)", c.IP, c.Count)
		}
	}
}
