package agent

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshmedic/meshmedic/detect"
	"github.com/meshmedic/meshmedic/heal"
)

type metrics struct {
	findings        *prometheus.GaugeVec
	confirmed       prometheus.Counter
	repairs         *prometheus.CounterVec
	sweepSeconds    prometheus.Histogram
	sweepErrors     prometheus.Counter
	podsTracked     prometheus.Gauge
	breakerOpen     prometheus.Gauge
	triggers        *prometheus.CounterVec
	repairEnabled   prometheus.Gauge
	healMode        *prometheus.GaugeVec
	canaries        *prometheus.CounterVec
	healErrors      prometheus.Counter
	heartbeatErrors prometheus.Counter
}

// setHealMode sets the one-hot meshmedic_node_heal_mode gauge.
func (m *metrics) setHealMode(mode heal.NodeMode) {
	for _, x := range []heal.NodeMode{heal.NodeHeal, heal.NodeCanary, heal.NodeWait, heal.NodeStop} {
		v := 0.0
		if x == mode {
			v = 1
		}
		m.healMode.WithLabelValues(string(x)).Set(v)
	}
}

// newMetrics registers the agent's metrics; the pid-map counters are read from the
// prober's own counters at scrape time.
func newMetrics(reg prometheus.Registerer, pidmap func() detect.NodeStats) *metrics {
	m := &metrics{
		findings: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshmedic_findings",
			Help: "Pods on this node by finding class, as of the last full re-check."}, []string{"class"}),
		confirmed: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshmedic_confirmed_findings_total",
			Help: "Findings confirmed after the flap guard (actionable classes: orphaned, partial, not-enrolled, netns-replaced, bypass, blackhole)."}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshmedic_repairs_total",
			Help: "Heal actions by strategy and result."}, []string{"strategy", "result"}),
		sweepSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "meshmedic_sweep_duration_seconds",
			Help: "Duration of one sweep.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}),
		sweepErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshmedic_sweep_errors_total",
			Help: "Sweeps that failed."}),
		podsTracked: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshmedic_pods_tracked",
			Help: "Pods on this node in the agent's informer."}),
		breakerOpen: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshmedic_node_breaker_open",
			Help: "1 when this node is not simply healed: its ztunnel or istio-cni is not Ready or not found, or most of its ambient pods are orphaned at once (then a canary decides)."}),
		triggers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshmedic_checks_triggered_total",
			Help: "Pod checks outside the full re-check, by trigger (pod-change, young, confirm, socket-count)."}, []string{"trigger"}),
		repairEnabled: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshmedic_auto_repair_enabled",
			Help: "1 when --auto-repair is on and the agent may evict and keep the heal ledger (checked with SelfSubjectAccessReviews at start); 0 otherwise."}),
		healMode: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshmedic_node_heal_mode",
			Help: "The heal planner's last verdict on this node, one-hot: heal, canary (mass orphaning, one pod healed first), wait (the canary is in flight), stop (ztunnel or istio-cni not Ready, or the canary came back broken)."}, []string{"mode"}),
		canaries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshmedic_canary_verdicts_total",
			Help: "Canaries this agent judged, by verdict (passed, failed)."}, []string{"verdict"}),
		healErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshmedic_heal_ledger_errors_total",
			Help: "Sweeps that healed nothing because the fleet-wide heal ledger could not be read (fail closed)."}),
		heartbeatErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshmedic_heartbeat_errors_total",
			Help: "Failed renewals of this agent's heartbeat Lease."}),
	}
	// The agent's own memory and CPU (process_resident_memory_bytes, go_memstats_*): its
	// budget is part of what an operator watches.
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(m.repairEnabled, m.findings, m.confirmed, m.repairs, m.sweepSeconds, m.sweepErrors, m.podsTracked,
		m.breakerOpen, m.triggers, m.healMode, m.canaries, m.healErrors, m.heartbeatErrors,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshmedic_pidmap_cache_hits_total",
			Help: "Pods placed from the cached pod→sandbox-PID map after a cheap revalidation."},
			func() float64 { return float64(pidmap().CacheHits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshmedic_pidmap_rebuilds_total",
			Help: "Full walks of the host's /proc to rebuild the pod→sandbox-PID map."},
			func() float64 { return float64(pidmap().Walks) }))
	return m
}
