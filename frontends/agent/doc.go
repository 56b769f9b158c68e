// Package agent is the per-node DaemonSet runtime of meshmedic: an informer on this
// node's pods, change-driven checks over the host's /proc, metrics, health and Events.
package agent
