package cli

import (
	"context"
	"fmt"
	"time"

	ucli "github.com/urfave/cli/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/heal"
	"github.com/meshmedic/meshmedic/netns"
)

func repairCommand(s Streams) *ucli.Command {
	flags := append(scanFlags(),
		&ucli.StringFlag{Name: "strategy", Value: heal.StrategyEvict, Usage: "evict (policy/v1 Eviction: honours PodDisruptionBudgets), toggle (istio.io/dataplane-mode none and back), delete (no PDB check: explicit opt-in)"},
		&ucli.BoolFlag{Name: "yes", Usage: "act; without it repair is a dry run that still sends every request with server-side dry run, so PDB refusals show"},
		&ucli.BoolFlag{Name: "allow-bare-pods", Usage: "also restart pods without a controller owner (they will NOT come back)"},
		&ucli.IntFlag{Name: "max-actions", Value: 5, Usage: "at most this many pods acted on in this run (0: none; negative: unlimited)"},
		&ucli.IntFlag{Name: "max-per-node", Value: 2, Usage: "at most this many per node (0: none; negative: unlimited)"},
		&ucli.IntFlag{Name: "max-per-namespace", Value: 3, Usage: "at most this many per namespace (0: none; negative: unlimited)"},
		&ucli.DurationFlag{Name: "eviction-timeout", Value: 2 * time.Minute, Usage: "how long to wait for an evicted pod to be gone (positive)"},
	)
	return &ucli.Command{
		Name:  "repair",
		Usage: "scan, then heal confirmed orphans (dry run unless --yes)",
		Description: "Runs scan (with its flap guard), then heals every confirmed orphaned, partial, not-enrolled\n" +
			"or netns-replaced pod with --strategy, under budgets, a per-node circuit breaker (the node's\n" +
			"ztunnel not Ready, or most of its ambient pods orphaned: the node is the cause), bare-pod\n" +
			"refusal and PDBs. Every action and refusal is a Kubernetes Event on the pod. Refuses to run\n" +
			"without -n, -A or --behavioral.\n\n" +
			"Exit codes: 0 nothing to do or all healed, 1 findings left (dry run, blocked by a PDB,\n" +
			"refused, failed), 2 usage or runtime error.",
		Flags:  flags,
		Action: func(c *ucli.Context) error { return runRepair(c, s) },
	}
}

type repairOutput struct {
	Checked  int              `json:"checked"`
	DryRun   bool             `json:"dryRun"`
	Findings []detect.Finding `json:"findings"`
	Actions  []heal.Action    `json:"actions"`
	Errors   []string         `json:"errors,omitempty"`
}

func runRepair(c *ucli.Context, s Streams) error {
	if !c.IsSet("namespace") && !c.Bool("all-namespaces") && !c.Bool("behavioral") {
		return usagef("repair acts on pods: say where with -n NAMESPACE, -A (all namespaces) or --behavioral")
	}
	format, err := outputFormat(c)
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
	confirmRequired := c.Duration("confirm") > 0
	out := repairOutput{Checked: rep.Checked, DryRun: dry, Findings: []detect.Finding{}, Actions: []heal.Action{}}
	if err := nothingVerifiedIn(rep); err != nil {
		_ = renderRepair(s, format, c.Bool("no-headers"), out)
		return err
	}
	var targets []heal.Target
	for _, f := range rep.Findings {
		if !f.Actionable() {
			continue
		}
		out.Findings = append(out.Findings, f)
		if confirmRequired && !f.Confirmed {
			continue
		}
		pod, err := setup.cs.CoreV1().Pods(f.Namespace).Get(c.Context, f.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || (err == nil && pod.UID != f.UID) {
			continue // gone or replaced since the scan: nothing to heal
		}
		if err != nil {
			return explainAPIError(c.Context, err, "get", "pods", f.Namespace)
		}
		targets = append(targets, heal.Target{Pod: pod, Class: f.Class, Detail: f.Detail})
	}
	for _, e := range rep.Errors {
		out.Errors = append(out.Errors, e.Error())
	}
	if len(targets) > 0 {
		nodes, err := nodeHealth(c.Context, setup, c.String("istio-namespace"), rep, s)
		if err != nil {
			return err
		}
		healer := heal.NewHealer(strategy,
			heal.WithDryRun(dry),
			heal.WithAllowBarePods(c.Bool("allow-bare-pods")),
			heal.WithBudget(budgetFromFlags(c)),
			heal.WithEvents(heal.NewEventSink(setup.cs.CoreV1(), "meshmedic")),
		)
		out.Actions = append(out.Actions, healer.Heal(c.Context, targets, nodes)...)
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
		return fmt.Errorf("%d finding(s) not healed (dry run, blocked, refused, failed or unconfirmed): %w", left, ErrFindings)
	}
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

// nodeHealth feeds heal's circuit breaker: per node, the ambient pods checked, how many
// are broken, and whether the node's ztunnel pod is Ready. A node whose ztunnel cannot be
// found is reported not Ready: the breaker then refuses it (fail closed).
func nodeHealth(ctx context.Context, setup *scanSetup, istioNS string, rep detect.Report, s Streams) (map[string]heal.NodeHealth, error) {
	nodes := map[string]heal.NodeHealth{}
	for _, f := range rep.Findings {
		if f.Node == "" || f.Class == detect.ClassSkipped {
			continue
		}
		h := nodes[f.Node]
		h.Count(f.Class)
		nodes[f.Node] = h
	}
	zt, err := setup.cs.CoreV1().Pods(istioNS).List(ctx, metav1.ListOptions{LabelSelector: "app=ztunnel"})
	if err != nil {
		fmt.Fprintf(s.Err, "warning: cannot list ztunnel pods in %s (%v): every node is treated as ztunnel-not-Ready and nothing is healed\n", istioNS, err)
		return nodes, nil
	}
	for _, p := range zt.Items {
		h, ok := nodes[p.Spec.NodeName]
		if !ok {
			continue
		}
		h.ZtunnelReady = heal.PodReady(&p)
		nodes[p.Spec.NodeName] = h
	}
	return nodes, nil
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
	for _, e := range out.Errors {
		fmt.Fprintf(s.Err, "warning: %s\n", e)
	}
	return nil
}
