//go:build kind

package kind

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"sigs.k8s.io/e2e-framework/pkg/env"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/envfuncs"
	"sigs.k8s.io/e2e-framework/support"
	"sigs.k8s.io/e2e-framework/support/kind"
)

// Flags (after `go test -tags kind ./e2e/kind/ -args`). e2e-framework adds its own:
// --kubeconfig, --namespace, --feature, --assess, --fail-fast, ...
var (
	flagKindCluster  = flag.String("kind-cluster", "meshmedic-e2e", "kind cluster to create (deleted at the end unless --keep-cluster); with --kubeconfig/KUBECONFIG, the existing kind cluster to load the image into (\"\": do not load, the image must be pullable)")
	flagKindImage    = flag.String("kind-node-image", "", "kind node image (default: the kind binary's own)")
	flagKindConfig   = flag.String("kind-config", "", "kind cluster config file (default: one node)")
	flagKeepCluster  = flag.Bool("keep-cluster", false, "do not delete the kind cluster this run created")
	flagIstioVersion = flag.String("istio-version", "1.28.0", "Istio version to install; istioctl must be this version")
	flagIstioctl     = flag.String("istioctl", "istioctl", "istioctl binary")
	flagInstallIstio = flag.String("install-istio", "auto", "auto (when the cluster was created here or has no istiod), yes or no")
	flagImage        = flag.String("meshmedic-image", "meshmedic:e2e", "meshmedic image the agent runs")
	flagBuildImage   = flag.Bool("build-image", true, "build --meshmedic-image from deploy/Dockerfile first (docker build, context: the repo root)")
	flagOverlay      = flag.String("overlay", "deploy/overlays/auto-repair", "kustomize overlay of the agent, relative to the repo root")
	flagClientImage  = flag.String("client-image", "docker.io/curlimages/curl:8.11.1", "client workload image (needs curl and sleep)")
	flagServerImage  = flag.String("server-image", "docker.io/kong/httpbin:0.1.0", "server workload image (Istio's httpbin sample; runs gunicorn on :8080)")
	flagArtifacts    = flag.String("artifacts", "", "directory where `kind export logs` puts the created cluster's logs at the end")
)

// testenv is the e2e-framework environment shared by every feature.
var testenv env.Environment

// suite is what the setup steps leave for the features.
var st struct {
	root       string // repo root
	kubeconfig string
	context    string // kubeconfig context (--context), "" for the current one
	cs         kubernetes.Interface
	bin        string // the meshmedic binary under test
	ns         string // the workloads' namespace (ambient)
	agent      Object // the agent's DaemonSet, from the overlay
	created    bool   // this run created the kind cluster
}

// TestMain uses the cluster of --kubeconfig (or KUBECONFIG) when given — any kind cluster,
// including one kept from an earlier run — and otherwise creates a kind cluster. It then
// installs Istio ambient (istioctl, pinned by --istio-version), deploys the client/server
// workloads in an ambient namespace, builds and loads the meshmedic image and applies the
// auto-repair overlay. The features run in file order.
func TestMain(m *testing.M) {
	cfg, err := envconf.NewFromFlags()
	if err != nil {
		klog.Fatalf("flags: %v", err)
	}
	st.ns = cfg.Namespace()
	if st.ns == "" {
		st.ns = "meshmedic-e2e"
	}
	testenv = env.NewWithConfig(cfg)

	kubeconfig := cfg.KubeconfigFile()
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	st.created = kubeconfig == ""
	testenv.Setup(checkTools) // before kind: e2e-framework would `go install` a missing kind
	if kubeconfig != "" {
		cfg.WithKubeconfigFile(kubeconfig)
	} else {
		if *flagKindCluster == "" {
			klog.Fatal("no --kubeconfig/KUBECONFIG and no --kind-cluster: nothing to test against")
		}
		var opts []support.ClusterOpts
		if *flagKindImage != "" {
			opts = append(opts, kind.WithImage(*flagKindImage))
		}
		testenv.Setup(envfuncs.CreateClusterWithConfig(kind.NewProvider(), *flagKindCluster, *flagKindConfig, opts...))
	}
	testenv.Setup(setupClients, buildMeshmedic, installIstio, deployWorkloads, deployAgent)
	testenv.Finish(func(ctx context.Context, _ *envconf.Config) (context.Context, error) {
		if st.bin != "" {
			return ctx, os.RemoveAll(filepath.Dir(st.bin))
		}
		return ctx, nil
	})
	if st.created && *flagArtifacts != "" {
		testenv.Finish(envfuncs.ExportClusterLogs(*flagKindCluster, *flagArtifacts))
	}
	if st.created && !*flagKeepCluster {
		testenv.Finish(envfuncs.DestroyCluster(*flagKindCluster))
	}
	os.Exit(testenv.Run(m))
}
