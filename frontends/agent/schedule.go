package agent

import (
	"errors"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/netns"
)

// scheduler decides which pods a sweep checks (the triggers) and remembers, per pod, its
// latest finding and what the triggers need. It owns no reporter state.
type scheduler struct {
	cfg      Config
	fs       netns.FS
	m        *metrics
	log      logr.Logger
	prober   *detect.NodeLocalProber
	required int // listeners a captured pod has at least (socket-count trigger)

	mu       sync.Mutex
	dirty    map[types.UID]bool // pods changed in the API since the last sweep
	all      string             // non-empty: check every pod at the next tick, and why
	state    map[types.UID]*podState
	lastFull time.Time
}

// podState is what the scheduler remembers about one pod of its node.
type podState struct {
	finding   detect.Finding // the latest, settled (Class "" until checked)
	due       time.Time      // a finding awaits confirmation: check again then
	young     int            // next index into YoungRechecks
	sockets   int            // TCP+TCP6 sockets in use at the last fast tick
	sockRead  bool           // sockets holds a reading
	sockErr   bool           // the last reading failed (triggers once)
	sockCheck time.Time      // last check caused by the socket counters
}

func (st *podState) checked() bool { return st.finding.Class != "" }

func newScheduler(cfg Config, fs netns.FS, m *metrics, log logr.Logger) *scheduler {
	return &scheduler{cfg: cfg, fs: fs, m: m, log: log, required: len(netns.CorePorts),
		dirty: map[types.UID]bool{}, state: map[types.UID]*podState{}}
}

func (s *scheduler) markDirty(uid types.UID) {
	s.mu.Lock()
	s.dirty[uid] = true
	s.mu.Unlock()
}

func (s *scheduler) markAll(why string) {
	s.mu.Lock()
	s.all = why
	s.mu.Unlock()
}

// What put a pod into a sweep outside the full re-check (the trigger label).
const (
	triggerPodChange   = "pod-change"
	triggerConfirm     = "confirm"
	triggerYoung       = "young"
	triggerSocketCount = "socket-count"
)

// selectPods decides which pods this sweep checks, and forgets pods that left the node.
func (s *scheduler) selectPods(now time.Time, all []*corev1.Pod) ([]corev1.Pod, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	full := s.lastFull.IsZero() || now.Sub(s.lastFull) >= s.cfg.FullRecheck
	why := map[types.UID]string{} // pod → trigger label of meshmedic_checks_triggered_total
	if full {
		s.lastFull = now
	} else if s.all != "" {
		full = true
		s.log.Info("re-checking every pod", "why", s.all)
	}
	s.all = ""
	present := make(map[types.UID]bool, len(all))
	for _, p := range all {
		present[p.UID] = true
		st := s.state[p.UID]
		if st == nil {
			st = &podState{}
			s.state[p.UID] = st
		}
		if s.dirty[p.UID] {
			why[p.UID] = triggerPodChange
		}
		if !st.due.IsZero() && !now.Before(st.due) {
			why[p.UID] = triggerConfirm
		}
		if s.youngDue(now, p, st) {
			why[p.UID] = triggerYoung
		}
		if s.socketsFell(now, p, st) {
			if _, already := why[p.UID]; !already && !full {
				why[p.UID] = triggerSocketCount
			}
		}
	}
	clear(s.dirty)
	for uid := range s.state {
		if !present[uid] {
			delete(s.state, uid)
		}
	}
	var out []corev1.Pod
	for _, p := range all {
		if full || why[p.UID] != "" {
			out = append(out, *p)
		}
	}
	if !full {
		for _, label := range why {
			s.m.triggers.WithLabelValues(label).Inc()
		}
	}
	return out, full
}

// youngDue: a pod younger than the last YoungRechecks age is checked again each time its
// age crosses the next one (from status.startTime, when the kubelet accepted it).
func (s *scheduler) youngDue(now time.Time, p *corev1.Pod, st *podState) bool {
	if st.young >= len(s.cfg.YoungRechecks) {
		return false
	}
	born := p.CreationTimestamp.Time
	if p.Status.StartTime != nil {
		born = p.Status.StartTime.Time
	}
	age := now.Sub(born)
	crossed := false
	for st.young < len(s.cfg.YoungRechecks) && age >= s.cfg.YoungRechecks[st.young] {
		st.young++
		crossed = true
	}
	return crossed && st.checked()
}

// socketsFell is the fast tick: the netns's own socket counters (net/sockstat{,6}: no walk
// of the kernel's TCP hash table) of a pod last seen captured. Fewer sockets than a
// captured pod's listeners means "check now"; a count that fell means "check soon" (at
// most once per SocketCountInterval: busy pods close connections all the time); a
// sandbox process that is gone means "check now", once. Other read errors (a proc tree
// without the counters) leave the pod to the other triggers.
func (s *scheduler) socketsFell(now time.Time, p *corev1.Pod, st *podState) bool {
	if st.finding.Class != detect.ClassCaptured {
		st.sockRead, st.sockErr = false, false
		return false
	}
	sb, ok := s.prober.Cached(detect.SandboxUID(p))
	if !ok || sb.HostNetwork {
		return false
	}
	c, err := s.fs.SocketsInUse(sb.PID)
	if err != nil {
		trigger := !st.sockErr && errors.Is(err, netns.ErrProcessGone)
		st.sockErr, st.sockRead = true, false
		return trigger
	}
	st.sockErr = false
	n := c.TCP + c.TCP6
	prev, had := st.sockets, st.sockRead
	st.sockets, st.sockRead = n, true
	switch {
	case n < s.required: // fewer sockets than a captured pod's listeners
		return true
	case had && n < prev && now.Sub(st.sockCheck) >= s.cfg.SocketCountInterval:
		st.sockCheck = now
		return true
	}
	return false
}

// record keeps each checked pod's settled finding and, for an unconfirmed one, when to
// check it again (detect.Engine.Settle's due time; at least one tick away).
func (s *scheduler) record(rep detect.Report, due map[types.UID]time.Time, tick time.Duration, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range rep.Findings {
		st := s.state[f.UID]
		if st == nil {
			st = &podState{}
			s.state[f.UID] = st
		}
		st.finding = f
		d, ok := due[f.UID]
		switch {
		case !ok:
			st.due = time.Time{}
		case !d.After(now):
			st.due = now.Add(tick)
		default:
			st.due = d
		}
	}
}

// latest returns the latest finding of every checked pod still on the node.
func (s *scheduler) latest() map[types.UID]detect.Finding {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[types.UID]detect.Finding, len(s.state))
	for uid, st := range s.state {
		if st.checked() {
			out[uid] = st.finding
		}
	}
	return out
}
