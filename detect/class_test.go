package detect

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/netns"
)

func TestClassify(t *testing.T) {
	should := enroll.Expectation{State: enroll.Captured, Reason: enroll.ReasonSelected, Required: []uint16{15001, 15006, 15008}}
	not := enroll.Expectation{State: enroll.NotCaptured, Reason: enroll.ReasonHostNetwork}
	unsure := enroll.Expectation{State: enroll.Unknown, Reason: enroll.ReasonNoPodIP}
	cases := []struct {
		name string
		ev   Evidence
		want Class
	}{
		{"captured", Evidence{Expectation: should, Redirection: "enabled", Capture: netns.Captured}, ClassCaptured},
		{"classic orphan", Evidence{Expectation: should, Redirection: "enabled", Capture: netns.CaptureNone}, ClassOrphaned},
		{"partial", Evidence{Expectation: should, Redirection: "enabled", Capture: netns.CapturePartial}, ClassPartial},
		{"netns replaced and empty", Evidence{Expectation: should, Redirection: "enabled", Capture: netns.CaptureNone, NetnsChanged: true}, ClassNetnsReplaced},
		{"netns replaced but captured", Evidence{Expectation: should, Redirection: "enabled", Capture: netns.Captured, NetnsChanged: true}, ClassCaptured},
		{"unreadable is unknown, not orphan", Evidence{Expectation: should, Redirection: "enabled", Capture: netns.CaptureUnknown}, ClassUnknown},
		{"no verdict at all is unknown", Evidence{Expectation: should, Redirection: "enabled"}, ClassUnknown},
		{"not annotated past grace", Evidence{Expectation: should, Capture: netns.CaptureNone, Unenrolled: time.Minute, Grace: 30 * time.Second}, ClassNotEnrolled},
		{"not annotated within grace", Evidence{Expectation: should, Capture: netns.CaptureNone, Unenrolled: time.Second, Grace: 30 * time.Second}, ClassUnknown},
		{"pending past grace", Evidence{Expectation: should, Redirection: "pending", Capture: netns.CaptureNone, Unenrolled: time.Hour, Grace: time.Minute}, ClassNotEnrolled},
		{"should not be captured, whatever it shows", Evidence{Expectation: not, Redirection: "enabled", Capture: netns.CaptureNone}, ClassSkipped},
		{"expectation unknown, nothing there", Evidence{Expectation: unsure, Capture: netns.CaptureNone}, ClassUnknown},
		{"expectation unknown, but captured", Evidence{Expectation: unsure, Capture: netns.Captured}, ClassCaptured},
		{"host network while expected", Evidence{Expectation: should, Capture: netns.CaptureHostNetwork}, ClassUnknown},
		// Rule inspection.
		{"captured with rules", Evidence{Expectation: should, Redirection: "enabled", Capture: netns.Captured, Rules: netns.RulesPresent}, ClassCaptured},
		{"listeners without rules: bypass", Evidence{Expectation: should, Redirection: "enabled", Capture: netns.Captured, Rules: netns.RulesAbsent}, ClassBypass},
		{"listeners with half the rules: bypass", Evidence{Expectation: should, Redirection: "enabled", Capture: netns.Captured, Rules: netns.RulesPartial}, ClassBypass},
		{"rules without listeners: blackhole", Evidence{Expectation: should, Redirection: "enabled", Capture: netns.CaptureNone, Rules: netns.RulesPresent}, ClassBlackhole},
		{"neither: orphan", Evidence{Expectation: should, Redirection: "enabled", Capture: netns.CaptureNone, Rules: netns.RulesAbsent}, ClassOrphaned},
		{"half the rules, no listeners: orphan", Evidence{Expectation: should, Redirection: "enabled", Capture: netns.CaptureNone, Rules: netns.RulesPartial}, ClassOrphaned},
		{"replaced netns wins over rules", Evidence{Expectation: should, Redirection: "enabled", Capture: netns.CaptureNone, NetnsChanged: true, Rules: netns.RulesPresent}, ClassNetnsReplaced},
		{"partial listeners stay partial", Evidence{Expectation: should, Redirection: "enabled", Capture: netns.CapturePartial, Rules: netns.RulesAbsent}, ClassPartial},
		{"not expected: skipped whatever the rules", Evidence{Expectation: not, Capture: netns.Captured, Rules: netns.RulesAbsent}, ClassSkipped},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, Classify(c.ev))
		})
	}
	for _, c := range []Class{ClassOrphaned, ClassPartial, ClassNetnsReplaced, ClassNotEnrolled, ClassBypass, ClassBlackhole} {
		assert.True(t, c.Actionable(), c)
	}
	for _, c := range []Class{ClassCaptured, ClassUnknown, ClassSkipped} {
		assert.False(t, c.Actionable(), c)
	}
}
