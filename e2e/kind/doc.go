// Package kind is meshmedic's kind end-to-end tier (build tag kind, sigs.k8s.io/e2e-framework):
// a kind cluster — or an existing one — with Istio ambient, real workloads, orphans made from
// the node container the way a reboot leaves them, and the real meshmedic CLI and agent
// asserting on them. Its untagged helpers parse what the node's tools print (ss, crictl,
// iptables-save, istioctl) and are unit-tested without a cluster.
package kind
