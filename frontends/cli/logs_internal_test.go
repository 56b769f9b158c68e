package cli

import (
	"errors"
	"testing"
	"time"
)

func TestLogsTimeBound(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in    string
		want  time.Time
		usage bool
	}{
		{"", time.Time{}, false},
		{"15m", now.Add(-15 * time.Minute), false},
		{"2h30m", now.Add(-150 * time.Minute), false},
		{"0s", now, false},
		{"2025-01-02T03:04:05Z", time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), false},
		{"2025-01-02T05:04:05.5+02:00", time.Date(2025, 1, 2, 3, 4, 5, 500000000, time.UTC), false},
		{"-1h", time.Time{}, true},
		{"yesterday", time.Time{}, true},
		{"2025-01-02", time.Time{}, true},
	}
	for _, c := range cases {
		got, err := logsTimeBound("since", c.in, now)
		var ue *UsageError
		if c.usage != errors.As(err, &ue) || (err != nil && !c.usage) {
			t.Errorf("logsTimeBound(%q): err %v, want usage error %v", c.in, err, c.usage)
			continue
		}
		if !got.Equal(c.want) {
			t.Errorf("logsTimeBound(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}
