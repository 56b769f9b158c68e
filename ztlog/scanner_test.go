package ztlog

import (
	"context"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

const sigB = "2026-08-26T05:11:08.729972Z\terror\taccess\tconnection complete\tsrc.addr=10.42.1.122:34286 dst.addr=10.42.1.154:15008 dst.workload=\"cnpg-cluster-1\" dst.namespace=\"opset-datastore\" direction=\"outbound\" error=\"io error: Connection refused (os error 111)\""

// repeatReader yields n bytes of c, then rest: a long line without ever holding it.
type repeatReader struct {
	c    byte
	n    int
	rest *strings.Reader
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n > 0 {
		k := min(len(p), r.n)
		for i := 0; i < k; i++ {
			p[i] = r.c
		}
		r.n -= k
		return k, nil
	}
	return r.rest.Read(p)
}

// TestLongLineBoundedMemory feeds a 10 MB line between two signal lines: it must be
// skipped and counted, the lines around it still found, and the memory allocated while
// reading must not grow with the line (the read buffer is the bound).
func TestLongLineBoundedMemory(t *testing.T) {
	const longLen = 10 << 20
	a, err := NewAnalyzer()
	if err != nil {
		t.Fatal(err)
	}
	src := func() io.Reader {
		return io.MultiReader(strings.NewReader(sigB+"\n"+"2026-08-26T05:11:09Z\terror\taccess\tconnection complete\t"),
			&repeatReader{c: 'x', n: longLen, rest: strings.NewReader(" direction=\"outbound\"\n" + sigB + "\n")})
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, err := a.Analyze(context.Background(), "long.log", src())
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if res.LongLines != 1 || res.LinesRead != 3 || res.Records != 2 || len(res.Signals) != 2 {
		t.Fatalf("stats %+v, %d signals; want 1 long line skipped, 3 lines read, 2 records, 2 signals", res.Stats, len(res.Signals))
	}
	if res.Signals[1].Line != 3 {
		t.Errorf("signal after the long line is on line %d, want 3", res.Signals[1].Line)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 2<<20 {
		t.Errorf("reading a %d-byte line allocated %d bytes; memory must stay bounded by the line limit", longLen, grew)
	}

	sc := NewScanner(src(), WithMaxLineBytes(4096))
	n := 0
	for sc.Scan() {
		n++
	}
	if n != 2 || sc.Stats().LongLines != 1 || sc.Err() != nil {
		t.Fatalf("Scanner: %d records, stats %+v, err %v", n, sc.Stats(), sc.Err())
	}
}

func TestLineEndings(t *testing.T) {
	in := sigB + "\r\n\r\n" + sigB // CRLF, a blank CRLF line, and no final newline
	sc := NewScanner(strings.NewReader(in))
	var recs []*Record
	for sc.Scan() {
		recs = append(recs, sc.Record())
	}
	if len(recs) != 2 || recs[1].Line != 3 {
		t.Fatalf("got %d records (stats %+v)", len(recs), sc.Stats())
	}
	if v, _ := recs[0].Get("error"); v != "io error: Connection refused (os error 111)" {
		t.Errorf("CR leaked into the last field: %q", v)
	}
	if st := sc.Stats(); st.LinesRead != 3 || st.Continuations != 1 {
		t.Errorf("stats %+v", st)
	}
}

type failingReader struct {
	data string
	err  error
	done bool
}

func (f *failingReader) Read(p []byte) (int, error) {
	if !f.done {
		f.done = true
		return copy(p, f.data), nil
	}
	return 0, f.err
}

func TestReadErrorNamesFileAndLine(t *testing.T) {
	boom := errors.New("disk on fire")
	a, _ := NewAnalyzer()
	res, err := a.Analyze(context.Background(), "node1.log", &failingReader{data: sigB + "\n" + sigB + "\n", err: boom})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want wrapping %v", err, boom)
	}
	if !strings.Contains(err.Error(), "node1.log: line 3") {
		t.Errorf("error %q does not name the file and line", err)
	}
	if res == nil || len(res.Signals) != 2 {
		t.Errorf("partial result lost: %+v", res)
	}
	sc := NewScanner(&failingReader{data: sigB + "\n", err: boom})
	for sc.Scan() {
	}
	if !errors.Is(sc.Err(), boom) {
		t.Errorf("Scanner.Err() = %v", sc.Err())
	}
}

func TestAnalyzeHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a, _ := NewAnalyzer()
	_, err := a.Analyze(ctx, "x", strings.NewReader(strings.Repeat(sigB+"\n", 2*ctxCheckEvery)))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestScannerMalformedJSON(t *testing.T) {
	sc := NewScanner(strings.NewReader(`{"level":"info","message":"x"` + "\n" + `{"level":"info","message":"ok"}` + "\n"))
	var msgs []string
	for sc.Scan() {
		msgs = append(msgs, sc.Record().Message)
	}
	if len(msgs) != 1 || msgs[0] != "ok" || sc.Stats().Malformed != 1 {
		t.Fatalf("messages %q, stats %+v", msgs, sc.Stats())
	}
}
