package istiocni

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/meshmedic/meshmedic/enroll"
)

func TestBuildScriptDefaultsMatch(t *testing.T) {
	b, err := os.ReadFile("build.sh")
	require.NoError(t, err)
	assert.Contains(t, string(b), "MESHMEDIC_ISTIO_VERSION:-"+DefaultIstioVersion+"}")
	for _, name := range []string{InstallCNI, Plugin} {
		assert.Contains(t, string(b), "istio.io/istio/cni/cmd/"+name)
	}
	assert.Contains(t, string(b), "standin="+StandIn)
}

func TestAgentVersionIsTheReleaseLine(t *testing.T) {
	v, err := enroll.ParseVersion(AgentVersion)
	require.NoError(t, err)
	assert.Equal(t, enroll.Version{Major: 1, Minor: 31}, v, "the snapshot's VERSION file says 1.31")
}

func TestFindBinaries(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(BinDirEnv, dir)
	_, err := FindBinaries(context.Background())
	assert.ErrorIs(t, err, ErrBinariesMissing)
	assert.ErrorContains(t, err, BinDirEnv)
	for _, n := range []string{InstallCNI, Plugin, StandIn} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755))
	}
	got, err := FindBinaries(context.Background())
	require.NoError(t, err)
	assert.Equal(t, dir, got)
	require.NoError(t, os.Chmod(filepath.Join(dir, StandIn), 0o644))
	_, err = FindBinaries(context.Background())
	assert.ErrorIs(t, err, ErrBinariesMissing, "a file that is not executable does not count")

	// Without the override, an empty cache says how to build and never starts the long build.
	t.Setenv(BinDirEnv, "")
	t.Setenv("MESHMEDIC_CACHE", t.TempDir())
	_, err = FindBinaries(context.Background())
	assert.ErrorIs(t, err, ErrBinariesMissing)
	assert.ErrorContains(t, err, "build.sh")
}

func TestConfigMapData(t *testing.T) {
	d := ConfigMapData(nil)
	s, err := enroll.SettingsFromConfigMap(d, enroll.DefaultSettings())
	require.NoError(t, err, "meshmedic reads the chart's ConfigMap")
	assert.Equal(t, enroll.Version{Major: 1, Minor: 31}, s.Version)
	assert.True(t, s.AmbientEnabled)
	assert.Equal(t, enroll.DNSOn, s.DNSCapture)
	assert.Equal(t, []string{"kube-system"}, s.ExcludeNamespaces)
	assert.True(t, s.ReconcilePodRulesOnStartup, "the chart's default (ambient.reconcileIptablesOnStartup)")
	assert.Equal(t, enroll.DefaultEnablementSelectors(), s.EnablementSelectors,
		"the chart's selectors are the ones enroll calls Istio's defaults")

	d = ConfigMapData(map[string]string{"AMBIENT_RECONCILE_POD_RULES_ON_STARTUP": "false", "EXCLUDE_NAMESPACES": ""})
	assert.Equal(t, "false", d["AMBIENT_RECONCILE_POD_RULES_ON_STARTUP"])
	assert.NotContains(t, d, "EXCLUDE_NAMESPACES", `"" removes a key`)
}

func TestAgentEnv(t *testing.T) {
	env := AgentEnv(map[string]string{"B": "2", "A": "1"}, "node-1", "istio-cni-node-x")
	assert.Equal(t, []string{"A=1", "B=2"}, env[:2], "the ConfigMap first, sorted")
	for _, kv := range []string{"NODE_NAME=node-1", "REPAIR_NODE_NAME=node-1", "POD_NAME=istio-cni-node-x", "POD_NAMESPACE=" + Namespace} {
		assert.Contains(t, env, kv)
	}
}

func TestInstall(t *testing.T) {
	cs := fake.NewClientset()
	ctx := context.Background()
	data := ConfigMapData(nil)
	require.NoError(t, Install(ctx, cs, data))
	require.NoError(t, Install(ctx, cs, data), "idempotent")
	crbs, err := cs.RbacV1().ClusterRoleBindings().List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	var roles []string
	for _, b := range crbs.Items {
		roles = append(roles, b.RoleRef.Name)
		require.Len(t, b.Subjects, 1)
		assert.Equal(t, ServiceAccount, b.Subjects[0].Name)
		assert.NotEqual(t, "cluster-admin", b.RoleRef.Name)
	}
	slices.Sort(roles)
	assert.Equal(t, []string{"istio-cni", "istio-cni-ambient", "istio-cni-repair-role"}, roles)
	cr, err := cs.RbacV1().ClusterRoles().Get(ctx, "istio-cni-ambient", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, []string{"pods/status"}, cr.Rules[0].Resources, "the annotation is written through pods/status")

	require.NoError(t, SetConfig(ctx, cs, ConfigMapData(map[string]string{"AMBIENT_DNS_CAPTURE": "false"})))
	cm, err := cs.CoreV1().ConfigMaps(Namespace).Get(ctx, ConfigMapName, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "false", cm.Data["AMBIENT_DNS_CAPTURE"])
}

func TestStandInArgs(t *testing.T) {
	assert.Equal(t, []string{"--uds", "/u", "--control", "/c", "--dns-capture=false", "--ipv6", "auto"}, StandInArgs("/u", "/c", false, ""))
}

// TestControl runs the client against a fake control server on a unix socket.
func TestControl(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	var got []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"connected":true,"snapshotReceived":true,"workloads":[{"uid":"u1","state":"Up","netns":7,"listeners":[15001,15006,15008]}]}`)
	})
	mux.HandleFunc("POST /fault/", func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.Path+"?"+r.URL.RawQuery)
		if r.URL.Query().Get("uid") == "missing" {
			http.Error(w, "no workload", http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, `{}`)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })

	c := NewControl(sock)
	ctx := context.Background()
	s, err := c.State(ctx)
	require.NoError(t, err)
	w, ok := s.Workload("u1")
	require.True(t, ok)
	assert.Equal(t, uint64(7), w.Netns)
	assert.Equal(t, []uint16{15001, 15006, 15008}, w.Listeners)
	_, ok = s.Workload("u2")
	assert.False(t, ok)
	require.NoError(t, c.Lose(ctx, "u1", 15008))
	require.NoError(t, c.Restore(ctx, "u1"))
	require.NoError(t, c.SetAckMode(ctx, AckSilent))
	assert.ErrorContains(t, c.Lose(ctx, "missing"), "no workload", "the server's refusal reaches the caller")
	assert.Equal(t, []string{"/fault/lose?port=15008&uid=u1", "/fault/restore?uid=u1", "/fault/ack?mode=silent", "/fault/lose?uid=missing"}, got)
}

func TestProcessStopKillsGroup(t *testing.T) {
	l := NewLauncher()
	t.Cleanup(l.Close)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "grandchild.pid")
	// The shell ignores SIGTERM so that Stop has to escalate to SIGKILL.
	p, err := l.Start(Spec{Name: "sh", Argv: []string{"/bin/sh", "-c", "trap '' TERM; sleep 300 & echo $! > " + pidFile + "; wait"},
		LogPath: filepath.Join(dir, "log")})
	require.NoError(t, err)
	t.Cleanup(func() { p.Stop(syscall.SIGKILL, time.Second) })
	var gpid int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil || len(bytes.TrimSpace(b)) == 0 {
			return false
		}
		gpid, err = strconv.Atoi(string(bytes.TrimSpace(b)))
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	pgid, err := syscall.Getpgid(gpid)
	require.NoError(t, err)
	assert.Equal(t, p.PID(), pgid, "the grandchild is in the process's group")
	p.Stop(syscall.SIGTERM, 200*time.Millisecond)
	require.True(t, p.Exited())
	assert.Eventually(t, func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", gpid))
		return err != nil || strings.Contains(string(b), ") Z ")
	}, 5*time.Second, 10*time.Millisecond, "the grandchild went with the group")
	assert.Contains(t, p.Tail(5), "=== ", "the log starts with the command line")
}

func TestInNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("MESHMEDIC_REQUIRE_PRIVILEGED") == "1" {
			t.Fatal("needs root (setns)")
		}
		t.Skip("needs root (setns)")
	}
	l := NewLauncher()
	t.Cleanup(l.Close)
	sleep, err := exec.LookPath("sleep")
	require.NoError(t, err)
	p, err := l.Start(Spec{Name: "netns", Argv: []string{sleep, "300"}, LogPath: filepath.Join(t.TempDir(), "log"), NewNetns: true})
	require.NoError(t, err)
	t.Cleanup(func() { p.Stop(syscall.SIGKILL, time.Second) })
	path := fmt.Sprintf("/proc/%d/ns/net", p.PID())
	mine, err := os.Readlink("/proc/self/ns/net")
	require.NoError(t, err)
	theirs, err := os.Readlink(path)
	require.NoError(t, err)
	require.NotEqual(t, mine, theirs, "a netns of its own")

	// A listener made inside the netns lives there: reachable from there, not from here.
	require.NoError(t, exec.Command("nsenter", "--net="+path, "ip", "link", "set", "lo", "up").Run())
	var lis net.Listener
	require.NoError(t, InNetns(path, func() error {
		var err error
		lis, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}))
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	after, err := os.Readlink(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
	require.NoError(t, err)
	assert.Equal(t, mine, after, "the thread is back in this process's netns")
	c, err := DialInNetns(context.Background(), path, lis.Addr().String())
	require.NoError(t, err, "dialled from inside the netns")
	c.Close()
	_, err = net.DialTimeout("tcp", lis.Addr().String(), time.Second)
	if err == nil {
		// Something on this machine listens on the same loopback port: not ours to judge.
		t.Log("the port is taken in this netns too; skipping the negative check")
	} else {
		assert.True(t, errors.Is(err, syscall.ECONNREFUSED), "not reachable from this netns: %v", err)
	}
	assert.Error(t, InNetns("/proc/self/ns/does-not-exist", func() error { return nil }))
}
