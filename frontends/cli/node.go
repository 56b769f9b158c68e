package cli

import (
	"fmt"
	"strconv"
	"strings"

	ucli "github.com/urfave/cli/v2"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/netns"
)

func nodeCommand(s Streams) *ucli.Command {
	return &ucli.Command{
		Name:  "node",
		Usage: "node-local inspection (run on the node, or against a copy of its /proc)",
		Subcommands: []*ucli.Command{{
			Name:  "scan",
			Usage: "inspect every pod sandbox under --proc-root and report ztunnel's in-pod listeners",
			Description: "Reads /proc/<pid>/net/tcp{6,} of every pod sandbox found under --proc-root: no exec,\n" +
				"no setns, nothing injected. Without --offline it joins with the API server's pods for\n" +
				"--node and says which of them ambient should have captured. With --inspect-rules it also\n" +
				"enters each pod's netns to read istio-cni's routing rules (fwmark 0x111/0xfff -> table 100).\n\n" +
				"Exit codes: 0 nothing found, 1 findings (a partial capture; with the API, a pod that\n" +
				"should be captured and is not), 2 usage or runtime error.",
			Flags: append([]ucli.Flag{
				&ucli.StringFlag{Name: "proc-root", Value: "/proc", Usage: "proc root to read (the host's /proc mounted in a pod is usually /host/proc)"},
				&ucli.BoolFlag{Name: "offline", Usage: "do not contact the API server: report sandboxes and listeners only"},
				&ucli.StringFlag{Name: "node", EnvVars: []string{"NODE_NAME"}, Usage: "this node's name in the API (required without --offline)"},
				&ucli.BoolFlag{Name: "inspect-rules", Usage: "also read istio-cni's in-pod routing rules (rtnetlink inside each pod's netns; needs CAP_SYS_ADMIN and CAP_SYS_PTRACE): tells bypass (listeners, no redirection) and blackhole (redirection, no listeners) apart"},
				outputFlag(),
				noHeadersFlag(),
			}, append(kubeFlags(), istioFlags()...)...),
			Action: func(c *ucli.Context) error { return runNodeScan(c, s) },
		}},
	}
}

// nodeScanPod is one row of `node scan -o json` (DESIGN.md contract; fields may be added,
// none renamed).
type nodeScanPod struct {
	UID         string   `json:"uid"`
	PID         int      `json:"pid"`
	Netns       uint64   `json:"netns"`
	HostNetwork bool     `json:"hostNetwork"`
	Listeners   []uint16 `json:"listeners"`
	Capture     string   `json:"capture"`
	Error       string   `json:"error,omitempty"`
	// Rules is istio-cni's in-pod routing set-up with --inspect-rules: present, absent,
	// partial, or unknown (read failed; the reason is in error).
	Rules string `json:"rules,omitempty"`
	// Filled when joined with the API server.
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	Expected  string `json:"expected,omitempty"` // captured | not-captured | unknown (enroll)
	Reason    string `json:"reason,omitempty"`   // enroll's reason
	Class     string `json:"class,omitempty"`    // detect's finding class
	Finding   bool   `json:"finding,omitempty"`  // the class is one that needs healing
}

type nodeScanOutput struct {
	// NetnsIdentity says what the pods' "netns" numbers are: "nsfs" (the ns/net inode lsns
	// shows) or "proc-net" (the net/dev inode, used when ns/net cannot be read without
	// capabilities). Numbers of different identities are not comparable.
	NetnsIdentity string        `json:"netnsIdentity"`
	Pods          []nodeScanPod `json:"pods"`
	Problems      []string      `json:"problems,omitempty"`
}

func runNodeScan(c *ucli.Context, s Streams) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	if c.NArg() > 0 {
		return usagef("node scan takes no arguments (got %q)", c.Args().First())
	}
	fs, err := netns.NewFS(c.String("proc-root"))
	if err != nil {
		return err
	}
	rep, err := netns.InspectNode(fs, netns.NewProcReader(fs), netns.ReadOptions{Full: true})
	if err != nil {
		return err
	}
	inspectRules := c.Bool("inspect-rules")
	if inspectRules {
		r, err := ruleInspection(c.String("proc-root"))
		if err != nil {
			return err
		}
		netns.InspectRules(&rep, r)
	}
	var out nodeScanOutput
	if c.Bool("offline") {
		out.Pods = make([]nodeScanPod, 0, len(rep.Pods))
		for _, p := range rep.Pods {
			row := nodeScanRow(p)
			// Offline the expectation is unknown; a partial capture is a finding on its
			// own: some of ztunnel's listeners are there, so the pod was captured and lost some.
			row.Finding = p.Capture == netns.CapturePartial ||
				(p.Capture == netns.Captured && p.Rules != nil && p.Rules.State() != netns.RulesPresent)
			out.Pods = append(out.Pods, row)
		}
	} else if out, err = joinNodeScan(c, s, rep); err != nil {
		return err
	}
	out.NetnsIdentity = string(fs.Identity())
	for _, p := range rep.Problems {
		out.Problems = append(out.Problems, p.Error())
	}
	if err := renderNodeScan(s, format, c.Bool("no-headers"), out, !c.Bool("offline"), inspectRules); err != nil {
		return err
	}
	if err := nodeNothingVerified(out); err != nil {
		return err
	}
	findings, unknown := 0, 0
	for _, p := range out.Pods {
		if p.Finding {
			findings++
		}
		if p.Capture == string(netns.CaptureUnknown) {
			unknown++
		}
	}
	if unknown > 0 {
		fmt.Fprintf(s.Err, "note: %d pod(s) could not be verified (capture unknown): never treated as healthy or as orphans\n", unknown)
	}
	if findings > 0 {
		what := "missing ztunnel listeners"
		if inspectRules {
			what = "missing ztunnel listeners or istio-cni redirection"
		}
		return fmt.Errorf("%d pod(s) with %s: %w", findings, what, ErrFindings)
	}
	return nil
}

func nodeScanRow(p netns.PodNetns) nodeScanPod {
	r := nodeScanPod{
		UID: p.PodUID, PID: p.PID, Netns: p.Netns, HostNetwork: p.HostNetwork,
		Listeners: p.Listeners.Ports, Capture: string(p.Capture),
	}
	if r.Listeners == nil {
		r.Listeners = []uint16{}
	}
	if p.Err != nil {
		r.Error = p.Err.Error()
	}
	switch {
	case p.Rules != nil:
		r.Rules = string(p.Rules.State())
	case p.RulesErr != nil:
		r.Rules = "unknown"
		if r.Error == "" {
			r.Error = p.RulesErr.Error()
		}
	}
	return r
}

func renderNodeScan(s Streams, format string, noHeaders bool, out nodeScanOutput, joined, rules bool) error {
	if format == outJSON || format == outYAML {
		return writeStructured(s.Out, format, out)
	}
	var head []string
	switch {
	case joined:
		head = []string{"NAMESPACE", "NAME", "CLASS", "CAPTURE", "EXPECTED", "LISTENERS", "PID", "NETNS"}
	default:
		head = []string{"POD UID", "CAPTURE", "LISTENERS", "PID", "NETNS"}
	}
	if rules {
		head = append(head, "RULES")
	}
	if format == outWide {
		head = append(head, "ERROR")
	}
	t := newTable(s.Out, head...).noHeaders(noHeaders)
	for _, p := range out.Pods {
		cols := []string{string(p.Capture), joinPorts(p.Listeners), pidCol(p.PID), netnsCol(p.Netns)}
		if rules {
			cols = append(cols, dash(p.Rules))
		}
		if joined {
			cols = append([]string{dash(p.Namespace), dash(p.Name), dash(p.Class), cols[0], dash(p.Expected)}, cols[1:]...)
		} else {
			cols = append([]string{p.UID}, cols...)
		}
		if format == outWide {
			cols = append(cols, dash(p.Error))
		}
		t.row(cols...)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(out.Pods) == 0 {
		fmt.Fprintln(s.Err, "No pod sandboxes found under the proc root.")
	}
	for _, p := range out.Problems {
		fmt.Fprintf(s.Err, "warning: %s\n", p)
	}
	return nil
}

func pidCol(pid int) string {
	if pid == 0 {
		return "-"
	}
	return strconv.Itoa(pid)
}

func netnsCol(n uint64) string {
	if n == 0 {
		return "-"
	}
	return strconv.FormatUint(n, 10)
}

// nodeNothingVerified is nothingVerified over node scan's rows: joined, by detect's class;
// offline, by the capture of every pod that is not on the host network.
func nodeNothingVerified(out nodeScanOutput) error {
	classes := make([]detect.Class, 0, len(out.Pods))
	why := ""
	for _, p := range out.Pods {
		c := detect.Class(p.Class)
		if p.Class == "" { // offline
			switch netns.Capture(p.Capture) {
			case netns.CaptureHostNetwork:
				c = detect.ClassSkipped
			case netns.CaptureUnknown:
				c = detect.ClassUnknown
			default:
				c = detect.ClassCaptured // read, whatever it showed
			}
		}
		if c == detect.ClassUnknown && why == "" && p.Error != "" {
			why = p.Error
			if p.Name != "" && !strings.Contains(why, p.Name) {
				why = p.Namespace + "/" + p.Name + ": " + why
			} else if p.Name == "" && !strings.Contains(why, p.UID) {
				why = "pod " + p.UID + ": " + why
			}
		}
		classes = append(classes, c)
	}
	return nothingVerified(classes, why)
}
