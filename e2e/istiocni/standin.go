package istiocni

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// StandInArgs are the stand-in's command-line arguments: istio-cni's ZDS socket, the control
// socket, DNS capture, and the IPv6 mode ("auto", "true", "false").
func StandInArgs(uds, control string, dns bool, ipv6 string) []string {
	if ipv6 == "" {
		ipv6 = "auto"
	}
	return []string{"--uds", uds, "--control", control, "--dns-capture=" + strconv.FormatBool(dns), "--ipv6", ipv6}
}

// Workload is one pod the stand-in was handed (its /state JSON).
type Workload struct {
	UID            string   `json:"uid"`
	Name           string   `json:"name"`
	Namespace      string   `json:"namespace"`
	ServiceAccount string   `json:"serviceAccount"`
	Netns          uint64   `json:"netns"`
	State          string   `json:"state"` // Up | Pending
	Listeners      []uint16 `json:"listeners"`
	Lost           bool     `json:"lost"`
}

// StandInState is the stand-in's /state.
type StandInState struct {
	Connected        bool       `json:"connected"`
	SnapshotReceived bool       `json:"snapshotReceived"`
	Connections      int        `json:"connections"`
	Messages         int        `json:"messages"`
	AckMode          string     `json:"ackMode"`
	Workloads        []Workload `json:"workloads"`
}

// Workload returns the workload with uid, if the stand-in has it.
func (s StandInState) Workload(uid string) (Workload, bool) {
	for _, w := range s.Workloads {
		if w.UID == uid {
			return w, true
		}
	}
	return Workload{}, false
}

// Ack modes of the stand-in's fault hook.
const (
	AckOK     = "ack"    // an empty Ack for every message (ztunnel's send_ack)
	AckError  = "nack"   // an Ack carrying an error (send_nack)
	AckSilent = "silent" // no answer at all: istio-cni's 5 s read deadline expires
)

// Control talks to a stand-in's control socket; it works across stand-in restarts.
type Control struct {
	path string
	hc   *http.Client
}

// NewControl returns a client for the control socket at path.
func NewControl(path string) *Control {
	return &Control{path: path, hc: &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

func (c *Control) do(ctx context.Context, method, path string, q url.Values, out any) error {
	u := "http://ztunnel-standin" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("stand-in %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("stand-in %s %s: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("stand-in %s %s: %s: %s", method, path, resp.Status, b)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("stand-in %s %s: %w", method, path, err)
	}
	return nil
}

// State returns the stand-in's view: connection, snapshot, workloads and their listeners.
func (c *Control) State(ctx context.Context) (StandInState, error) {
	var s StandInState
	return s, c.do(ctx, http.MethodGet, "/state", nil, &s)
}

// ConfigDump returns the stand-in's config_dump (the workloadState part of ztunnel's).
func (c *Control) ConfigDump(ctx context.Context) (map[string]any, error) {
	var m map[string]any
	return m, c.do(ctx, http.MethodGet, "/config_dump", nil, &m)
}

// Lose closes uid's listeners on ports (all when none) while the stand-in keeps calling the
// workload Up: the listeners vanish from the pod's netns behind ztunnel's back.
func (c *Control) Lose(ctx context.Context, uid string, ports ...uint16) error {
	q := url.Values{"uid": {uid}}
	for _, p := range ports {
		q.Add("port", strconv.Itoa(int(p)))
	}
	return c.do(ctx, http.MethodPost, "/fault/lose", q, nil)
}

// Restore opens uid's listeners again.
func (c *Control) Restore(ctx context.Context, uid string) error {
	return c.do(ctx, http.MethodPost, "/fault/restore", url.Values{"uid": {uid}}, nil)
}

// SetAckMode makes the stand-in answer later messages with AckOK, AckError or AckSilent.
func (c *Control) SetAckMode(ctx context.Context, mode string) error {
	return c.do(ctx, http.MethodPost, "/fault/ack", url.Values{"mode": {mode}}, nil)
}
