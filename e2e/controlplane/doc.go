// Package controlplane runs a real Kubernetes control plane (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler) on 127.0.0.1 for meshmedic's local sandbox tests.
// Binaries come from build.sh (built from the Go module proxy and cached); Start and Stop own
// the processes, the certificates and the work directory.
package controlplane
