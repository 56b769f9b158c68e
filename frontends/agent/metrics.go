package agent

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshmedic/meshmedic/detect"
)

type metrics struct {
	findings      *prometheus.GaugeVec
	confirmed     prometheus.Counter
	repairs       *prometheus.CounterVec
	sweepSeconds  prometheus.Histogram
	sweepErrors   prometheus.Counter
	podsTracked   prometheus.Gauge
	breakerOpen   prometheus.Gauge
	triggers      *prometheus.CounterVec
	repairEnabled prometheus.Gauge
}

// newMetrics registers the agent's metrics; the pid-map counters are read from the
// prober's own counters at scrape time.
func newMetrics(reg prometheus.Registerer, pidmap func() detect.NodeStats) *metrics {
	m := &metrics{
		findings: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshmedic_findings",
			Help: "Pods on this node by finding class, as of the last full re-check."}, []string{"class"}),
		confirmed: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshmedic_confirmed_findings_total",
			Help: "Findings confirmed after the flap guard (orphaned, partial, not-enrolled, netns-replaced)."}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshmedic_repairs_total",
			Help: "Heal actions by strategy and result."}, []string{"strategy", "result"}),
		sweepSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "meshmedic_sweep_duration_seconds",
			Help: "Duration of one sweep.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}),
		sweepErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshmedic_sweep_errors_total",
			Help: "Sweeps that failed."}),
		podsTracked: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshmedic_pods_tracked",
			Help: "Pods on this node in the agent's informer."}),
		breakerOpen: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshmedic_node_breaker_open",
			Help: "1 when the node circuit breaker refuses heals on this node (ztunnel not Ready, or most ambient pods orphaned at once)."}),
		triggers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshmedic_checks_triggered_total",
			Help: "Pod checks outside the full re-check, by trigger (pod-change, young, confirm, socket-count)."}, []string{"trigger"}),
		repairEnabled: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshmedic_auto_repair_enabled",
			Help: "1 when --auto-repair is on and the agent may evict (checked with a SelfSubjectAccessReview at start); 0 otherwise."}),
	}
	// The agent's own memory and CPU (process_resident_memory_bytes, go_memstats_*): its
	// budget is part of what an operator watches.
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(m.repairEnabled, m.findings, m.confirmed, m.repairs, m.sweepSeconds, m.sweepErrors, m.podsTracked,
		m.breakerOpen, m.triggers,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshmedic_pidmap_cache_hits_total",
			Help: "Pods placed from the cached pod→sandbox-PID map after a cheap revalidation."},
			func() float64 { return float64(pidmap().CacheHits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshmedic_pidmap_rebuilds_total",
			Help: "Full walks of the host's /proc to rebuild the pod→sandbox-PID map."},
			func() float64 { return float64(pidmap().Walks) }))
	return m
}
