package cli

import (
	"fmt"
	"os"
	"os/user"
	"time"

	ucli "github.com/urfave/cli/v2"
	"k8s.io/client-go/kubernetes"

	"github.com/meshmedic/meshmedic/heal"
)

// DefaultMeshmedicNamespace is where the agents run, and where the fleet-wide heal ledger
// and the agents' heartbeats live.
const DefaultMeshmedicNamespace = "meshmedic-system"

// meshmedicNamespaceFlag names meshmedic's own namespace (POD_NAMESPACE in the agent).
func meshmedicNamespaceFlag(envs ...string) ucli.Flag {
	return &ucli.StringFlag{Name: "meshmedic-namespace", Value: DefaultMeshmedicNamespace, EnvVars: envs,
		Usage: "meshmedic's namespace: the fleet-wide heal ledger (Lease " + heal.LedgerLeaseName + ") and the agents' heartbeat Leases live there"}
}

// healFlags are the fleet-wide limits and the node breaker, shared by repair and the
// agent; every default is the library's.
func healFlags() []ucli.Flag {
	l, b := heal.DefaultLimits, heal.DefaultBreaker
	return []ucli.Flag{
		&ucli.IntFlag{Name: "cluster-max-heals", Value: l.ClusterMax, Usage: fmt.Sprintf("fleet-wide: at most this many pods healed per --heal-window across the cluster, by every agent and repair together (0: none, negative: unlimited; at most %d)", heal.MaxLimit)},
		&ucli.IntFlag{Name: "namespace-max-heals", Value: l.NamespaceMax, Usage: "fleet-wide: at most this many pods of one namespace healed per --heal-window (0: none, negative: unlimited)"},
		&ucli.DurationFlag{Name: "heal-window", Value: l.Window, Usage: "the sliding window of --cluster-max-heals and --namespace-max-heals"},
		&ucli.IntFlag{Name: "breaker-min-pods", Value: b.MinPods, Usage: "a node is mass-orphaned when at least this many of its ambient pods are broken at once..."},
		&ucli.Float64Flag{Name: "breaker-fraction", Value: b.OrphanFraction, Usage: "...and at least this share of them; it then gets a canary heal instead of a wall"},
		&ucli.DurationFlag{Name: "canary-timeout", Value: b.CanaryTimeout, Usage: "how long a canary waits for a pod created on its node to show whether the node enrolls pods, before another canary is tried"},
		&ucli.BoolFlag{Name: "no-canary", Usage: "refuse a mass-orphaned node outright instead of healing one canary pod first"},
	}
}

// healLimits and healBreaker read healFlags, rejecting meaningless values.
func healLimits(c *ucli.Context) (heal.Limits, error) {
	w := c.Duration("heal-window")
	if w <= 0 {
		return heal.Limits{}, usagef("--heal-window must be positive, not %s", w)
	}
	return heal.Limits{Window: w, ClusterMax: c.Int("cluster-max-heals"), NamespaceMax: c.Int("namespace-max-heals")}, nil
}

func healBreaker(c *ucli.Context) (heal.Breaker, error) {
	b := heal.Breaker{MinPods: c.Int("breaker-min-pods"), OrphanFraction: c.Float64("breaker-fraction"),
		CanaryTimeout: c.Duration("canary-timeout"), NoCanary: c.Bool("no-canary")}
	switch {
	case b.MinPods < 1:
		return b, usagef("--breaker-min-pods must be at least 1, not %d", b.MinPods)
	case b.OrphanFraction <= 0 || b.OrphanFraction > 1:
		return b, usagef("--breaker-fraction must be in (0, 1], not %g", b.OrphanFraction)
	case b.CanaryTimeout <= 0:
		return b, usagef("--canary-timeout must be positive, not %s", b.CanaryTimeout)
	}
	return b, nil
}

// leaseLedger is the fleet-wide heal ledger in meshmedic's namespace, written by holder.
func leaseLedger(c *ucli.Context, cs kubernetes.Interface, holder string) *heal.LeaseLedger {
	return heal.NewLeaseLedger(cs.CoordinationV1(), c.String("meshmedic-namespace"), holder,
		heal.LeaseLedgerTimeout(max(c.Duration("request-timeout"), 5*time.Second)))
}

// cliHolder names a CLI run in the ledger: who ran it, from where.
func cliHolder() string {
	who := "unknown"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	host, _ := os.Hostname()
	return "cli/" + who + "@" + host
}
