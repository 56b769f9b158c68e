package agent

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	findings     *prometheus.GaugeVec
	confirmed    prometheus.Counter
	repairs      *prometheus.CounterVec
	sweepSeconds prometheus.Histogram
	sweepErrors  prometheus.Counter
	podsTracked  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
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
	}
	reg.MustRegister(m.findings, m.confirmed, m.repairs, m.sweepSeconds, m.sweepErrors, m.podsTracked)
	return m
}
