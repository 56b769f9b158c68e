package controlplane

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("%s: no CERTIFICATE block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

func TestPKI(t *testing.T) {
	p, err := newPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ca := readCert(t, p.CACert)
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	serving := readCert(t, p.ServingCert)
	for _, name := range []string{"127.0.0.1", "::1", "localhost", "kubernetes.default.svc", kubernetesServiceIP} {
		if err := serving.VerifyHostname(name); err != nil {
			t.Errorf("serving cert does not cover %s: %v", name, err)
		}
	}
	if _, err := serving.Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost"}); err != nil {
		t.Errorf("serving cert does not chain to the CA: %v", err)
	}

	cc, err := p.clientCert("alice", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(cc.CertPEM)
	client, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if client.Subject.CommonName != "alice" || len(client.Subject.Organization) != 1 || client.Subject.Organization[0] != "system:masters" {
		t.Errorf("client subject = %v", client.Subject)
	}
	if _, err := client.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client cert does not verify for client auth: %v", err)
	}
	fpRoots := x509.NewCertPool()
	fpRoots.AddCert(readCert(t, p.FrontProxyCACert))
	fp := readCert(t, p.FrontProxyClientCert)
	if _, err := fp.Verify(x509.VerifyOptions{Roots: fpRoots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || fp.Subject.CommonName != frontProxyClientName {
		t.Errorf("front-proxy client cert %v does not verify against the front-proxy CA: %v", fp.Subject, err)
	}
	if _, err := fp.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Errorf("front-proxy client cert verifies against the cluster CA; the two CAs must differ")
	}
	for _, f := range []string{p.CAKey, p.ServingKey, p.SAKey, p.FrontProxyClientKey} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	if b, err := os.ReadFile(p.SAPub); err != nil || !bytes.Contains(b, []byte("BEGIN PUBLIC KEY")) {
		t.Errorf("sa.pub: %q, %v", b, err)
	}
}

func TestWriteKubeconfig(t *testing.T) {
	p, err := newPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := &ControlPlane{Host: "https://127.0.0.1:6443", pki: p}
	path := filepath.Join(t.TempDir(), "kc")
	cc, err := p.clientCert("bob")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.writeKubeconfig(path, "bob", &clientcmdapi.AuthInfo{ClientCertificateData: cc.CertPEM, ClientKeyData: cc.KeyPEM}); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != c.Host || len(cfg.CAData) == 0 || len(cfg.CertData) == 0 || len(cfg.KeyData) == 0 {
		t.Errorf("kubeconfig round trip lost data: host=%q ca=%d cert=%d key=%d", cfg.Host, len(cfg.CAData), len(cfg.CertData), len(cfg.KeyData))
	}
}

func TestFindBinaries(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(BinDirEnv, dir)
	if _, err := FindBinaries(); !errors.Is(err, ErrBinariesMissing) || !strings.Contains(err.Error(), "build.sh") {
		t.Fatalf("empty dir: err = %v, want ErrBinariesMissing mentioning build.sh", err)
	}
	for _, c := range Components {
		if err := os.WriteFile(filepath.Join(dir, c), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := FindBinaries(); err != nil || got != dir {
		t.Fatalf("FindBinaries() = %q, %v; want %q", got, err, dir)
	}
	if err := os.Chmod(filepath.Join(dir, KubeScheduler), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := FindBinaries(); !errors.Is(err, ErrBinariesMissing) {
		t.Fatalf("non-executable scheduler: err = %v", err)
	}

	t.Setenv(BinDirEnv, "")
	t.Setenv("MESHMEDIC_CACHE", "/cache")
	t.Setenv("MESHMEDIC_K8S_VERSION", "")
	t.Setenv("MESHMEDIC_ETCD_VERSION", "")
	got, err := DefaultBinDir()
	if want := "/cache/controlplane/k8s-" + DefaultKubernetesVersion + "-etcd-" + DefaultEtcdVersion + "/bin"; err != nil || got != want {
		t.Fatalf("DefaultBinDir() = %q, %v; want %q", got, err, want)
	}
}

// TestBuildScriptDefaultsMatch keeps build.sh and the Go defaults on the same versions.
func TestBuildScriptDefaultsMatch(t *testing.T) {
	b, err := os.ReadFile("build.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"MESHMEDIC_K8S_VERSION:-" + DefaultKubernetesVersion + "}",
		"MESHMEDIC_ETCD_VERSION:-" + DefaultEtcdVersion + "}",
	} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("build.sh does not contain %q", want)
		}
	}
}

func TestStartWithoutBinaries(t *testing.T) {
	work := t.TempDir()
	_, err := Start(context.Background(), Options{BinDir: t.TempDir(), WorkDir: work})
	if !errors.Is(err, ErrBinariesMissing) {
		t.Fatalf("err = %v, want ErrBinariesMissing", err)
	}
}

// TestStartFailureCleansUp uses stand-in binaries whose etcd exits at once: Start must report
// the exit with the log tail, stop what it started and remove its own work dir.
func TestStartFailureCleansUp(t *testing.T) {
	bin := t.TempDir()
	for _, c := range Components {
		script := "#!/bin/sh\nexec sleep 300\n"
		if c == Etcd {
			script = "#!/bin/sh\necho etcd stand-in failing >&2\nexit 3\n"
		}
		if err := os.WriteFile(filepath.Join(bin, c), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var log bytes.Buffer
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	_, err := Start(context.Background(), Options{BinDir: bin, Log: &log, ReadyTimeout: time.Minute})
	if err == nil || !strings.Contains(err.Error(), "etcd exited") || !strings.Contains(err.Error(), "etcd stand-in failing") {
		t.Fatalf("err = %v, want etcd exit with its log", err)
	}
	if !strings.Contains(log.String(), "[etcd] etcd stand-in failing") {
		t.Errorf("Log did not receive prefixed output: %q", log.String())
	}
	left, _ := os.ReadDir(tmp)
	if len(left) != 0 {
		t.Errorf("work dir not removed: %v", left)
	}
}

// TestStartRetriesLostPortRace: a component that exits with "address already in use" makes
// Start try again on new ports, a bounded number of times.
func TestStartRetriesLostPortRace(t *testing.T) {
	bin := t.TempDir()
	for _, c := range Components {
		script := "#!/bin/sh\nexec sleep 300\n"
		if c == Etcd {
			script = "#!/bin/sh\necho 'listen tcp 127.0.0.1:2379: bind: address already in use' >&2\nexit 1\n"
		}
		if err := os.WriteFile(filepath.Join(bin, c), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	work := t.TempDir()
	_, err := Start(context.Background(), Options{BinDir: bin, WorkDir: work, ReadyTimeout: time.Minute})
	if !errors.Is(err, errAddrInUse) {
		t.Fatalf("err = %v, want errAddrInUse", err)
	}
	b, err := os.ReadFile(filepath.Join(work, "logs", "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "=== "); n != maxStartAttempts {
		t.Fatalf("etcd started %d times, want %d", n, maxStartAttempts)
	}
}

func TestExtraArgsUnknownComponent(t *testing.T) {
	bin := t.TempDir()
	for _, c := range Components {
		if err := os.WriteFile(filepath.Join(bin, c), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, err := Start(context.Background(), Options{BinDir: bin, WorkDir: t.TempDir(), ExtraArgs: map[string][]string{"kubelet": {"--v=4"}}})
	if err == nil || !strings.Contains(err.Error(), "kubelet") {
		t.Fatalf("err = %v, want unknown component kubelet", err)
	}
}

// TestProcStopKillsGroup starts a shell that forks a grandchild; stop must end both, because it
// signals the whole process group.
func TestProcStopKillsGroup(t *testing.T) {
	l := newLauncher()
	t.Cleanup(l.close)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "grandchild.pid")
	// The shell ignores SIGTERM so that stop has to escalate to SIGKILL.
	p, err := startProc(l, "sh", "/bin/sh", []string{"-c", "trap '' TERM; sleep 300 & echo $! > " + pidFile + "; wait"}, dir, filepath.Join(dir, "log"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop(time.Second) })
	var gpid int
	for range 200 {
		if b, err := os.ReadFile(pidFile); err == nil && len(bytes.TrimSpace(b)) > 0 {
			if gpid, err = strconv.Atoi(string(bytes.TrimSpace(b))); err != nil {
				t.Fatal(err)
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if gpid == 0 {
		t.Fatal("grandchild did not start")
	}
	if pgid, err := syscall.Getpgid(gpid); err != nil || pgid != p.cmd.Process.Pid {
		t.Fatalf("grandchild pgid = %d, %v; want %d", pgid, err, p.cmd.Process.Pid)
	}
	p.stop(200 * time.Millisecond)
	if !p.exited() {
		t.Fatal("leader not reaped after stop")
	}
	// The grandchild is not our child: once killed it is reparented and reaped by init
	// (or a subreaper). Poll until it is gone or a zombie.
	for range 500 {
		if !alive(gpid) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("grandchild %d survived stop", gpid)
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// state is the field after the ")" that closes comm.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestPrefixWriter(t *testing.T) {
	var out bytes.Buffer
	mk := newPrefixer(&out)
	a, b := mk("a"), mk("b")
	a.Write([]byte("one\ntw"))
	b.Write([]byte("x\n"))
	a.Write([]byte("o\n"))
	if got, want := out.String(), "[a] one\n[b] x\n[a] two\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestChildEnvDropsEtcdAndKubeconfig(t *testing.T) {
	t.Setenv("ETCD_DATA_DIR", "/nope")
	t.Setenv("KUBECONFIG", "/nope")
	t.Setenv("MESHMEDIC_X", "kept")
	env := strings.Join(childEnv(), "\n")
	if strings.Contains(env, "ETCD_DATA_DIR") || strings.Contains(env, "KUBECONFIG=") || !strings.Contains(env, "MESHMEDIC_X=kept") {
		t.Fatalf("childEnv = %q", env)
	}
}
