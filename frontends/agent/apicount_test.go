package agent

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAPICounter(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	c := NewAPICounter()
	client := &http.Client{Transport: c.Wrap(http.DefaultTransport)}
	for _, r := range []struct{ method, path string }{
		{"PATCH", "/api/v1/namespaces/shop/pods/web-1/status"},
		{"GET", "/api/v1/pods?watch=true&fieldSelector=spec.nodeName%3Dn1"},
		{"PUT", "/apis/coordination.k8s.io/v1/namespaces/meshmedic-system/leases/meshmedic-agent-n1"},
		{"POST", "/api/v1/namespaces/shop/events"},
		{"GET", "/api/v1/namespaces"},
	} {
		req, err := http.NewRequest(r.method, srv.URL+r.path, nil)
		require.NoError(t, err)
		resp, err := client.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	for labels, want := range map[[2]string]float64{{"PATCH", "pods/status"}: 1, {"WATCH", "pods"}: 1, {"PUT", "leases"}: 1,
		{"POST", "events"}: 1, {"GET", "namespaces"}: 1} {
		assert.Equal(t, want, testutil.ToFloat64(c.requests.WithLabelValues(labels[0], labels[1])), "%v", labels)
	}
}
