// Command oneshot is the smallest useful embedding of meshmedic's detect package: one
// library call (detect.Engine.ScanAndConfirm) over a cluster reached through a kubeconfig,
// its findings printed as a table (or JSON with -o json), and exit code 1 when an ambient
// pod is not captured the way it should be.
//
// Run it against any cluster with Istio ambient:
//
//	go run ./examples/oneshot -n shop                 # exec prober: cat /proc/net/tcp6 in each pod
//	go run ./examples/oneshot -A -o json              # every namespace, JSON
//	go run ./examples/oneshot -A -prober agent        # read the condition meshmedic agents publish
//	go run ./examples/oneshot -n shop -prober node-local -node "$(hostname)"   # on the node itself
//
// Flags: -kubeconfig (default $KUBECONFIG, then ~/.kube/config), -n/-A, -o table|json,
// -prober exec|node-local|agent, -proc-root and -node (node-local), -confirm (the flap
// guard's delay; 0 disables), -istio-namespace (where ConfigMap istio-cni-config lives),
// -meshmedic-namespace (where the agents' heartbeat Leases live, for -prober agent).
//
// Exit codes follow meshmedic's: 0 nothing found, 1 findings, 2 usage or runtime error.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/netns"
)

type options struct {
	kubeconfig, namespace, output   string
	allNamespaces                   bool
	prober, procRoot, node, istioNS string
	meshmedicNS                     string
	confirm                         time.Duration
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("oneshot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, then ~/.kube/config)")
	fs.StringVar(&o.namespace, "n", "default", "namespace to scan")
	fs.BoolVar(&o.allNamespaces, "A", false, "scan every namespace")
	fs.StringVar(&o.output, "o", "table", "output: table or json")
	fs.StringVar(&o.prober, "prober", "exec", "how to read pods' sockets: exec, node-local or agent")
	fs.StringVar(&o.procRoot, "proc-root", "/proc", "proc root for -prober node-local")
	fs.StringVar(&o.node, "node", "", "only pods on this node (required with -prober node-local)")
	fs.DurationVar(&o.confirm, "confirm", 10*time.Second, "flap guard: re-probe findings after this delay (0 disables)")
	fs.StringVar(&o.istioNS, "istio-namespace", "istio-system", "namespace of Istio's ConfigMap istio-cni-config")
	fs.StringVar(&o.meshmedicNS, "meshmedic-namespace", "meshmedic-system", "namespace of the meshmedic agents' heartbeat Leases (-prober agent)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := o.validate(); err != nil {
		fmt.Fprintf(stderr, "oneshot: %v\n", err)
		return 2
	}
	rep, err := scan(ctx, o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "oneshot: %v\n", err)
		return 2
	}
	if err := render(stdout, o.output, rep); err != nil {
		fmt.Fprintf(stderr, "oneshot: %v\n", err)
		return 2
	}
	for _, e := range rep.Errors {
		fmt.Fprintf(stderr, "warning: %v\n", e)
	}
	if len(rep.Actionable()) > 0 {
		return 1
	}
	return 0
}

func (o options) validate() error {
	switch {
	case o.output != "table" && o.output != "json":
		return fmt.Errorf("-o %q: want table or json", o.output)
	case o.prober != "exec" && o.prober != "node-local" && o.prober != "agent":
		return fmt.Errorf("-prober %q: want exec, node-local or agent", o.prober)
	case o.prober == "node-local" && o.node == "":
		return errors.New("-prober node-local reads this machine's /proc: give -node so only this node's pods are checked")
	}
	return nil
}

// scan is the whole integration: a clientset, the istio-cni settings enroll decides with,
// a Prober, and one Engine call.
func scan(ctx context.Context, o options, stderr io.Writer) (detect.Report, error) {
	cfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return detect.Report{}, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return detect.Report{}, fmt.Errorf("kubernetes client: %w", err)
	}
	prober, err := newProber(o, cfg, cs)
	if err != nil {
		return detect.Report{}, err
	}
	settings, err := istioSettings(ctx, cs, o.istioNS, stderr)
	if err != nil {
		return detect.Report{}, err
	}
	var srcOpts []detect.SourceOption
	engineOpts := []detect.Option{detect.WithSettings(settings), detect.WithConfirmDelay(o.confirm)}
	if o.node != "" {
		srcOpts = append(srcOpts, detect.WithFieldSelector("spec.nodeName="+o.node))
		engineOpts = append(engineOpts, detect.WithNode(o.node))
	}
	src := detect.NewAPISource(cs.CoreV1(), cs.CoreV1(), srcOpts...)
	engine := detect.New(src, src, prober, engineOpts...)

	namespace := o.namespace
	if o.allNamespaces {
		namespace = ""
	}
	if o.confirm == 0 {
		return engine.Scan(ctx, namespace)
	}
	return engine.ScanAndConfirm(ctx, namespace)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	return cfg, nil
}

func newProber(o options, cfg *rest.Config, cs kubernetes.Interface) (detect.Prober, error) {
	switch o.prober {
	case "exec":
		return detect.NewExecProber(detect.NewSPDYExecutor(cfg, cs.CoreV1().RESTClient())), nil
	case "node-local":
		fs, err := netns.NewFS(o.procRoot)
		if err != nil {
			return nil, err
		}
		return detect.NewNodeLocalProber(fs, netns.NewProcReader(fs)), nil
	case "agent":
		// Conditions count only while their node's agent vouches for them (its heartbeat
		// Lease in meshmedic's namespace).
		return detect.NewConditionProber(detect.HeartbeatsFromLeases(cs.CoordinationV1(), o.meshmedicNS, time.Minute, nil)), nil
	}
	return nil, fmt.Errorf("-prober %q: want exec, node-local or agent", o.prober)
}

// istioSettings reads istio-cni's settings (ambient on/off, DNS capture, enablement
// selectors, excluded namespaces) from its ConfigMap; Istio's defaults when it cannot.
func istioSettings(ctx context.Context, cs kubernetes.Interface, istioNS string, stderr io.Writer) (enroll.Settings, error) {
	s := enroll.DefaultSettings()
	s.SystemNamespace = istioNS
	cm, err := cs.CoreV1().ConfigMaps(istioNS).Get(ctx, "istio-cni-config", metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsForbidden(err):
		fmt.Fprintf(stderr, "note: ConfigMap %s/istio-cni-config not readable (%s): judging with Istio's defaults\n", istioNS, apierrors.ReasonForError(err))
		return s, nil
	case err != nil:
		return s, fmt.Errorf("get ConfigMap %s/istio-cni-config: %w", istioNS, err)
	}
	return enroll.SettingsFromConfigMap(cm.Data, s)
}

// listed are the findings worth showing: broken pods and those that could not be verified.
func listed(rep detect.Report) []detect.Finding {
	out := []detect.Finding{}
	for _, f := range rep.Findings {
		if f.Actionable() || f.Class == detect.ClassUnknown {
			out = append(out, f)
		}
	}
	return out
}

func render(w io.Writer, format string, rep detect.Report) error {
	findings := listed(rep)
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Checked  int              `json:"checked"`
			Findings []detect.Finding `json:"findings"`
		}{rep.Checked, findings})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tCLASS\tREADY\tEXPECTED\tPRESENT\tNODE\tDETAIL")
	for _, f := range findings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\t%s\t%s\n", f.Namespace, f.Name, f.Class, f.Ready,
			ports(f.Expected), ports(f.Present), dash(f.Node), dash(f.Detail))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d pod(s) checked, %d listed\n", rep.Checked, len(findings))
	return err
}

func ports(p []uint16) string {
	if len(p) == 0 {
		return "-"
	}
	s := make([]string, len(p))
	for i, v := range p {
		s[i] = fmt.Sprint(v)
	}
	return strings.Join(s, ",")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
