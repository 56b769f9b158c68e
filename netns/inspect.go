package netns

import (
	"fmt"
)

// PodNetns is one pod sandbox with what its netns shows.
type PodNetns struct {
	Sandbox
	Listeners Listeners
	Capture   Capture
	Err       error // why Capture is unknown, when it is
	// Rules is istio-cni's in-pod routing set-up, when the report was given to
	// InspectRules and the read worked; RulesErr says why it did not.
	Rules    *RoutingRules
	RulesErr error
}

// NodeReport is the node-local view: every pod sandbox under a proc root.
type NodeReport struct {
	Scan
	Pods []PodNetns // sorted by pod UID
}

// InspectNode walks the proc root, finds every pod sandbox and reads its listeners with r,
// judging capture on required (CorePorts when nil). A host-network pod is reported as
// such and its sockets are not read (they would be the host's). Per-pod read errors make
// that pod unknown; they never fail the whole report. A host netns that cannot be named
// does (ErrHostNetnsUnknown, from FS.Sandboxes): then no pod can be placed.
func InspectNode(f FS, r SocketReader, opt ReadOptions) (NodeReport, error) {
	sc, err := f.Sandboxes()
	if err != nil {
		return NodeReport{}, err
	}
	rep := NodeReport{Scan: sc, Pods: make([]PodNetns, 0, len(sc.Sandboxes))}
	for _, s := range sc.Sandboxes {
		rep.Pods = append(rep.Pods, InspectSandbox(r, s, opt))
	}
	return rep, nil
}

// InspectRules adds rule inspection to rep: istio-cni's in-pod routing set-up of every
// pod whose listeners could be read (not host-network, not unknown), read with r (a
// *RuleReader). A failed read sets that pod's RulesErr and nothing else.
func InspectRules(rep *NodeReport, r interface {
	Rules(pid int) (RoutingRules, error)
}) {
	for i := range rep.Pods {
		p := &rep.Pods[i]
		if p.HostNetwork || p.Capture == CaptureUnknown || p.PID == 0 {
			continue
		}
		rr, err := r.Rules(p.PID)
		if err != nil {
			p.RulesErr = fmt.Errorf("pod %s pid %d: %w", p.PodUID, p.PID, err)
			continue
		}
		p.Rules = &rr
	}
}

// InspectSandbox reads one sandbox's listeners and judges its capture.
func InspectSandbox(r SocketReader, s Sandbox, opt ReadOptions) PodNetns {
	p := PodNetns{Sandbox: s}
	switch {
	case s.Err != nil:
		p.Capture, p.Err = CaptureUnknown, s.Err
		return p
	case s.HostNetwork:
		p.Capture = CaptureHostNetwork
		return p
	}
	l, err := r.Listeners(s.PID, opt)
	p.Listeners = l
	if err != nil {
		p.Capture, p.Err = CaptureUnknown, fmt.Errorf("pod %s pid %d: %w", s.PodUID, s.PID, err)
		return p
	}
	p.Capture = l.Capture(opt.Required)
	if p.Capture == CaptureUnknown {
		p.Err = fmt.Errorf("pod %s pid %d: %w", s.PodUID, s.PID, l.Err())
	}
	return p
}
