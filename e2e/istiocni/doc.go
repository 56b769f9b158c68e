// Package istiocni runs the real istio-cni (its node agent and installer, install-cni, and its
// CNI plugin, istio-cni) and meshmedic's ztunnel stand-in for the sandbox node's real-CNI mode.
// build.sh builds all three from the Go module proxy into a versioned cache; this package finds
// them, starts and stops processes so that they die with the test, and talks to the stand-in's
// control socket (state, config_dump, fault hooks).
package istiocni
