// Package netns reads the truth about a pod's network namespace from a proc root
// (/proc, /host/proc or a test tree): pod UID → sandbox PID, netns identity, and the
// LISTEN sockets ztunnel is supposed to own inside it. It enters no namespace, except
// DiagReader (the opt-in netlink backend), which creates its sock_diag socket inside the
// pod's netns.
package netns
