package ztlog

import (
	"strings"
	"time"
)

// Level is a record's severity. ztunnel writes it lower case from 1.22 and upper case,
// right-aligned, before that; both map to the same Level.
type Level uint8

// Levels, least to most severe. LevelUnknown is never produced for a record the
// tokenizer accepted as a plain-text header; a JSON record may lack a level.
const (
	LevelUnknown Level = iota
	LevelTrace
	LevelDebug
	LevelInfo
	LevelWarn
	LevelError
)

func (l Level) String() string {
	switch l {
	case LevelTrace:
		return "trace"
	case LevelDebug:
		return "debug"
	case LevelInfo:
		return "info"
	case LevelWarn:
		return "warn"
	case LevelError:
		return "error"
	default:
		return "unknown"
	}
}

// Format names the record layout a line was written in.
type Format uint8

// Formats ztunnel has written.
const (
	FormatUnknown Format = iota
	// FormatLegacy is the tracing-subscriber text layout of ztunnel ≤1.21:
	// `<ts>  INFO <spans>: ztunnel::<target>: <message> k=v`.
	FormatLegacy
	// FormatTab is the Istio layout of ztunnel 1.22+ (and of istio-cni):
	// `<ts>\t<level>\t<target>[:<span>{k=v}]*\t<message>\t<k=v> …`, also accepted when
	// the tabs were turned into spaces by a paste or a log UI.
	FormatTab
	// FormatJSON is LOG_FORMAT=json, one object per line (1.22.0 and 1.22.1+ shapes).
	FormatJSON
)

func (f Format) String() string {
	switch f {
	case FormatLegacy:
		return "legacy"
	case FormatTab:
		return "tab"
	case FormatJSON:
		return "json"
	default:
		return "unknown"
	}
}

// Field is one key=value pair of a record or a span, with Rust Debug quoting and JSON
// escaping already removed.
type Field struct {
	Key   string
	Value string
}

// Span is one enclosing tracing span of a record, e.g. `proxy{wl=ns/pod}`.
type Span struct {
	Name   string
	Fields []Field
}

// Record is one ztunnel (or istio-cni) log record.
type Record struct {
	// Line is the 1-based line number of the record's header within its stream.
	Line int
	// Time is the record's own timestamp (not a kubectl/CRI prefix), zero if absent.
	Time   time.Time
	Level  Level
	Format Format
	// Target is the tracing target with any `ztunnel::` prefix removed ("access",
	// "inpod::statemanager", "cni-agent").
	Target  string
	Spans   []Span
	Message string
	Fields  []Field
}

// Get returns the value of the record's first field named key.
func (r *Record) Get(key string) (string, bool) {
	for _, f := range r.Fields {
		if f.Key == key {
			return f.Value, true
		}
	}
	return "", false
}

// String renders the record in the 1.22+ tab layout (for humans and tests).
func (r *Record) String() string {
	var b strings.Builder
	if !r.Time.IsZero() {
		b.WriteString(r.Time.UTC().Format("2006-01-02T15:04:05.000000Z"))
	}
	b.WriteByte('\t')
	b.WriteString(r.Level.String())
	b.WriteByte('\t')
	b.WriteString(r.Target)
	for _, s := range r.Spans {
		b.WriteByte(':')
		b.WriteString(s.Name)
		if len(s.Fields) > 0 {
			b.WriteByte('{')
			writeFields(&b, s.Fields)
			b.WriteByte('}')
		}
	}
	b.WriteByte('\t')
	b.WriteString(r.Message)
	b.WriteByte('\t')
	writeFields(&b, r.Fields)
	return b.String()
}

func writeFields(b *strings.Builder, fs []Field) {
	for i, f := range fs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(f.Key)
		b.WriteByte('=')
		b.WriteString(f.Value)
	}
}
