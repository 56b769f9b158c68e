package ztlog

import (
	"bytes"
	"fmt"
	"io"
	"time"
)

// DefaultMaxLineBytes is the longest line the tokenizer keeps. Longer lines are read
// through (memory stays bounded by this size), counted in Stats.LongLines and never
// matched: a ztunnel record is a few hundred bytes; a 10 MB "line" is not one.
const DefaultMaxLineBytes = 64 << 10

// Stats counts what a stream held.
type Stats struct {
	// LinesRead counts every line, including continuations and skipped long lines.
	LinesRead int `json:"linesRead"`
	// Records counts lines with a record header (inside the time window, when one is set).
	Records int `json:"records"`
	// Continuations counts lines without a record header (YAML, stack traces, blank
	// lines, CRI partial chunks). They never match a signature.
	Continuations int `json:"continuations"`
	// LongLines counts lines longer than the line limit, skipped.
	LongLines int `json:"longLines"`
	// OutsideWindow counts records dropped by the --since/--until window.
	OutsideWindow int `json:"outsideWindow"`
	// Malformed counts JSON records that did not decode. The Scanner decodes every
	// record, and a malformed one is not counted in Records; the Analyzer decodes only
	// records a signature needs to read (the cheap checks come first), so a malformed
	// one is counted here and in Records.
	Malformed int `json:"malformed"`
}

// Add adds o to s.
func (s *Stats) Add(o Stats) {
	s.LinesRead += o.LinesRead
	s.Records += o.Records
	s.Continuations += o.Continuations
	s.LongLines += o.LongLines
	s.OutsideWindow += o.OutsideWindow
	s.Malformed += o.Malformed
}

// lineReader yields lines from a stream through one fixed buffer, the line limit: memory
// never grows with the input. A line ends at "\n", "\r\n" or a lone "\r" (old Mac
// endings, and logs pasted through tools that write CR only); a line longer than the
// buffer is skipped and counted. The first bytes of the stream are sniffed for content
// that is not text (see Sniff).
type lineReader struct {
	r     io.Reader
	buf   []byte
	start int // first unread byte
	end   int // end of the buffered bytes
	// nlPos is the index of the next '\n' at or after start when known (>= start), or
	// -1 when buf[nlFrom:end] was searched and holds none: CR-only input is not rescanned.
	nlPos  int
	nlFrom int
	skipLF bool // the last line ended with a '\r' at the buffer's end: a '\n' next belongs to it
	long   bool // inside a line longer than the buffer, being skipped
	eof    bool
	err    error

	sniffed bool
	content Content

	line  int
	stats *Stats
}

func newLineReader(r io.Reader, maxLine int, st *Stats) *lineReader {
	if maxLine <= 0 {
		maxLine = DefaultMaxLineBytes
	}
	if maxLine < 256 {
		maxLine = 256
	}
	return &lineReader{r: r, buf: make([]byte, maxLine), stats: st, nlPos: -1}
}

// fill reads more input after the buffered bytes, moving them to the front first.
func (lr *lineReader) fill() {
	if lr.start > 0 {
		lr.end = copy(lr.buf, lr.buf[lr.start:lr.end])
		lr.start, lr.nlPos, lr.nlFrom = 0, -1, 0
	}
	if lr.end == len(lr.buf) || lr.eof || lr.err != nil {
		return
	}
	n, err := lr.r.Read(lr.buf[lr.end:])
	lr.end += n
	switch {
	case err == io.EOF:
		lr.eof = true
	case err != nil:
		lr.err = err
	}
}

// sniff fills the buffer up to sniffLen bytes (or the end of the stream) and classifies
// them, once, before the first line is returned.
func (lr *lineReader) sniff() {
	lr.sniffed = true
	want := min(sniffLen, len(lr.buf))
	for lr.end-lr.start < want && !lr.eof && lr.err == nil {
		lr.fill()
	}
	lr.content = Sniff(lr.buf[lr.start:lr.end])
}

// eol returns the offset from start of the next line ending ('\r' or '\n'), or -1.
func (lr *lineReader) eol() int {
	if lr.nlPos < lr.start {
		from := max(lr.start, lr.nlFrom)
		if j := bytes.IndexByte(lr.buf[from:lr.end], '\n'); j >= 0 {
			lr.nlPos = from + j
		} else {
			lr.nlPos, lr.nlFrom = -1, lr.end
		}
	}
	lim := lr.end
	if lr.nlPos >= 0 {
		lim = lr.nlPos
	}
	if j := bytes.IndexByte(lr.buf[lr.start:lim], '\r'); j >= 0 {
		return j
	}
	if lr.nlPos >= 0 {
		return lr.nlPos - lr.start
	}
	return -1
}

// next returns the next line without its line ending (the slice is valid until the
// next call), or ok=false at the end of the stream or on a read error (see err).
func (lr *lineReader) next() (line []byte, ok bool) {
	if !lr.sniffed {
		lr.sniff()
	}
	for {
		if lr.skipLF {
			if lr.start == lr.end && !lr.eof && lr.err == nil {
				lr.fill()
				continue
			}
			lr.skipLF = false
			if lr.start < lr.end && lr.buf[lr.start] == '\n' {
				lr.start++
			}
		}
		if i := lr.eol(); i >= 0 {
			line = lr.buf[lr.start : lr.start+i]
			lr.start += i + 1
			if lr.buf[lr.start-1] == '\r' {
				if lr.start < lr.end {
					if lr.buf[lr.start] == '\n' {
						lr.start++
					}
				} else {
					lr.skipLF = true
				}
			}
			if lr.long {
				lr.long = false // the end of a line already counted and skipped
				continue
			}
			lr.line++
			lr.stats.LinesRead++
			return line, true
		}
		if lr.eof || lr.err != nil {
			line = lr.buf[lr.start:lr.end]
			lr.start = lr.end
			if len(line) == 0 || lr.long {
				lr.long = false
				return nil, false
			}
			lr.line++
			lr.stats.LinesRead++
			return line, true
		}
		if lr.end-lr.start == len(lr.buf) {
			// A full buffer without a line ending: skip the line, whatever its length.
			if !lr.long {
				lr.long = true
				lr.line++
				lr.stats.LinesRead++
				lr.stats.LongLines++
			}
			lr.start, lr.end, lr.nlPos, lr.nlFrom = 0, 0, -1, 0
		}
		lr.fill()
	}
}

// readErr returns the stream's read error, nil at a clean end.
func (lr *lineReader) readErr() error {
	return lr.err
}

// tokenizer turns one line at a time into a rawRecord without allocating.
type tokenizer struct {
	raw     rawRecord
	ansiBuf []byte
}

// tokenize parses the header of line; false when the line is a continuation. ANSI
// colours (ztunnel ≤1.21 on a TTY) are stripped only from lines whose header is not
// found as they are: a coloured line starts with an escape, so plain lines never pay
// for the extra pass.
func (t *tokenizer) tokenize(line []byte) bool {
	h, ok := findHeader(line)
	if !ok && bytes.IndexByte(line, 0x1b) >= 0 {
		t.ansiBuf = stripANSI(t.ansiBuf, line)
		line = t.ansiBuf
		h, ok = findHeader(line)
	}
	if !ok {
		return false
	}
	t.raw.reset()
	if h.format == FormatJSON {
		t.raw.parseJSONQuick(line[h.start:])
	} else {
		t.raw.parsePlain(line, h)
	}
	return true
}

// ensureFields parses the record's fields (once).
func (r *rawRecord) ensureFields() error {
	if r.fieldsParsed {
		return nil
	}
	if r.format == FormatJSON {
		return r.decodeJSONRaw()
	}
	r.fields = parseFields(r.fields[:0], r.rest)
	r.fieldsParsed = true
	return nil
}

// time parses the record's own timestamp.
func (r *rawRecord) time() time.Time {
	if r.format == FormatJSON && r.ts == nil {
		if r.jsonRec == nil {
			_ = r.decodeJSONRaw()
		}
		if r.jsonRec != nil {
			return r.jsonRec.Time
		}
		return time.Time{}
	}
	t, _ := parseTimestamp(r.ts)
	return t
}

// materialize builds a Record (allocating) from the raw view.
func (r *rawRecord) materialize(lineNo int) (*Record, error) {
	if r.format == FormatJSON {
		if err := r.decodeJSONRaw(); err != nil {
			return nil, err
		}
		rec := *r.jsonRec
		rec.Line = lineNo
		return &rec, nil
	}
	if err := r.ensureFields(); err != nil {
		return nil, err
	}
	rec := &Record{
		Line:    lineNo,
		Time:    r.time(),
		Level:   r.level,
		Format:  r.format,
		Target:  toString(normTarget(r.target)),
		Message: toString(r.message),
	}
	if len(r.spans) > 0 {
		rec.Spans = parseSpans(r.spans)
	}
	if len(r.fields) > 0 {
		rec.Fields = make([]Field, len(r.fields))
		for i, f := range r.fields {
			rec.Fields[i] = Field{Key: toString(f.key), Value: fieldString(f)}
		}
	}
	return rec, nil
}

// Scanner reads ztunnel log records from a stream, one at a time, in bounded memory.
// Lines without a record header (continuations) and over-long lines are counted and
// skipped. It is the general-purpose tokenizer; Analyzer uses the same machinery but
// only materializes records that can match a signature.
type Scanner struct {
	lr   *lineReader
	tok  tokenizer
	rec  *Record
	err  error
	st   Stats
	done bool
}

// NewScanner returns a Scanner reading r. Of the options only WithMaxLineBytes applies.
func NewScanner(r io.Reader, opts ...Option) *Scanner {
	c := newConfig(opts)
	s := &Scanner{}
	s.lr = newLineReader(r, c.maxLine, &s.st)
	return s
}

// Scan advances to the next record. It returns false at the end of the stream or on a
// read error (see Err). A JSON record that does not decode is counted as Malformed and
// skipped.
func (s *Scanner) Scan() bool {
	if s.done {
		return false
	}
	for {
		line, ok := s.lr.next()
		if !ok {
			s.done = true
			if err := s.lr.readErr(); err != nil {
				s.err = fmt.Errorf("line %d: %w", s.lr.line+1, err)
			}
			return false
		}
		if !s.tok.tokenize(line) {
			s.st.Continuations++
			continue
		}
		rec, err := s.tok.raw.materialize(s.lr.line)
		if err != nil {
			s.st.Malformed++
			continue
		}
		s.st.Records++
		s.rec = rec
		return true
	}
}

// Record returns the record found by the last successful Scan.
func (s *Scanner) Record() *Record { return s.rec }

// Err returns the first read error, nil at a clean end of stream.
func (s *Scanner) Err() error { return s.err }

// Stats returns the counts so far.
func (s *Scanner) Stats() Stats { return s.st }
