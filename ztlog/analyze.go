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
	maxSignals   int
	sigs         *Signatures
	since, until time.Time
}

func newConfig(opts []Option) config {
	c := config{maxLine: DefaultMaxLineBytes, maxSignals: DefaultMaxSignals}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// WithMaxLineBytes sets the longest line kept (DefaultMaxLineBytes by default); it is
// also the read buffer size, so it bounds memory.
func WithMaxLineBytes(n int) Option { return func(c *config) { c.maxLine = n } }

// DefaultMaxSignals bounds what a Result keeps: the first 10,000 signals, the first 10,000
// corroborations and 10,000 candidate pods. What comes after is counted, not kept, so the
// memory of an analysis does not grow with the number of signals (about 10 MB at most,
// docs/benchmarks.md). A candidate already kept goes on counting every signal for it.
const DefaultMaxSignals = 10000

// WithMaxSignals sets the bound of DefaultMaxSignals (n <= 0: the default).
func WithMaxSignals(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxSignals = n
		}
	}
}

// WithSignatures replaces the shipped signature table.
func WithSignatures(s *Signatures) Option { return func(c *config) { c.sigs = s } }

// WithWindow keeps only records whose own time is in [since, until]; a zero bound is
// open. Records without a parseable time are dropped when a bound is set.
func WithWindow(since, until time.Time) Option {
	return func(c *config) { c.since, c.until = since, until }
}

// Result is what one or more streams held. Its memory is bounded (DefaultMaxSignals).
type Result struct {
	Stats
	// Signals are the orphan signals (class orphan-signal), in stream order: the first
	// MaxSignals of them.
	Signals []Signal `json:"signals"`
	// Corroborations are the lifecycle records (class corroboration), in stream order: the
	// first MaxSignals of them.
	Corroborations []Signal `json:"corroborations"`
	// SignalsOmitted and CorroborationsOmitted count those found beyond the bound.
	SignalsOmitted        int `json:"signalsOmitted,omitempty"`
	CorroborationsOmitted int `json:"corroborationsOmitted,omitempty"`
	// Warnings say why an input gave nothing: it is not text (gzip, UTF-16, binary).
	Warnings []Warning `json:"warnings,omitempty"`

	// MaxSignals is the bound of this Result (0: DefaultMaxSignals).
	MaxSignals int `json:"-"`
	cands      candidateSet
}

func (r *Result) max() int {
	if r.MaxSignals > 0 {
		return r.MaxSignals
	}
	return DefaultMaxSignals
}

// TotalSignals is the number of orphan signals found, kept or not.
func (r *Result) TotalSignals() int { return len(r.Signals) + r.SignalsOmitted }

// add records one signal or corroboration.
func (r *Result) add(s Signal) {
	if s.Class == ClassOrphan {
		if len(r.Signals) < r.max() {
			r.Signals = append(r.Signals, s)
		} else {
			r.SignalsOmitted++
		}
		r.cands.add(s, r.max())
		return
	}
	if len(r.Corroborations) < r.max() {
		r.Corroborations = append(r.Corroborations, s)
	} else {
		r.CorroborationsOmitted++
	}
}

// Merge adds o's counts, signals, candidates and warnings to r, within r's bound.
func (r *Result) Merge(o *Result) {
	r.Stats.Add(o.Stats)
	room := max(r.max()-len(r.Signals), 0)
	keep := min(room, len(o.Signals))
	r.Signals = append(r.Signals, o.Signals[:keep]...)
	r.SignalsOmitted += o.SignalsOmitted + len(o.Signals) - keep
	room = max(r.max()-len(r.Corroborations), 0)
	keep = min(room, len(o.Corroborations))
	r.Corroborations = append(r.Corroborations, o.Corroborations[:keep]...)
	r.CorroborationsOmitted += o.CorroborationsOmitted + len(o.Corroborations) - keep
	r.Warnings = append(r.Warnings, o.Warnings...)
	oc := o.candidateSet()
	r.cands.merge(&oc, r.max())
}

// candidateSet returns r's candidates: those gathered as signals were added, or, for a
// Result built by hand, grouped from its Signals now.
func (r *Result) candidateSet() candidateSet {
	if r.cands.list != nil || len(r.Signals) == 0 {
		return r.cands
	}
	var cs candidateSet
	for _, s := range r.Signals {
		cs.add(s, r.max())
	}
	return cs
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

// candidateSet groups orphan signals by implicated pod as they are found, keeping at most
// a bound of distinct pods; signals for pods beyond it are counted in omitted.
type candidateSet struct {
	idx     map[string]int
	list    []Candidate
	omitted int // signals whose pod did not fit
}

// candidateKey is the pod a signal implicates: its IP, else the address as logged (its host
// part), else namespace/workload. It is also the candidate's IP field.
func candidateKey(s Signal) string {
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
	return key
}

func (cs *candidateSet) add(s Signal, limit int) {
	key := candidateKey(s)
	c := Candidate{IP: key, Namespace: s.Namespace, Workload: s.Workload, Kinds: []string{s.Kind},
		Sides: []Side{s.Side}, Count: 1, FirstSeen: s.Time, LastSeen: s.Time}
	cs.put(key, c, limit)
}

// put merges c into the candidate with key, or adds it when there is room.
func (cs *candidateSet) put(key string, c Candidate, limit int) {
	i, ok := cs.idx[key]
	if !ok {
		if len(cs.list) >= limit {
			cs.omitted += c.Count
			return
		}
		if cs.idx == nil {
			cs.idx = map[string]int{}
		}
		i = len(cs.list)
		cs.idx[key] = i
		cs.list = append(cs.list, Candidate{IP: c.IP})
	}
	have := &cs.list[i]
	have.Count += c.Count
	if have.Namespace == "" {
		have.Namespace = c.Namespace
	}
	if have.Workload == "" {
		have.Workload = c.Workload
	}
	for _, k := range c.Kinds {
		if !containsStr(have.Kinds, k) {
			have.Kinds = append(have.Kinds, k)
		}
	}
	for _, sd := range c.Sides {
		if !containsSide(have.Sides, sd) {
			have.Sides = append(have.Sides, sd)
		}
	}
	if !c.FirstSeen.IsZero() && (have.FirstSeen.IsZero() || c.FirstSeen.Before(have.FirstSeen)) {
		have.FirstSeen = c.FirstSeen
	}
	if c.LastSeen.After(have.LastSeen) {
		have.LastSeen = c.LastSeen
	}
}

func (cs *candidateSet) merge(o *candidateSet, limit int) {
	for _, c := range o.list {
		cs.put(c.IP, c, limit) // a candidate's IP is its key (candidateKey)
	}
	cs.omitted += o.omitted
}

// Candidates groups the orphan signals by implicated pod (its IP; the namespace and
// workload are taken from whichever signal named them), most signals first. First and
// last seen are by record time, so newest-first pastes and interleaved pods give the
// same answer. Every signal found counts, also those beyond the bound on kept signals;
// at most the bound of distinct pods is listed (see CandidatesOmitted).
func (r *Result) Candidates() []Candidate {
	cs := r.candidateSet()
	out := make([]Candidate, len(cs.list))
	copy(out, cs.list)
	sort.SliceStable(out, func(a, b int) bool {
		if out[a].Count != out[b].Count {
			return out[a].Count > out[b].Count
		}
		return out[a].IP < out[b].IP
	})
	return out
}

// CandidatesOmitted counts the signals whose pod was not listed because the bound of
// distinct candidates was reached.
func (r *Result) CandidatesOmitted() int { cs := r.candidateSet(); return cs.omitted }

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
	res := &Result{MaxSignals: a.cfg.maxSignals}
	lr := newLineReader(r, a.cfg.maxLine, &res.Stats)
	defer func() {
		if w := contentWarning(file, lr.content); w != nil {
			res.Warnings = append(res.Warnings, *w)
		}
	}()
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
			res.add(s)
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
