//go:build kind

package kind

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/envfuncs"
	"sigs.k8s.io/e2e-framework/support/kind"

	"github.com/meshmedic/meshmedic/e2e"
	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/heal"
)

// Labels of the two workloads.
const (
	appClient = "curl"
	appServer = "httpbin"
)

// run runs a command and returns its stdout; a failure carries stderr.
func run(ctx context.Context, stdin []byte, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = st.root
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// kubeArgs are the connection flags every tool here (kubectl, istioctl, meshmedic) takes.
func kubeArgs() []string {
	args := []string{"--kubeconfig", st.kubeconfig}
	if st.context != "" {
		args = append(args, "--context", st.context)
	}
	return args
}

func kubectl(ctx context.Context, args ...string) (string, error) {
	return run(ctx, nil, "kubectl", append(kubeArgs(), args...)...)
}

// kubectlApply applies manifests given on stdin.
func kubectlApply(ctx context.Context, manifests []byte, args ...string) error {
	_, err := run(ctx, manifests, "kubectl", append(append(kubeArgs(), args...), "apply", "-f", "-")...)
	return err
}

func istioctl(ctx context.Context, args ...string) (string, error) {
	return run(ctx, nil, *flagIstioctl, append(args, kubeArgs()...)...)
}

// meshmedic runs the binary under test against the cluster.
func meshmedic(ctx context.Context, args ...string) (e2e.Result, error) {
	return e2e.Run(ctx, st.bin, nil, append(args, kubeArgs()...)...)
}

func setupClients(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
	st.kubeconfig, st.context = cfg.KubeconfigFile(), cfg.KubeContext()
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: st.kubeconfig}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: cfg.KubeContext()}).ClientConfig()
	if err != nil {
		return ctx, fmt.Errorf("kubeconfig %s: %w", st.kubeconfig, err)
	}
	if st.cs, err = kubernetes.NewForConfig(rc); err != nil {
		return ctx, err
	}
	return ctx, nil
}

// checkTools fails early, naming what is missing (kind too when a cluster is to be
// created), checks that the Docker daemon answers, and refuses an istioctl of another
// version than --istio-version (the pin would be a lie).
func checkTools(ctx context.Context, _ *envconf.Config) (context.Context, error) {
	_, file, _, _ := runtime.Caller(0)
	st.root = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	tools := []string{"docker", "kubectl", *flagIstioctl}
	if st.created || *flagKindCluster != "" {
		tools = append(tools, "kind")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return ctx, fmt.Errorf("%s not found on PATH: %w", tool, err)
		}
	}
	if _, err := run(ctx, nil, "docker", "info", "--format", "{{.ServerVersion}}"); err != nil {
		return ctx, fmt.Errorf("the Docker daemon does not answer: %w", err)
	}
	out, err := run(ctx, nil, *flagIstioctl, "version", "--remote=false")
	if err != nil {
		return ctx, err
	}
	v, err := ParseIstioctlVersion(out)
	if err != nil {
		return ctx, err
	}
	if v != *flagIstioVersion {
		return ctx, fmt.Errorf("istioctl is %s but --istio-version is %s", v, *flagIstioVersion)
	}
	return ctx, nil
}

func buildMeshmedic(ctx context.Context, _ *envconf.Config) (context.Context, error) {
	dir, err := os.MkdirTemp("", "meshmedic-kind-")
	if err != nil {
		return ctx, err
	}
	st.bin, err = e2e.BuildBinary(ctx, dir)
	return ctx, err
}

// installIstio installs Istio ambient with istioctl (profile ambient: istiod, istio-cni,
// ztunnel). istioctl rather than Helm: one pinned binary that installs the same charts in
// one command, waits for them, and is needed anyway for `istioctl ztunnel-config`.
func installIstio(ctx context.Context, _ *envconf.Config) (context.Context, error) {
	switch *flagInstallIstio {
	case "no":
		return ctx, nil
	case "auto":
		if !st.created {
			_, err := st.cs.AppsV1().Deployments("istio-system").Get(ctx, "istiod", metav1.GetOptions{})
			if err == nil {
				return ctx, nil // already there: use it as it is
			}
			if !apierrors.IsNotFound(err) {
				return ctx, err
			}
		}
	case "yes":
	default:
		return ctx, fmt.Errorf("--install-istio %q: want auto, yes or no", *flagInstallIstio)
	}
	if _, err := istioctl(ctx, "install", "--set", "profile=ambient", "--skip-confirmation"); err != nil {
		return ctx, err
	}
	for _, ds := range []string{"ztunnel", "istio-cni-node"} {
		if _, err := kubectl(ctx, "-n", "istio-system", "rollout", "status", "daemonset/"+ds, "--timeout=5m"); err != nil {
			return ctx, err
		}
	}
	return ctx, nil
}

// deployWorkloads creates the ambient namespace and the client (curl, sleeping) and server
// (httpbin behind a Service) workloads, each with its own ServiceAccount so that mTLS
// identities differ, and waits until both pods are Ready and enrolled.
func deployWorkloads(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
	ctx, err := envfuncs.CreateNamespace(st.ns, envfuncs.WithLabels(map[string]string{enroll.LabelDataplaneMode: enroll.DataplaneModeAmbient}))(ctx, cfg)
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return ctx, err
	}
	for _, app := range []string{appClient, appServer} {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: st.ns}}
		if _, err := st.cs.CoreV1().ServiceAccounts(st.ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return ctx, err
		}
	}
	objs := []struct {
		name   string
		create func() error
	}{
		{"deployment " + appServer, func() error {
			_, err := st.cs.AppsV1().Deployments(st.ns).Create(ctx, deployment(appServer, *flagServerImage,
				[]string{"gunicorn", "-b", "0.0.0.0:8080", "httpbin:app", "-k", "gevent"}, 8080), metav1.CreateOptions{})
			return err
		}},
		{"service " + appServer, func() error {
			_, err := st.cs.CoreV1().Services(st.ns).Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: appServer, Namespace: st.ns},
				Spec: corev1.ServiceSpec{Selector: map[string]string{"app": appServer},
					Ports: []corev1.ServicePort{{Name: "http", Port: 8000, TargetPort: intstr.FromInt32(8080)}}},
			}, metav1.CreateOptions{})
			return err
		}},
		{"deployment " + appClient, func() error {
			_, err := st.cs.AppsV1().Deployments(st.ns).Create(ctx, deployment(appClient, *flagClientImage, []string{"/bin/sleep", "infinity"}, 0), metav1.CreateOptions{})
			return err
		}},
	}
	for _, o := range objs {
		if err := o.create(); err != nil && !apierrors.IsAlreadyExists(err) {
			return ctx, fmt.Errorf("%s: %w", o.name, err)
		}
	}
	for _, app := range []string{appServer, appClient} {
		if _, err := waitPod(ctx, app, 5*time.Minute, func(p *corev1.Pod) bool { return heal.PodReady(p) && enrolled(p) }); err != nil {
			return ctx, err
		}
	}
	return ctx, nil
}

func deployment(app, image string, command []string, port int32) *appsv1.Deployment {
	labels := map[string]string{"app": app}
	c := corev1.Container{Name: app, Image: image, Command: command}
	if port != 0 {
		c.Ports = []corev1.ContainerPort{{ContainerPort: port}}
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: st.ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{ServiceAccountName: app, TerminationGracePeriodSeconds: ptr.To[int64](5),
					Containers: []corev1.Container{c}},
			},
		},
	}
}

// deployAgent builds (unless --build-image=false) and loads the meshmedic image, renders
// the overlay with kustomize, points its meshmedic containers at the image, applies it and
// waits for the DaemonSet.
func deployAgent(ctx context.Context, cfg *envconf.Config) (context.Context, error) {
	if *flagBuildImage {
		if _, err := run(ctx, nil, "docker", "build", "-f", "deploy/Dockerfile", "-t", *flagImage, "."); err != nil {
			return ctx, err
		}
	}
	var err error
	switch {
	case st.created:
		ctx, err = envfuncs.LoadImageToCluster(*flagKindCluster, *flagImage)(ctx, cfg)
	case *flagKindCluster != "":
		err = kind.NewCluster(*flagKindCluster).SetDefaults().(*kind.Cluster).LoadImage(ctx, *flagImage)
	}
	if err != nil {
		return ctx, err
	}
	rendered, err := kubectl(ctx, "kustomize", filepath.Join(st.root, *flagOverlay))
	if err != nil {
		return ctx, err
	}
	manifests, changed, err := RetagMeshmedic([]byte(rendered), *flagImage)
	if err != nil {
		return ctx, fmt.Errorf("overlay %s: %w", *flagOverlay, err)
	}
	for _, o := range changed {
		if o.Kind == "DaemonSet" {
			st.agent = o
		}
	}
	if st.agent.Name == "" {
		return ctx, fmt.Errorf("overlay %s: no DaemonSet runs the meshmedic image (found %v)", *flagOverlay, changed)
	}
	if err := kubectlApply(ctx, manifests); err != nil {
		return ctx, err
	}
	_, err = kubectl(ctx, "-n", st.agent.Namespace, "rollout", "status", "daemonset/"+st.agent.Name, "--timeout=5m")
	return ctx, err
}

func enrolled(p *corev1.Pod) bool { return p.Annotations[enroll.AnnotationRedirection] == "enabled" }

// waitPod waits until the workload app has exactly one pod that is not terminating and that
// pod satisfies ok, and returns it.
func waitPod(ctx context.Context, app string, timeout time.Duration, ok func(*corev1.Pod) bool) (*corev1.Pod, error) {
	var got *corev1.Pod
	var last string
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		list, err := st.cs.CoreV1().Pods(st.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		var live []corev1.Pod
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil {
				live = append(live, p)
			}
		}
		if len(live) != 1 {
			last = fmt.Sprintf("%d live pods", len(live))
			return false, nil
		}
		p := live[0]
		last = fmt.Sprintf("pod %s phase=%s annotations=%v conditions=%v", p.Name, p.Status.Phase, p.Annotations, p.Status.Conditions)
		if !ok(&p) {
			return false, nil
		}
		got = &p
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for the %s pod: %w (last: %s)", app, err, last)
	}
	return got, nil
}

// setAgentPaused takes the agent off every node (a nodeSelector no node matches) or puts it
// back, and waits until that is done. Features that exercise `meshmedic repair` pause it so
// that the auto-repairing agent does not race the CLI for the same orphan.
func setAgentPaused(ctx context.Context, paused bool) error {
	value := `null`
	if paused {
		value = `"true"`
	}
	patch := `{"spec":{"template":{"spec":{"nodeSelector":{"meshmedic.io/e2e-paused":` + value + `}}}}}`
	ns, name := st.agent.Namespace, st.agent.Name
	if _, err := kubectl(ctx, "-n", ns, "patch", "daemonset", name, "--type", "merge", "-p", patch); err != nil {
		return err
	}
	if !paused {
		_, err := kubectl(ctx, "-n", ns, "rollout", "status", "daemonset/"+name, "--timeout=5m")
		return err
	}
	return wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		ds, err := st.cs.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
		if err != nil {
			return false, err
		}
		pods, err := st.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
		return err == nil && ds.Status.DesiredNumberScheduled == 0 && len(pods.Items) == 0, nil
	})
}

var errEarlierStep = errors.New("an earlier step of this feature failed")
