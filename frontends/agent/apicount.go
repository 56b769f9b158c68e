package agent

import (
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// APICounter counts the agent's requests to the API server by verb and resource, so an
// operator sees what the agent costs the control plane — and tests can hold it to "no writes
// while all is well". Wrap the client's transport with it (rest.Config.Wrap) and register it
// with the agent's Registry.
type APICounter struct{ requests *prometheus.CounterVec }

// NewAPICounter returns an unregistered counter.
func NewAPICounter() *APICounter {
	return &APICounter{requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshmedic_api_requests_total",
		Help: "Requests the agent sent to the API server, by HTTP method and resource (watches are GETs with watch=true: verb watch)."},
		[]string{"verb", "resource"})}
}

// Describe implements prometheus.Collector.
func (c *APICounter) Describe(ch chan<- *prometheus.Desc) { c.requests.Describe(ch) }

// Collect implements prometheus.Collector.
func (c *APICounter) Collect(ch chan<- prometheus.Metric) { c.requests.Collect(ch) }

// Wrap returns rt counting every request.
func (c *APICounter) Wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		verb := r.Method
		if r.Method == http.MethodGet && r.URL.Query().Get("watch") == "true" {
			verb = "WATCH"
		}
		c.requests.WithLabelValues(verb, resourceOf(r.URL.Path)).Inc()
		return rt.RoundTrip(r)
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// resourceOf names the resource of an API path: /api/v1/namespaces/ns/pods/x/status is
// "pods/status", /apis/coordination.k8s.io/v1/namespaces/ns/leases/x is "leases".
func resourceOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		parts = parts[3:]
	default:
		return "other"
	}
	if len(parts) >= 2 && parts[0] == "namespaces" {
		if len(parts) == 2 {
			return "namespaces"
		}
		parts = parts[2:]
	}
	switch len(parts) {
	case 0:
		return "other"
	case 1, 2:
		return parts[0]
	default:
		return parts[0] + "/" + parts[2]
	}
}
