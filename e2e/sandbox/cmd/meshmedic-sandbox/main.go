// Command meshmedic-sandbox runs meshmedic's local sandbox for people: a real control plane
// on 127.0.0.1 and a node of real kernel objects with a few ambient workloads, some of them
// broken the way production breaks them. It needs root (network namespaces, cgroups).
//
//	meshmedic-sandbox up   --state DIR   # foreground; writes DIR/kubeconfig and DIR/ready
//	meshmedic-sandbox up   --real-cni    # the real istio-cni and CNI chain (e2e/istiocni/build.sh first)
//	meshmedic-sandbox down --state DIR   # stops a running sandbox and waits for its cleanup
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshmedic/meshmedic/e2e/controlplane"
	"github.com/meshmedic/meshmedic/e2e/istiocni"
	"github.com/meshmedic/meshmedic/e2e/sandbox"
	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/internal/podsim"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	state := fs.String("state", filepath.Join(os.TempDir(), "meshmedic-sandbox"), "state directory (kubeconfig, pid, logs)")
	faults := fs.Bool("faults", true, "break some pods the way production breaks them")
	realCNI := fs.Bool("real-cni", false, "run the real istio-cni (built by e2e/istiocni/build.sh) over a real CNI chain instead of the simulated one")
	_ = fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "up":
		err = up(*state, *faults, *realCNI)
	case "down":
		err = down(*state)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "meshmedic-sandbox %s: %v\n", os.Args[1], err)
		os.Exit(2)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: meshmedic-sandbox up|down [--state DIR] [--faults=false] [--real-cni]")
	os.Exit(2)
}

func up(state string, faults, realCNI bool) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("the sandbox needs root: it creates network namespaces and cgroups (run with sudo)")
	}
	if pid, ok := running(state); ok {
		return fmt.Errorf("a sandbox is already running (pid %d); run: meshmedic-sandbox down --state %s", pid, state)
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return err
	}
	os.Remove(filepath.Join(state, "ready"))
	// Every sandbox starts from an empty cluster: etcd data left by an earlier run names
	// pods whose kernel objects are long gone.
	if err := os.RemoveAll(filepath.Join(state, "controlplane")); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := podsim.CleanupStale(); err != nil {
		fmt.Fprintf(os.Stderr, "warning: stale sandbox cgroups: %v\n", err)
	}
	bins, err := controlplane.FindBinaries()
	if err != nil {
		return err
	}
	var cniBins string
	if realCNI {
		if cniBins, err = istiocni.FindBinaries(ctx); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(state, "pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(state, "pid"))
	start := time.Now()
	logf("starting control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) on 127.0.0.1")
	cp, err := controlplane.Start(ctx, controlplane.Options{BinDir: bins, WorkDir: filepath.Join(state, "controlplane")})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, cp.Stop()) }()
	cs, err := kubernetes.NewForConfig(cp.RESTConfig)
	if err != nil {
		return err
	}
	logf("control plane ready in %s; starting the sandbox node", time.Since(start).Round(time.Millisecond))
	logFile, err := os.Create(filepath.Join(state, "node.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	opts := sandbox.Options{DNS: true, Log: logFile}
	if realCNI {
		ca, err := os.ReadFile(cp.CACertFile)
		if err != nil {
			return err
		}
		logf("starting the real istio-cni (node agent, CNI plugin) and the ztunnel stand-in on the node")
		opts.RealCNI = &sandbox.RealCNIOptions{BinDir: cniBins, APIServer: strings.TrimPrefix(cp.Host, "https://"), CACert: ca}
	}
	node, err := sandbox.StartNode(ctx, cs, opts)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, node.Stop()) }()
	// A real install has istio-cni's ConfigMap: without it the first screen of the demo
	// would be a note that it is not readable.
	logf("creating istio-cni's ConfigMap %s/%s as the chart renders it", "istio-system", enroll.ConfigMapName)
	if err := sandbox.CreateIstioCNIConfig(ctx, cs); err != nil {
		return err
	}
	logf("creating workloads")
	if err := sandbox.CreateWorkloads(ctx, cs, sandbox.DemoNamespaces, sandbox.DemoWorkloads); err != nil {
		return err
	}
	if faults {
		if err := breakSome(ctx, cs, node); err != nil {
			return err
		}
	}
	kubeconfig := filepath.Join(state, "kubeconfig")
	raw, err := os.ReadFile(cp.KubeconfigPath)
	if err != nil {
		return err
	}
	if err := os.WriteFile(kubeconfig, raw, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(state, "ready"), []byte(node.Name()+"\n"), 0o600); err != nil {
		return err
	}
	logf("ready in %s: export KUBECONFIG=%s (node %s)", time.Since(start).Round(time.Millisecond), kubeconfig, node.Name())
	<-ctx.Done()
	logf("stopping: removing pods' kernel objects and the control plane")
	return nil
}

// breakSome makes one classic orphan (every listener flushed) and one partial capture.
func breakSome(ctx context.Context, cs kubernetes.Interface, node *sandbox.Node) error {
	pods, err := cs.CoreV1().Pods("shop").List(ctx, metav1.ListOptions{LabelSelector: "app in (cart,frontend)"})
	if err != nil {
		return err
	}
	var cart, frontend *corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		switch {
		case p.Labels["app"] == "cart" && cart == nil:
			cart = p
		case p.Labels["app"] == "frontend" && frontend == nil:
			frontend = p
		}
	}
	if cart == nil || frontend == nil {
		return errors.New("demo pods not found")
	}
	if rc := node.RealCNI(); rc != nil {
		// ztunnel (the stand-in) loses the listeners while it and istio-cni still say enrolled.
		logf("breaking shop/%s (ztunnel lost every listener: the reboot orphan's symptom)", cart.Name)
		if err := rc.Control().Lose(ctx, string(cart.UID)); err != nil {
			return err
		}
		logf("breaking shop/%s (ztunnel lost its HBONE listener 15008: partial capture)", frontend.Name)
		return rc.Control().Lose(ctx, string(frontend.UID), podsim.PortHBONE)
	}
	logf("breaking shop/%s (all ztunnel listeners flushed: the reboot orphan)", cart.Name)
	if err := node.Flush("shop", cart.Name); err != nil {
		return err
	}
	logf("breaking shop/%s (HBONE listener 15008 flushed: partial capture)", frontend.Name)
	return node.Flush("shop", frontend.Name, podsim.PortHBONE)
}

func running(state string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(state, "pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return 0, false
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return pid, strings.HasPrefix(strings.TrimSpace(string(comm)), "meshmedic-sandb")
}

func down(state string) error {
	pid, ok := running(state)
	if !ok {
		logf("no sandbox running under %s", state)
		return podsim.CleanupStale()
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return err
	}
	for i := 0; i < 600; i++ {
		if _, ok := running(state); !ok {
			logf("sandbox (pid %d) stopped", pid)
			return podsim.CleanupStale()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("sandbox pid %d did not stop within 60s", pid)
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "meshmedic-sandbox: "+format+"\n", a...)
}
