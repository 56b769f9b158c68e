package ztlog

import (
	"bytes"
	"time"
)

// maxPrefixSearch bounds how far into a line the tokenizer looks for a record header
// behind a prefix (kubectl --timestamps, --prefix, CRI `<ts> stdout F`, stern's
// `<pod> <container>`, a log UI's `<ts> | `). Real prefixes are < 100 bytes; the bound
// keeps a long continuation line (YAML, a stack trace) from being scanned twice.
const maxPrefixSearch = 512

// headerLoc is where a record starts inside a line and what it looks like.
type headerLoc struct {
	start  int    // offset of the record (its timestamp, or the `{` of a JSON object)
	format Format // FormatTab, FormatLegacy or FormatJSON
	tsEnd  int    // offset just past the timestamp (plain formats)
	level  Level
	body   int // offset just past the level word and its separator (plain formats)
	tabSep bool
}

// findHeader locates the record header of line, skipping any prefix. A line without
// one is a continuation of the previous record (ISTIO-FACTS §6: start-up YAML, pasted
// stack traces) and must never be matched against a signature.
func findHeader(line []byte) (headerLoc, bool) {
	if len(line) == 0 {
		return headerLoc{}, false
	}
	// Fast paths: the unprefixed forms.
	if line[0] == '{' {
		if isJSONObjectStart(line) {
			return headerLoc{start: 0, format: FormatJSON}, true
		}
	} else if h, ok := plainHeaderAt(line, 0); ok {
		return h, true
	}
	lim := len(line)
	if lim > maxPrefixSearch {
		lim = maxPrefixSearch
	}
	window := line[:lim]
	jsonAt := -1
	for off := 0; ; {
		i := bytes.IndexByte(window[off:], '{')
		if i < 0 {
			break
		}
		i += off
		if isJSONObjectStart(line[i:]) {
			jsonAt = i
			break
		}
		off = i + 1
	}
	tsLimit := lim
	if jsonAt >= 0 {
		tsLimit = jsonAt // a timestamp after `{"` is inside the JSON object
	}
	// Timestamps have a 'T' at offset 10; look for each 'T' and test the 10 bytes before.
	for off := 10; off < tsLimit; {
		i := bytes.IndexByte(line[off:tsLimit], 'T')
		if i < 0 {
			break
		}
		i += off
		if h, ok := plainHeaderAt(line, i-10); ok {
			return h, true
		}
		off = i + 1
	}
	if jsonAt >= 0 {
		return headerLoc{start: jsonAt, format: FormatJSON}, true
	}
	return levelFirstHeader(line)
}

// levelFirstHeader recognises a record pasted without its timestamp: the line starts with
// the level. People trim timestamps when they paste ztunnel lines into issues
// (istio/istio#52487: `info\tinpod::statemanager\tpod received, starting proxy\t...`).
// All three plain layouts occur: the 1.22+ tab layout (`info\t`), the same with tabs turned
// into spaces (`info    `) and the ≤1.21 layout (`INFO ztunnel::...: `, which tracing pads
// to ` INFO`). To keep continuation text out, the level word must be all lower case (tab
// layout) or all upper case (≤1.21), at the very start of the line (one space of padding
// allowed before an upper-case one), and followed by a tab or a space and more text. Such
// a record has no time: a --since/--until window drops it.
func levelFirstHeader(line []byte) (headerLoc, bool) {
	s := 0
	if len(line) > 1 && line[0] == ' ' && line[1] >= 'A' && line[1] <= 'Z' {
		s = 1
	}
	lvl, upper, n := levelWord(line[s:])
	if n == 0 || !sameCase(line[s:s+n], upper) {
		return headerLoc{}, false
	}
	p := s + n
	if p >= len(line) || (line[p] != '\t' && line[p] != ' ') {
		return headerLoc{}, false
	}
	tab := line[p] == '\t'
	if s == 1 && (tab || !upper) {
		return headerLoc{}, false
	}
	q := p + 1
	if !tab {
		for q < len(line) && line[q] == ' ' {
			q++
		}
	}
	if q >= len(line) {
		return headerLoc{}, false
	}
	format := FormatTab
	if upper && !tab {
		format = FormatLegacy
	}
	return headerLoc{start: s, format: format, tsEnd: s, level: lvl, body: q, tabSep: tab}, true
}

// sameCase reports whether every letter of w has the case upper says.
func sameCase(w []byte, upper bool) bool {
	for _, c := range w {
		if (c >= 'a' && c <= 'z') == upper {
			return false
		}
	}
	return true
}

// isJSONObjectStart reports whether b starts like a JSON log object: `{` then
// optional spaces then `"`.
func isJSONObjectStart(b []byte) bool {
	for i := 1; i < len(b); i++ {
		switch b[i] {
		case ' ', '\t':
			continue
		case '"':
			return true
		default:
			return false
		}
	}
	return false
}

// plainHeaderAt tests for `<RFC3339 timestamp><tab or spaces><level>` at offset s.
func plainHeaderAt(line []byte, s int) (headerLoc, bool) {
	if s < 0 {
		return headerLoc{}, false
	}
	n := timestampLen(line[s:])
	if n == 0 {
		return headerLoc{}, false
	}
	p := s + n
	if p >= len(line) {
		return headerLoc{}, false
	}
	tab := false
	switch line[p] {
	case '\t':
		tab = true
		p++
	case ' ':
		for p < len(line) && line[p] == ' ' {
			p++
		}
	default:
		return headerLoc{}, false
	}
	lvl, upper, ln := levelWord(line[p:])
	if ln == 0 {
		return headerLoc{}, false
	}
	q := p + ln
	if q < len(line) && line[q] != ' ' && line[q] != '\t' {
		return headerLoc{}, false
	}
	format := FormatTab
	if !tab && upper {
		format = FormatLegacy
	}
	if q < len(line) {
		if line[q] == '\t' {
			q++
		} else {
			for q < len(line) && line[q] == ' ' {
				q++
			}
		}
	}
	return headerLoc{start: s, format: format, tsEnd: s + n, level: lvl, body: q, tabSep: tab}, true
}

// levelWord recognises a level word at the start of b, in either case.
func levelWord(b []byte) (Level, bool, int) {
	if len(b) < 4 {
		return LevelUnknown, false, 0
	}
	upper := b[0] >= 'A' && b[0] <= 'Z'
	match := func(w string) bool {
		if len(b) < len(w) {
			return false
		}
		for i := 0; i < len(w); i++ {
			if b[i]|0x20 != w[i] {
				return false
			}
		}
		return true
	}
	switch b[0] | 0x20 {
	case 'i':
		if match("info") {
			return LevelInfo, upper, 4
		}
	case 'w':
		if match("warning") {
			return LevelWarn, upper, 7
		}
		if match("warn") {
			return LevelWarn, upper, 4
		}
	case 'e':
		if match("error") {
			return LevelError, upper, 5
		}
	case 'd':
		if match("debug") {
			return LevelDebug, upper, 5
		}
	case 't':
		if match("trace") {
			return LevelTrace, upper, 5
		}
	case 'f':
		if match("fatal") {
			return LevelError, upper, 5
		}
	}
	return LevelUnknown, false, 0
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// timestampLen returns the length of an RFC 3339 timestamp at the start of b
// (`2024-10-29T17:39:45.936188Z`, any fraction length, `Z` or a numeric offset), or 0.
func timestampLen(b []byte) int {
	if len(b) < 20 {
		return 0
	}
	for _, i := range [...]int{0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18} {
		if !isDigit(b[i]) {
			return 0
		}
	}
	if b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' {
		return 0
	}
	p := 19
	if p < len(b) && (b[p] == '.' || b[p] == ',') {
		p++
		st := p
		for p < len(b) && isDigit(b[p]) {
			p++
		}
		if p == st {
			return 0
		}
	}
	if p >= len(b) {
		return 0
	}
	switch b[p] {
	case 'Z', 'z':
		return p + 1
	case '+', '-':
		// ±hh:mm or ±hhmm
		if p+6 <= len(b) && isDigit(b[p+1]) && isDigit(b[p+2]) && b[p+3] == ':' && isDigit(b[p+4]) && isDigit(b[p+5]) {
			return p + 6
		}
		if p+5 <= len(b) && isDigit(b[p+1]) && isDigit(b[p+2]) && isDigit(b[p+3]) && isDigit(b[p+4]) {
			return p + 5
		}
	}
	return 0
}

func atoiN(b []byte) int {
	n := 0
	for _, c := range b {
		n = n*10 + int(c-'0')
	}
	return n
}

// parseTimestamp parses a token accepted by timestampLen without going through
// time.Parse (it is on the hot path when a --since/--until window is set).
func parseTimestamp(b []byte) (time.Time, bool) {
	n := timestampLen(b)
	if n == 0 {
		return time.Time{}, false
	}
	b = b[:n]
	year, month, day := atoiN(b[0:4]), atoiN(b[5:7]), atoiN(b[8:10])
	hour, minute, sec := atoiN(b[11:13]), atoiN(b[14:16]), atoiN(b[17:19])
	if month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || sec > 60 {
		return time.Time{}, false
	}
	p := 19
	nsec := 0
	if b[p] == '.' || b[p] == ',' {
		p++
		digits := 0
		for p < len(b) && isDigit(b[p]) {
			if digits < 9 {
				nsec = nsec*10 + int(b[p]-'0')
				digits++
			}
			p++
		}
		for ; digits < 9; digits++ {
			nsec *= 10
		}
	}
	loc := time.UTC
	if b[p] == '+' || b[p] == '-' {
		oh := atoiN(b[p+1 : p+3])
		var om int
		if b[p+3] == ':' {
			om = atoiN(b[p+4 : p+6])
		} else {
			om = atoiN(b[p+3 : p+5])
		}
		off := (oh*60 + om) * 60
		if b[p] == '-' {
			off = -off
		}
		if off != 0 {
			loc = time.FixedZone("", off)
		}
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, loc)
	return t, true
}

// stripANSI removes ANSI escape sequences (ztunnel ≤1.21 colours its output on a TTY)
// from line into dst and returns it. Only called when the line holds an ESC byte.
func stripANSI(dst, line []byte) []byte {
	dst = dst[:0]
	for i := 0; i < len(line); i++ {
		c := line[i]
		if c != 0x1b {
			dst = append(dst, c)
			continue
		}
		if i+1 < len(line) && line[i+1] == '[' {
			// CSI: parameters and intermediates, then one final byte in 0x40–0x7e.
			j := i + 2
			for j < len(line) && (line[j] < 0x40 || line[j] > 0x7e) {
				j++
			}
			i = j
			continue
		}
		i++ // two-byte escape
	}
	return dst
}
