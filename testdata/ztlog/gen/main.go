// Command gen writes a synthetic ztunnel 1.24+ log for the `logs analyze` benchmark
// (docs/benchmarks-ztlog.md). It is not committed output: run it into a temp dir.
//
//	go run ./testdata/ztlog/gen -lines 1000000 -signal-every 1000 > /tmp/zt.log
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/meshmedic/meshmedic/ztlog/ztlogtest"
)

func main() {
	lines := flag.Int("lines", 1_000_000, "lines to write")
	every := flag.Int("signal-every", 1000, "every Nth line is an orphan signal (0: none)")
	seed := flag.Uint64("seed", 1, "PRNG seed")
	flag.Parse()
	st, err := ztlogtest.GenerateLog(os.Stdout, ztlogtest.GenOptions{Lines: *lines, SignalEvery: *every, Seed: *seed})
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "gen: %d lines, %d bytes, %d signals\n", st.Lines, st.Bytes, st.Signals)
}
