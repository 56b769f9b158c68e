package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	ucli "github.com/urfave/cli/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/heal"
	"github.com/meshmedic/meshmedic/netns"
)

func repairCommand(s Streams) *ucli.Command {
	b := heal.DefaultBudget
	flags := append(scanFlags(),
		&ucli.StringFlag{Name: "strategy", Value: heal.StrategyEvict, Usage: "evict (policy/v1 Eviction: honours PodDisruptionBudgets), toggle (istio.io/dataplane-mode none and back), delete (no PDB check: explicit opt-in)"},
		&ucli.BoolFlag{Name: "yes", Usage: "act; without it repair is a dry run that still sends every request with server-side dry run, so PDB refusals show"},
		&ucli.BoolFlag{Name: "allow-bare-pods", Usage: "also restart pods without a controller owner (they will NOT come back)"},
		&ucli.IntFlag{Name: "max-actions", Value: b.PerRun, Usage: "at most this many pods acted on in this run (0: none, negative: unlimited)"},
		&ucli.IntFlag{Name: "max-per-node", Value: b.PerNode, Usage: "at most this many per node in this run (0: none, negative: unlimited)"},
		&ucli.IntFlag{Name: "max-per-namespace", Value: b.PerNamespace, Usage: "at most this many per namespace in this run (0: none, negative: unlimited)"},
		&ucli.DurationFlag{Name: "eviction-timeout", Value: 2 * time.Minute, Usage: "how long to wait for an evicted pod to be gone (positive)"},
	)
	flags = append(flags, healFlags()...)
	return &ucli.Command{
		Name:  "repair",
		Usage: "scan, then heal confirmed orphans (dry run unless --yes)",
		Description: "Runs scan (with its flap guard), then heals every confirmed orphaned, partial, not-enrolled,\n" +
			"netns-replaced, bypass or blackhole pod with --strategy through heal's planner. The pod is\n" +
			"re-read; its node must have a Ready ztunnel and istio-cni; a node where many ambient pods are\n" +
			"broken at once gets one canary heal first, and the rest only once a pod created on the node\n" +
			"after it comes back captured. Bare pods, drain-style exclusions (safe-to-evict=false,\n" +
			"emptyDir data, system-critical priority; the pod annotation meshmedic.io/heal=allow|never\n" +
			"overrides) and PDBs are honoured. Budgets per run, and fleet-wide limits shared with every\n" +
			"agent through the Lease " + heal.LedgerLeaseName + " in --meshmedic-namespace: a cluster-wide heal rate,\n" +
			"a per-namespace cap, and backoff per controller. Every action and refusal is a Kubernetes\n" +
			"Event on the pod. Refuses to run without -n, -A or --behavioral.\n\n" +
			"Exit codes: 0 nothing to do or all healed, 1 findings left (dry run, blocked by a PDB,\n" +
			"refused, waiting, failed), 2 usage or runtime error (an unreadable heal ledger included).",
		Flags:  flags,
		Action: func(c *ucli.Context) error { return runRepair(c, s) },
	}
}

type repairOutput struct {
	Checked  int              `json:"checked"`
	DryRun   bool             `json:"dryRun"`
	Findings []detect.Finding `json:"findings"`
	Actions  []heal.Action    `json:"actions"`
	// Nodes are the planner's verdicts on the nodes holding confirmed findings (heal,
	// canary, wait, stop, and why).
	Nodes []heal.NodeVerdict `json:"nodes,omitempty"`
	// NotHealed are the findings the planner left out (unconfirmed, gone, terminating, not
	// Ready), and why.
	NotHealed []heal.Dropped `json:"notHealed,omitempty"`
	Errors    []string       `json:"errors,omitempty"`
}

func runRepair(c *ucli.Context, s Streams) error {
	if !c.IsSet("namespace") && !c.Bool("all-namespaces") && !c.Bool("behavioral") {
		return usagef("repair acts on pods: say where with -n NAMESPACE, -A (all namespaces) or --behavioral")
	}
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	limits, err := healLimits(c)
	if err != nil {
		return err
	}
	breaker, err := healBreaker(c)
	if err != nil {
		return err
	}
	setup, err := newScanSetup(c, s)
	if err != nil {
		return err
	}
	strategy, err := newStrategy(c, setup)
	if err != nil {
		return err
	}
	rep, _, err := runDetection(c.Context, c, setup)
	if err != nil {
		return err
	}
	dry := !c.Bool("yes")
	out := repairOutput{Checked: rep.Checked, DryRun: dry, Findings: []detect.Finding{}, Actions: []heal.Action{}}
	if err := nothingVerifiedIn(rep); err != nil {
		_ = renderRepair(s, format, c.Bool("no-headers"), out)
		return err
	}
	for _, f := range rep.Findings {
		if f.Actionable() {
			out.Findings = append(out.Findings, f)
		}
	}
	for _, e := range rep.Errors {
		out.Errors = append(out.Errors, e.Error())
	}
	if len(out.Findings) > 0 {
		if err := planAndHeal(c, s, setup, strategy, rep, dry, limits, breaker, &out); err != nil {
			return err
		}
	}
	if err := renderRepair(s, format, c.Bool("no-headers"), out); err != nil {
		return err
	}
	left := len(out.Findings)
	for _, a := range out.Actions {
		switch a.Result {
		case heal.ResultEvicted, heal.ResultToggled, heal.ResultDeleted:
			left--
		}
	}
	if left > 0 {
		return fmt.Errorf("%d finding(s) not healed (dry run, blocked, refused, waiting, failed or unconfirmed): %w", left, ErrFindings)
	}
	return nil
}

// planAndHeal is repair's one library call: heal's planner over the scan's report, then Apply.
func planAndHeal(c *ucli.Context, s Streams, setup *scanSetup, strategy heal.Strategy, rep detect.Report, dry bool,
	limits heal.Limits, breaker heal.Breaker, out *repairOutput) error {
	holder := cliHolder()
	istioNS := c.String("istio-namespace")
	healer := heal.NewHealer(strategy,
		heal.WithDryRun(dry),
		heal.WithAllowBarePods(c.Bool("allow-bare-pods")),
		heal.WithBudget(budgetFromFlags(c)),
		heal.WithEvents(heal.NewEventSink(setup.cs.CoreV1(), "meshmedic", heal.EventSinkInstance(holder))),
		heal.WithLedger(leaseLedger(c, setup.cs, holder)),
		heal.WithLimits(limits),
		heal.WithBreaker(breaker),
		heal.WithInstance(holder),
		heal.WithNotReady(0), // a person asked for this run: not-Ready pods are healed too
	)
	// The breaker and the canary judge a node by all its pods, not only the scanned ones.
	facts := heal.ScanFacts{
		List: func(ctx context.Context, node string) ([]corev1.Pod, error) {
			list, err := setup.cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
			if err != nil {
				return nil, explainAPIError(ctx, err, "list", "pods", "")
			}
			return list.Items, nil
		},
		// The node's other pods are judged the way the scan's were: probed, then confirmed
		// after the flap guard (a canary fails only on a confirmed finding).
		Scan: func(ctx context.Context, pods []corev1.Pod) (detect.Report, error) {
			r, err := setup.engine.ScanPods(ctx, pods)
			if err != nil {
				return r, err
			}
			return setup.engine.Confirm(ctx, r)
		},
		Known:          rep.Findings,
		InfraNamespace: func(ns string) bool { return ns == istioNS },
	}
	plan, err := healer.Plan(c.Context, rep, heal.PodsFromClient(setup.cs.CoreV1()), facts)
	if err != nil {
		return fmt.Errorf("not healing: %w (the fleet-wide heal ledger is the Lease %s/%s: check --meshmedic-namespace, and RBAC get, create and update on leases there)",
			err, c.String("meshmedic-namespace"), heal.LedgerLeaseName)
	}
	for _, v := range plan.Nodes {
		out.Nodes = append(out.Nodes, v)
	}
	slices.SortFunc(out.Nodes, func(a, b heal.NodeVerdict) int { return strings.Compare(a.Node, b.Node) })
	out.NotHealed = plan.Dropped
	for _, ch := range plan.Canaries {
		fmt.Fprintf(s.Err, "canary on node %s %s: %s\n", ch.Node, ch.Record.State, ch.Record.Detail)
	}
	out.Actions = append(out.Actions, healer.Apply(c.Context, plan)...)
	return nil
}

func newStrategy(c *ucli.Context, setup *scanSetup) (heal.Strategy, error) {
	switch name := c.String("strategy"); name {
	case heal.StrategyEvict:
		return heal.NewEvict(heal.NewEvicter(setup.cs.CoreV1().RESTClient()), setup.cs.CoreV1(), heal.EvictOptions{Timeout: c.Duration("eviction-timeout")}), nil
	case heal.StrategyToggle:
		prober, err := newProber(c, setup.cfg, setup.cs, c.String("node"))
		if err != nil {
			return nil, err
		}
		return heal.NewToggle(setup.cs.CoreV1(), heal.ToggleOptions{Reprobe: func(ctx context.Context, pod *corev1.Pod) (bool, error) {
			p, err := prober.Probe(ctx, pod)
			if err != nil {
				return false, err
			}
			if p.Class != "" {
				return p.Class == detect.ClassCaptured, nil
			}
			return p.Listeners.Capture(nil) == netns.Captured, nil
		}})
	case heal.StrategyDelete:
		return heal.NewDelete(setup.cs.CoreV1()), nil
	default:
		return nil, usagef("--strategy %q: want evict, toggle or delete", name)
	}
}

func renderRepair(s Streams, format string, noHeaders bool, out repairOutput) error {
	if format == outJSON || format == outYAML {
		return writeStructured(s.Out, format, out)
	}
	if out.DryRun {
		fmt.Fprintln(s.Err, "dry run (server-side): nothing was changed; add --yes to act")
	}
	t := newTable(s.Out, "NAMESPACE", "NAME", "CLASS", "STRATEGY", "RESULT", "DETAIL").noHeaders(noHeaders)
	for _, a := range out.Actions {
		t.row(a.Namespace, a.Name, dash(string(a.Class)), a.Strategy, string(a.Result), dash(a.Detail))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(out.Findings) == 0 && len(out.Actions) == 0 {
		fmt.Fprintf(s.Err, "No findings in %s.\n", pods(out.Checked))
	} else {
		fmt.Fprintf(s.Err, "%d pod(s) checked, %d finding(s), %d action(s)\n", out.Checked, len(out.Findings), len(out.Actions))
	}
	for _, v := range out.Nodes {
		if v.Mode != heal.NodeHeal {
			fmt.Fprintf(s.Err, "node %s: %s: %s\n", v.Node, v.Mode, v.Reason)
		}
	}
	for _, d := range out.NotHealed {
		fmt.Fprintf(s.Err, "not healed: %s/%s (%s): %s\n", d.Namespace, d.Name, d.Class, d.Why)
	}
	for _, e := range out.Errors {
		fmt.Fprintf(s.Err, "warning: %s\n", e)
	}
	return nil
}
