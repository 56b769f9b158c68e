package ztlog

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// rawField is a key=value pair as it sits in the line: no copies. When quoted, val is
// the text between the quotes, still carrying Rust Debug escapes.
type rawField struct {
	key, val []byte
	quoted   bool
}

// rawRecord is the zero-copy view of one record that the hot path works on. Slices
// point into the line buffer and are valid until the next line is read.
type rawRecord struct {
	format  Format
	ts      []byte
	level   Level
	target  []byte
	spans   []byte // the spans text: `name{k=v}:name2` (tab/JSON: after target; legacy: before it)
	message []byte // message; for JSON, the still-escaped string body when known
	rest    []byte // text holding the fields (plain: after the message; JSON: the whole object)

	msgKnown bool // false for a JSON record whose message could not be located cheaply

	fields       []rawField
	fieldsParsed bool

	// JSON records are decoded in full (they are rare on the hot path: only candidates
	// are decoded) into these.
	jsonRec *Record
	jsonErr error
}

func (r *rawRecord) reset() {
	fs := r.fields[:0]
	*r = rawRecord{fields: fs}
}

// parsePlain fills r from a plain-text line whose header was found at h.
func (r *rawRecord) parsePlain(line []byte, h headerLoc) {
	r.format = h.format
	r.ts = line[h.start:h.tsEnd]
	r.level = h.level
	r.msgKnown = true
	body := line[h.body:]
	if h.format == FormatLegacy {
		r.parseLegacyBody(body)
		return
	}
	if h.tabSep {
		// ts \t level \t target[:spans] \t message \t fields
		i := bytes.IndexByte(body, '\t')
		if i < 0 {
			r.splitTargetSpans(body)
			return
		}
		r.splitTargetSpans(body[:i])
		body = body[i+1:]
		j := bytes.IndexByte(body, '\t')
		if j < 0 {
			// No second tab: either just a message, or fields without a message.
			if fieldStartAt(body, 0) {
				r.rest = body
			} else {
				r.message = body
			}
			return
		}
		r.message = body[:j]
		r.rest = body[j+1:]
		return
	}
	// Tabs turned into spaces: the target and spans end at the first space outside
	// braces; the message ends where the first `key=` token starts.
	end := spanRegionEnd(body)
	r.splitTargetSpans(body[:end])
	body = trimLeftSpace(body[end:])
	m := messageEnd(body)
	r.message = bytes.TrimRight(body[:m], " \t")
	r.rest = body[m:]
}

// splitTargetSpans splits `target:span{..}:span2` (1.22+ layout). A single ':' that is
// not part of '::' starts the spans.
func (r *rawRecord) splitTargetSpans(b []byte) {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c == '{' {
			// a span's fields without a name before it: treat all as target
			break
		}
		if c != ':' {
			continue
		}
		if i+1 < len(b) && b[i+1] == ':' {
			i++
			continue
		}
		r.target = b[:i]
		r.spans = b[i+1:]
		return
	}
	r.target = b
}

// parseLegacyBody parses `<spans>: <target>: <message> k=v` (ztunnel ≤1.21), where
// both the spans and their `: ` are optional.
func (r *rawRecord) parseLegacyBody(body []byte) {
	// Try spans first: name({...})?(:name({...})?)*: then a target ending in ": ".
	if end, ok := legacySpanEnd(body); ok {
		rest := body[end:]
		if t := legacyTargetLen(rest); t > 0 {
			r.spans = body[:end-2] // drop the ": "
			r.target = rest[:t]
			r.setLegacyMessage(rest[t+2:])
			return
		}
	}
	if t := legacyTargetLen(body); t > 0 {
		r.target = body[:t]
		r.setLegacyMessage(body[t+2:])
		return
	}
	// No recognisable target: the whole body is the message.
	r.setLegacyMessage(body)
}

func (r *rawRecord) setLegacyMessage(b []byte) {
	b = trimLeftSpace(b)
	m := messageEnd(b)
	r.message = bytes.TrimRight(b[:m], " \t")
	r.rest = b[m:]
}

func isTargetByte(c byte) bool {
	return c == '_' || c == ':' || c == '-' || c == '.' || isDigit(c) || (c|0x20 >= 'a' && c|0x20 <= 'z')
}

// legacyTargetLen returns the length of a tracing target followed by ": " at the
// start of b, or 0.
func legacyTargetLen(b []byte) int {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c == ':' && i+1 < len(b) && b[i+1] == ' ' {
			if i == 0 {
				return 0
			}
			return i
		}
		if !isTargetByte(c) {
			return 0
		}
	}
	return 0
}

// legacySpanEnd returns the offset just past `spans: ` when b starts with at least one
// span that has fields (`name{...}`), e.g. `proxy{uid=..}:outbound{id=..}: `.
func legacySpanEnd(b []byte) (int, bool) {
	i := 0
	sawFields := false
	for {
		st := i
		for i < len(b) && b[i] != '{' && b[i] != ':' && b[i] != ' ' {
			if !isTargetByte(b[i]) {
				return 0, false
			}
			i++
		}
		if i == st || i >= len(b) {
			return 0, false
		}
		if b[i] == '{' {
			e := braceEnd(b, i)
			if e < 0 {
				return 0, false
			}
			i = e + 1
			sawFields = true
		}
		if i >= len(b) || b[i] != ':' {
			return 0, false
		}
		i++
		if i < len(b) && b[i] == ' ' {
			if !sawFields {
				return 0, false
			}
			return i + 1, true
		}
	}
}

// braceEnd returns the index of the '}' closing the '{' at open, honouring quoted
// strings and nesting, or -1.
func braceEnd(b []byte, open int) int {
	depth := 0
	for i := open; i < len(b); i++ {
		switch b[i] {
		case '"':
			q := quoteEnd(b, i+1)
			if q < 0 {
				return -1
			}
			i = q
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

// quoteEnd returns the index of the closing quote of a Rust Debug string whose body
// starts at i, or -1 when it is unterminated.
func quoteEnd(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case '\\':
			i += 2
		case '"':
			return i
		default:
			i++
		}
	}
	return -1
}

// spanRegionEnd returns the end of `target:span{...}` in a space-separated line: the
// first space or tab outside braces.
func spanRegionEnd(b []byte) int {
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case ' ', '\t':
			return i
		case '{':
			e := braceEnd(b, i)
			if e < 0 {
				return len(b)
			}
			i = e
		}
	}
	return len(b)
}

func trimLeftSpace(b []byte) []byte {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	return b[i:]
}

func isKeyStart(c byte) bool { return c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z') }

func isKeyByte(c byte) bool {
	return c == '_' || c == '.' || c == '-' || isDigit(c) || (c|0x20 >= 'a' && c|0x20 <= 'z')
}

// fieldStartAt reports whether a `key=` token starts at b[i].
func fieldStartAt(b []byte, i int) bool {
	if i >= len(b) || !isKeyStart(b[i]) {
		return false
	}
	for j := i + 1; j < len(b); j++ {
		c := b[j]
		if c == '=' {
			return true
		}
		if !isKeyByte(c) {
			return false
		}
	}
	return false
}

// messageEnd returns where the message ends in text that runs `message k=v k=v`: at a
// tab, or at the first whitespace followed by a `key=` token.
func messageEnd(b []byte) int {
	if fieldStartAt(b, 0) {
		return 0
	}
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\t':
			return i
		case ' ':
			if fieldStartAt(b, i+1) {
				return i
			}
		}
	}
	return len(b)
}

// restOfLineKeys hold free text that ztunnel 1.22.0–1.22.1 (and ≤1.21) wrote unquoted,
// always last: the value runs to the end of the line (ISTIO-FACTS §6).
func restOfLineKey(k []byte) bool {
	return string(k) == "error" || string(k) == "err"
}

// parseFields tokenizes `k=v k="v" …` from b, appending to dst.
func parseFields(dst []rawField, b []byte) []rawField {
	i := 0
	for i < len(b) {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
			i++
		}
		if i >= len(b) {
			break
		}
		if !fieldStartAt(b, i) {
			// Not a field: skip this token.
			for i < len(b) && b[i] != ' ' && b[i] != '\t' {
				i++
			}
			continue
		}
		eq := i + bytes.IndexByte(b[i:], '=')
		key := b[i:eq]
		v := eq + 1
		if v < len(b) && b[v] == '"' {
			q := quoteEnd(b, v+1)
			if q < 0 { // unterminated: keep what there is
				dst = append(dst, rawField{key: key, val: b[v+1:], quoted: true})
				break
			}
			dst = append(dst, rawField{key: key, val: b[v+1 : q], quoted: true})
			i = q + 1
			continue
		}
		if restOfLineKey(key) {
			dst = append(dst, rawField{key: key, val: bytes.TrimRight(b[v:], " \t")})
			break
		}
		// Unquoted: up to the next whitespace that starts another `key=` token (≤1.21
		// Display values may hold spaces: `wl=ns.pod (pod)`).
		j := v
		for j < len(b) {
			if (b[j] == ' ' || b[j] == '\t') && fieldStartAt(b, j+1) {
				break
			}
			j++
		}
		dst = append(dst, rawField{key: key, val: bytes.TrimRight(b[v:j], " \t")})
		i = j
	}
	return dst
}

// unquoteDebug removes Rust Debug string escapes (`\"`, `\\`, `\n`, `\t`, `\r`, `\0`,
// `\'`, `\u{…}`) from b, appending to dst. Unknown escapes are kept as written.
func unquoteDebug(dst, b []byte) []byte {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '\\' || i+1 >= len(b) {
			dst = append(dst, c)
			continue
		}
		i++
		switch b[i] {
		case '"', '\\', '\'':
			dst = append(dst, b[i])
		case 'n':
			dst = append(dst, '\n')
		case 't':
			dst = append(dst, '\t')
		case 'r':
			dst = append(dst, '\r')
		case '0':
			dst = append(dst, 0)
		case 'u':
			if i+1 < len(b) && b[i+1] == '{' {
				// At most 6 hex digits: look no further, or "\u{\u{\u{…" turns quadratic.
				if e := bytes.IndexByte(b[i+2:min(len(b), i+2+7)], '}'); e > 0 && e <= 6 {
					if v, err := strconv.ParseUint(string(b[i+2:i+2+e]), 16, 32); err == nil && v <= utf8.MaxRune {
						dst = utf8.AppendRune(dst, rune(v))
						i += 2 + e
						continue
					}
				}
			}
			dst = append(dst, '\\', 'u')
		default:
			dst = append(dst, '\\', b[i])
		}
	}
	return dst
}

// parseSpans splits `name{k=v}:name2:name3{k=v}` into spans.
func parseSpans(b []byte) []Span {
	var out []Span
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != '{' && b[i] != ':' {
			i++
		}
		sp := Span{Name: toString(b[:i])}
		if i < len(b) && b[i] == '{' {
			e := braceEnd(b, i)
			if e < 0 {
				e = len(b)
			}
			inner := b[i+1 : min(e, len(b))]
			for _, f := range parseFields(nil, inner) {
				sp.Fields = append(sp.Fields, Field{Key: toString(f.key), Value: fieldString(f)})
			}
			i = e + 1
		}
		if sp.Name != "" || len(sp.Fields) > 0 {
			out = append(out, sp)
		}
		if i >= len(b) {
			break
		}
		b = b[i+1:] // skip ':'
	}
	return out
}

// toString copies b into a string, replacing invalid UTF-8.
func toString(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return string(bytes.ToValidUTF8(b, []byte("\uFFFD")))
}

func fieldString(f rawField) string {
	if f.quoted && bytes.IndexByte(f.val, '\\') >= 0 {
		return toString(unquoteDebug(nil, f.val))
	}
	return toString(f.val)
}

var ztunnelPrefix = []byte("ztunnel::")

func normTarget(b []byte) []byte {
	return bytes.TrimPrefix(b, ztunnelPrefix)
}
