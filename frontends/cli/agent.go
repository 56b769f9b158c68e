package cli

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr/funcr"
	ucli "github.com/urfave/cli/v2"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/frontends/agent"
	"github.com/meshmedic/meshmedic/heal"
	"github.com/meshmedic/meshmedic/netns"
)

func agentCommand(s Streams) *ucli.Command {
	flags := []ucli.Flag{
		&ucli.StringFlag{Name: "node", EnvVars: []string{"NODE_NAME"}, Usage: "this node's name (downward API spec.nodeName)"},
		&ucli.StringFlag{Name: "proc-root", Value: "/proc", Usage: "the host's /proc (a read-only hostPath mount, e.g. /host/proc; hostPID is not needed, except with --socket-backend netlink or --inspect-rules)"},
		&ucli.StringFlag{Name: "metrics-addr", Value: ":9100", Usage: "address of /metrics, /healthz and /readyz (host:port; \"\" disables)"},
		&ucli.DurationFlag{Name: "tick", Value: 2 * time.Second, Usage: "how often pods that changed are checked (positive)"},
		&ucli.DurationFlag{Name: "full-recheck", Value: time.Minute, Usage: "slow re-check of every pod on the node (positive)"},
		&ucli.DurationFlag{Name: "confirm", Value: 10 * time.Second, Usage: "flap guard before a finding is confirmed"},
		&ucli.BoolFlag{Name: "auto-repair", Usage: "evict confirmed orphans of Ready pods (PDBs, budgets, backoff, bare-pod refusal and the node breaker apply)"},
		&ucli.BoolFlag{Name: "repair-stuck", Usage: "with --auto-repair, also heal not-Ready orphans after --grace-period"},
		&ucli.DurationFlag{Name: "grace-period", Value: 5 * time.Minute, Usage: "how long a not-Ready orphan waits before --repair-stuck heals it"},
		&ucli.StringFlag{Name: "young-rechecks", Value: "15s,45s,2m,5m", Usage: "pod ages at which a new pod is checked again (comma-separated durations; \"\" disables)"},
		&ucli.StringFlag{Name: "socket-backend", Value: "proc", Usage: "how a pod's LISTEN sockets are read: proc (/proc/<pid>/net/tcp6, no capabilities) or netlink (sock_diag inside the pod's netns: ~10× cheaper, needs CAP_SYS_ADMIN and CAP_SYS_PTRACE)"},
		&ucli.BoolFlag{Name: "inspect-rules", Usage: "also read istio-cni's in-pod routing rules in each pod's netns (rtnetlink; needs CAP_SYS_ADMIN and CAP_SYS_PTRACE): reports bypass (listeners, no redirection) and blackhole (redirection, no listeners)"},
		&ucli.DurationFlag{Name: "socket-count-interval", DefaultText: "5×--tick", Usage: "a falling socket count re-checks one pod at most this often"},
		&ucli.IntFlag{Name: "max-actions", Value: heal.DefaultBudget.PerRun, Usage: "with --auto-repair: at most this many pods healed per sweep (0: none, negative: unlimited)"},
		&ucli.IntFlag{Name: "max-per-namespace", Value: heal.DefaultBudget.PerNamespace, Usage: "with --auto-repair: at most this many pods of one namespace healed per sweep"},
		meshmedicNamespaceFlag("POD_NAMESPACE"),
	}
	flags = append(flags, healFlags()...)
	flags = append(flags, kubeFlags()...)
	flags = append(flags, istioFlags()...)
	return &ucli.Command{
		Name:  "agent",
		Usage: "run the per-node DaemonSet runtime: detect from the host's /proc, publish a pod condition, heal under policy",
		Description: "Watches this node's pods and checks a pod when it appears or changes, while it is young, when\n" +
			"its netns's own socket counters fall (no hash-table walk), when the node's ztunnel or istio-cni\n" +
			"pod restarts, and every pod on a slow re-check. Confirms findings after the flap guard without\n" +
			"blocking, and publishes the pod condition\n" +
			"meshmedic.io/AmbientCaptured (True/False/Unknown) on pods/status. With --auto-repair it evicts\n" +
			"confirmed orphans through the same safety layer as `repair`. Metrics on --metrics-addr.",
		Flags: flags,
		Action: func(c *ucli.Context) error {
			if c.NArg() > 0 {
				return usagef("agent takes no arguments")
			}
			if c.String("node") == "" {
				return usagef("agent needs --node (or NODE_NAME)")
			}
			young, err := parseDurations(c.String("young-rechecks"))
			if err != nil {
				return usagef("--young-rechecks: %v", err)
			}
			limits, err := healLimits(c)
			if err != nil {
				return err
			}
			breaker, err := healBreaker(c)
			if err != nil {
				return err
			}
			reader, err := socketBackend(c.String("socket-backend"), c.String("proc-root"))
			if err != nil {
				return err
			}
			var rules detect.RulesReader
			if c.Bool("inspect-rules") {
				if rules, err = ruleInspection(c.String("proc-root")); err != nil {
					return err
				}
			}
			cfg, err := restConfig(c)
			if err != nil {
				return err
			}
			apiCounter := agent.NewAPICounter() // meshmedic_api_requests_total: what the agent costs the API server
			cfg.Wrap(apiCounter.Wrap)
			cs, err := newClientset(cfg)
			if err != nil {
				return err
			}
			log := funcr.NewJSON(func(obj string) { fmt.Fprintln(s.Err, obj) }, funcr.Options{})
			settings, err := istioSettings(c.Context, cs, c.String("istio-namespace"), c.String("istio-version"), s.Err)
			if err != nil {
				return err
			}
			a, err := agent.New(cs, agent.Config{
				NodeName: c.String("node"), ProcRoot: c.String("proc-root"), MetricsAddr: c.String("metrics-addr"),
				Tick: c.Duration("tick"), FullRecheck: c.Duration("full-recheck"), Confirm: c.Duration("confirm"),
				AutoRepair: c.Bool("auto-repair"), RepairStuck: c.Bool("repair-stuck"), GracePeriod: c.Duration("grace-period"),
				Settings: settings, IstioNamespace: c.String("istio-namespace"),
				YoungRechecks: young, SocketCountInterval: c.Duration("socket-count-interval"), Reader: reader, Rules: rules,
				Strategy: agent.NewEvictStrategy(cs), Namespace: c.String("meshmedic-namespace"),
				// Every agent and every `repair` share one ledger: backoff, the cluster-wide
				// rate, the namespace cap and the canaries hold fleet-wide and across restarts.
				Ledger: leaseLedger(c, cs, "agent/"+c.String("node")), Limits: &limits, Breaker: breaker,
				Budget: &heal.Budget{PerRun: c.Int("max-actions"), PerNode: c.Int("max-actions"), PerNamespace: c.Int("max-per-namespace")},
			}, agent.WithLogger(log))
			if err != nil {
				return err
			}
			a.Registry().MustRegister(apiCounter)
			return a.Run(c.Context)
		},
	}
}

// parseDurations parses "15s,45s,2m"; "" is an empty (non-nil) list.
func parseDurations(s string) ([]time.Duration, error) {
	out := []time.Duration{}
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		d, err := time.ParseDuration(f)
		if err != nil {
			return nil, err
		}
		if d <= 0 {
			return nil, fmt.Errorf("%q is not positive", f)
		}
		out = append(out, d)
	}
	slices.Sort(out)
	return out, nil
}

// socketBackend returns the agent's socket reader: nil for proc (the agent's default
// ProcReader), or a netns.DiagReader after proving at start, on the agent's own process,
// that it may setns and use sock_diag: a DaemonSet without CAP_SYS_ADMIN fails at once
// instead of reporting every pod unknown. (Its own process needs no ptrace access; a missing
// CAP_SYS_PTRACE shows per pod, as unknown with an error naming both capabilities.)
func socketBackend(name, procRoot string) (netns.SocketReader, error) {
	switch name {
	case "proc", "":
		return nil, nil
	case "netlink":
		fs, err := netns.NewFS(procRoot)
		if err != nil {
			return nil, err
		}
		r := netns.NewDiagReader(fs)
		if _, err := r.Listeners(os.Getpid(), netns.ReadOptions{}); err != nil {
			return nil, fmt.Errorf("--socket-backend=netlink: cannot read sockets through sock_diag (needs %s): %w",
				strings.Join(netns.DiagCapabilities, " and "), err)
		}
		return r, nil
	}
	return nil, usagef("--socket-backend must be proc or netlink, not %q", name)
}

// ruleInspection returns a netns.RuleReader after proving at start, on the agent's own
// process, that it may setns and dump routing rules, as socketBackend does for sock_diag.
func ruleInspection(procRoot string) (*netns.RuleReader, error) {
	fs, err := netns.NewFS(procRoot)
	if err != nil {
		return nil, err
	}
	r := netns.NewRuleReader(fs)
	if _, err := r.Rules(os.Getpid()); err != nil {
		return nil, fmt.Errorf("--inspect-rules: cannot read routing rules inside a netns: %w", err)
	}
	return r, nil
}
