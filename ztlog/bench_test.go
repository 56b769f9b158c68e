package ztlog_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"

	"github.com/meshmedic/meshmedic/ztlog"
	"github.com/meshmedic/meshmedic/ztlog/ztlogtest"
)

// benchLines is the size of the log the in-process benchmarks read per iteration
// (the 1,000,000-line run of the CLI is in docs/benchmarks-ztlog.md).
const benchLines = 100_000

var (
	benchOnce sync.Once
	benchData []byte
	benchErr  error
)

// benchLog returns a generated 1.24+ log of benchLines lines with 0.1% signal lines.
// It lives in memory so the benchmark measures parsing, not the disk.
func benchLog(b *testing.B) []byte {
	b.Helper()
	benchOnce.Do(func() {
		var buf bytes.Buffer
		_, benchErr = ztlogtest.GenerateLog(&buf, ztlogtest.GenOptions{Lines: benchLines, SignalEvery: 1000, Seed: 1})
		benchData = buf.Bytes()
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchData
}

func BenchmarkAnalyze(b *testing.B) {
	data := benchLog(b)
	a, err := ztlog.NewAnalyzer()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := a.Analyze(context.Background(), "bench", bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Signals) != benchLines/1000 || res.Records != benchLines {
			b.Fatalf("got %d signals / %d records, want %d / %d", len(res.Signals), res.Records, benchLines/1000, benchLines)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchLines), "ns/line")
}

// BenchmarkAnalyzeFile reads the generated log from a file in a temp dir, as the CLI
// does.
func BenchmarkAnalyzeFile(b *testing.B) {
	data := benchLog(b)
	path := filepath.Join(b.TempDir(), "ztunnel.log")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	a, err := ztlog.NewAnalyzer()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		res, err := a.Analyze(context.Background(), path, f)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Signals) != benchLines/1000 {
			b.Fatalf("got %d signals", len(res.Signals))
		}
	}
}

// BenchmarkScanner materializes every record (the general-purpose tokenizer).
func BenchmarkScanner(b *testing.B) {
	data := benchLog(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sc := ztlog.NewScanner(bytes.NewReader(data))
		n := 0
		for sc.Scan() {
			n++
		}
		if sc.Err() != nil || n != benchLines {
			b.Fatalf("scanned %d records, err %v", n, sc.Err())
		}
	}
}

// The naive baseline: what STYLE.md calls the anti-pattern — strings.Contains to
// find candidate lines, then one regular expression per field.
var (
	naiveDirection = regexp.MustCompile(`direction="?(\w+)"?`)
	naiveDstAddr   = regexp.MustCompile(`dst\.addr=(\S+)`)
	naiveSrcAddr   = regexp.MustCompile(`src\.addr=(\S+)`)
	naiveSrcID     = regexp.MustCompile(`src\.identity=`)
	naiveHbone     = regexp.MustCompile(`dst\.hbone_addr=`)
	naiveError     = regexp.MustCompile(`error="?([^"]*)"?`)
	naiveNs        = regexp.MustCompile(`dst\.namespace="?([^" ]*)"?`)
	naiveWl        = regexp.MustCompile(`dst\.workload="?([^" ]*)"?`)
	naiveTS        = regexp.MustCompile(`^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z)\s+(\w+)\s+(\S+)\s+(.*?)\t`)
)

func naiveAnalyze(r io.Reader) (records, signals int) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if naiveTS.MatchString(line) {
			records++
		}
		dir := naiveDirection.FindStringSubmatch(line)
		errm := naiveError.FindStringSubmatch(line)
		if dir == nil || errm == nil {
			continue
		}
		switch {
		case dir[1] == "outbound" && bytes.Contains([]byte(errm[1]), []byte("Connection refused")):
			if m := naiveDstAddr.FindStringSubmatch(line); m != nil && bytes.HasSuffix([]byte(m[1]), []byte(":15008")) {
				_ = naiveNs.FindStringSubmatch(line)
				_ = naiveWl.FindStringSubmatch(line)
				signals++
			}
		case dir[1] == "inbound" && bytes.Contains([]byte(errm[1]), []byte("policy rejection")):
			if !naiveSrcID.MatchString(line) && !naiveHbone.MatchString(line) && naiveSrcAddr.MatchString(line) {
				signals++
			}
		}
	}
	return records, signals
}

// BenchmarkNaiveRegexBaseline is the regex-per-field approach on the same log.
func BenchmarkNaiveRegexBaseline(b *testing.B) {
	data := benchLog(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rec, sig := naiveAnalyze(bytes.NewReader(data))
		if sig != benchLines/1000 || rec != benchLines {
			b.Fatalf("naive found %d signals / %d records", sig, rec)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchLines), "ns/line")
}
