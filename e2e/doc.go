// Package e2e holds meshmedic's end-to-end tests: the local sandbox tier (a real
// kube-apiserver on loopback and a node of real kernel objects) and the kind tier.
package e2e
