package ztlog

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Class separates what a signature means.
type Class string

const (
	// ClassOrphan marks an orphan signal (ISTIO-FACTS §6 signals A and B): on its
	// own it names a pod that may have lost its ztunnel capture.
	ClassOrphan Class = "orphan-signal"
	// ClassCorroboration marks a lifecycle record (proxy started, kept, failed; CNI
	// could not find a netns). It is evidence for or against a candidate, never a
	// finding by itself.
	ClassCorroboration Class = "corroboration"
)

// Side says whose capture a signal implicates.
type Side string

const (
	SideSrc Side = "src" // the connection's source (signal A)
	SideDst Side = "dst" // the connection's destination (signal B)
	SidePod Side = "pod" // the pod a lifecycle record is about
)

// TextMatch matches a string when any of its alternatives does.
type TextMatch struct {
	Equals   []string `json:"equals,omitempty"`
	Prefix   []string `json:"prefix,omitempty"`
	Contains []string `json:"contains,omitempty"`
}

// Condition tests one field of a record. Exactly one test is set.
type Condition struct {
	Field string `json:"field"`
	// Equals requires the field to be present with this value.
	Equals *string `json:"equals,omitempty"`
	// Contains requires the field to be present and hold this substring.
	Contains string `json:"contains,omitempty"`
	// Present true requires a non-empty field; false requires it absent or empty
	// (ztunnel omits unknown optional fields rather than writing them empty).
	Present *bool `json:"present,omitempty"`
	// Port requires the field to be an address whose port is this number.
	Port *int `json:"port,omitempty"`
}

// Implicate lists, per attribute of the implicated pod, the field keys to read it from;
// the first non-empty one wins. Span fields are searched after the record's own.
type Implicate struct {
	Addr      []string `json:"addr,omitempty"`
	Namespace []string `json:"namespace,omitempty"`
	Workload  []string `json:"workload,omitempty"`
	UID       []string `json:"uid,omitempty"`
	// Pod lists fields holding "namespace/name" (e.g. a span's wl=ns/pod).
	Pod []string `json:"pod,omitempty"`
	// FromMessage lists what to read from the message text when the fields do not
	// name it: "uid" (the first UUID, as in ztunnel ≤1.21's `pod WorkloadUid("…")
	// received netns`) and "pod" (the first namespace/name word, as in istio-cni's
	// `failed to update POD inpod: ns/name …`).
	FromMessage []string `json:"fromMessage,omitempty"`
}

// Example is a shipped log line with what the signature must extract from it.
type Example struct {
	Line      string `json:"line"`
	Source    string `json:"source,omitempty"`
	IP        string `json:"ip,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Workload  string `json:"workload,omitempty"`
	UID       string `json:"uid,omitempty"`
}

// Examples are checked by a test for every shipped signature (as node-problem-detector
// checks config/kernel-monitor.json).
type Examples struct {
	Match   []Example `json:"match"`
	NoMatch []Example `json:"noMatch"`
}

// SignatureSpec is one row of the declarative signature table.
type SignatureSpec struct {
	Name        string `json:"name"`
	Class       Class  `json:"class"`
	Code        string `json:"code,omitempty"` // ISTIO-FACTS §6 letter: "A", "B"
	Side        Side   `json:"side"`
	Description string `json:"description"`
	Source      string `json:"source"`
	// Targets restricts the tracing target (without "ztunnel::"); empty means any.
	Targets []string `json:"targets,omitempty"`
	// Message must match the record's message, when set.
	Message *TextMatch `json:"message,omitempty"`
	// Text must match somewhere in the message or the fields (Contains only).
	Text       *TextMatch  `json:"text,omitempty"`
	Conditions []Condition `json:"conditions,omitempty"`
	Implicate  Implicate   `json:"implicate"`
	// Detail names the field reported as the signal's detail; the message otherwise.
	Detail   string   `json:"detail,omitempty"`
	Examples Examples `json:"examples"`
}

type signatureFile struct {
	Signatures []SignatureSpec `json:"signatures"`
}

type compiledCond struct {
	field    []byte
	equals   []byte
	hasEq    bool
	contains []byte
	present  int8 // 0 unset, 1 must be present, -1 must be absent
	port     int  // -1 unset
}

type compiledSig struct {
	spec         *SignatureSpec
	targets      [][]byte
	msgEq        [][]byte
	msgPrefix    [][]byte
	msgContains  [][]byte
	hasMsg       bool
	textContains []needle
	fieldNeedles []needle // substrings the raw field text must hold (prefilter)
	conds        []compiledCond
}

// Signatures is a validated, compiled signature table.
type Signatures struct {
	specs []SignatureSpec
	sigs  []compiledSig
}

//go:embed signatures.json
var shippedJSON []byte

var shipped = sync.OnceValues(func() (*Signatures, error) {
	return LoadSignatures(bytes.NewReader(shippedJSON))
})

// ShippedSignatures returns the table compiled into meshmedic (ztlog/signatures.json).
func ShippedSignatures() (*Signatures, error) { return shipped() }

// LoadSignatures reads and validates a signature table in the signatures.json format.
func LoadSignatures(r io.Reader) (*Signatures, error) {
	var f signatureFile
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("signature table: %w", err)
	}
	return NewSignatures(f.Signatures)
}

// NewSignatures validates and compiles specs.
func NewSignatures(specs []SignatureSpec) (*Signatures, error) {
	s := &Signatures{specs: append([]SignatureSpec(nil), specs...)}
	seen := map[string]bool{}
	var errs []error
	for i := range s.specs {
		sp := &s.specs[i]
		if err := sp.validate(); err != nil {
			errs = append(errs, fmt.Errorf("signature %d (%q): %w", i, sp.Name, err))
			continue
		}
		if seen[sp.Name] {
			errs = append(errs, fmt.Errorf("signature %q: duplicate name", sp.Name))
			continue
		}
		seen[sp.Name] = true
		s.sigs = append(s.sigs, compile(sp))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// Specs returns the table's rows.
func (s *Signatures) Specs() []SignatureSpec { return append([]SignatureSpec(nil), s.specs...) }

// rawSafe reports whether needle can be searched for in the raw line: Rust Debug
// quoting and JSON escaping leave printable ASCII other than `"` and `\` untouched.
func rawSafe(needle string) bool {
	for i := 0; i < len(needle); i++ {
		c := needle[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return needle != ""
}

func (sp *SignatureSpec) validate() error {
	if sp.Name == "" {
		return errors.New("empty name")
	}
	switch sp.Class {
	case ClassOrphan:
		if sp.Side != SideSrc && sp.Side != SideDst {
			return fmt.Errorf("orphan signal side %q: want src or dst", sp.Side)
		}
		if len(sp.Implicate.Addr) == 0 {
			return errors.New("orphan signal must implicate an address")
		}
		// A signal that cannot name a pod is no signal: some condition must require
		// one of the implicated address fields.
		guarded := false
		for _, c := range sp.Conditions {
			if containsStr(sp.Implicate.Addr, c.Field) && (c.Present == nil || *c.Present) {
				guarded = true
			}
		}
		if !guarded {
			return fmt.Errorf("orphan signal must have a condition requiring its address field (%s)", strings.Join(sp.Implicate.Addr, " or "))
		}
	case ClassCorroboration:
		if sp.Side != SidePod {
			return fmt.Errorf("corroboration side %q: want pod", sp.Side)
		}
	default:
		return fmt.Errorf("class %q: want %s or %s", sp.Class, ClassOrphan, ClassCorroboration)
	}
	if sp.Description == "" || sp.Source == "" {
		return errors.New("description and source are required")
	}
	if sp.Message == nil && sp.Text == nil && len(sp.Conditions) == 0 {
		return errors.New("matches everything: set message, text or conditions")
	}
	if sp.Message != nil && len(sp.Message.Equals)+len(sp.Message.Prefix)+len(sp.Message.Contains) == 0 {
		return errors.New("empty message matcher")
	}
	if sp.Text != nil {
		if len(sp.Text.Equals)+len(sp.Text.Prefix) > 0 || len(sp.Text.Contains) == 0 {
			return errors.New("text matcher supports contains only")
		}
		for _, n := range sp.Text.Contains {
			if !rawSafe(n) {
				return fmt.Errorf("text needle %q must be printable ASCII without quotes or backslashes", n)
			}
		}
	}
	for _, c := range sp.Conditions {
		if c.Field == "" {
			return errors.New("condition without field")
		}
		n := 0
		if c.Equals != nil {
			n++
		}
		if c.Contains != "" {
			n++
		}
		if c.Present != nil {
			n++
		}
		if c.Port != nil {
			n++
			if *c.Port < 0 || *c.Port > 65535 {
				return fmt.Errorf("condition on %q: port %d out of range", c.Field, *c.Port)
			}
		}
		if n != 1 {
			return fmt.Errorf("condition on %q: exactly one of equals, contains, present, port", c.Field)
		}
	}
	for _, m := range sp.Implicate.FromMessage {
		if m != "uid" && m != "pod" {
			return fmt.Errorf("implicate.fromMessage %q: want uid or pod", m)
		}
	}
	if len(sp.Examples.Match) == 0 || len(sp.Examples.NoMatch) == 0 {
		return errors.New("every signature ships at least one matching and one non-matching example")
	}
	return nil
}

func toBytesList(ss []string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

func compile(sp *SignatureSpec) compiledSig {
	c := compiledSig{spec: sp, targets: toBytesList(sp.Targets)}
	if sp.Message != nil {
		c.hasMsg = true
		c.msgEq = toBytesList(sp.Message.Equals)
		c.msgPrefix = toBytesList(sp.Message.Prefix)
		c.msgContains = toBytesList(sp.Message.Contains)
	}
	if sp.Text != nil {
		for _, n := range sp.Text.Contains {
			c.textContains = append(c.textContains, newNeedle([]byte(n)))
		}
	}
	for _, cd := range sp.Conditions {
		cc := compiledCond{field: []byte(cd.Field), port: -1}
		switch {
		case cd.Equals != nil:
			cc.equals, cc.hasEq = []byte(*cd.Equals), true
		case cd.Contains != "":
			cc.contains = []byte(cd.Contains)
			if rawSafe(cd.Contains) {
				c.fieldNeedles = append(c.fieldNeedles, newNeedle(cc.contains))
			}
		case cd.Present != nil:
			cc.present = -1
			if *cd.Present {
				cc.present = 1
			}
		case cd.Port != nil:
			cc.port = *cd.Port
		}
		c.conds = append(c.conds, cc)
	}
	return c
}

// matcher evaluates compiled signatures against raw records, reusing scratch space.
type matcher struct {
	scratch []byte
}

func matchText(m *compiledSig, msg []byte) bool {
	for _, e := range m.msgEq {
		if bytes.Equal(msg, e) {
			return true
		}
	}
	for _, p := range m.msgPrefix {
		if bytes.HasPrefix(msg, p) {
			return true
		}
	}
	for _, c := range m.msgContains {
		if bytes.Contains(msg, c) {
			return true
		}
	}
	return false
}

// field returns the unescaped value of the record's first field named key.
func (mt *matcher) field(r *rawRecord, key []byte) ([]byte, bool) {
	for i := range r.fields {
		f := &r.fields[i]
		if bytes.Equal(f.key, key) {
			if f.quoted && bytes.IndexByte(f.val, '\\') >= 0 {
				mt.scratch = unquoteDebug(mt.scratch[:0], f.val)
				return mt.scratch, true
			}
			return f.val, true
		}
	}
	return nil, false
}

// errMalformed reports a JSON record that could not be decoded when needed.
var errMalformed = errors.New("malformed record")

// match reports whether sig matches r. It fails fast on the cheap tests (target,
// message, needles in the raw text) and parses fields only when those pass.
func (mt *matcher) match(sig *compiledSig, r *rawRecord) (bool, error) {
	if len(sig.targets) > 0 || (sig.hasMsg && !r.msgKnown) {
		if r.format == FormatJSON {
			if err := r.decodeJSONRaw(); err != nil {
				return false, errMalformed
			}
		}
	}
	if len(sig.targets) > 0 {
		t := normTarget(r.target)
		ok := false
		for _, want := range sig.targets {
			if bytes.Equal(t, want) {
				ok = true
				break
			}
		}
		if !ok {
			return false, nil
		}
	}
	if sig.hasMsg && !matchText(sig, r.message) {
		return false, nil
	}
	if len(sig.textContains) > 0 {
		ok := false
		for i := range sig.textContains {
			n := &sig.textContains[i]
			if n.in(r.message) || n.in(r.rest) {
				ok = true
				break
			}
		}
		if !ok {
			return false, nil
		}
	}
	for i := range sig.fieldNeedles {
		if !sig.fieldNeedles[i].in(r.rest) {
			return false, nil
		}
	}
	if len(sig.conds) == 0 {
		return true, nil
	}
	if err := r.ensureFields(); err != nil {
		return false, errMalformed
	}
	for i := range sig.conds {
		c := &sig.conds[i]
		v, ok := mt.field(r, c.field)
		if ok && len(v) == 0 {
			ok = false
		}
		switch {
		case c.present != 0:
			if ok != (c.present > 0) {
				return false, nil
			}
		case !ok:
			return false, nil
		case c.hasEq:
			if !bytes.Equal(v, c.equals) {
				return false, nil
			}
		case c.contains != nil:
			if !bytes.Contains(v, c.contains) {
				return false, nil
			}
		case c.port >= 0:
			_, port, ok := splitAddr(string(v))
			if !ok || port != c.port {
				return false, nil
			}
		}
	}
	return true, nil
}

// splitAddr splits "ip:port" and "[ipv6]:port" (also a redacted "10.xx.xx.xx:15008")
// into host and port, on the last ':' (ISTIO-FACTS §6).
func splitAddr(s string) (host string, port int, ok bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return s, 0, false
	}
	host = s[:i]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	p, err := strconv.Atoi(s[i+1:])
	if err != nil || p < 0 || p > 65535 {
		return host, 0, false
	}
	return host, p, true
}

// Signal is one record that matched a signature: which pod it implicates and where
// the record is.
type Signal struct {
	File  string    `json:"file"`
	Line  int       `json:"line"`
	Time  time.Time `json:"time"`
	Kind  string    `json:"kind"`
	Class Class     `json:"class"`
	Code  string    `json:"code,omitempty"`
	Side  Side      `json:"side"`
	// Addr is the implicated address as logged (may be redacted, e.g. 10.xx.xx.xx:15008).
	Addr string `json:"addr,omitempty"`
	// IP is Addr's host when it parses as an IP address, empty otherwise.
	IP        string `json:"ip"`
	Namespace string `json:"namespace"`
	Workload  string `json:"workload"`
	UID       string `json:"uid,omitempty"`
	// Detail is the error text (or the message) that made the record match.
	Detail string `json:"detail,omitempty"`
}

// build turns a matching raw record into a Signal (allocating).
func (mt *matcher) build(sig *compiledSig, r *rawRecord, file string, line int) (Signal, error) {
	rec, err := r.materialize(line)
	if err != nil {
		return Signal{}, errMalformed
	}
	sp := sig.spec
	s := Signal{
		File: file, Line: line, Time: rec.Time, Kind: sp.Name, Class: sp.Class,
		Code: sp.Code, Side: sp.Side,
	}
	get := func(keys []string) string {
		for _, k := range keys {
			if v, ok := rec.Get(k); ok && v != "" {
				return v
			}
		}
		for _, k := range keys {
			for i := len(rec.Spans) - 1; i >= 0; i-- {
				for _, f := range rec.Spans[i].Fields {
					if f.Key == k && f.Value != "" {
						return f.Value
					}
				}
			}
		}
		return ""
	}
	s.Addr = get(sp.Implicate.Addr)
	if s.Addr != "" {
		host, _, ok := splitAddr(s.Addr)
		if !ok {
			host = s.Addr
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			s.IP = ip.WithZone("").String()
		}
	}
	s.Namespace = get(sp.Implicate.Namespace)
	s.Workload = get(sp.Implicate.Workload)
	s.UID = get(sp.Implicate.UID)
	if pod := get(sp.Implicate.Pod); pod != "" {
		if ns, name, ok := strings.Cut(pod, "/"); ok {
			if s.Namespace == "" {
				s.Namespace = ns
			}
			if s.Workload == "" {
				s.Workload = name
			}
		}
	}
	for _, m := range sp.Implicate.FromMessage {
		switch m {
		case "uid":
			if s.UID == "" {
				s.UID = uidIn(rec.Message)
			}
		case "pod":
			if s.Namespace == "" && s.Workload == "" {
				s.Namespace, s.Workload = podIn(rec.Message)
			}
		}
	}
	if sp.Detail != "" {
		s.Detail, _ = rec.Get(sp.Detail)
	}
	if s.Detail == "" {
		s.Detail = rec.Message
	}
	return s, nil
}

// MatchLine tokenizes one line (prefixes allowed) and returns every signal it
// yields, with File empty and Line 1. A continuation line yields none.
func (s *Signatures) MatchLine(line string) ([]Signal, error) {
	var tk tokenizer
	if !tk.tokenize([]byte(line)) {
		return nil, nil
	}
	var mt matcher
	var out []Signal
	for i := range s.sigs {
		ok, err := mt.match(&s.sigs[i], &tk.raw)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		sg, err := mt.build(&s.sigs[i], &tk.raw, "", 1)
		if err != nil {
			return nil, err
		}
		out = append(out, sg)
	}
	return out, nil
}

// uidIn returns the first UUID (8-4-4-4-12 hex digits) in s, or "".
func uidIn(s string) string {
	const n = 36
	for i := 0; i+n <= len(s); i++ {
		if isHex(s[i]) && (i == 0 || !isHex(s[i-1])) && isUUID(s[i:i+n]) && (i+n == len(s) || !isHex(s[i+n])) {
			return s[i : i+n]
		}
	}
	return ""
}

func isHex(c byte) bool { return isDigit(c) || (c|0x20 >= 'a' && c|0x20 <= 'f') }

func isUUID(s string) bool {
	for i := 0; i < len(s); i++ {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if !isHex(s[i]) {
				return false
			}
		}
	}
	return true
}

// podIn returns the first word of s shaped like a Kubernetes namespace/name (a DNS label,
// a slash, a DNS subdomain), trailing punctuation removed; empty strings when none.
func podIn(s string) (namespace, name string) {
	for _, w := range strings.Fields(s) {
		w = strings.TrimRight(w, ":,;.)")
		ns, n, ok := strings.Cut(w, "/")
		if ok && isDNSLabel(ns, 63) && isDNSLabel(strings.ReplaceAll(n, ".", "-"), 253) {
			return ns, n
		}
	}
	return "", ""
}

// isDNSLabel: lower-case alphanumerics and '-', starting and ending alphanumeric.
func isDNSLabel(s string, maxLen int) bool {
	if s == "" || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := isDigit(c) || (c >= 'a' && c <= 'z')
		if !alnum && (c != '-' || i == 0 || i == len(s)-1) {
			return false
		}
	}
	return true
}
