// Package detect joins pods, enroll expectations and a Prober (how to read a pod's
// sockets) into Findings with a class (captured, orphaned, partial, ...), with a flap
// guard that re-confirms a finding before it is acted on.
package detect
