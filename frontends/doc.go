// Package frontends holds the thin programs over the library: cli (the urfave/cli app),
// agent (the per-node DaemonSet runtime) and meshmedic (the one binary's main).
package frontends
