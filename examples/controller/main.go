// Command controller is a minimal operator that embeds meshmedic's detect and heal packages
// the way an operator author would: its own client-go informers (pods on one node or in the
// whole cluster, and namespaces) feed a detect.Engine through detect's PodLister and
// NamespaceGetter interfaces; a Prober chosen by flag reads each pod's sockets; every
// -interval it scans, re-confirms findings after the flap guard, and hands the report to
// heal's planner (heal.Healer.Plan, then Apply): the same rules, fleet-wide ledger and
// canary as meshmedic's own agent and `repair`. It is a dry run (server-side: the API still answers,
// so PodDisruptionBudget refusals show) unless -yes is given. Logs are JSON lines on stderr
// through logr (funcr).
//
// Run it on a node, reading that node's /proc (as root, or with the host's /proc mounted):
//
//	go run ./examples/controller -prober node-local -node "$(hostname)" -proc-root /proc
//
// or anywhere, cluster-wide, trusting the condition meshmedic agents publish on pods:
//
//	go run ./examples/controller -prober agent -interval 1m
//
// Add -yes to evict confirmed orphans, -once to run a single cycle and exit (0: nothing left
// to heal, 1: findings left — a dry run, PDB blocks, refusals —, 2: error).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/heal"
	"github.com/meshmedic/meshmedic/netns"
)

// config is the controller's flags.
type config struct {
	kubeconfig  string
	node        string // "": watch pods cluster-wide
	namespace   string // "": scan every namespace
	prober      string
	procRoot    string
	istioNS     string
	meshmedicNS string
	interval    time.Duration
	confirm     time.Duration
	yes         bool
	once        bool
	verbosity   int
	budget      heal.Budget
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	var c config
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, then ~/.kube/config, then in-cluster)")
	fs.StringVar(&c.node, "node", "", "watch only pods on this node (required with -prober node-local)")
	fs.StringVar(&c.namespace, "namespace", "", "scan only this namespace (default: all)")
	fs.StringVar(&c.prober, "prober", "agent", "node-local (read -proc-root on this node) or agent (the meshmedic.io/AmbientCaptured condition)")
	fs.StringVar(&c.procRoot, "proc-root", "/proc", "proc root for -prober node-local")
	fs.StringVar(&c.istioNS, "istio-namespace", "istio-system", "Istio's namespace (ConfigMap istio-cni-config, ztunnel and istio-cni pods)")
	fs.StringVar(&c.meshmedicNS, "meshmedic-namespace", "meshmedic-system", "meshmedic's namespace: the fleet-wide heal ledger and the agents' heartbeats")
	fs.DurationVar(&c.interval, "interval", 30*time.Second, "time between cycles")
	fs.DurationVar(&c.confirm, "confirm", 10*time.Second, "flap guard: findings are re-probed after this delay and only those that hold are healed")
	fs.BoolVar(&c.yes, "yes", false, "act; without it every heal is a server-side dry run")
	fs.BoolVar(&c.once, "once", false, "run one cycle and exit")
	fs.IntVar(&c.verbosity, "v", 0, "log verbosity (1 also logs every heal decision from package heal)")
	fs.IntVar(&c.budget.PerRun, "max-actions", heal.DefaultBudget.PerRun, "at most this many pods healed per cycle (0: none, negative: unlimited)")
	fs.IntVar(&c.budget.PerNode, "max-per-node", heal.DefaultBudget.PerNode, "at most this many per node per cycle")
	fs.IntVar(&c.budget.PerNamespace, "max-per-namespace", heal.DefaultBudget.PerNamespace, "at most this many per namespace per cycle")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := funcr.NewJSON(func(obj string) { fmt.Fprintln(stderr, obj) }, funcr.Options{Verbosity: c.verbosity})

	ctrl, err := newController(ctx, c, log)
	if err != nil {
		log.Error(err, "setup failed")
		return 2
	}
	for {
		left, err := ctrl.runOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return 0
		case err != nil:
			log.Error(err, "cycle failed")
			if c.once {
				return 2
			}
		case c.once && left > 0:
			return 1
		case c.once:
			return 0
		}
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(c.interval):
		}
	}
}

// controller is one detect.Engine and one heal.Healer over informer caches.
type controller struct {
	cfg    config
	log    logr.Logger
	pods   corelisters.PodLister
	engine *detect.Engine
	healer *heal.Healer
}

func newController(ctx context.Context, c config, log logr.Logger) (*controller, error) {
	if c.prober == "node-local" && c.node == "" {
		return nil, errors.New("-prober node-local reads this machine's /proc: give -node so only this node's pods are checked")
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if c.kubeconfig != "" {
		rules.ExplicitPath = c.kubeconfig
	}
	restCfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}

	// Informers: pods (this node's only when -node is given, with a field-selected watch)
	// and namespaces (enroll reads their labels). Nothing is listed per cycle.
	var tweak []informers.SharedInformerOption
	if c.node != "" {
		sel := fields.OneTermEqualSelector("spec.nodeName", c.node).String()
		tweak = append(tweak, informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = sel }))
	}
	podFactory := informers.NewSharedInformerFactoryWithOptions(cs, 0, tweak...)
	nsFactory := informers.NewSharedInformerFactory(cs, 0)
	podInf, nsInf := podFactory.Core().V1().Pods(), nsFactory.Core().V1().Namespaces()
	podLister, nsLister := podInf.Lister(), nsInf.Lister()
	podInf.Informer() // register before Start
	nsInf.Informer()
	podFactory.Start(ctx.Done())
	nsFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), podInf.Informer().HasSynced, nsInf.Informer().HasSynced) {
		return nil, fmt.Errorf("informers did not sync: %w", ctx.Err())
	}

	// detect's narrow interfaces over the caches.
	pods := detect.PodListerFunc(func(_ context.Context, namespace string) ([]corev1.Pod, error) {
		var list []*corev1.Pod
		var err error
		if namespace == "" {
			list, err = podLister.List(labels.Everything())
		} else {
			list, err = podLister.Pods(namespace).List(labels.Everything())
		}
		if err != nil {
			return nil, err
		}
		out := make([]corev1.Pod, 0, len(list))
		for _, p := range list {
			out = append(out, *p.DeepCopy())
		}
		return out, nil
	})
	namespaces := detect.NamespaceGetterFunc(func(_ context.Context, name string) (*corev1.Namespace, error) {
		return nsLister.Get(name) // a NotFound error for unknown names, as detect expects
	})

	prober, err := newProber(c, cs)
	if err != nil {
		return nil, err
	}
	settings, err := istioSettings(ctx, cs, c.istioNS, log)
	if err != nil {
		return nil, err
	}
	engineOpts := []detect.Option{detect.WithSettings(settings), detect.WithConfirmDelay(c.confirm), detect.WithLogger(log.WithName("detect"))}
	if c.node != "" {
		engineOpts = append(engineOpts, detect.WithNode(c.node))
	}
	strategy := heal.NewEvict(heal.NewEvicter(cs.CoreV1().RESTClient()), cs.CoreV1(), heal.EvictOptions{})
	healer := heal.NewHealer(strategy,
		heal.WithDryRun(!c.yes),
		heal.WithBudget(c.budget),
		// The same fleet-wide ledger as meshmedic's agents and `meshmedic repair`.
		heal.WithLedger(heal.NewLeaseLedger(cs.CoordinationV1(), c.meshmedicNS, "example-controller")),
		heal.WithInstance("example-controller"),
		heal.WithEvents(heal.NewEventSink(cs.CoreV1(), "meshmedic-example-controller", heal.EventSinkLogger(log))),
		heal.WithLogger(log.WithName("heal")),
	)
	log.Info("started", "node", c.node, "namespace", c.namespace, "prober", c.prober, "dryRun", !c.yes,
		"istioVersion", settings.Version.String())
	return &controller{cfg: c, log: log, pods: podLister, engine: detect.New(pods, namespaces, prober, engineOpts...), healer: healer}, nil
}

func newProber(c config, cs kubernetes.Interface) (detect.Prober, error) {
	switch c.prober {
	case "node-local":
		fs, err := netns.NewFS(c.procRoot)
		if err != nil {
			return nil, err
		}
		return detect.NewNodeLocalProber(fs, netns.NewProcReader(fs)), nil
	case "agent":
		return detect.NewConditionProber(detect.HeartbeatsFromLeases(cs.CoordinationV1(), c.meshmedicNS, time.Minute, nil)), nil
	}
	return nil, fmt.Errorf("-prober %q: want node-local or agent", c.prober)
}

// istioSettings reads istio-cni's settings from its ConfigMap; Istio's defaults when it
// cannot be read.
func istioSettings(ctx context.Context, cs kubernetes.Interface, istioNS string, log logr.Logger) (enroll.Settings, error) {
	s := enroll.DefaultSettings()
	s.SystemNamespace = istioNS
	cm, err := cs.CoreV1().ConfigMaps(istioNS).Get(ctx, "istio-cni-config", metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsForbidden(err):
		log.Info("istio-cni-config not readable: judging with Istio's defaults", "namespace", istioNS, "reason", apierrors.ReasonForError(err))
		return s, nil
	case err != nil:
		return s, fmt.Errorf("get ConfigMap %s/istio-cni-config: %w", istioNS, err)
	}
	return enroll.SettingsFromConfigMap(cm.Data, s)
}

// runOnce is one cycle: scan, confirm, then heal's planner and Apply. It returns how many
// actionable findings were left unhealed (dry run, blocked, refused, waiting, failed,
// unconfirmed).
func (c *controller) runOnce(ctx context.Context) (int, error) {
	rep, err := c.engine.Scan(ctx, c.cfg.namespace)
	if err != nil {
		return 0, err
	}
	if len(rep.Actionable()) > 0 {
		if rep, err = c.engine.Confirm(ctx, rep); err != nil {
			return 0, err
		}
	}
	for _, e := range rep.Errors {
		c.log.V(1).Info("could not verify", "err", e.Error())
	}
	left := len(rep.Actionable())
	c.log.Info("cycle", "checked", rep.Checked, "actionable", left)
	if left == 0 {
		return 0, nil
	}
	// Every rule between a finding and a heal is heal's: re-read, readiness, the node's
	// verdict (ztunnel and istio-cni Ready, the canary), exclusions, backoff and the
	// fleet-wide limits in the ledger shared with meshmedic's agents.
	plan, err := c.healer.Plan(ctx, rep, c.podGetter(), c.facts(rep))
	if err != nil {
		return left, err
	}
	for _, a := range c.healer.Apply(ctx, plan) {
		c.log.Info("heal", "pod", a.Namespace+"/"+a.Name, "class", a.Class, "result", a.Result, "dryRun", !c.cfg.yes, "detail", a.Detail)
		switch a.Result {
		case heal.ResultEvicted, heal.ResultToggled, heal.ResultDeleted:
			left--
		}
	}
	return left, nil
}

// podGetter re-reads a planned pod from the informer cache.
func (c *controller) podGetter() heal.PodGetter {
	return heal.PodGetterFunc(func(_ context.Context, ns, name string) (*corev1.Pod, error) {
		p, err := c.pods.Pods(ns).Get(name)
		if err != nil {
			return nil, err
		}
		return p.DeepCopy(), nil
	})
}

// facts judges a node by every pod on it (from the cache), scanning those this cycle did
// not: the node breaker and the canary need the whole node.
func (c *controller) facts(rep detect.Report) heal.FactsSource {
	return heal.ScanFacts{
		List: func(_ context.Context, node string) ([]corev1.Pod, error) {
			all, err := c.pods.List(labels.Everything())
			if err != nil {
				return nil, err
			}
			var out []corev1.Pod
			for _, p := range all {
				if p.Spec.NodeName == node {
					out = append(out, *p.DeepCopy())
				}
			}
			return out, nil
		},
		Scan: func(ctx context.Context, pods []corev1.Pod) (detect.Report, error) {
			r, err := c.engine.ScanPods(ctx, pods)
			if err != nil {
				return r, err
			}
			return c.engine.Confirm(ctx, r)
		},
		Known:          rep.Findings,
		InfraNamespace: func(ns string) bool { return ns == c.cfg.istioNS },
	}
}
