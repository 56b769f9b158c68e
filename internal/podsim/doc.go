// Package podsim makes Kubernetes-like pod sandboxes out of real kernel objects on this machine —
// one network namespace, one kubelet-shaped cgroup and one sleeping "pause" process per pod — plus
// ztunnel's in-pod LISTEN sockets and istio-cni's in-pod routing rule and route (Redirect), so
// tests and the sandbox node can read them through /proc and netlink.
//
// It needs root. Everything a Sim makes lives under a parent cgroup named
// meshmedic-sim-<owner pid>-<random> at the root of every mounted hierarchy, so it can never touch
// a real kubelet's kubepods tree; Close undoes all of it. Child processes get Pdeathsig=SIGKILL, so
// a crashed test leaves no process behind, but it can leave empty meshmedic-sim-* cgroup
// directories: CleanupStale removes those whose owner is gone and whose cgroup.procs are empty.
package podsim
