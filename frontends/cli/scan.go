package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	ucli "github.com/urfave/cli/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/netns"
	"github.com/meshmedic/meshmedic/ztlog"
)

// Probers selectable with --prober.
const (
	proberAuto      = "auto"
	proberExec      = "exec"
	proberNodeLocal = "node-local"
	proberAgent     = "agent"
)

func scanFlags() []ucli.Flag {
	flags := []ucli.Flag{
		outputFlag(),
		noHeadersFlag(),
		&ucli.StringFlag{Name: "selector", Aliases: []string{"l"}, Usage: "only pods matching this label selector (kubectl syntax: app=web,tier!=db, env in (a,b))"},
		&ucli.StringFlag{Name: "prober", Value: proberAuto, Usage: "how to read pods' sockets: auto (= exec), exec (cat /proc/net/tcp6 in the pod), node-local (this machine is the node: read --proc-root), agent (the condition published by meshmedic agents)"},
		&ucli.StringFlag{Name: "proc-root", Value: "/proc", Usage: "proc root for --prober node-local"},
		&ucli.StringFlag{Name: "node", EnvVars: []string{"NODE_NAME"}, Usage: "only pods on this node (required with --prober node-local)"},
		&ucli.BoolFlag{Name: "allow-ephemeral", Usage: "for pods without cat (distroless), add an ephemeral debug container to read /proc/net/tcp6. Ephemeral containers can NEVER be removed from a pod: it stays until the pod is deleted"},
		&ucli.StringFlag{Name: "ephemeral-image", Value: detect.DefaultEphemeralImage, Usage: "image of the ephemeral probe container"},
		&ucli.IntFlag{Name: "concurrency", Value: detect.DefaultConcurrency, Usage: "pods probed at once (at least 1)"},
		&ucli.DurationFlag{Name: "probe-timeout", Value: detect.DefaultProbeTimeout, Usage: "timeout of one pod's probe (positive)"},
		&ucli.DurationFlag{Name: "confirm", Value: detect.DefaultConfirmDelay, Usage: "flap guard: re-probe findings after this delay and report only those that hold (0 disables)"},
		&ucli.BoolFlag{Name: "behavioral", Usage: "probe only pods implicated by ztunnel logs (see --since)"},
		&ucli.DurationFlag{Name: "since", Value: 15 * time.Minute, Usage: "with --behavioral: how much ztunnel log to read"},
		&ucli.BoolFlag{Name: "all", Usage: "list every checked pod, not only findings"},
	}
	flags = append(flags, namespaceFlags()...)
	flags = append(flags, kubeFlags()...)
	flags = append(flags, meshmedicNamespaceFlag("MESHMEDIC_NAMESPACE"))
	return append(flags, istioFlags()...)
}

func scanCommand(s Streams) *ucli.Command {
	return &ucli.Command{
		Name:  "scan",
		Usage: "find ambient pods whose network namespace lacks ztunnel's listeners",
		Description: "Lists pods (-n NAMESPACE, -A, or the kubeconfig's namespace), decides with the Istio version's\n" +
			"rules which of them ambient should capture, reads each one's /proc/net/tcp6 (--prober) and\n" +
			"classifies it: captured, orphaned, partial, not-enrolled, netns-replaced, unknown, skipped.\n" +
			"Findings are re-probed after --confirm (istio-cni flaps) before they are reported.\n\n" +
			"Exit codes: 0 nothing found, 1 findings (orphaned, partial, not-enrolled, netns-replaced),\n" +
			"2 usage or runtime error. Pods that could not be verified (unknown) are listed but never\n" +
			"counted as healthy or as orphans.",
		Flags:  scanFlags(),
		Action: func(c *ucli.Context) error { return runScan(c, s) },
	}
}

// scanOutput is `scan -o json` (DESIGN.md contract; fields may be added, none renamed).
type scanOutput struct {
	Checked  int               `json:"checked"`
	Findings []detect.Finding  `json:"findings"`
	Rejected []detect.Rejected `json:"rejected,omitempty"`
	Errors   []string          `json:"errors,omitempty"`
}

type scanSetup struct {
	cs        kubernetes.Interface
	cfg       *rest.Config
	engine    *detect.Engine
	source    *detect.APISource
	namespace string
	selector  labels.Selector
}

// newScanSetup turns flags into a detect.Engine; shared by scan and repair.
func newScanSetup(c *ucli.Context, s Streams) (*scanSetup, error) {
	ns, all := c.String("namespace"), c.Bool("all-namespaces")
	if ns != "" && all {
		return nil, usagef("--namespace and --all-namespaces are exclusive")
	}
	if c.NArg() > 0 {
		return nil, usagef("unexpected argument %q", c.Args().First())
	}
	switch p := c.String("prober"); p {
	case proberAuto, proberExec, proberAgent:
	case proberNodeLocal:
		if c.String("node") == "" {
			return nil, usagef("--prober node-local reads this machine's /proc: give --node (or NODE_NAME) so only this node's pods are checked")
		}
	default:
		return nil, usagef("--prober %q: want auto, exec, node-local or agent", p)
	}
	cfg, err := restConfig(c)
	if err != nil {
		return nil, err
	}
	cs, err := newClientset(cfg)
	if err != nil {
		return nil, err
	}
	if !all && ns == "" {
		ns, err = defaultNamespace(c)
		if err != nil {
			return nil, err
		}
	}
	if all {
		ns = ""
	} else if _, err := cs.CoreV1().Namespaces().Get(c.Context, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("namespace %q not found", ns)
	} else if err != nil && !apierrors.IsForbidden(err) {
		return nil, explainAPIError(c.Context, err, "get", "namespaces", "")
	}
	settings, err := istioSettings(c.Context, cs, c.String("istio-namespace"), c.String("istio-version"), s.Err)
	if err != nil {
		return nil, err
	}
	selector, err := parseSelector(c.String("selector"))
	if err != nil {
		return nil, err
	}
	var srcOpts []detect.SourceOption
	if !selector.Empty() {
		srcOpts = append(srcOpts, detect.WithLabelSelector(selector.String()))
	}
	node := c.String("node")
	if node != "" {
		srcOpts = append(srcOpts, detect.WithFieldSelector("spec.nodeName="+node))
	}
	source := detect.NewAPISource(cs.CoreV1(), cs.CoreV1(), srcOpts...)
	prober, err := newProber(c, cfg, cs, node)
	if err != nil {
		return nil, err
	}
	opts := []detect.Option{
		detect.WithSettings(settings),
		detect.WithConcurrency(c.Int("concurrency")),
		detect.WithProbeTimeout(c.Duration("probe-timeout")),
		detect.WithConfirmDelay(c.Duration("confirm")),
		detect.WithGrace(c.Duration("grace")),
	}
	if node != "" {
		opts = append(opts, detect.WithNode(node))
	}
	if p := progress(s); p != nil {
		opts = append(opts, detect.WithOnProgress(p))
	}
	return &scanSetup{cs: cs, cfg: cfg, engine: detect.New(source, source, prober, opts...), source: source, namespace: ns, selector: selector}, nil
}

func newProber(c *ucli.Context, cfg *rest.Config, cs kubernetes.Interface, node string) (detect.Prober, error) {
	switch p := c.String("prober"); p {
	case proberAuto, proberExec:
		execer := detect.NewSPDYExecutor(cfg, cs.CoreV1().RESTClient())
		var prober detect.Prober = detect.NewExecProber(execer)
		if c.Bool("allow-ephemeral") {
			eph := detect.NewEphemeralProber(cs.CoreV1(), execer, detect.WithEphemeralImage(c.String("ephemeral-image")))
			prober = detect.FallbackProber{Primary: prober, Secondary: eph, When: func(err error) bool { return errors.Is(err, detect.ErrNoShell) }}
		}
		return prober, nil
	case proberNodeLocal:
		fs, err := netns.NewFS(c.String("proc-root"))
		if err != nil {
			return nil, err
		}
		return detect.NewNodeLocalProber(fs, netns.NewProcReader(fs)), nil
	case proberAgent:
		// A condition counts only while its node's agent vouches for it (its heartbeat).
		return detect.NewConditionProber(detect.HeartbeatsFromLeases(cs.CoordinationV1(), c.String("meshmedic-namespace"), time.Minute, nil)), nil
	}
	return nil, usagef("--prober %q: want auto, exec, node-local or agent", c.String("prober"))
}

// defaultNamespace is the kubeconfig context's namespace, as kubectl uses it.
func defaultNamespace(c *ucli.Context) (string, error) {
	ns, _, err := kubeClientConfig(c).Namespace()
	if err != nil {
		return "", fmt.Errorf("kubeconfig namespace: %w", err)
	}
	return ns, nil
}

// progress returns a progress callback writing to stderr when it is a terminal.
func progress(s Streams) func(done, total int) {
	f, ok := s.Err.(*os.File)
	if !ok {
		return nil
	}
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return func(done, total int) {
		if total < 50 {
			return // short scans need no progress line
		}
		fmt.Fprintf(f, "\rprobed %d/%d pods", done, total)
		if done == total {
			fmt.Fprint(f, "\r\033[K")
		}
	}
}

func runScan(c *ucli.Context, s Streams) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	setup, err := newScanSetup(c, s)
	if err != nil {
		return err
	}
	rep, rejected, err := runDetection(c.Context, c, setup)
	if err != nil {
		return err
	}
	out := scanOutput{Checked: rep.Checked, Findings: []detect.Finding{}, Rejected: rejected}
	actionable, unknown := 0, 0
	for _, f := range rep.Findings {
		switch {
		case f.Actionable():
			actionable++
		case f.Class == detect.ClassUnknown:
			unknown++
		case !c.Bool("all"):
			continue // captured and skipped pods are not findings
		}
		out.Findings = append(out.Findings, f)
	}
	for _, e := range rep.Errors {
		out.Errors = append(out.Errors, e.Error())
	}
	if err := renderScan(s, format, c.Bool("no-headers"), out); err != nil {
		return err
	}
	if err := nothingVerifiedIn(rep); err != nil {
		return err
	}
	if unknown > 0 {
		fmt.Fprintf(s.Err, "note: %d pod(s) could not be verified (class unknown): never treated as healthy or as orphans\n", unknown)
	}
	if actionable > 0 {
		return fmt.Errorf("%d pod(s) not captured as they should be: %w", actionable, ErrFindings)
	}
	return nil
}

// runDetection is the one library call of scan: a full or behavioral scan, then the
// flap guard.
func runDetection(ctx context.Context, c *ucli.Context, setup *scanSetup) (detect.Report, []detect.Rejected, error) {
	var rep detect.Report
	var rejected []detect.Rejected
	var err error
	if c.Bool("behavioral") {
		since := time.Now().Add(-c.Duration("since"))
		logs := detect.NewZtunnelLogs(setup.source, setup.cs.CoreV1())
		res, aerr := ztlog.AnalyzeCluster(ctx, logs, since, 8)
		if aerr != nil {
			return rep, nil, fmt.Errorf("reading ztunnel logs: %w", aerr)
		}
		var pods []corev1.Pod
		pods, rejected, err = setup.engine.Candidates(ctx, res.Signals)
		if err != nil {
			return rep, nil, err
		}
		rep, err = setup.engine.ScanPods(ctx, filterPods(pods, setup.namespace, setup.selector))
	} else {
		rep, err = setup.engine.Scan(ctx, setup.namespace)
	}
	if err != nil {
		return rep, nil, explainScanError(ctx, err, setup.namespace)
	}
	if c.Duration("confirm") > 0 {
		if rep, err = setup.engine.Confirm(ctx, rep); err != nil {
			return rep, nil, explainScanError(ctx, err, setup.namespace)
		}
	} else {
		rep, _ = setup.engine.Settle(rep) // --confirm 0: the flap guard is off, findings are confirmed as found
	}
	return rep, rejected, nil
}

func explainScanError(ctx context.Context, err error, namespace string) error {
	return explainAPIError(ctx, err, "list", "pods", namespace)
}

func renderScan(s Streams, format string, noHeaders bool, out scanOutput) error {
	if format == outJSON || format == outYAML {
		return writeStructured(s.Out, format, out)
	}
	headers := []string{"NAMESPACE", "NAME", "CLASS", "READY", "EXPECTED", "PRESENT", "NODE"}
	if format == outWide {
		headers = append(headers, "IP", "CONFIRMED", "DETAIL")
	}
	t := newTable(s.Out, headers...).noHeaders(noHeaders)
	for _, f := range out.Findings {
		cols := []string{f.Namespace, f.Name, string(f.Class), fmt.Sprint(f.Ready), joinPorts(f.Expected), joinPorts(f.Present), dash(f.Node)}
		if format == outWide {
			detail := f.Detail
			if f.Error != "" {
				detail = strings.TrimSpace(detail + " " + f.Error)
			}
			cols = append(cols, dash(f.IP), fmt.Sprint(f.Confirmed), dash(detail))
		}
		t.row(cols...)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(out.Findings) == 0 {
		// kubectl's "No resources found": a sentence on stderr, stdout stays empty.
		fmt.Fprintf(s.Err, "No findings in %s.\n", pods(out.Checked))
	} else {
		fmt.Fprintf(s.Err, "%d pod(s) checked, %d listed\n", out.Checked, len(out.Findings))
	}
	for _, e := range out.Errors {
		fmt.Fprintf(s.Err, "warning: %s\n", e)
	}
	return nil
}

// filterPods keeps the --behavioral candidates inside the scan's scope: the namespace
// ("" for all) and the label selector.
func filterPods(pods []corev1.Pod, ns string, sel labels.Selector) []corev1.Pod {
	out := pods[:0:0]
	for _, p := range pods {
		if (ns == "" || p.Namespace == ns) && (sel == nil || sel.Matches(labels.Set(p.Labels))) {
			out = append(out, p)
		}
	}
	return out
}
