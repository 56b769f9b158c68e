package detect

import (
	"time"

	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/netns"
)

// Class is a finding's class (DESIGN.md "Finding classes").
type Class string

const (
	ClassCaptured      Class = "captured"       // every required listener present
	ClassOrphaned      Class = "orphaned"       // annotated enabled, no required listener present
	ClassPartial       Class = "partial"        // some required listeners present, some missing
	ClassNotEnrolled   Class = "not-enrolled"   // should be captured; annotation absent or pending past the grace period
	ClassNetnsReplaced Class = "netns-replaced" // the netns changed since last seen and capture is missing
	ClassBypass        Class = "bypass"         // rule inspection: listeners without redirect rules
	ClassBlackhole     Class = "blackhole"      // rule inspection: redirect rules without listeners
	ClassUnknown       Class = "unknown"        // could not be verified: never healthy, never an orphan
	ClassSkipped       Class = "skipped"        // enroll says not expected
)

// Classes are every class, in the order the docs list them: metrics, alerts and docs are
// generated from or tested against this list.
var Classes = []Class{ClassCaptured, ClassOrphaned, ClassPartial, ClassNotEnrolled, ClassNetnsReplaced,
	ClassBypass, ClassBlackhole, ClassUnknown, ClassSkipped}

// Actionable reports whether a class describes a pod that is broken and may be healed.
func (c Class) Actionable() bool {
	switch c {
	case ClassOrphaned, ClassPartial, ClassNetnsReplaced, ClassNotEnrolled, ClassBlackhole, ClassBypass:
		return true
	}
	return false
}

// Evidence is what is known about one pod when it is classified.
type Evidence struct {
	Expectation enroll.Expectation
	// Redirection is the value of the ambient.istio.io/redirection annotation ("" if absent).
	Redirection string
	// Capture is netns's verdict judged on Expectation.Required.
	Capture netns.Capture
	// NetnsChanged is true when the pod's netns inode differs from the one seen before.
	NetnsChanged bool
	// Unenrolled is how long the pod has been without an "enabled" annotation (since it
	// started, or since the annotation went pending). Compared with Grace.
	Unenrolled time.Duration
	Grace      time.Duration
	// Rules is rule inspection's verdict on istio-cni's in-pod routing set-up; "" when
	// rules were not inspected (or could not be read): the listeners decide alone.
	Rules netns.RulesState
}

// Classify applies DESIGN.md's finding classes. The order matters: what enroll says first
// (a pod that should not be captured is skipped whatever its netns shows), then whether the
// netns could be read at all (unknown is never healthy and never an orphan), then what it
// shows.
func Classify(e Evidence) Class {
	switch e.Expectation.State {
	case enroll.NotCaptured:
		return ClassSkipped
	case enroll.Unknown:
		if e.Capture == netns.Captured {
			return ClassCaptured
		}
		return ClassUnknown
	}
	switch e.Capture {
	case netns.Captured:
		if e.Rules == netns.RulesAbsent || e.Rules == netns.RulesPartial {
			// ztunnel holds the pod, but istio-cni's redirection is gone or was never
			// completed (istio/istio #56652): the pod's own traffic skips ztunnel.
			return ClassBypass
		}
		return ClassCaptured
	case netns.CaptureUnknown, netns.CaptureHostNetwork, "":
		return ClassUnknown
	}
	if e.NetnsChanged {
		return ClassNetnsReplaced
	}
	if e.Capture == netns.CapturePartial {
		return ClassPartial
	}
	// Nothing listening.
	switch e.Redirection {
	case "enabled":
		if e.Rules == netns.RulesPresent {
			// Redirected to listeners that are not there: refused, fail closed.
			return ClassBlackhole
		}
		return ClassOrphaned
	case "", "pending":
		if e.Unenrolled < e.Grace {
			return ClassUnknown // istio-cni may still be working on it
		}
		return ClassNotEnrolled
	}
	// "disabled" or an unexpected value while enroll says captured: report, do not guess.
	return ClassNotEnrolled
}
