#!/usr/bin/env bash
# Fails when a test run left kernel objects or processes behind: sandbox cgroups
# (meshmedic-sim-*) in any hierarchy, sandbox processes, control-plane processes started
# from the meshmedic cache, or named network namespaces; and, for the real-CNI node
# (TestSandboxIstioCNI, meshmedic-sandbox up --real-cni): istio-cni's agent, plugin and the
# ztunnel stand-in, the node's state dirs and mounts, and any istio-cni or CNI state on this
# machine's own network and filesystem (iptables, nftables and ipsets in the host netns, the
# cni0 bridge and veths, /etc/cni/net.d and /var/lib/cni). Run after the tests (.ci/run does).
set -uo pipefail
bad=0
while read -r _ mnt fstype _; do
  case "$fstype" in cgroup|cgroup2) ;; *) continue ;; esac
  left=$(find "$mnt" -maxdepth 1 -name 'meshmedic-sim-*' 2>/dev/null)
  if [ -n "$left" ]; then echo "leftover cgroups: $left"; bad=1; fi
done < /proc/mounts
procs=$(ps -eo pid=,args= | grep -E 'sleep 2147483647|/meshmedic/controlplane/.*/bin/(etcd|kube-)|meshmedic-sandbox up|install-cni|ztunnel-standin|/istio-cni( |$)' | grep -v grep)
if [ -n "$procs" ]; then echo "leftover processes:"; echo "$procs"; bad=1; fi
if command -v ip >/dev/null && [ -n "$(ip netns list 2>/dev/null)" ]; then echo "leftover named netns: $(ip netns list)"; bad=1; fi

# The real-CNI node keeps everything in /tmp/meshmedic-node-*; the agent's mounts live only in
# its own mount namespace.
left=$(find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'meshmedic-node-*' 2>/dev/null)
if [ -n "$left" ]; then echo "leftover real-CNI node state: $left"; bad=1; fi
mnts=$(grep -E 'meshmedic-node' /proc/self/mountinfo)
if [ -n "$mnts" ]; then echo "leftover mounts:"; echo "$mnts"; bad=1; fi
# Nothing of istio-cni or the pod network may reach this machine's own network.
for save in iptables-save ip6tables-save iptables-legacy-save ip6tables-legacy-save; do
  command -v "$save" >/dev/null || continue
  rules=$("$save" 2>/dev/null | grep -E 'ISTIO_|CNI-|istio-inpod' )
  if [ -n "$rules" ]; then echo "leftover $save rules in the host netns:"; echo "$rules"; bad=1; fi
done
if command -v nft >/dev/null && nft list tables 2>/dev/null | grep -q 'istio'; then
  echo "leftover nftables tables in the host netns: $(nft list tables | grep istio)"; bad=1
fi
if command -v ipset >/dev/null && ipset list -n 2>/dev/null | grep -q 'istio'; then
  echo "leftover ipsets in the host netns: $(ipset list -n | grep istio)"; bad=1
fi
if command -v ip >/dev/null && ip -br link show 2>/dev/null | grep -qE '^cni0\b'; then
  echo "leftover cni0 bridge in the host netns"; bad=1
fi
for d in /etc/cni/net.d /var/lib/cni/networks/sandbox-pod-network /var/run/istio-cni /var/run/ztunnel; do
  if [ -e "$d" ] && grep -rqsE 'istio-cni|sandbox-pod-network' "$d" 2>/dev/null; then
    echo "leftover CNI state on this machine: $d"; bad=1
  fi
done
if [ -d /var/lib/cni/networks/sandbox-pod-network ]; then echo "leftover host-local IPAM state: /var/lib/cni/networks/sandbox-pod-network"; bad=1; fi
if [ $bad = 0 ]; then
  echo "no leftovers: no meshmedic-sim cgroups, sandbox, control-plane or istio-cni processes, named netns,"
  echo "real-CNI node state or mounts, nor istio-cni/CNI state on this machine's network or filesystem"
fi
exit $bad
