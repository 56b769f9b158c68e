// Package ztlogtest holds test helpers for code that uses ztlog: a deterministic
// generator of large ztunnel 1.24+ logs (for benchmarks) and an in-memory LogSource
// (for cluster-mode tests). It never touches a real cluster.
package ztlogtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshmedic/meshmedic/ztlog"
)

// GenOptions shapes a generated log.
type GenOptions struct {
	// Lines is the number of lines to write.
	Lines int
	// SignalEvery makes every SignalEvery-th line an orphan signal (alternating
	// hbone-refused and unidentified-policy-rejection); 0 writes none. 1000 gives the
	// ~0.1% of the benchmark in the brief.
	SignalEvery int
	// Seed makes the output reproducible.
	Seed uint64
	// Start is the first record's time (default 2025-01-01T00:00:00Z); records are
	// 1 ms apart.
	Start time.Time
}

// GenStats reports what GenerateLog wrote.
type GenStats struct {
	Lines   int
	Bytes   int64
	Signals int
}

const (
	genSrcIdentity = "spiffe://cluster.local/ns/%s/sa/%s"
)

var (
	genNamespaces = []string{"shop", "payments", "catalog", "identity", "search", "checkout", "frontend", "inventory"}
	genApps       = []string{"cart", "orders", "productpage", "reviews", "ratings", "details", "gateway", "recommendation", "currency", "shipping"}
)

// GenerateLog writes a synthetic ztunnel 1.24+ (tab layout) log to w: mostly info
// `connection complete` access records of realistic length (~450 bytes), some
// lifecycle and listener records, and every SignalEvery-th line an orphan signal. It
// streams through a small buffer and never holds the log in memory.
func GenerateLog(w io.Writer, o GenOptions) (GenStats, error) {
	if o.Start.IsZero() {
		o.Start = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	rng := rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))
	bw := bufio.NewWriterSize(w, 256<<10)
	cw := &countWriter{w: bw}
	var st GenStats
	var b []byte
	for i := 0; i < o.Lines; i++ {
		ts := o.Start.Add(time.Duration(i) * time.Millisecond)
		b = b[:0]
		b = ts.AppendFormat(b, "2006-01-02T15:04:05.000000Z")
		switch {
		case o.SignalEvery > 0 && i%o.SignalEvery == o.SignalEvery-1:
			st.Signals++
			if (i/o.SignalEvery)%2 == 0 {
				b = appendRefused(b, rng)
			} else {
				b = appendRejected(b, rng)
			}
		case i%997 == 500:
			b = appendLifecycle(b, rng)
		default:
			b = appendAccess(b, rng)
		}
		b = append(b, '\n')
		if _, err := cw.Write(b); err != nil {
			return st, err
		}
		st.Lines++
	}
	if err := bw.Flush(); err != nil {
		return st, err
	}
	st.Bytes = cw.n
	return st, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func pick(rng *rand.Rand, ss []string) string { return ss[rng.IntN(len(ss))] }

func podName(rng *rand.Rand, app string) string {
	const hex = "0123456789abcdef"
	const alnum = "bcdfghjklmnpqrstvwxz2456789"
	var sb strings.Builder
	sb.WriteString(app)
	sb.WriteString("-v1-")
	for i := 0; i < 10; i++ {
		sb.WriteByte(hex[rng.IntN(16)])
	}
	sb.WriteByte('-')
	for i := 0; i < 5; i++ {
		sb.WriteByte(alnum[rng.IntN(len(alnum))])
	}
	return sb.String()
}

func ip(rng *rand.Rand) string {
	return fmt.Sprintf("10.%d.%d.%d", 240+rng.IntN(8), rng.IntN(256), 1+rng.IntN(254))
}

func appendAccess(b []byte, rng *rand.Rand) []byte {
	sns, dns := pick(rng, genNamespaces), pick(rng, genNamespaces)
	sapp, dapp := pick(rng, genApps), pick(rng, genApps)
	dip := ip(rng)
	if rng.IntN(4) == 0 { // plaintext inbound through 15006: no identity, no HBONE
		return fmt.Appendf(b, "\tinfo\taccess\tconnection complete\tsrc.addr=%s:%d dst.addr=%s:%d dst.workload=%q dst.namespace=%q direction=\"inbound\" bytes_sent=%d bytes_recv=%d duration=\"%dms\"",
			ip(rng), 30000+rng.IntN(30000), dip, 8000+rng.IntN(100), podName(rng, dapp), dns, rng.IntN(10000), rng.IntN(100000), rng.IntN(500))
	}
	dir := "outbound"
	if rng.IntN(2) == 0 {
		dir = "inbound"
	}
	b = fmt.Appendf(b, "\tinfo\taccess\tconnection complete\tsrc.addr=%s:%d src.workload=%q src.namespace=%q src.identity=%q dst.addr=%s:15008 dst.hbone_addr=%s:%d",
		ip(rng), 30000+rng.IntN(30000), podName(rng, sapp), sns, fmt.Sprintf(genSrcIdentity, sns, sapp),
		dip, dip, 8000+rng.IntN(100))
	if rng.IntN(2) == 0 { // half of the connections went through a Service
		b = fmt.Appendf(b, " dst.service=\"%s.%s.svc.cluster.local\"", dapp, dns)
	}
	return fmt.Appendf(b, " dst.workload=%q dst.namespace=%q dst.identity=%q direction=%q bytes_sent=%d bytes_recv=%d duration=\"%dms\"",
		podName(rng, dapp), dns, fmt.Sprintf(genSrcIdentity, dns, dapp),
		dir, rng.IntN(10000), rng.IntN(100000), rng.IntN(500))
}

func appendRefused(b []byte, rng *rand.Rand) []byte {
	sns, dns := pick(rng, genNamespaces), pick(rng, genNamespaces)
	sapp, dapp := pick(rng, genApps), pick(rng, genApps)
	dip := ip(rng)
	return fmt.Appendf(b, "\terror\taccess\tconnection complete\tsrc.addr=%s:%d src.workload=%q src.namespace=%q src.identity=%q dst.addr=%s:15008 dst.hbone_addr=%s:%d dst.service=\"%s.%s.svc.cluster.local\" dst.workload=%q dst.namespace=%q dst.identity=%q direction=\"outbound\" bytes_sent=0 bytes_recv=0 duration=\"0ms\" error=\"io error: Connection refused (os error 111)\"",
		ip(rng), 30000+rng.IntN(30000), podName(rng, sapp), sns, fmt.Sprintf(genSrcIdentity, sns, sapp),
		dip, dip, 8000+rng.IntN(100), dapp, dns, podName(rng, dapp), dns, fmt.Sprintf(genSrcIdentity, dns, dapp))
}

func appendRejected(b []byte, rng *rand.Rand) []byte {
	dns, dapp := pick(rng, genNamespaces), pick(rng, genApps)
	return fmt.Appendf(b, "\terror\taccess\tconnection complete\tsrc.addr=%s:%d dst.addr=%s:%d dst.service=\"%s.%s.svc.cluster.local\" dst.workload=%q dst.namespace=%q direction=\"inbound\" bytes_sent=0 bytes_recv=0 duration=\"0ms\" error=\"connection closed due to policy rejection: allow policies exist, but none allowed\"",
		ip(rng), 30000+rng.IntN(30000), ip(rng), 8000+rng.IntN(100), dapp, dns, podName(rng, dapp), dns)
}

func appendLifecycle(b []byte, rng *rand.Rand) []byte {
	ns, app := pick(rng, genNamespaces), pick(rng, genApps)
	if rng.IntN(2) == 0 {
		return fmt.Appendf(b, "\tinfo\tinpod::statemanager\tpod received, starting proxy\tuid=\"%08x-0000-4000-8000-%012x\" name=%q namespace=%q",
			rng.Uint32(), rng.Uint64()&0xffffffffffff, podName(rng, app), ns)
	}
	return fmt.Appendf(b, "\tinfo\tproxy::inbound\tlistener established\taddress=[::]:15008 component=\"inbound\" transparent=true")
}

// FakeSource is an in-memory ztlog.LogSource: Logs maps "namespace/name" of a ztunnel
// pod to its log text, Errs to an error Stream returns for it. It records the highest
// number of streams open at once.
type FakeSource struct {
	Pods    []ztlog.PodRef
	Logs    map[string]string
	Errs    map[string]error
	ListErr error

	open    atomic.Int32
	maxOpen atomic.Int32
	mu      sync.Mutex
	since   []time.Time
}

var _ ztlog.LogSource = (*FakeSource)(nil)

// ZtunnelPods returns Pods (or ListErr).
func (f *FakeSource) ZtunnelPods(ctx context.Context) ([]ztlog.PodRef, error) {
	if f.ListErr != nil {
		return nil, f.ListErr
	}
	return append([]ztlog.PodRef(nil), f.Pods...), ctx.Err()
}

// Stream returns the pod's log.
func (f *FakeSource) Stream(ctx context.Context, p ztlog.PodRef, since time.Time) (io.ReadCloser, error) {
	f.mu.Lock()
	f.since = append(f.since, since)
	f.mu.Unlock()
	if err := f.Errs[p.String()]; err != nil {
		return nil, err
	}
	s, ok := f.Logs[p.String()]
	if !ok {
		return nil, errors.New("no such pod")
	}
	n := f.open.Add(1)
	for {
		m := f.maxOpen.Load()
		if n <= m || f.maxOpen.CompareAndSwap(m, n) {
			break
		}
	}
	return &fakeStream{r: strings.NewReader(s), f: f}, nil
}

// MaxOpen is the highest number of streams that were open at the same time.
func (f *FakeSource) MaxOpen() int { return int(f.maxOpen.Load()) }

// Since returns the since values Stream was called with.
func (f *FakeSource) Since() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.since...)
}

type fakeStream struct {
	r      *strings.Reader
	f      *FakeSource
	closed bool
}

func (s *fakeStream) Read(p []byte) (int, error) {
	if s.closed {
		return 0, errors.New("read on closed stream")
	}
	return s.r.Read(p)
}

func (s *fakeStream) Close() error {
	if !s.closed {
		s.closed = true
		s.f.open.Add(-1)
	}
	return nil
}
