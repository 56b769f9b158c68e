#!/usr/bin/env bash
# Fails when a test run left kernel objects or processes behind: sandbox cgroups
# (meshmedic-sim-*) in any hierarchy, sandbox processes, control-plane processes started
# from the meshmedic cache, or named network namespaces. Run after the tests (.ci/run does).
set -uo pipefail
bad=0
while read -r _ mnt fstype _; do
  case "$fstype" in cgroup|cgroup2) ;; *) continue ;; esac
  left=$(find "$mnt" -maxdepth 1 -name 'meshmedic-sim-*' 2>/dev/null)
  if [ -n "$left" ]; then echo "leftover cgroups: $left"; bad=1; fi
done < /proc/mounts
procs=$(ps -eo pid=,args= | grep -E 'sleep 2147483647|/meshmedic/controlplane/.*/bin/(etcd|kube-)|meshmedic-sandbox up' | grep -v grep)
if [ -n "$procs" ]; then echo "leftover processes:"; echo "$procs"; bad=1; fi
if command -v ip >/dev/null && [ -n "$(ip netns list 2>/dev/null)" ]; then echo "leftover named netns: $(ip netns list)"; bad=1; fi
if [ $bad = 0 ]; then echo "no leftovers: no meshmedic-sim cgroups, sandbox or control-plane processes, or named netns"; fi
exit $bad
