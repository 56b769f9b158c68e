package detect

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/meshmedic/meshmedic/enroll"
	"github.com/meshmedic/meshmedic/netns"
)

// Defaults of the Engine's options.
const (
	DefaultConcurrency  = 16
	DefaultProbeTimeout = 20 * time.Second
	DefaultConfirmDelay = 10 * time.Second
	DefaultGrace        = 30 * time.Second
)

// Option configures an Engine.
type Option func(*Engine)

// WithSettings sets the istio-cni settings enroll decides with (default enroll.DefaultSettings()).
func WithSettings(s enroll.Settings) Option { return func(e *Engine) { e.settings = s } }

// WithClock injects the clock used for the confirm delay, grace periods and first-seen times.
func WithClock(c clock.Clock) Option { return func(e *Engine) { e.clock = c } }

// WithLogger sets the logger (default logr.Discard()).
func WithLogger(l logr.Logger) Option { return func(e *Engine) { e.log = l } }

// WithConcurrency bounds how many pods are probed at once (default 16; <1 means 1).
func WithConcurrency(n int) Option { return func(e *Engine) { e.concurrency = max(n, 1) } }

// WithProbeTimeout bounds one pod's probe (default 20s).
func WithProbeTimeout(d time.Duration) Option { return func(e *Engine) { e.probeTimeout = d } }

// WithConfirmDelay is how long Confirm waits before re-probing (default 10s).
func WithConfirmDelay(d time.Duration) Option { return func(e *Engine) { e.confirmDelay = d } }

// WithGrace is how long a selected pod may run without an "enabled" annotation before it
// is not-enrolled (default 30s).
func WithGrace(d time.Duration) Option { return func(e *Engine) { e.grace = d } }

// WithNode keeps only pods with spec.nodeName == name.
func WithNode(name string) Option { return func(e *Engine) { e.node = name } }

// WithOnProgress is called after each probe with the number done and the number to probe,
// one call at a time (for a progress bar).
func WithOnProgress(f func(done, total int)) Option { return func(e *Engine) { e.onProgress = f } }

// Engine joins pods, enroll expectations and a Prober into Findings. It remembers, per pod
// UID, the first time a pod was seen actionable, consecutive actionable observations and
// the last netns inode, so keep one Engine across scans. Safe for concurrent use.
type Engine struct {
	pods   PodLister
	nss    NamespaceGetter
	prober Prober

	settings     enroll.Settings
	clock        clock.Clock
	log          logr.Logger
	concurrency  int
	probeTimeout time.Duration
	confirmDelay time.Duration
	grace        time.Duration
	node         string
	onProgress   func(done, total int)

	mu    sync.Mutex
	state map[types.UID]*podState
}

type podState struct {
	firstSeen     time.Time // start of the current actionable streak; zero when not actionable
	confirmations int
	netns         uint64 // last netns inode reported by a probe
	replaced      bool   // the netns changed while capture was missing, not healed since
	lastSeen      time.Time
}

// New returns an Engine. pods and nss are required; prober reads the pods' netns.
func New(pods PodLister, nss NamespaceGetter, prober Prober, opts ...Option) *Engine {
	e := &Engine{
		pods: pods, nss: nss, prober: prober,
		settings:     enroll.DefaultSettings(),
		clock:        clock.RealClock{},
		log:          logr.Discard(),
		concurrency:  DefaultConcurrency,
		probeTimeout: DefaultProbeTimeout,
		confirmDelay: DefaultConfirmDelay,
		grace:        DefaultGrace,
		state:        map[types.UID]*podState{},
	}
	for _, o := range opts {
		o(e)
	}
	return e
}

// Scan lists the pods of namespace ("" = all namespaces), decides with enroll which must be
// captured, probes those (and those enroll cannot decide on) with bounded concurrency and a
// per-pod timeout, and classifies every pod. A failed pod list is an error; per-pod and
// per-namespace problems are in Report.Errors and make those pods unknown. When ctx ends,
// Scan returns ctx.Err() promptly.
func (e *Engine) Scan(ctx context.Context, namespace string) (Report, error) {
	pods, err := e.pods.ListPods(ctx, namespace)
	if err != nil {
		where := "all namespaces"
		if namespace != "" {
			where = "namespace " + namespace
		}
		return Report{}, fmt.Errorf("list pods in %s: %w", where, err)
	}
	return e.ScanPods(ctx, pods)
}

// ScanPods is Scan over pods the caller already has (e.g. from Candidates).
func (e *Engine) ScanPods(ctx context.Context, pods []corev1.Pod) (Report, error) {
	if err := ctx.Err(); err != nil {
		return Report{}, err
	}
	if e.node != "" {
		pods = slices.DeleteFunc(slices.Clone(pods), func(p corev1.Pod) bool { return p.Spec.NodeName != e.node })
	}
	nsCache, errs := e.namespaces(ctx, pods)
	if err := ctx.Err(); err != nil {
		return Report{}, err
	}
	findings, perr := e.check(ctx, pods, nsCache)
	if perr != nil {
		return Report{}, perr
	}
	rep := Report{Checked: len(findings), Findings: findings, Errors: errs}
	for _, f := range findings {
		if f.Err != nil {
			rep.Errors = append(rep.Errors, fmt.Errorf("pod %s: %w", f.Key(), f.Err))
		}
	}
	return rep, nil
}

// nsInfo is one namespace as fetched for a scan: nil obj with nil err means it does not
// exist; err means it could not be read.
type nsInfo struct {
	obj *corev1.Namespace
	err error
}

func (e *Engine) namespaces(ctx context.Context, pods []corev1.Pod) (map[string]nsInfo, []error) {
	cache := map[string]nsInfo{}
	var errs []error
	for i := range pods {
		name := pods[i].Namespace
		if _, ok := cache[name]; ok {
			continue
		}
		if ctx.Err() != nil {
			return cache, errs
		}
		ns, err := e.nss.GetNamespace(ctx, name)
		switch {
		case apierrors.IsNotFound(err):
			cache[name] = nsInfo{}
		case err != nil:
			err = fmt.Errorf("get namespace %s: %w", name, err)
			errs = append(errs, err)
			cache[name] = nsInfo{err: err}
		default:
			cache[name] = nsInfo{obj: ns}
		}
	}
	return cache, errs
}

// job is one pod on its way to a Finding.
type job struct {
	pod   *corev1.Pod
	exp   enroll.Expectation
	nsErr error
	probe Probe
	err   error
	done  bool // probed
}

// check expects, probes and classifies pods.
func (e *Engine) check(ctx context.Context, pods []corev1.Pod, nsCache map[string]nsInfo) ([]Finding, error) {
	jobs := make([]job, len(pods))
	var toProbe []int
	for i := range pods {
		p := &pods[i]
		ni := nsCache[p.Namespace]
		exp := enroll.Expect(p, ni.obj, e.settings)
		if ni.err != nil && exp.State == enroll.NotCaptured && exp.Reason == enroll.ReasonNotSelected {
			// Decided on pod labels only because the namespace could not be read: the
			// namespace may well select it. Probe instead of skipping.
			exp = enroll.Expectation{State: enroll.Unknown, Reason: exp.Reason, Detail: exp.Detail}
		}
		jobs[i] = job{pod: p, exp: exp, nsErr: ni.err}
		if exp.State != enroll.NotCaptured {
			toProbe = append(toProbe, i)
		}
	}
	if err := e.probeAll(ctx, jobs, toProbe); err != nil {
		return nil, err
	}
	now := e.clock.Now()
	out := make([]Finding, len(jobs))
	e.mu.Lock()
	for i := range jobs {
		out[i] = e.classify(&jobs[i], now)
	}
	e.forgetOld(now)
	e.mu.Unlock()
	slices.SortFunc(out, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.UID, b.UID))
	})
	return out, nil
}

// probeAll probes jobs[idx...] with at most e.concurrency at once. It returns ctx.Err()
// when ctx ends before every probe is done.
func (e *Engine) probeAll(ctx context.Context, jobs []job, idx []int) error {
	total := len(idx)
	work := make(chan int)
	var wg sync.WaitGroup
	var pmu sync.Mutex
	done := 0
	for range min(e.concurrency, total) {
		wg.Go(func() {
			for i := range work {
				j := &jobs[i]
				pctx, cancel := context.WithTimeout(ContextWithRequired(ctx, j.exp.Required), e.probeTimeout)
				j.probe, j.err = e.prober.Probe(pctx, j.pod)
				cancel()
				j.done = true
				if j.err != nil {
					e.log.V(1).Info("probe failed", "pod", podName(j.pod), "err", j.err.Error())
				}
				if e.onProgress != nil {
					pmu.Lock()
					done++
					e.onProgress(done, total)
					pmu.Unlock()
				}
			}
		})
	}
	var err error
feed:
	for _, i := range idx {
		select {
		case work <- i:
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// classify turns one job into a Finding and updates the per-UID state. e.mu is held.
func (e *Engine) classify(j *job, now time.Time) Finding {
	pod := j.pod
	f := Finding{
		Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, Node: pod.Spec.NodeName, IP: podIP(pod),
		Expected: nonNil(slices.Clone(j.exp.Required)), Present: []uint16{},
		Reason: j.exp.Reason, Detail: j.exp.Detail,
	}
	ready, notReady := readiness(pod, now)
	f.Ready, f.NotReadyFor = ready, Duration(notReady)
	ev := Evidence{Expectation: j.exp, Redirection: pod.Annotations[enroll.AnnotationRedirection], Grace: e.grace}
	if st := pod.Status.StartTime; st != nil {
		ev.Unenrolled = now.Sub(st.Time)
	}
	st := e.state[pod.UID]
	if st == nil {
		st = &podState{}
		e.state[pod.UID] = st
	}
	st.lastSeen = now

	switch {
	case !j.done:
		f.Class = ClassSkipped
	case j.err != nil:
		f.Class, f.Capture, f.Err, f.Error = ClassUnknown, netns.CaptureUnknown, j.err, j.err.Error()
		f.Detail = "could not read the pod's netns"
	case j.probe.Class != "":
		f.Source, f.Netns = j.probe.Source, j.probe.Netns
		f.Present = nonNil(slices.Clone(j.probe.Listeners.Ports))
		f.Missing = slices.Clone(j.probe.Missing)
		f.Rules = j.probe.RulesVerdict
		f.Class = j.probe.Class
		if j.exp.State == enroll.NotCaptured {
			f.Class = ClassSkipped
		}
		f.Capture = captureOfClass(f.Class, len(f.Present) > 0)
		f.Detail = "verdict of the node agent's " + string(ConditionAmbientCaptured) + " condition"
	default:
		p := j.probe
		f.Source, f.Netns = p.Source, p.Netns
		f.Present = nonNil(slices.Clone(p.Listeners.Ports))
		req := j.exp.Required
		if len(req) == 0 {
			req = netns.CorePorts
		}
		ev.Capture = p.Listeners.Capture(req)
		f.Capture = ev.Capture
		if ev.Capture == netns.CapturePartial || ev.Capture == netns.CaptureNone {
			f.Missing = p.Listeners.Missing(req)
		}
		if p.Netns != 0 {
			changed := st.netns != 0 && st.netns != p.Netns
			if ev.Capture == netns.Captured {
				st.replaced = false
			} else if changed && (ev.Capture == netns.CaptureNone || ev.Capture == netns.CapturePartial) {
				st.replaced = true
			}
			st.netns = p.Netns
		}
		ev.NetnsChanged = st.replaced
		switch {
		case p.Rules != nil:
			ev.Rules = p.Rules.State()
			f.Rules = string(ev.Rules)
		case p.RulesErr != nil:
			f.Rules = RulesUnknown
			if f.Error == "" {
				f.Error = p.RulesErr.Error()
			}
		}
		f.Class = Classify(ev)
		f.Detail = classDetail(f.Class, ev, j.exp)
		if f.Class == ClassBypass && p.Rules != nil {
			f.Detail += " (missing: " + p.Rules.Missing() + ")"
		}
	}
	if j.nsErr != nil && f.Class == ClassUnknown && f.Error == "" {
		f.Error = j.nsErr.Error()
	}

	if f.Class.Actionable() {
		if st.confirmations == 0 {
			st.firstSeen = now
		}
		st.confirmations++
		f.FirstSeen, f.Confirmations = st.firstSeen, st.confirmations
	} else {
		st.firstSeen, st.confirmations = time.Time{}, 0
	}
	return f
}

func captureOfClass(c Class, anyPresent bool) netns.Capture {
	switch c {
	case ClassCaptured, ClassBypass:
		return netns.Captured
	case ClassPartial:
		return netns.CapturePartial
	case ClassOrphaned, ClassNetnsReplaced, ClassBlackhole:
		return netns.CaptureNone
	case ClassNotEnrolled:
		if anyPresent {
			return netns.CapturePartial
		}
		return netns.CaptureNone
	}
	return netns.CaptureUnknown
}

func classDetail(c Class, ev Evidence, exp enroll.Expectation) string {
	switch c {
	case ClassCaptured:
		if ev.Rules == netns.RulesPresent {
			return "every required ztunnel listener and istio-cni's routing rules are in the pod's netns"
		}
		return "every required ztunnel listener is in the pod's netns"
	case ClassBypass:
		return "ztunnel's listeners are in the pod's netns but istio-cni's in-pod redirection is not: the pod's traffic bypasses ztunnel"
	case ClassBlackhole:
		return "annotated " + ev.Redirection + " and istio-cni's in-pod redirection is in place, but no ztunnel listener: traffic to and from the pod is refused"
	case ClassOrphaned:
		return "annotated " + ev.Redirection + " but no ztunnel listener in the pod's netns"
	case ClassPartial:
		return "some required ztunnel listeners are missing from the pod's netns"
	case ClassNetnsReplaced:
		return "the pod's netns was replaced and ztunnel's listeners are not in the new one"
	case ClassNotEnrolled:
		if ev.Redirection == "" {
			return fmt.Sprintf("should be captured (%s) but not annotated after %s", exp.Reason, ev.Unenrolled.Truncate(time.Second))
		}
		return fmt.Sprintf("should be captured (%s) but annotated %q and not captured", exp.Reason, ev.Redirection)
	case ClassUnknown:
		if ev.Capture == netns.CaptureNone && ev.Unenrolled < ev.Grace {
			return "not captured yet, within the grace period"
		}
		if exp.State == enroll.Unknown {
			return "enroll cannot decide (" + string(exp.Reason) + ") and the pod is not captured"
		}
		return "the pod's socket tables could not be read"
	}
	return exp.Detail
}

// Confirm is the blocking flap guard: it waits the confirm delay on the Engine's clock,
// re-reads the pods behind r's actionable findings, probes them again and Settles the
// result. A finding still actionable is Confirmed (it has now been seen twice, the confirm
// delay apart); others take their new class (a flap that recovered becomes captured with 0
// confirmations); a pod that is gone or was replaced (new UID) becomes unknown with a detail
// saying so. Findings that were not actionable are returned unchanged.
func (e *Engine) Confirm(ctx context.Context, r Report) (Report, error) {
	type key struct {
		ns, name string
		uid      types.UID
	}
	want := map[key]int{}
	var namespaces []string
	for i, f := range r.Findings {
		if f.Actionable() {
			want[key{f.Namespace, f.Name, f.UID}] = i
			if !slices.Contains(namespaces, f.Namespace) {
				namespaces = append(namespaces, f.Namespace)
			}
		}
	}
	out := Report{Checked: r.Checked, Findings: slices.Clone(r.Findings), Errors: slices.Clone(r.Errors)}
	if len(want) == 0 {
		return out, nil
	}
	if e.confirmDelay > 0 {
		t := e.clock.NewTimer(e.confirmDelay)
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			return Report{}, ctx.Err()
		}
	}
	var pods []corev1.Pod
	for _, ns := range namespaces {
		list, err := e.pods.ListPods(ctx, ns)
		if err != nil {
			if ctx.Err() != nil {
				return Report{}, ctx.Err()
			}
			return Report{}, fmt.Errorf("confirm: list pods in namespace %s: %w", ns, err)
		}
		for _, p := range list {
			if _, ok := want[key{p.Namespace, p.Name, p.UID}]; ok {
				pods = append(pods, p)
			}
		}
	}
	nsCache, errs := e.namespaces(ctx, pods)
	out.Errors = append(out.Errors, errs...)
	fresh, err := e.check(ctx, pods, nsCache)
	if err != nil {
		return Report{}, err
	}
	for _, f := range fresh {
		k := key{f.Namespace, f.Name, f.UID}
		out.Findings[want[k]] = f
		delete(want, k)
		if f.Err != nil {
			out.Errors = append(out.Errors, fmt.Errorf("pod %s: %w", f.Key(), f.Err))
		}
	}
	now := e.clock.Now()
	e.mu.Lock()
	for k, i := range want { // gone or replaced since the scan
		f := &out.Findings[i]
		f.Class, f.Confirmed, f.Confirmations, f.FirstSeen = ClassUnknown, false, 0, time.Time{}
		f.Capture = netns.CaptureUnknown
		f.Detail = "the pod is gone (or was replaced) since the scan"
		delete(e.state, k.uid)
	}
	e.forgetOld(now)
	e.mu.Unlock()
	out, _ = e.Settle(out)
	return out, nil
}

// Settle is the flap guard without waiting (the agent's sweep, a controller's reconcile):
// it marks Confirmed every actionable finding of r that this Engine has seen actionable at
// least twice in a row, the latest sighting at least the confirm delay after the first; with a
// confirm delay ≤ 0 every actionable finding is confirmed at once. For each actionable
// finding left unconfirmed it returns when to probe the pod again (never earlier than now,
// on the Engine's clock) — the caller re-scans those pods then, and Settles again.
// Confirm is Settle after a blocking wait and a re-probe.
func (e *Engine) Settle(r Report) (Report, map[types.UID]time.Time) {
	now := e.clock.Now()
	out := Report{Checked: r.Checked, Findings: slices.Clone(r.Findings), Errors: r.Errors}
	var due map[types.UID]time.Time
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range out.Findings {
		f := &out.Findings[i]
		if !f.Actionable() {
			f.Confirmed = false
			continue
		}
		// The latest observation must itself be at least the delay after the first: a
		// report settled late does not turn two quick sightings into proof.
		seen := now
		if st := e.state[f.UID]; st != nil && !st.lastSeen.IsZero() {
			seen = st.lastSeen
		}
		at := f.FirstSeen.Add(e.confirmDelay)
		if e.confirmDelay <= 0 || (f.Confirmations >= 2 && !seen.Before(at)) {
			f.Confirmed = true
			continue
		}
		f.Confirmed = false
		if due == nil {
			due = map[types.UID]time.Time{}
		}
		if at.Before(now) {
			at = now
		}
		due[f.UID] = at
	}
	return out, due
}

// ScanAndConfirm is Scan followed by Confirm.
func (e *Engine) ScanAndConfirm(ctx context.Context, namespace string) (Report, error) {
	r, err := e.Scan(ctx, namespace)
	if err != nil {
		return r, err
	}
	return e.Confirm(ctx, r)
}

// stateTTL is how long per-UID state is kept after a pod was last seen.
const stateTTL = time.Hour

// forgetOld drops state of pods not seen for stateTTL, so a long-lived Engine does not
// grow without bound. e.mu is held.
func (e *Engine) forgetOld(now time.Time) {
	for uid, st := range e.state {
		if now.Sub(st.lastSeen) > stateTTL {
			delete(e.state, uid)
		}
	}
}
