package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/meshmedic/meshmedic/e2e/istiocni"
)

// RealCNIOptions switch the node from its simulated istio-cni and ztunnel to the real istio-cni
// (node agent, installer and CNI plugin) with meshmedic's ZDS-speaking ztunnel stand-in. The pods'
// network then comes from a real CNI chain run by the node (libcni, Debian's bridge + host-local),
// into which istio-cni's installer chains itself.
type RealCNIOptions struct {
	// BinDir holds install-cni, istio-cni and ztunnel-standin (istiocni.FindBinaries).
	BinDir string
	// APIServer is the kube-apiserver's address on the machine's loopback (host:port). The node
	// reaches it at the kubernetes Service's address, 10.96.0.1:443, inside its own netns.
	APIServer string
	// CACert is the cluster CA (PEM): the ca.crt of the agent's service-account mount.
	CACert []byte
	// Config overrides keys of istio-cni-config (istiocni.ConfigMapData); "" removes a key.
	Config map[string]string
	// PluginDir holds Debian's CNI plugins (bridge, host-local, loopback, portmap); default
	// /usr/lib/cni.
	PluginDir string
	// Log receives the agent's and the stand-in's output too (their log files always do).
	Log io.Writer
}

// Addresses and names of the real-CNI node, in one place.
const (
	// kubernetesServiceAddr is where the node reaches the API server: the kubernetes Service's
	// ClusterIP and port (the sandbox's apiserver certificate carries this IP), served by a
	// forwarder inside the node's netns.
	kubernetesServiceIP   = "10.96.0.1"
	kubernetesServicePort = "443"
	primaryConflist       = "10-sandbox-bridge.conflist"
	podNetworkName        = "sandbox-pod-network"
	bridgeName            = "cni0"
	podIfName             = "eth0"
	agentReadyAddr        = "127.0.0.1:8000"  // install-cni's readiness server (cni/pkg/constants ReadinessPort)
	ztunnelAdminAddr      = "127.0.0.1:15000" // ztunnel's admin endpoint (config_dump), in the node's netns
)

// debianPlugins are the plugins the node's bin dir links from PluginDir.
var debianPlugins = []string{"bridge", "host-local", "loopback", "portmap"}

// RealCNI is the node side of the real istio-cni: the node's network namespace, its CNI
// configuration and bin directories, the runtime role (libcni), istio-cni's node agent in a
// pod-shaped mount namespace, and the ztunnel stand-in. Its methods are safe for concurrent use.
type RealCNI struct {
	o     RealCNIOptions
	node  string
	cs    kubernetes.Interface
	log   func(format string, a ...any)
	state string // the node's files (its "/")

	l         *istiocni.Launcher
	holder    *istiocni.Process // keeps the node's netns alive
	netns     string            // /proc/<holder>/ns/net
	fwd       net.Listener
	fwdWG     sync.WaitGroup
	fwdMu     sync.Mutex
	fwdConns  map[net.Conn]bool
	cni       *libcni.CNIConfig
	pluginLog *os.File
	ctl       *istiocni.Control
	data      map[string]string

	mu            sync.Mutex
	agent         *istiocni.Process
	agentStarts   int
	agentPod      string
	ztunnel       *istiocni.Process
	ztunnelStarts int
	onChange      func() // the node re-evaluates the agent's and ztunnel's pods
}

func (r *RealCNI) path(p ...string) string { return filepath.Join(append([]string{r.state}, p...)...) }

// Paths of the node's files, as a kubeadm node has them (under the node's state dir).
func (r *RealCNI) netDir() string          { return r.path("etc", "cni", "net.d") }
func (r *RealCNI) binDir() string          { return r.path("opt", "cni", "bin") }
func (r *RealCNI) runDir() string          { return r.path("var", "run", "istio-cni") }
func (r *RealCNI) udsPath() string         { return r.path("var", "run", "ztunnel", "ztunnel.sock") }
func (r *RealCNI) saDir() string           { return r.path("serviceaccount") }
func (r *RealCNI) logPath(n string) string { return r.path("log", n+".log") }

// StateDir is the node's state directory (its conflists, CNI binaries, IPAM state, sockets, logs).
func (r *RealCNI) StateDir() string { return r.state }

// NetnsPath is the node's network namespace (/proc/<pid>/ns/net of the process holding it).
func (r *RealCNI) NetnsPath() string { return r.netns }

// Control is the ztunnel stand-in's control client (state, config_dump, fault hooks).
func (r *RealCNI) Control() *istiocni.Control { return r.ctl }

// ConfigData is istio-cni-config's data as the node installed it.
func (r *RealCNI) ConfigData() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.data)
}

// SetConfig changes one key of istio-cni-config, in the API and for the agent's next start (a
// DaemonSet's envFrom is read when its container starts); "" removes the key.
func (r *RealCNI) SetConfig(ctx context.Context, key, value string) error {
	r.mu.Lock()
	data := maps.Clone(r.data)
	if value == "" {
		delete(data, key)
	} else {
		data[key] = value
	}
	r.mu.Unlock()
	if err := istiocni.SetConfig(ctx, r.cs, data); err != nil {
		return err
	}
	r.mu.Lock()
	r.data = data
	r.mu.Unlock()
	return nil
}

// startRealCNI prepares the node: its state dir and CNI configuration, its netns with the
// apiserver forwarder, istio-cni's API objects and service-account token, then starts the agent
// (which chains itself into the conflist) and the stand-in, and waits until both are ready.
func startRealCNI(ctx context.Context, cs kubernetes.Interface, node string, opt RealCNIOptions, logf func(string, ...any)) (_ *RealCNI, err error) {
	if opt.BinDir == "" || opt.APIServer == "" || len(opt.CACert) == 0 {
		return nil, errors.New("real CNI: BinDir, APIServer and CACert are required")
	}
	if opt.PluginDir == "" {
		opt.PluginDir = "/usr/lib/cni"
	}
	for _, p := range debianPlugins {
		if _, err := os.Stat(filepath.Join(opt.PluginDir, p)); err != nil {
			return nil, fmt.Errorf("real CNI: plugin %s: %w (install Debian's containernetworking-plugins)", p, err)
		}
	}
	state, err := os.MkdirTemp("", "meshmedic-node-")
	if err != nil {
		return nil, err
	}
	r := &RealCNI{o: opt, node: node, cs: cs, log: logf, state: state, l: istiocni.NewLauncher(),
		data: istiocni.ConfigMapData(opt.Config)}
	defer func() {
		if err != nil {
			err = errors.Join(err, r.stop())
		}
	}()
	for _, d := range []string{r.netDir(), r.binDir(), r.runDir(), filepath.Dir(r.udsPath()), r.saDir(), r.path("log"),
		r.path("var", "lib", "cni", "networks"), r.path("var", "lib", "cni", "cache"), r.path("agent-root")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return r, err
		}
	}
	for _, p := range debianPlugins {
		if err := os.Symlink(filepath.Join(opt.PluginDir, p), filepath.Join(r.binDir(), p)); err != nil {
			return r, err
		}
	}
	if err := r.WritePrimaryConflist(); err != nil {
		return r, err
	}
	// Plugins' stderr (istio-cni's plugin logs there) goes to the node's log, not the test's.
	r.pluginLog, err = os.OpenFile(r.logPath("cni-plugins"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return r, err
	}
	var stderr io.Writer = r.pluginLog
	if opt.Log != nil {
		stderr = io.MultiWriter(r.pluginLog, opt.Log)
	}
	r.cni = libcni.NewCNIConfigWithCacheDir([]string{r.binDir()}, r.path("var", "lib", "cni", "cache"),
		&invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: stderr}, PluginDecoder: version.PluginDecoder{}})
	r.ctl = istiocni.NewControl(r.path("var", "run", "ztunnel", "standin.sock"))

	if err := r.startNetns(); err != nil {
		return r, err
	}
	if err := r.startForwarder(); err != nil {
		return r, err
	}
	if err := r.installAPIObjects(ctx); err != nil {
		return r, err
	}
	if err := r.StartAgent(ctx); err != nil {
		return r, err
	}
	if err := r.StartZtunnel(ctx); err != nil {
		return r, err
	}
	return r, nil
}

// startNetns starts the process that holds the node's netns, and sets the netns up: lo up, the
// kubernetes Service address on lo, IP forwarding on (as on any Kubernetes node).
func (r *RealCNI) startNetns() error {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return err
	}
	// The same sleeper as podsim's sandboxes, so the leftover check covers it.
	p, err := r.l.Start(istiocni.Spec{Name: "node-netns", Argv: []string{sleep, "2147483647"}, LogPath: r.logPath("node-netns"), NewNetns: true})
	if err != nil {
		return err
	}
	r.holder = p
	r.netns = fmt.Sprintf("/proc/%d/ns/net", p.PID())
	for _, args := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", kubernetesServiceIP + "/32", "dev", "lo"},
		{"sysctl", "-q", "-w", "net.ipv4.ip_forward=1"},
	} {
		if out, err := r.NodeExec(context.Background(), args...); err != nil {
			return fmt.Errorf("node netns: %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// NodeExec runs a command inside the node's netns (nsenter) and returns its combined output.
func (r *RealCNI) NodeExec(ctx context.Context, args ...string) (string, error) {
	return NetnsExec(ctx, r.netns, args...)
}

// NetnsExec runs args inside the network namespace at path (nsenter --net) and returns the
// combined output; bounded to 30 s.
func NetnsExec(ctx context.Context, path string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + path, "--"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// startForwarder listens on the kubernetes Service address inside the node's netns and relays
// each connection to the API server on the machine's loopback. Nothing on the machine's own
// network changes: no route, no NAT, no interface; the socket alone lives in the node's netns.
func (r *RealCNI) startForwarder() error {
	err := istiocni.InNetns(r.netns, func() error {
		var err error
		r.fwd, err = net.Listen("tcp", net.JoinHostPort(kubernetesServiceIP, kubernetesServicePort))
		return err
	})
	if err != nil {
		return fmt.Errorf("apiserver forwarder: %w", err)
	}
	r.fwdConns = map[net.Conn]bool{}
	r.fwdWG.Add(1)
	go func() {
		defer r.fwdWG.Done()
		for {
			c, err := r.fwd.Accept()
			if err != nil {
				return
			}
			r.fwdMu.Lock()
			if r.fwdConns == nil { // stopped
				r.fwdMu.Unlock()
				c.Close()
				return
			}
			r.fwdConns[c] = true
			r.fwdMu.Unlock()
			r.fwdWG.Add(1)
			go func() {
				defer r.fwdWG.Done()
				relay(c, r.o.APIServer)
				r.fwdMu.Lock()
				delete(r.fwdConns, c)
				r.fwdMu.Unlock()
			}()
		}
	}()
	return nil
}

// stopForwarder closes the listener and every relayed connection, and waits for the relays.
func (r *RealCNI) stopForwarder() {
	if r.fwd == nil {
		return
	}
	r.fwd.Close()
	r.fwdMu.Lock()
	for c := range r.fwdConns {
		c.Close()
	}
	r.fwdConns = nil
	r.fwdMu.Unlock()
	r.fwdWG.Wait()
}

func relay(c net.Conn, to string) {
	defer c.Close()
	up, err := net.DialTimeout("tcp", to, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

// PrimaryConflist is the primary CNI's configuration as its own agent writes it: Debian's bridge
// with host-local IPAM (state kept under the node's state dir), then portmap.
func (r *RealCNI) PrimaryConflist() []byte {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       podNetworkName,
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": bridgeName, "isGateway": true, "ipMasq": false, "hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": "10.244.0.0/24"}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": r.path("var", "lib", "cni", "networks"),
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	b, _ := json.MarshalIndent(conf, "", "  ")
	return append(b, '\n')
}

// WritePrimaryConflist (re)writes the primary CNI's conflist the way its agent does at start,
// atomically: after a reboot, this drops istio-cni from the chain until istio-cni's installer
// chains itself in again (the root of istio/istio #55968, ISTIO-FACTS §7).
func (r *RealCNI) WritePrimaryConflist() error {
	p := filepath.Join(r.netDir(), primaryConflist)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, r.PrimaryConflist(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// Conflist returns the node's active CNI configuration (the first file of net.d, as container
// runtimes pick it) and its plugin types in order.
func (r *RealCNI) Conflist() (*libcni.NetworkConfigList, []string, error) {
	files, err := libcni.ConfFiles(r.netDir(), []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, nil, err
	}
	if len(files) == 0 {
		return nil, nil, fmt.Errorf("no CNI configuration in %s", r.netDir())
	}
	slices.Sort(files)
	list, err := libcni.NetworkConfFromFile(files[0])
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", files[0], err)
	}
	var typesInOrder []string
	for _, p := range list.Plugins {
		typesInOrder = append(typesInOrder, p.Network.Type)
	}
	return list, typesInOrder, nil
}

// Chained reports whether istio-cni is in the active conflist.
func (r *RealCNI) Chained() bool {
	_, plugins, err := r.Conflist()
	return err == nil && slices.Contains(plugins, "istio-cni")
}

// sandboxNetwork is what the runtime knows about one pod sandbox's network.
type sandboxNetwork struct {
	id    string // the CNI container ID
	netns string
	ip    netip.Addr
}

// podRef names a pod for the runtime's CNI_ARGS.
type podRef struct {
	namespace, name string
	uid             types.UID
}

func (p podRef) String() string { return p.namespace + "/" + p.name }

func runtimeConf(pod podRef, id, netns string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: podIfName, Args: [][2]string{
		{"IgnoreUnknown", "1"},
		{"K8S_POD_NAMESPACE", pod.namespace},
		{"K8S_POD_NAME", pod.name},
		{"K8S_POD_INFRA_CONTAINER_ID", id},
		{"K8S_POD_UID", string(pod.uid)},
	}}
}

// add runs the active chain's ADD for a pod sandbox (the runtime's RunPodSandbox), from inside
// the node's netns so that the bridge and the host ends of the veths live there, and returns the
// pod's IPv4. The loopback plugin runs first, as container runtimes do.
func (r *RealCNI) add(ctx context.Context, pod podRef, id, netns string) (netip.Addr, error) {
	list, _, err := r.Conflist()
	if err != nil {
		return netip.Addr{}, err
	}
	lo, err := libcni.NetworkConfFromBytes([]byte(`{"cniVersion":"1.0.0","name":"cni-loopback","plugins":[{"type":"loopback"}]}`))
	if err != nil {
		return netip.Addr{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var res *types100.Result
	err = istiocni.InNetns(r.netns, func() error {
		rt := runtimeConf(pod, id, netns)
		if _, err := r.cni.AddNetworkList(ctx, lo, &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: "lo", Args: rt.Args}); err != nil {
			return fmt.Errorf("loopback: %w", err)
		}
		got, err := r.cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		res, err = types100.NewResultFromResult(got)
		return err
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("CNI ADD %s (%s): %w", pod, id, err)
	}
	for _, ipc := range res.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok && a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("CNI ADD %s: no IPv4 in the result %v", pod, res)
}

// del runs the active chain's DEL for a sandbox (StopPodSandbox). netns may be "" when the
// sandbox is already gone (the runtime then still releases the IP).
func (r *RealCNI) del(ctx context.Context, pod podRef, id, netns string) error {
	list, _, err := r.Conflist()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err = istiocni.InNetns(r.netns, func() error { return r.cni.DelNetworkList(ctx, list, runtimeConf(pod, id, netns)) })
	if err != nil {
		return fmt.Errorf("CNI DEL %s (%s): %w", pod, id, err)
	}
	return nil
}

// installAPIObjects creates what installing the istio-cni chart creates (ServiceAccount, RBAC,
// istio-cni-config, the istio-cni-node DaemonSet) and the agent's service-account mount: a bound
// token from the TokenRequest API, the cluster CA and the namespace.
func (r *RealCNI) installAPIObjects(ctx context.Context) error {
	if err := istiocni.Install(ctx, r.cs, r.data); err != nil {
		return err
	}
	ds := agentDaemonSet()
	if _, err := r.cs.AppsV1().DaemonSets(istiocni.Namespace).Create(ctx, ds, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("daemonset %s/%s: %w", ds.Namespace, ds.Name, err)
	}
	ttl := int64(12 * 60 * 60)
	var tr *authenticationv1.TokenRequest
	// The ServiceAccount's token controller may not have caught up with a new namespace yet.
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		tr, err = r.cs.CoreV1().ServiceAccounts(istiocni.Namespace).CreateToken(ctx, istiocni.ServiceAccount,
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl}}, metav1.CreateOptions{})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("token for %s/%s: %w", istiocni.Namespace, istiocni.ServiceAccount, err)
	}
	for name, b := range map[string][]byte{"token": []byte(tr.Status.Token), "ca.crt": r.o.CACert, "namespace": []byte(istiocni.Namespace)} {
		if err := os.WriteFile(filepath.Join(r.saDir(), name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// agentDaemonSet is the chart's istio-cni-node DaemonSet, reduced to what the API needs: the
// node agent reads it on shutdown to tell an upgrade or reboot (leave the plugin in place) from
// an uninstall (cni/pkg/nodeagent/server.go ShouldStopCleanup), and the DaemonSet controller
// gives the agent its pod.
func agentDaemonSet() *appsv1.DaemonSet {
	labels := map[string]string{"k8s-app": "istio-cni-node"}
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: istiocni.Namespace, Name: "istio-cni-node", Labels: labels},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{
					"k8s-app": "istio-cni-node", "sidecar.istio.io/inject": "false", "istio.io/dataplane-mode": "none"}},
				Spec: corev1.PodSpec{
					ServiceAccountName:            istiocni.ServiceAccount,
					HostNetwork:                   true,
					TerminationGracePeriodSeconds: ptr.To[int64](5),
					Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers: []corev1.Container{{Name: "install-cni",
						Image: "registry.invalid/istio/install-cni:" + istiocni.AgentVersion + "-distroless"}},
				},
			},
		},
	}
}

// agentPodName waits (briefly) for the DaemonSet's pod on this node and returns its name; the
// agent runs as that pod (POD_NAME).
func (r *RealCNI) agentPodName(ctx context.Context) string {
	name := istiocni.DaemonSetPodPrefix + r.node
	_ = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		pods, err := r.cs.CoreV1().Pods(istiocni.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=istio-cni-node",
			FieldSelector: "spec.nodeName=" + r.node})
		if err != nil || len(pods.Items) == 0 {
			return false, nil
		}
		name = pods.Items[0].Name
		return true, nil
	})
	return name
}

// agentScript builds the agent's pod-shaped view of the world inside a private mount namespace:
// a tmpfs root with the machine's /usr, /etc and libraries read-only, its own /proc, /sys (of
// the node's netns), /tmp and /run, and the DaemonSet's mounts: /host/proc (read-only; its
// entry 1 shows the node's netns holder, see below),
// /host/opt/cni/bin, /host/etc/cni/net.d, the service-account token, the image's /opt/cni/bin
// (the plugin the installer copies), and the node's state dir at its own path (the hostPath
// mounts /var/run/istio-cni and /var/run/ztunnel, which the plugin and the stand-in use from
// outside). Then it chroots and execs install-cni with the given arguments.
//
// istio-cni takes /host/proc/1's netns for the host's (cni/pkg/nodeagent/podcgroupns_linux.go
// statHostNetns) and fails when it cannot stat it. On a node, pid 1 lives in the host netns. On
// this machine pid 1 is not readable even by root (stat 1/ns/net: permission denied, issue 12),
// and the node's host netns is the node's own anyway: the holder's /proc entry is mounted over
// /host/proc/1 inside the agent's mount namespace, so pid 1's netns there is the node's.
const agentScript = `set -eu
R="$MM_ROOT"; S="$MM_STATE"; B="$MM_BIN"
mount -t tmpfs -o mode=0755 meshmedic-node-root "$R"
for d in bin sbin lib lib32 lib64 libx32 usr etc; do
  if [ -L "/$d" ]; then ln -s "$(readlink "/$d")" "$R/$d"
  elif [ -d "/$d" ]; then mkdir -p "$R/$d"; mount --rbind "/$d" "$R/$d"; mount -o remount,bind,ro "$R/$d"
  fi
done
mkdir -p "$R/proc" "$R/sys" "$R/dev" "$R/tmp" "$R/run" "$R/var" "$R/opt/cni/bin" "$R/opt/istio" \
  "$R/host/proc" "$R/host/opt/cni/bin" "$R/host/etc/cni/net.d"
ln -s ../run "$R/var/run"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount --rbind /dev "$R/dev"
mount -t tmpfs tmpfs "$R/tmp"
mount -t tmpfs tmpfs "$R/run"
mkdir -p "$R$S"
mount -t proc -o ro proc "$R/host/proc"
mount --bind "/proc/$MM_INIT" "$R/host/proc/1"
mount --bind "$S/opt/cni/bin" "$R/host/opt/cni/bin"
mount --bind "$S/etc/cni/net.d" "$R/host/etc/cni/net.d"
mkdir -p "$R/run/secrets/kubernetes.io/serviceaccount"
mount --bind "$S/serviceaccount" "$R/run/secrets/kubernetes.io/serviceaccount"
mount -o remount,bind,ro "$R/run/secrets/kubernetes.io/serviceaccount"
mount --bind "$S" "$R$S"
touch "$R/opt/cni/bin/istio-cni" "$R/opt/istio/install-cni"
mount --bind "$B/istio-cni" "$R/opt/cni/bin/istio-cni"
mount --bind "$B/install-cni" "$R/opt/istio/install-cni"
hostname "$MM_NODE"
exec chroot "$R" /opt/istio/install-cni "$@"
`

// StartAgent starts istio-cni's node agent (install-cni) as its DaemonSet pod would run it:
// in the node's netns (shareHostNetworkNamespace), in its own mount and UTS namespaces with
// the pod's mounts, with istio-cni-config as its environment plus the DaemonSet's env, and
// KUBERNETES_SERVICE_HOST/PORT pointing at the kubernetes Service. It returns once the agent's
// /readyz answers 200 and istio-cni is chained into the active conflist.
func (r *RealCNI) StartAgent(ctx context.Context) error {
	r.mu.Lock()
	if r.agent != nil && !r.agent.Exited() {
		r.mu.Unlock()
		return errors.New("istio-cni agent already running")
	}
	r.mu.Unlock()
	if r.agentPod == "" {
		r.agentPod = r.agentPodName(ctx)
	}
	env := append(istiocni.AgentEnv(r.ConfigData(), r.node, r.agentPod),
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/",
		"KUBERNETES_SERVICE_HOST="+kubernetesServiceIP,
		"KUBERNETES_SERVICE_PORT="+kubernetesServicePort,
		"KUBERNETES_NODE_NAME="+r.node,
		// The DaemonSet mounts these hostPaths at the same paths; the sandbox keeps them in its
		// state dir, which is mounted at its own path inside the agent's root.
		"CNI_AGENT_RUN_DIR="+r.runDir(),
		"ZTUNNEL_UDS_ADDRESS="+r.udsPath(),
		"MM_ROOT="+r.path("agent-root"), "MM_STATE="+r.state, "MM_BIN="+r.o.BinDir, "MM_NODE="+r.node,
		"MM_INIT="+strconv.Itoa(r.holder.PID()),
	)
	argv := []string{"nsenter", "--net=" + r.netns, "--", "unshare", "--mount", "--uts", "--propagation", "private", "--",
		"/bin/sh", "-c", agentScript, "install-cni", "--log_output_level=default:info"}
	p, err := r.l.Start(istiocni.Spec{Name: "istio-cni", Argv: argv, Env: env, LogPath: r.logPath("istio-cni"), Extra: r.o.Log})
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.agent = p
	r.agentStarts++
	r.mu.Unlock()
	r.changed()
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("istio-cni agent exited (%v):\n%s", p.Err(), p.Tail(40))
		}
		return r.AgentReady(ctx) && r.Chained(), nil
	})
	if err != nil {
		return fmt.Errorf("istio-cni agent not ready: %w\n%s", err, p.Tail(40))
	}
	r.log("istio-cni agent ready (start %d), chained into %s", r.AgentStarts(), primaryConflist)
	r.changed()
	return nil
}

// AgentReady reports whether the agent's /readyz (in the node's netns) answers 200.
func (r *RealCNI) AgentReady(ctx context.Context) bool {
	r.mu.Lock()
	p := r.agent
	r.mu.Unlock()
	if p == nil || p.Exited() {
		return false
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return istiocni.DialInNetns(ctx, r.netns, addr)
		}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+agentReadyAddr+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// StopAgent stops the agent: SIGTERM is a graceful stop (with the DaemonSet present the agent
// leaves its plugin in the chain, as on an upgrade or reboot), SIGKILL a node losing power.
func (r *RealCNI) StopAgent(sig syscall.Signal) {
	r.mu.Lock()
	p := r.agent
	r.mu.Unlock()
	if p != nil {
		p.Stop(sig, 30*time.Second)
		r.log("istio-cni agent stopped (%v)", sig)
	}
	r.changed()
}

// AgentStarts counts the agent's starts (its pod's restartCount is one less).
func (r *RealCNI) AgentStarts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.agentStarts
}

// AgentLog returns the last n lines of the agent's log (all its runs).
func (r *RealCNI) AgentLog(n int) string { return istiocni.Tail(r.logPath("istio-cni"), n) }

// StartZtunnel starts the stand-in in the node's netns; it connects to istio-cni's ZDS socket.
// It returns once the stand-in has received istio-cni's snapshot (ztunnel's readiness).
func (r *RealCNI) StartZtunnel(ctx context.Context) error {
	r.mu.Lock()
	if r.ztunnel != nil && !r.ztunnel.Exited() {
		r.mu.Unlock()
		return errors.New("ztunnel stand-in already running")
	}
	r.mu.Unlock()
	dns := r.ConfigData()["AMBIENT_DNS_CAPTURE"] == "true"
	argv := append([]string{"nsenter", "--net=" + r.netns, "--", filepath.Join(r.o.BinDir, istiocni.StandIn)},
		append(istiocni.StandInArgs(r.udsPath(), r.path("var", "run", "ztunnel", "standin.sock"), dns, "auto"), "--admin", ztunnelAdminAddr)...)
	p, err := r.l.Start(istiocni.Spec{Name: "ztunnel", Argv: argv, LogPath: r.logPath("ztunnel"), Extra: r.o.Log})
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.ztunnel = p
	r.ztunnelStarts++
	r.mu.Unlock()
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("ztunnel stand-in exited (%v):\n%s", p.Err(), p.Tail(20))
		}
		return r.ZtunnelReady(ctx), nil
	})
	if err != nil {
		return fmt.Errorf("ztunnel stand-in not ready: %w\n%s", err, p.Tail(20))
	}
	r.log("ztunnel stand-in ready (start %d)", r.ZtunnelStarts())
	r.changed()
	return nil
}

// ZtunnelConfigDump reads the stand-in's config_dump from its admin port inside the node's
// netns, as `kubectl exec` into ztunnel then curl localhost:15000/config_dump would.
func (r *RealCNI) ZtunnelConfigDump(ctx context.Context) (map[string]any, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return istiocni.DialInNetns(ctx, r.netns, addr)
		}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ztunnelAdminAddr+"/config_dump", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ztunnel config_dump: %w", err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&out); err != nil {
		return nil, fmt.Errorf("ztunnel config_dump: %w", err)
	}
	return out, nil
}

// ZtunnelReady reports whether the stand-in runs and has received istio-cni's snapshot, which is
// when ztunnel reports ready (src/inpod/workloadmanager.rs check_ready).
func (r *RealCNI) ZtunnelReady(ctx context.Context) bool {
	r.mu.Lock()
	p := r.ztunnel
	r.mu.Unlock()
	if p == nil || p.Exited() {
		return false
	}
	s, err := r.ctl.State(ctx)
	return err == nil && s.Connected && s.SnapshotReceived
}

// StopZtunnel stops the stand-in (SIGTERM: it drains and closes every listener; SIGKILL: the
// kernel closes them).
func (r *RealCNI) StopZtunnel(sig syscall.Signal) {
	r.mu.Lock()
	p := r.ztunnel
	r.mu.Unlock()
	if p != nil {
		p.Stop(sig, 15*time.Second)
		r.log("ztunnel stand-in stopped (%v)", sig)
	}
	r.changed()
}

// ZtunnelStarts counts the stand-in's starts.
func (r *RealCNI) ZtunnelStarts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ztunnelStarts
}

// ZtunnelLog returns the last n lines of the stand-in's log (all its runs).
func (r *RealCNI) ZtunnelLog(n int) string { return istiocni.Tail(r.logPath("ztunnel"), n) }

func (r *RealCNI) changed() {
	r.mu.Lock()
	f := r.onChange
	r.mu.Unlock()
	if f != nil {
		f()
	}
}

// podState says how the node's kubelet reports the agent's and ztunnel's pods: Ready while the
// process is ready, restartCount from its starts. ok is false for any other pod.
func (r *RealCNI) podState(ctx context.Context, pod *corev1.Pod) (ready bool, restarts int32, ok bool) {
	switch {
	case pod.Namespace == istiocni.Namespace && pod.Labels["k8s-app"] == "istio-cni-node":
		return r.AgentReady(ctx), int32(max(r.AgentStarts()-1, 0)), true
	case pod.Namespace == istiocni.Namespace && pod.Labels["app"] == "ztunnel":
		return r.ZtunnelReady(ctx), int32(max(r.ZtunnelStarts()-1, 0)), true
	}
	return false, 0, false
}

// stop stops the stand-in and the agent, closes the forwarder, lets the node's netns go and
// removes the state dir. Pods' netns are the node's (podsim's) to remove.
func (r *RealCNI) stop() error {
	r.StopZtunnel(syscall.SIGTERM)
	r.StopAgent(syscall.SIGTERM)
	r.stopForwarder()
	if r.holder != nil {
		r.holder.Stop(syscall.SIGKILL, 5*time.Second)
	}
	r.l.Close()
	var errs []error
	if r.pluginLog != nil {
		errs = append(errs, r.pluginLog.Close())
	}
	// The agent's root is a mount point only inside its (now gone) mount namespace.
	if err := os.RemoveAll(r.state); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ConflistJSON returns the active conflist file's content (for logs and assertions).
func (r *RealCNI) ConflistJSON() string {
	b, err := os.ReadFile(filepath.Join(r.netDir(), primaryConflist))
	if err != nil {
		return err.Error()
	}
	return string(bytes.TrimSpace(b))
}
