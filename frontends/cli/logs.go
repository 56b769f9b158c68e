package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/meshmedic/meshmedic/ztlog"
)

func logsCommand(s Streams) *ucli.Command {
	return &ucli.Command{
		Name:  "logs",
		Usage: "work with ztunnel logs",
		Subcommands: []*ucli.Command{{
			Name:      "analyze",
			Usage:     "report orphan signals found in ztunnel logs",
			ArgsUsage: "[FILE|-]...",
			Description: "Reads ztunnel logs offline (files, or stdin when no FILE or '-' is given): the\n" +
				"1.22+ tab layout (also with tabs turned into spaces), the ≤1.21 layout and\n" +
				"LOG_FORMAT=json, with or without kubectl --timestamps/--prefix, CRI or log-UI\n" +
				"prefixes. Reports orphan signals (hbone-refused: a destination lost its 15008\n" +
				"listener; unidentified-policy-rejection: a source's traffic bypassed ztunnel),\n" +
				"the candidate pods they implicate, and lifecycle corroborations (which never\n" +
				"count as findings). Candidates still need verifying against the pod's netns.\n\n" +
				"--since/--until take an RFC 3339 time or a duration meaning \"now minus\" (15m).\n" +
				"Lines pasted without their timestamp (level first) are records too; they have no\n" +
				"time, so a --since/--until window leaves them out. Line endings may be LF, CRLF or\n" +
				"CR. Compressed, UTF-16 or binary input is named in a warning. Memory is bounded:\n" +
				"the first 10,000 signals, corroborations and candidate pods are kept, the rest\n" +
				"counted.\n\n" +
				"Exit codes: 0 no orphan signals, 1 orphan signals found, 2 usage error or an\n" +
				"unreadable file.",
			Flags: []ucli.Flag{
				&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "output format: table|json"},
				&ucli.StringFlag{Name: "since", Usage: "only records at or after this time (RFC 3339, or a duration like 15m meaning now minus 15m)"},
				&ucli.StringFlag{Name: "until", Usage: "only records at or before this time (RFC 3339, or a duration meaning now minus it)"},
				&ucli.IntFlag{Name: "max-line-bytes", Value: ztlog.DefaultMaxLineBytes, Usage: "longer lines are skipped and counted (bounds memory)", Hidden: true},
				&ucli.IntFlag{Name: "max-signals", Value: ztlog.DefaultMaxSignals, Usage: "signals, corroborations and candidate pods kept (the rest are counted; bounds memory)", Hidden: true},
				noHeadersFlag(),
			},
			Action: func(c *ucli.Context) error { return runLogsAnalyze(c, s, time.Now()) },
		}},
	}
}

// logsSignal is one element of `signals` / `corroborations` in `logs analyze -o json`
// (DESIGN.md contract: file, line, kind, side, ip, namespace, workload; fields may be
// added, none renamed).
type logsSignal struct {
	File      string `json:"file"`
	Line      int    `json:"line"`
	Kind      string `json:"kind"`
	Side      string `json:"side"`
	IP        string `json:"ip"`
	Namespace string `json:"namespace"`
	Workload  string `json:"workload"`
	Code      string `json:"code,omitempty"`
	Time      string `json:"time,omitempty"`
	Addr      string `json:"addr,omitempty"`
	UID       string `json:"uid,omitempty"`
	Detail    string `json:"detail,omitempty"`
}

type logsCandidate struct {
	IP        string   `json:"ip"`
	Namespace string   `json:"namespace"`
	Workload  string   `json:"workload"`
	Count     int      `json:"count"`
	FirstSeen string   `json:"firstSeen,omitempty"`
	LastSeen  string   `json:"lastSeen,omitempty"`
	Kinds     []string `json:"kinds"`
}

type logsOutput struct {
	LinesRead      int             `json:"linesRead"`
	Records        int             `json:"records"`
	Signals        []logsSignal    `json:"signals"`
	Corroborations []logsSignal    `json:"corroborations"`
	Candidates     []logsCandidate `json:"candidates"`
	Continuations  int             `json:"continuations"`
	LongLines      int             `json:"longLines"`
	OutsideWindow  int             `json:"outsideWindow"`
	Malformed      int             `json:"malformed"`
	// Counts beyond the bound on what is kept (--max-signals).
	SignalsOmitted        int             `json:"signalsOmitted,omitempty"`
	CorroborationsOmitted int             `json:"corroborationsOmitted,omitempty"`
	CandidatesOmitted     int             `json:"candidatesOmitted,omitempty"`
	Warnings              []ztlog.Warning `json:"warnings,omitempty"`
}

// logsTimeBound parses a --since/--until value: an RFC 3339 time, or a duration that
// means now minus it.
func logsTimeBound(flag, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return time.Time{}, usagef("--%s %q: want an RFC 3339 time (2025-01-02T15:04:05Z) or a duration (15m)", flag, v)
	}
	if d < 0 {
		return time.Time{}, usagef("--%s %q: a duration means \"now minus\" and must not be negative", flag, v)
	}
	return now.Add(-d), nil
}

func runLogsAnalyze(c *ucli.Context, s Streams, now time.Time) error {
	format := c.String("output")
	if format != "table" && format != "json" {
		return usagef("--output %q: want table or json", format)
	}
	since, err := logsTimeBound("since", c.String("since"), now)
	if err != nil {
		return err
	}
	until, err := logsTimeBound("until", c.String("until"), now)
	if err != nil {
		return err
	}
	if !since.IsZero() && !until.IsZero() && until.Before(since) {
		return usagef("--until %s is before --since %s", until.Format(time.RFC3339), since.Format(time.RFC3339))
	}
	paths := c.Args().Slice()
	if len(paths) == 0 {
		paths = []string{"-"}
	}
	// Open every file before reading any, so an unreadable one fails the run before
	// anything is printed.
	inputs := make([]input, 0, len(paths))
	defer func() {
		for _, in := range inputs {
			if in.c != nil {
				in.c.Close()
			}
		}
	}()
	for _, p := range paths {
		in, err := openInput(c.Context, p, s.In)
		if err != nil {
			return fmt.Errorf("logs analyze: %w", err)
		}
		inputs = append(inputs, in)
	}
	if c.Int("max-signals") < 1 {
		return usagef("--max-signals %d: must be at least 1", c.Int("max-signals"))
	}
	a, err := ztlog.NewAnalyzer(ztlog.WithWindow(since, until), ztlog.WithMaxLineBytes(c.Int("max-line-bytes")), ztlog.WithMaxSignals(c.Int("max-signals")))
	if err != nil {
		return err
	}
	total := &ztlog.Result{MaxSignals: c.Int("max-signals")}
	for _, in := range inputs {
		res, err := a.Analyze(c.Context, in.name, in.r)
		if err != nil {
			return fmt.Errorf("logs analyze: %w", err)
		}
		total.Merge(res)
	}
	cands := total.Candidates()
	if total.LongLines > 0 {
		fmt.Fprintf(s.Err, "warning: skipped %d line(s) longer than %d bytes\n", total.LongLines, c.Int("max-line-bytes"))
	}
	for _, w := range total.Warnings {
		fmt.Fprintf(s.Err, "warning: %s\n", w.Message)
	}
	if n := total.SignalsOmitted + total.CorroborationsOmitted + total.CandidatesOmitted(); n > 0 {
		fmt.Fprintf(s.Err, "note: more than %d signals, corroborations or candidate pods: the first are listed, the rest counted (see the summary)\n", c.Int("max-signals"))
	}
	if format == "json" {
		if err := writeLogsJSON(s.Out, total, cands); err != nil {
			return err
		}
	} else if err := writeLogsTable(s.Out, c.Bool("no-headers"), total, cands); err != nil {
		return err
	}
	if n := total.TotalSignals(); n > 0 {
		return fmt.Errorf("%d orphan signal(s) implicating %d candidate pod(s): %w", n, len(cands), ErrFindings)
	}
	return nil
}

func logsTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func toLogsSignals(in []ztlog.Signal) []logsSignal {
	out := make([]logsSignal, 0, len(in))
	for _, s := range in {
		out = append(out, logsSignal{
			File: s.File, Line: s.Line, Kind: s.Kind, Side: string(s.Side), IP: s.IP,
			Namespace: s.Namespace, Workload: s.Workload, Code: s.Code, Time: logsTime(s.Time),
			Addr: s.Addr, UID: s.UID, Detail: s.Detail,
		})
	}
	return out
}

func writeLogsJSON(w io.Writer, res *ztlog.Result, cands []ztlog.Candidate) error {
	out := logsOutput{
		LinesRead:      res.LinesRead,
		Records:        res.Records,
		Signals:        toLogsSignals(res.Signals),
		Corroborations: toLogsSignals(res.Corroborations),
		Candidates:     make([]logsCandidate, 0, len(cands)),
		Continuations:  res.Continuations,
		LongLines:      res.LongLines,
		OutsideWindow:  res.OutsideWindow,
		Malformed:      res.Malformed,

		SignalsOmitted:        res.SignalsOmitted,
		CorroborationsOmitted: res.CorroborationsOmitted,
		CandidatesOmitted:     res.CandidatesOmitted(),
		Warnings:              res.Warnings,
	}
	for _, c := range cands {
		out.Candidates = append(out.Candidates, logsCandidate{
			IP: c.IP, Namespace: c.Namespace, Workload: c.Workload, Count: c.Count,
			FirstSeen: logsTime(c.FirstSeen), LastSeen: logsTime(c.LastSeen), Kinds: c.Kinds,
		})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func logsDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeLogsTable(w io.Writer, noHeaders bool, res *ztlog.Result, cands []ztlog.Candidate) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(cols ...string) {
		for i := range cols {
			cols[i] = oneLine(cols[i])
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	header := func(cols ...string) {
		if !noHeaders {
			row(cols...)
		}
	}
	if len(res.Signals) > 0 {
		header("CANDIDATE IP", "NAMESPACE", "WORKLOAD", "SIGNALS", "FIRST SEEN", "LAST SEEN", "KINDS")
		for _, c := range cands {
			row(c.IP, logsDash(c.Namespace), logsDash(c.Workload), fmt.Sprint(c.Count),
				logsDash(logsTime(c.FirstSeen)), logsDash(logsTime(c.LastSeen)), strings.Join(c.Kinds, ","))
		}
		row()
		header("FILE:LINE", "TIME", "KIND", "SIDE", "IP", "NAMESPACE", "WORKLOAD", "DETAIL")
		for _, s := range res.Signals {
			row(fmt.Sprintf("%s:%d", s.File, s.Line), logsDash(logsTime(s.Time)), s.Kind, string(s.Side),
				logsDash(s.IP), logsDash(s.Namespace), logsDash(s.Workload), s.Detail)
		}
	}
	if len(res.Corroborations) > 0 {
		if len(res.Signals) > 0 {
			row()
		}
		header("FILE:LINE", "TIME", "CORROBORATION", "NAMESPACE", "WORKLOAD", "UID")
		for _, s := range res.Corroborations {
			row(fmt.Sprintf("%s:%d", s.File, s.Line), logsDash(logsTime(s.Time)), s.Kind,
				logsDash(s.Namespace), logsDash(s.Workload), logsDash(s.UID))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(res.Signals)+len(res.Corroborations) > 0 {
		fmt.Fprintln(w)
	}
	summary := fmt.Sprintf("%d orphan signal(s), %d candidate pod(s), %d corroboration(s) in %d line(s) (%d records, %d continuation line(s)",
		res.TotalSignals(), len(cands), len(res.Corroborations)+res.CorroborationsOmitted, res.LinesRead, res.Records, res.Continuations)
	for _, extra := range []struct {
		n    int
		what string
	}{{res.OutsideWindow, "outside --since/--until"}, {res.LongLines, "too long, skipped"}, {res.Malformed, "malformed"},
		{res.SignalsOmitted, "signal(s) not listed"}, {res.CorroborationsOmitted, "corroboration(s) not listed"},
		{res.CandidatesOmitted(), "signal(s) for candidate pods not listed"}} {
		if extra.n > 0 {
			summary += fmt.Sprintf(", %d %s", extra.n, extra.what)
		}
	}
	_, err := fmt.Fprintln(w, summary+")")
	if err != nil {
		return err
	}
	if len(res.Signals) > 0 {
		_, err = fmt.Fprintln(w, "Candidates are not verified: check each pod's netns (meshmedic node scan / scan).")
	}
	return err
}
