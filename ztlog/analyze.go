package ztlog

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"
)

// Option configures an Analyzer (and, for WithMaxLineBytes, a Scanner).
type Option func(*config)

type config struct {
	maxLine      int
	sigs         *Signatures
	since, until time.Time
}

func newConfig(opts []Option) config {
	c := config{maxLine: DefaultMaxLineBytes}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// WithMaxLineBytes sets the longest line kept (DefaultMaxLineBytes by default); it is
// also the read buffer size, so it bounds memory.
func WithMaxLineBytes(n int) Option { return func(c *config) { c.maxLine = n } }

// WithSignatures replaces the shipped signature table.
func WithSignatures(s *Signatures) Option { return func(c *config) { c.sigs = s } }

// WithWindow keeps only records whose own time is in [since, until]; a zero bound is
// open. Records without a parseable time are dropped when a bound is set.
func WithWindow(since, until time.Time) Option {
	return func(c *config) { c.since, c.until = since, until }
}

// Result is what one or more streams held.
type Result struct {
	Stats
	// Signals are the orphan signals (class orphan-signal), in stream order.
	Signals []Signal `json:"signals"`
	// Corroborations are the lifecycle records (class corroboration), in stream order.
	Corroborations []Signal `json:"corroborations"`
}

// Merge appends o's counts and signals to r.
func (r *Result) Merge(o *Result) {
	r.Stats.Add(o.Stats)
	r.Signals = append(r.Signals, o.Signals...)
	r.Corroborations = append(r.Corroborations, o.Corroborations...)
}

// Candidate summarizes the orphan signals that implicate one pod.
type Candidate struct {
	// IP is the implicated pod IP (or, when the log had no parseable IP, the address
	// as logged).
	IP        string    `json:"ip"`
	Namespace string    `json:"namespace"`
	Workload  string    `json:"workload"`
	Kinds     []string  `json:"kinds"`
	Sides     []Side    `json:"sides"`
	Count     int       `json:"count"`
	FirstSeen time.Time `json:"firstSeen"`
	LastSeen  time.Time `json:"lastSeen"`
}

// Candidates groups the orphan signals by implicated pod (its IP; the namespace and
// workload are taken from whichever signal named them), most signals first. First and
// last seen are by record time, so newest-first pastes and interleaved pods give the
// same answer.
func (r *Result) Candidates() []Candidate {
	idx := map[string]int{}
	var out []Candidate
	for _, s := range r.Signals {
		key := s.IP
		if key == "" {
			key = s.Addr
			if h, _, ok := splitAddr(s.Addr); ok {
				key = h
			}
		}
		if key == "" {
			key = s.Namespace + "/" + s.Workload
		}
		i, ok := idx[key]
		if !ok {
			i = len(out)
			idx[key] = i
			ip := s.IP
			if ip == "" {
				ip = key
			}
			out = append(out, Candidate{IP: ip, FirstSeen: s.Time, LastSeen: s.Time})
		}
		c := &out[i]
		c.Count++
		if c.Namespace == "" {
			c.Namespace = s.Namespace
		}
		if c.Workload == "" {
			c.Workload = s.Workload
		}
		if !containsStr(c.Kinds, s.Kind) {
			c.Kinds = append(c.Kinds, s.Kind)
		}
		if !containsSide(c.Sides, s.Side) {
			c.Sides = append(c.Sides, s.Side)
		}
		if !s.Time.IsZero() {
			if c.FirstSeen.IsZero() || s.Time.Before(c.FirstSeen) {
				c.FirstSeen = s.Time
			}
			if s.Time.After(c.LastSeen) {
				c.LastSeen = s.Time
			}
		}
	}
	sort.SliceStable(out, func(a, b int) bool {
		if out[a].Count != out[b].Count {
			return out[a].Count > out[b].Count
		}
		return out[a].IP < out[b].IP
	})
	return out
}

func containsStr(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func containsSide(ss []Side, s Side) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// Analyzer finds orphan signals and corroborations in ztunnel log streams. It is safe
// for concurrent use: each Analyze call keeps its own state.
type Analyzer struct {
	cfg config
}

// NewAnalyzer returns an Analyzer with the shipped signatures unless WithSignatures is
// given.
func NewAnalyzer(opts ...Option) (*Analyzer, error) {
	c := newConfig(opts)
	if c.sigs == nil {
		s, err := ShippedSignatures()
		if err != nil {
			return nil, err
		}
		c.sigs = s
	}
	return &Analyzer{cfg: c}, nil
}

// ctxCheckEvery is how many lines pass between context checks.
const ctxCheckEvery = 8192

// Analyze reads r to its end (or until ctx is done) and returns what it found. file
// names the stream in every Signal ("-" for stdin, by convention). A read error is
// returned with the partial result; the error names file and line.
func (a *Analyzer) Analyze(ctx context.Context, file string, r io.Reader) (*Result, error) {
	res := &Result{}
	lr := newLineReader(r, a.cfg.maxLine, &res.Stats)
	var tk tokenizer
	var mt matcher
	sigs := a.cfg.sigs.sigs
	windowed := !a.cfg.since.IsZero() || !a.cfg.until.IsZero()
	countdown := ctxCheckEvery
	for {
		countdown--
		if countdown == 0 {
			countdown = ctxCheckEvery
			if err := ctx.Err(); err != nil {
				return res, fmt.Errorf("%s: line %d: %w", file, lr.line, err)
			}
		}
		line, ok := lr.next()
		if !ok {
			break
		}
		if !tk.tokenize(line) {
			res.Continuations++
			continue
		}
		raw := &tk.raw
		if windowed {
			t := raw.time()
			if t.IsZero() || (!a.cfg.since.IsZero() && t.Before(a.cfg.since)) || (!a.cfg.until.IsZero() && t.After(a.cfg.until)) {
				res.OutsideWindow++
				continue
			}
		}
		res.Records++
		malformed := false
		for i := range sigs {
			sig := &sigs[i]
			ok, err := mt.match(sig, raw)
			if err != nil {
				malformed = true
				break
			}
			if !ok {
				continue
			}
			s, err := mt.build(sig, raw, file, lr.line)
			if err != nil {
				malformed = true
				break
			}
			if s.Class == ClassOrphan {
				res.Signals = append(res.Signals, s)
			} else {
				res.Corroborations = append(res.Corroborations, s)
			}
		}
		if malformed {
			res.Malformed++
		}
	}
	if err := lr.readErr(); err != nil {
		return res, fmt.Errorf("%s: line %d: %w", file, lr.line+1, err)
	}
	return res, nil
}
