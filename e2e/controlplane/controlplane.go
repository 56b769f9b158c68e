package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const (
	// serviceCIDR is the Service IP range; kubernetesServiceIP is its first address, taken by the
	// "kubernetes" Service the apiserver creates.
	serviceCIDR         = "10.96.0.0/12"
	kubernetesServiceIP = "10.96.0.1"
	serviceAccountIss   = "https://kubernetes.default.svc.cluster.local"

	defaultReadyTimeout = 3 * time.Minute
	stopGrace           = 15 * time.Second
)

// Options configure Start.
type Options struct {
	// BinDir holds etcd, kube-apiserver, kube-controller-manager and kube-scheduler.
	// Empty means FindBinaries().
	BinDir string
	// WorkDir receives certificates, kubeconfigs, etcd data and one log file per component
	// (logs/<component>.log). Empty means a new temporary directory that Stop removes; a given
	// directory is created if needed and left in place.
	WorkDir string
	// Log, when set, also receives every component's output, one "[component] line" per line.
	Log io.Writer
	// ExtraArgs are appended to a component's flags (the last occurrence of a flag wins), keyed
	// by component name, e.g. {"kube-controller-manager": {"--controllers=*"}} to turn the node
	// lifecycle controller back on.
	ExtraArgs map[string][]string
	// ReadyTimeout bounds the wait for each component to become healthy (in Start and
	// Restart). Zero means 3 minutes.
	ReadyTimeout time.Duration
}

// ControlPlane is a running etcd + kube-apiserver + kube-controller-manager + kube-scheduler on
// 127.0.0.1. All methods are safe for concurrent use.
type ControlPlane struct {
	// KubeconfigPath is an admin kubeconfig (client certificate in group system:masters).
	KubeconfigPath string
	// RESTConfig is the same admin identity, with QPS/Burst raised for tests.
	RESTConfig *rest.Config
	// Host is the apiserver URL, https://127.0.0.1:<port>.
	Host string
	// CACertFile is the cluster CA (PEM) that signs the apiserver's serving certificate.
	CACertFile string
	// EtcdURL is etcd's client URL (plain HTTP on loopback).
	EtcdURL string
	// WorkDir is the directory holding everything this control plane wrote.
	WorkDir string

	opts        Options
	binDir      string
	ownWorkDir  bool
	pki         *pki
	launcher    *launcher
	prefix      func(string) io.Writer
	args        map[string][]string
	healthURL   map[string]string
	probeClient map[string]*http.Client

	mu      sync.Mutex
	procs   map[string]*proc
	stopped bool
}

// Start generates credentials, starts etcd, then kube-apiserver (waiting for /readyz), then
// kube-controller-manager and kube-scheduler (waiting for their /healthz), and writes the admin
// kubeconfig. On error everything started so far is stopped again. The caller must call Stop.
//
// Defaults worth knowing: authorization mode Node,RBAC; the apiserver's default admission
// plugins (NamespaceLifecycle, LimitRanger, ServiceAccount, DefaultTolerationSeconds, Priority,
// PodSecurity, ResourceQuota, the webhook and ValidatingAdmissionPolicy plugins, ...) — the set a
// kubeadm cluster has apart from NodeRestriction; no kubelet, so the node-lifecycle controller is
// disabled (it would taint every node NotReady and evict its pods after five minutes); the
// controllers use per-controller ServiceAccount credentials; leader election is off.
func Start(ctx context.Context, o Options) (_ *ControlPlane, err error) {
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = defaultReadyTimeout
	}
	binDir := o.BinDir
	if binDir == "" {
		if binDir, err = FindBinaries(); err != nil {
			return nil, err
		}
	} else if err := checkBinDir(binDir); err != nil {
		return nil, fmt.Errorf("%w (BinDir %s: %w)", ErrBinariesMissing, binDir, err)
	}

	for name := range o.ExtraArgs {
		if !slices.Contains(Components, name) {
			return nil, fmt.Errorf("ExtraArgs: unknown component %q (want one of %v)", name, Components)
		}
	}

	c := &ControlPlane{
		opts:        o,
		binDir:      binDir,
		args:        map[string][]string{},
		healthURL:   map[string]string{},
		probeClient: map[string]*http.Client{},
		procs:       map[string]*proc{},
	}
	if o.WorkDir == "" {
		if c.WorkDir, err = os.MkdirTemp("", "meshmedic-controlplane-"); err != nil {
			return nil, fmt.Errorf("control-plane work dir: %w", err)
		}
		c.ownWorkDir = true
	} else {
		if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
			return nil, fmt.Errorf("control-plane work dir %s: %w", o.WorkDir, err)
		}
		if c.WorkDir, err = filepath.Abs(o.WorkDir); err != nil {
			return nil, fmt.Errorf("control-plane work dir %s: %w", o.WorkDir, err)
		}
	}
	if o.Log != nil {
		c.prefix = newPrefixer(o.Log)
	}
	c.launcher = newLauncher()
	defer func() {
		if err != nil {
			if stopErr := c.Stop(); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
		}
	}()

	for _, d := range []string{"logs", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if err := os.MkdirAll(filepath.Join(c.WorkDir, d), 0o700); err != nil {
			return nil, fmt.Errorf("control-plane work dir: %w", err)
		}
	}
	if c.pki, err = newPKI(filepath.Join(c.WorkDir, "pki")); err != nil {
		return nil, err
	}
	c.CACertFile = c.pki.CACert

	c.mu.Lock()
	defer c.mu.Unlock()
	for attempt := 1; ; attempt++ {
		err = c.startAllLocked(ctx)
		if err == nil {
			return c, nil
		}
		// The ports were free when picked but are bound only later; if something took one
		// in between, start over on new ports with a fresh etcd.
		if !errors.Is(err, errAddrInUse) || attempt == maxStartAttempts {
			return nil, err
		}
		c.stopProcsLocked()
		if rmErr := os.RemoveAll(filepath.Join(c.WorkDir, "etcd", "data")); rmErr != nil {
			return nil, errors.Join(err, rmErr)
		}
	}
}

// maxStartAttempts bounds Start's retries after a lost port race.
const maxStartAttempts = 3

// errAddrInUse marks a component that exited because its port was taken.
var errAddrInUse = errors.New("address already in use")

// startAllLocked picks ports, writes the kubeconfigs and starts the four components.
func (c *ControlPlane) startAllLocked(ctx context.Context) error {
	o := c.opts
	ports, err := freeLoopbackPorts(5)
	if err != nil {
		return err
	}
	etcdPort, peerPort, apiPort, kcmPort, schedPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	c.EtcdURL = "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	c.Host = "https://127.0.0.1:" + strconv.Itoa(apiPort)

	// Kubeconfigs: the admin (system:masters) and one client certificate per controller binary,
	// named as the bootstrap RBAC policy expects (system:kube-controller-manager,
	// system:kube-scheduler), as kubeadm does.
	c.KubeconfigPath = filepath.Join(c.WorkDir, "admin.kubeconfig")
	kcmKubeconfig := filepath.Join(c.WorkDir, "kube-controller-manager.kubeconfig")
	schedKubeconfig := filepath.Join(c.WorkDir, "kube-scheduler.kubeconfig")
	for _, k := range []struct{ path, user, group string }{
		{c.KubeconfigPath, "meshmedic-sandbox-admin", "system:masters"},
		{kcmKubeconfig, "system:kube-controller-manager", ""},
		{schedKubeconfig, "system:kube-scheduler", ""},
	} {
		var groups []string
		if k.group != "" {
			groups = append(groups, k.group)
		}
		cc, err := c.pki.clientCert(k.user, groups...)
		if err != nil {
			return err
		}
		if err := c.writeKubeconfig(k.path, k.user, &clientcmdapi.AuthInfo{
			ClientCertificateData: cc.CertPEM,
			ClientKeyData:         cc.KeyPEM,
		}); err != nil {
			return err
		}
	}
	kubeconfigBytes, err := os.ReadFile(c.KubeconfigPath)
	if err != nil {
		return fmt.Errorf("read admin kubeconfig %s: %w", c.KubeconfigPath, err)
	}
	if c.RESTConfig, err = clientcmd.RESTConfigFromKubeConfig(kubeconfigBytes); err != nil {
		return fmt.Errorf("admin kubeconfig %s: %w", c.KubeconfigPath, err)
	}
	c.RESTConfig.QPS, c.RESTConfig.Burst = 100, 200

	dir := func(name string) string { return filepath.Join(c.WorkDir, name) }
	c.args[Etcd] = []string{
		"--name=sandbox",
		"--data-dir=" + dir("etcd/data"),
		"--listen-client-urls=" + c.EtcdURL,
		"--advertise-client-urls=" + c.EtcdURL,
		"--listen-peer-urls=http://127.0.0.1:" + strconv.Itoa(peerPort),
		"--initial-advertise-peer-urls=http://127.0.0.1:" + strconv.Itoa(peerPort),
		"--initial-cluster=sandbox=http://127.0.0.1:" + strconv.Itoa(peerPort),
		"--initial-cluster-state=new",
		// The data dir is thrown away with the sandbox; fsync only costs time on a shared disk.
		"--unsafe-no-fsync=true",
	}
	c.args[KubeAPIServer] = []string{
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		// The default "lease" reconciler would publish 127.0.0.1 as the kubernetes Service's
		// endpoint and refuses loopback advertise addresses.
		"--endpoint-reconciler-type=none",
		"--etcd-servers=" + c.EtcdURL,
		"--cert-dir=" + dir("kube-apiserver"),
		"--tls-cert-file=" + c.pki.ServingCert,
		"--tls-private-key-file=" + c.pki.ServingKey,
		"--client-ca-file=" + c.pki.CACert,
		// Aggregation layer / request-header authentication as kubeadm configures it; the
		// controllers' delegated authentication reads this CA from the
		// extension-apiserver-authentication ConfigMap.
		"--requestheader-client-ca-file=" + c.pki.FrontProxyCACert,
		"--requestheader-allowed-names=" + frontProxyClientName,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + c.pki.FrontProxyClientCert,
		"--proxy-client-key-file=" + c.pki.FrontProxyClientKey,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=" + serviceAccountIss,
		"--service-account-key-file=" + c.pki.SAPub,
		"--service-account-signing-key-file=" + c.pki.SAKey,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--allow-privileged=true",
		"--profiling=false",
		// On SIGTERM, end open watches (of the controllers and of tests) within 2 s instead of
		// letting the HTTP server wait up to --request-timeout (60 s) for them: Restart then
		// takes seconds.
		"--shutdown-watch-termination-grace-period=2s",
	}
	c.args[KubeControllerManager] = []string{
		"--kubeconfig=" + kcmKubeconfig,
		"--authentication-kubeconfig=" + kcmKubeconfig,
		"--authorization-kubeconfig=" + kcmKubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(kcmPort),
		"--cert-dir=" + dir("kube-controller-manager"),
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + c.pki.SAKey,
		"--root-ca-file=" + c.pki.CACert,
		"--cluster-signing-cert-file=" + c.pki.CACert,
		"--cluster-signing-key-file=" + c.pki.CAKey,
		"--service-cluster-ip-range=" + serviceCIDR,
		// No kubelet posts node status here: the node-lifecycle controller would mark every
		// Node unreachable and the taint-eviction controller would then delete its pods.
		"--controllers=*,-node-lifecycle-controller",
		"--profiling=false",
	}
	c.args[KubeScheduler] = []string{
		"--kubeconfig=" + schedKubeconfig,
		"--authentication-kubeconfig=" + schedKubeconfig,
		"--authorization-kubeconfig=" + schedKubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(schedPort),
		"--cert-dir=" + dir("kube-scheduler"),
		"--leader-elect=false",
		"--profiling=false",
	}
	for name, extra := range o.ExtraArgs {
		c.args[name] = append(c.args[name], extra...)
	}

	insecure := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // self-signed serving certs of kcm/scheduler on loopback
	}
	apiClient, err := rest.HTTPClientFor(c.RESTConfig)
	if err != nil {
		return fmt.Errorf("admin HTTP client: %w", err)
	}
	apiClient.Timeout = 5 * time.Second
	c.healthURL[Etcd], c.probeClient[Etcd] = c.EtcdURL+"/health", &http.Client{Timeout: 5 * time.Second}
	c.healthURL[KubeAPIServer], c.probeClient[KubeAPIServer] = c.Host+"/readyz", apiClient
	c.healthURL[KubeControllerManager] = "https://127.0.0.1:" + strconv.Itoa(kcmPort) + "/healthz"
	c.probeClient[KubeControllerManager] = insecure
	c.healthURL[KubeScheduler] = "https://127.0.0.1:" + strconv.Itoa(schedPort) + "/healthz"
	c.probeClient[KubeScheduler] = insecure

	for _, name := range []string{Etcd, KubeAPIServer} {
		if err := c.startLocked(ctx, name); err != nil {
			return err
		}
	}
	// The controllers only need the apiserver; start both, then wait for both.
	for _, name := range []string{KubeControllerManager, KubeScheduler} {
		if err := c.spawnLocked(name); err != nil {
			return err
		}
	}
	for _, name := range []string{KubeControllerManager, KubeScheduler} {
		if err := c.waitReady(ctx, name, c.procs[name]); err != nil {
			return err
		}
	}
	return nil
}

// writeKubeconfig writes a kubeconfig for this cluster with the given credentials.
func (c *ControlPlane) writeKubeconfig(path, user string, auth *clientcmdapi.AuthInfo) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["meshmedic-sandbox"] = &clientcmdapi.Cluster{
		Server:                   c.Host,
		CertificateAuthorityData: c.pki.caPEM(),
	}
	cfg.AuthInfos[user] = auth
	cfg.Contexts["meshmedic-sandbox"] = &clientcmdapi.Context{Cluster: "meshmedic-sandbox", AuthInfo: user}
	cfg.CurrentContext = "meshmedic-sandbox"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s for %s: %w", path, user, err)
	}
	return nil
}

// LogFile is the path of a component's log (stdout and stderr of every run of it).
func (c *ControlPlane) LogFile(component string) string {
	return filepath.Join(c.WorkDir, "logs", component+".log")
}

// Args returns a copy of the flags a component is started with.
func (c *ControlPlane) Args(component string) []string {
	return append([]string(nil), c.args[component]...)
}

func (c *ControlPlane) spawnLocked(name string) error {
	if c.stopped {
		return fmt.Errorf("start %s: control plane stopped", name)
	}
	var extra io.Writer
	if c.prefix != nil {
		extra = c.prefix(name)
	}
	p, err := startProc(c.launcher, name, filepath.Join(c.binDir, name), c.args[name], c.WorkDir, c.LogFile(name), extra)
	if err != nil {
		return err
	}
	c.procs[name] = p
	return nil
}

func (c *ControlPlane) startLocked(ctx context.Context, name string) error {
	if err := c.spawnLocked(name); err != nil {
		return err
	}
	return c.waitReady(ctx, name, c.procs[name])
}

// waitReady polls the component's health endpoint until it answers 200, the process exits, ctx
// ends or ReadyTimeout passes.
func (c *ControlPlane) waitReady(ctx context.Context, name string, p *proc) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.ReadyTimeout)
	defer cancel()
	url, client := c.healthURL[name], c.probeClient[name]
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("%s health request: %w", name, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		select {
		case <-p.done:
			return p.exitError()
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s (last answer: %s): %w; last lines of %s:\n%s",
				name, url, last, ctx.Err(), p.logPath, tail(p.logPath, 30))
		case <-tick.C:
		}
	}
}

// Restart stops one component (SIGTERM, then SIGKILL after 15 s), starts it again with the same
// flags and data, and waits until it is healthy. Clients built from RESTConfig keep working
// once it returns.
func (c *ControlPlane) Restart(component string) error {
	return c.RestartContext(context.Background(), component)
}

// RestartContext is Restart with a context bounding the wait for readiness.
func (c *ControlPlane) RestartContext(ctx context.Context, component string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return fmt.Errorf("restart %s: control plane stopped", component)
	}
	p, ok := c.procs[component]
	if !ok {
		return fmt.Errorf("restart %q: unknown component (want one of %v)", component, Components)
	}
	p.stop(stopGrace)
	if err := c.startLocked(ctx, component); err != nil {
		return fmt.Errorf("restart %s: %w", component, err)
	}
	return nil
}

// stopProcsLocked stops every started component, in reverse start order.
func (c *ControlPlane) stopProcsLocked() {
	for i := len(Components) - 1; i >= 0; i-- {
		if p, ok := c.procs[Components[i]]; ok {
			p.stop(stopGrace)
			delete(c.procs, Components[i])
		}
	}
}

// Stop terminates the components in reverse start order (each: SIGTERM to its process group,
// SIGKILL after 15 s), waits for them, and removes WorkDir when Start created it. It signals
// only the process groups it started. Calling Stop again is a no-op.
func (c *ControlPlane) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	c.stopProcsLocked()
	if c.launcher != nil {
		c.launcher.close()
	}
	if c.ownWorkDir {
		if err := os.RemoveAll(c.WorkDir); err != nil {
			return fmt.Errorf("remove control-plane work dir %s: %w", c.WorkDir, err)
		}
	}
	return nil
}
