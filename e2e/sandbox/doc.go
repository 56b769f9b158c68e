// Package sandbox is meshmedic's local sandbox: a simulated Kubernetes node made of real
// kernel objects (one network namespace, cgroup and sandbox process per pod, via
// internal/podsim) attached to a real control plane (e2e/controlplane). It plays the
// kubelet (pod start, status, readiness gates, finishing deletions), istio-cni and ztunnel
// (in-pod LISTEN sockets on 15001/15006/15008/15053 and the ambient.istio.io/redirection
// annotation), and injects the faults that make orphans in production.
//
// With Options.RealCNI the node runs the real istio-cni instead (realcni.go, realnode.go): its
// own network namespace, a real bridge + host-local CNI chain run through libcni for every pod
// sandbox, istio-cni's node agent and plugin chained into it, and the ZDS ztunnel stand-in of
// e2e/istiocni; the kubelet role stays played.
package sandbox
