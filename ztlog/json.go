package ztlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

var (
	jsonMessageKey   = []byte(`"message":"`)
	jsonTimeKey      = []byte(`"time":"`)
	jsonTimestampKey = []byte(`"timestamp":"`)
)

// parseJSONQuick fills the cheap part of a JSON record: where the message is, when it
// carries no escapes. The object is decoded in full only for candidate lines.
func (r *rawRecord) parseJSONQuick(obj []byte) {
	r.format = FormatJSON
	r.rest = obj
	for _, k := range [][]byte{jsonTimeKey, jsonTimestampKey} {
		if i := bytes.Index(obj, k); i >= 0 {
			if n := timestampLen(obj[i+len(k):]); n > 0 {
				r.ts = obj[i+len(k) : i+len(k)+n]
				break
			}
		}
	}
	i := bytes.Index(obj, jsonMessageKey)
	if i < 0 {
		return // no message: known to be empty only after a full decode
	}
	body := obj[i+len(jsonMessageKey):]
	for j := 0; j < len(body); j++ {
		switch body[j] {
		case '\\':
			return
		case '"':
			r.message = body[:j]
			r.msgKnown = true
			return
		}
	}
}

// decodeJSON decodes a whole LOG_FORMAT=json object into a Record.
//
// Shapes: 1.22.1+ writes `level` (lower case), `time`, `scope` (the full target), the
// message and flat dotted keys, then one object per enclosing span named by the span
// (istio/ztunnel src/telemetry.rs, IstioJsonFormat). 1.22.0 used tracing-subscriber's
// stock JSON layout (inference: `timestamp`, upper-case `level`, `target`, the event's
// fields under `fields`, spans under `span`/`spans`); both are accepted, and unknown
// nested objects are treated as spans.
func decodeJSON(obj []byte) (*Record, error) {
	dec := json.NewDecoder(bytes.NewReader(obj))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	rec := &Record{Format: FormatJSON}
	var spanObj *Span
	sawSpans := false
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := kt.(string)
		vt, err := dec.Token()
		if err != nil {
			return nil, err
		}
		switch v := vt.(type) {
		case json.Delim:
			switch v {
			case '{':
				fs, name, err := readObjectFields(dec, "", key == "span")
				if err != nil {
					return nil, err
				}
				switch key {
				case "fields":
					for _, f := range fs {
						if f.Key == "message" && rec.Message == "" {
							rec.Message = f.Value
							continue
						}
						rec.Fields = append(rec.Fields, f)
					}
				case "span":
					if name == "" {
						name = key
					}
					spanObj = &Span{Name: name, Fields: fs}
				default:
					rec.Spans = append(rec.Spans, Span{Name: key, Fields: fs})
				}
			case '[':
				if key == "spans" {
					sawSpans = true
					sp, err := readSpanArray(dec)
					if err != nil {
						return nil, err
					}
					rec.Spans = append(rec.Spans, sp...)
				} else if err := skipValue(dec, v); err != nil {
					return nil, err
				}
			}
		default:
			val, ok := scalarString(vt)
			if !ok {
				continue // null
			}
			switch key {
			case "level":
				if l, _, n := levelWord([]byte(val)); n == len(val) {
					rec.Level = l
				}
			case "time", "timestamp":
				if t, ok := parseTimestamp([]byte(val)); ok {
					rec.Time = t
				}
			case "scope", "target":
				rec.Target = strings.TrimPrefix(val, "ztunnel::")
			case "message", "msg":
				rec.Message = val
			default:
				rec.Fields = append(rec.Fields, Field{Key: key, Value: val})
			}
		}
	}
	if _, err := dec.Token(); err != nil { // closing '}'
		return nil, err
	}
	if spanObj != nil && !sawSpans {
		rec.Spans = append(rec.Spans, *spanObj)
	}
	return rec, nil
}

func scalarString(t json.Token) (string, bool) {
	switch v := t.(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case bool:
		if v {
			return "true", true
		}
		return "false", true
	default:
		return "", false
	}
}

// readObjectFields reads the members of an object whose '{' was consumed, flattening
// nested objects into dotted keys. With takeName, a top-level "name" member is returned
// on its own (the span name in tracing-subscriber's layout).
func readObjectFields(dec *json.Decoder, prefix string, takeName bool) ([]Field, string, error) {
	var fs []Field
	name := ""
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, "", err
		}
		key, _ := kt.(string)
		if prefix != "" {
			key = prefix + "." + key
		}
		vt, err := dec.Token()
		if err != nil {
			return nil, "", err
		}
		if d, ok := vt.(json.Delim); ok {
			if d == '{' {
				sub, _, err := readObjectFields(dec, key, false)
				if err != nil {
					return nil, "", err
				}
				fs = append(fs, sub...)
				continue
			}
			if err := skipValue(dec, d); err != nil {
				return nil, "", err
			}
			continue
		}
		val, ok := scalarString(vt)
		if !ok {
			continue
		}
		if takeName && key == "name" && prefix == "" {
			name = val
			continue
		}
		fs = append(fs, Field{Key: key, Value: val})
	}
	if _, err := dec.Token(); err != nil {
		return nil, "", err
	}
	return fs, name, nil
}

func readSpanArray(dec *json.Decoder) ([]Span, error) {
	var out []Span
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		d, ok := t.(json.Delim)
		if !ok {
			continue
		}
		if d != '{' {
			if err := skipValue(dec, d); err != nil {
				return nil, err
			}
			continue
		}
		fs, name, err := readObjectFields(dec, "", true)
		if err != nil {
			return nil, err
		}
		out = append(out, Span{Name: name, Fields: fs})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	return out, nil
}

// skipValue consumes the rest of an object or array whose opening delimiter was read.
func skipValue(dec *json.Decoder, open json.Delim) error {
	if open != '{' && open != '[' {
		return nil
	}
	depth := 1
	for depth > 0 {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := t.(json.Delim); ok {
			switch d {
			case '{', '[':
				depth++
			default:
				depth--
			}
		}
	}
	return nil
}

// decodeJSONRaw decodes r's JSON object once and mirrors its fields as rawFields so
// that one matcher serves every format.
func (r *rawRecord) decodeJSONRaw() error {
	if r.jsonRec != nil || r.jsonErr != nil {
		return r.jsonErr
	}
	rec, err := decodeJSON(r.rest)
	if err != nil {
		r.jsonErr = fmt.Errorf("malformed JSON record: %w", err)
		return r.jsonErr
	}
	r.jsonRec = rec
	r.level = rec.Level
	r.target = []byte(rec.Target)
	r.message = []byte(rec.Message)
	r.msgKnown = true
	r.fields = r.fields[:0]
	for _, f := range rec.Fields {
		r.fields = append(r.fields, rawField{key: []byte(f.Key), val: []byte(f.Value)})
	}
	r.fieldsParsed = true
	return nil
}
