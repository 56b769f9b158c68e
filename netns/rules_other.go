//go:build !linux

package netns

import (
	"errors"
	"fmt"
)

// RuleReader reads istio-cni's in-pod routing set-up through rtnetlink. Netlink exists
// only on Linux: on this platform every read fails with an error wrapping
// errors.ErrUnsupported.
type RuleReader struct {
	root string
}

// NewRuleReader returns a reader whose every read fails on this platform.
func NewRuleReader(fs FS) *RuleReader { return &RuleReader{root: fs.root} }

// Rules always fails here.
func (r *RuleReader) Rules(pid int) (RoutingRules, error) {
	return RoutingRules{}, fmt.Errorf("pid %d: rule inspection: %w (Linux only)", pid, errors.ErrUnsupported)
}
