// Package enroll is the expectation model: given a Pod, its Namespace and istio-cni's
// settings for a given Istio version, should ambient capture the pod, why, and which
// in-pod listeners must exist. It is pure: no I/O, no client.
package enroll
