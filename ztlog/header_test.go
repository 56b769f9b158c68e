package ztlog

import (
	"testing"
	"time"
)

func TestParseTimestamp(t *testing.T) {
	cases := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2024-10-29T17:39:45.936188Z", time.Date(2024, 10, 29, 17, 39, 45, 936188000, time.UTC), true},
		{"2024-10-29T17:39:45.936188123Z", time.Date(2024, 10, 29, 17, 39, 45, 936188123, time.UTC), true},
		{"2024-10-29T17:39:45.9361881239999Z", time.Date(2024, 10, 29, 17, 39, 45, 936188123, time.UTC), true},
		{"2024-10-29T17:39:45Z", time.Date(2024, 10, 29, 17, 39, 45, 0, time.UTC), true},
		{"2024-10-29T17:39:45.936Z", time.Date(2024, 10, 29, 17, 39, 45, 936000000, time.UTC), true},
		{"2024-10-29T19:39:45.5+02:00", time.Date(2024, 10, 29, 17, 39, 45, 500000000, time.UTC), true},
		{"2024-10-29T15:39:45-0200", time.Date(2024, 10, 29, 17, 39, 45, 0, time.UTC), true},
		{"2024-10-29T17:39:45.Z", time.Time{}, false},
		{"2024-10-29 17:39:45Z", time.Time{}, false},
		{"2024-13-29T17:39:45Z", time.Time{}, false},
		{"2024-10-29T17:39:45", time.Time{}, false},
		{"10.xx.xx.xx", time.Time{}, false},
		{"", time.Time{}, false},
	}
	for _, c := range cases {
		got, ok := parseTimestamp([]byte(c.in))
		if ok != c.ok || !got.Equal(c.want) {
			t.Errorf("parseTimestamp(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestFindHeader(t *testing.T) {
	const rec = "2026-08-26T05:11:08.729972Z\terror\taccess\tconnection complete\tsrc.addr=10.0.0.1:1"
	cases := []struct {
		name   string
		line   string
		start  int
		format Format
		level  Level
		ok     bool
	}{
		{"tab", rec, 0, FormatTab, LevelError, true},
		{"kubectl --timestamps", "2026-08-26T05:11:08.730001234Z " + rec, 31, FormatTab, LevelError, true},
		{"kubectl --prefix", "[pod/ztunnel-abcde/istio-proxy] " + rec, 32, FormatTab, LevelError, true},
		{"CRI", "2026-08-26T05:11:08.730001234+00:00 stdout F " + rec, 45, FormatTab, LevelError, true},
		{"stern", "ztunnel-abcde istio-proxy " + rec, 26, FormatTab, LevelError, true},
		{"log UI", "2026-08-26T05:11:08.730Z | " + rec, 27, FormatTab, LevelError, true},
		{"spaces lower case", "2024-10-30T11:49:40.421833Z error access connection complete", 0, FormatTab, LevelError, true},
		{"legacy", "2024-04-04T07:16:36.301267Z  INFO access: connection complete", 0, FormatLegacy, LevelInfo, true},
		{"legacy WARN", "2024-04-04T07:16:36.301267Z  WARN x: y", 0, FormatLegacy, LevelWarn, true},
		{"json", `{"level":"info","time":"2024-01-01T00:00:00Z"}`, 0, FormatJSON, 0, true},
		{"json behind --timestamps", `2024-01-01T00:00:00.1Z {"level":"info","time":"2024-01-01T00:00:00Z"}`, 23, FormatJSON, 0, true},
		{"json behind --prefix", `[pod/x/y] {"level":"info"}`, 10, FormatJSON, 0, true},
		{"yaml continuation", "inboundAddr: '[::]:15008'", 0, 0, 0, false},
		{"timestamp without level", "2024-01-01T00:00:00Z something else", 0, 0, 0, false},
		{"only timestamps", "2024-01-01T00:00:00Z 2024-01-01T00:00:00Z", 0, 0, 0, false},
		{"span braces are not json", "  proxy{uid=1}: text", 0, 0, 0, false},
		{"level glued to text", "2024-01-01T00:00:00Z informational", 0, 0, 0, false},
		{"empty", "", 0, 0, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, ok := findHeader([]byte(c.line))
			if ok != c.ok {
				t.Fatalf("ok = %v, want %v", ok, c.ok)
			}
			if !ok {
				return
			}
			if h.start != c.start || h.format != c.format || (c.format != FormatJSON && h.level != c.level) {
				t.Errorf("got start=%d format=%s level=%s, want start=%d format=%s level=%s", h.start, h.format, h.level, c.start, c.format, c.level)
			}
		})
	}
}

func TestFindHeaderPrefixBound(t *testing.T) {
	long := make([]byte, maxPrefixSearch+10)
	for i := range long {
		long[i] = 'x'
	}
	line := string(long) + " 2024-01-01T00:00:00Z\tinfo\taccess\tm\t"
	if _, ok := findHeader([]byte(line)); ok {
		t.Fatal("a header behind more than maxPrefixSearch bytes of prefix was accepted")
	}
}

func TestStripANSI(t *testing.T) {
	in := "\x1b[2m2024-04-11T15:38:42.182974Z\x1b[0m \x1b[32m INFO\x1b[0m \x1b[2maccess\x1b[0m\x1b[2m:\x1b[0m connection complete\x1b"
	want := "2024-04-11T15:38:42.182974Z  INFO access: connection complete"
	if got := string(stripANSI(nil, []byte(in))); got != want {
		t.Fatalf("stripANSI = %q, want %q", got, want)
	}
}

func TestLevelWord(t *testing.T) {
	for in, want := range map[string]Level{"info": LevelInfo, "INFO": LevelInfo, "warn": LevelWarn, "WARNING": LevelWarn,
		"error": LevelError, "ERROR": LevelError, "debug": LevelDebug, "TRACE": LevelTrace, "fatal": LevelError} {
		if l, _, n := levelWord([]byte(in)); l != want || n != len(in) {
			t.Errorf("levelWord(%q) = %s/%d, want %s/%d", in, l, n, want, len(in))
		}
	}
	if _, _, n := levelWord([]byte("inf")); n != 0 {
		t.Error("levelWord accepted a truncated level")
	}
}
