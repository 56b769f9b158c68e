package cli

import (
	"fmt"
	"net"
	"slices"
	"strconv"

	ucli "github.com/urfave/cli/v2"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/heal"
	"github.com/meshmedic/meshmedic/netns"
)

// Flag checks that hold for every command, run (as each command's Before) after the flags
// are parsed and before the command does anything: in particular before any API call, so
// a usage error never shows up as a kubeconfig or network error.

// positiveDurations are duration flags for which 0 means nothing useful (each with why).
// Every other duration flag may be 0 (its usage says what 0 means) but never negative.
var positiveDurations = map[string]string{
	"probe-timeout":    "every probe would time out at once and every pod would be unknown",
	"eviction-timeout": "an accepted eviction needs time to take effect",
	"since":            "with --behavioral, no ztunnel log would be read",
	"tick":             "the agent's sweep interval",
	"full-recheck":     "the agent's slow re-check interval",
	"grace-period":     "how long a not-Ready orphan waits before --repair-stuck heals it",
}

// minInts are integer flags with a lower bound.
var minInts = map[string]int{
	"concurrency": 1,
}

// strategies are the heal strategies --strategy accepts.
var strategies = []string{heal.StrategyEvict, heal.StrategyToggle, heal.StrategyDelete}

// validateFlags is every command's Before.
func validateFlags(c *ucli.Context) error {
	if c.Command == nil {
		return nil
	}
	for _, f := range c.Command.Flags {
		name := f.Names()[0]
		switch f.(type) {
		case *ucli.DurationFlag:
			d := c.Duration(name)
			if d < 0 {
				return usagef("--%s %s: must not be negative", name, d)
			}
			if why, ok := positiveDurations[name]; ok && d == 0 {
				return usagef("--%s 0: must be positive (%s)", name, why)
			}
		case *ucli.IntFlag:
			if lo, ok := minInts[name]; ok && c.Int(name) < lo {
				return usagef("--%s %d: must be at least %d", name, c.Int(name), lo)
			}
		}
	}
	return validateLocalInputs(c)
}

func hasFlag(c *ucli.Context, name string) bool {
	for _, f := range c.Command.Flags {
		if slices.Contains(f.Names(), name) {
			return true
		}
	}
	return false
}

// validateLocalInputs checks the inputs that need no API server: the proc root, the
// metrics address, the strategy, the Istio version and the label selector.
func validateLocalInputs(c *ucli.Context) error {
	if hasFlag(c, "istio-version") {
		if v := c.String("istio-version"); v != "" {
			if _, err := enroll.ParseVersion(v); err != nil {
				return usagef("--istio-version %q: %v", v, err)
			}
		}
	}
	if hasFlag(c, "metrics-addr") {
		if err := validateListenAddr(c.String("metrics-addr")); err != nil {
			return usagef("--metrics-addr %q: %v", c.String("metrics-addr"), err)
		}
	}
	if hasFlag(c, "strategy") {
		if s := c.String("strategy"); !slices.Contains(strategies, s) {
			return usagef("--strategy %q: want evict, toggle or delete", s)
		}
	}
	if hasFlag(c, "selector") {
		if _, err := parseSelector(c.String("selector")); err != nil {
			return err
		}
	}
	// The proc root is read by node scan and the agent, and by scan/repair with the
	// node-local prober only (elsewhere, e.g. on a laptop, /proc is not used at all).
	if hasFlag(c, "proc-root") && (!hasFlag(c, "prober") || c.String("prober") == proberNodeLocal) {
		if _, err := netns.NewFS(c.String("proc-root")); err != nil {
			return usagef("--proc-root: %v", err)
		}
	}
	return nil
}

// validateListenAddr accepts what net.Listen("tcp", addr) would: host:port with a port in
// 0–65535 (the host may be empty); "" disables.
func validateListenAddr(addr string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port or :port (%w)", err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err == nil {
		return nil
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("port %q is not a number in 0-65535 or a service name", port)
	}
	return nil
}

// parseSelector parses -l/--selector with the API server's own label selector grammar.
func parseSelector(s string) (labels.Selector, error) {
	sel, err := labels.Parse(s)
	if err != nil {
		return nil, usagef("--selector %q: %v", s, err)
	}
	return sel, nil
}
