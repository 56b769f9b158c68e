// Package sandbox is meshmedic's local sandbox: a simulated Kubernetes node made of real
// kernel objects (one network namespace, cgroup and sandbox process per pod, via
// internal/podsim) attached to a real control plane (e2e/controlplane). It plays the
// kubelet (pod start, status, readiness gates, finishing deletions), istio-cni and ztunnel
// (in-pod LISTEN sockets on 15001/15006/15008/15053 and the ambient.istio.io/redirection
// annotation), and injects the faults that make orphans in production.
package sandbox
