package gateway

import (
	"errors"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/code"
)

// Values of the protocol label.
const (
	protocolGRPC = "grpc"
	protocolHTTP = "http"
	protocolWS   = "websocket"
)

// Values of the function label besides declared function names; names the
// app does not declare all count as unknownLabel, so a client cannot grow
// the label set.
const (
	unknownLabel = "unknown"
	sqlLabel     = "sql"
	statusLabel  = "status"
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	labels := []string{"protocol", "function", "code"}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lunora_gateway_requests_total",
			Help: "Requests answered by the gateway, by protocol, function and canonical code.",
		}, labels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lunora_gateway_request_duration_seconds",
			Help:    "Time the gateway took to answer a request, by protocol, function and canonical code.",
			Buckets: prometheus.DefBuckets,
		}, labels),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("gateway: metrics already registered on Config.Registerer (one Gateway per registry)")
			}
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observe(protocol, function string, err error, elapsed time.Duration) {
	c := codeName(err)
	m.requests.WithLabelValues(protocol, function, c).Inc()
	m.duration.WithLabelValues(protocol, function, c).Observe(elapsed.Seconds())
}

// codeName is the canonical upper-case name of err's code ("OK",
// "INVALID_ARGUMENT", ...), as in the HTTP error body.
func codeName(err error) string {
	c := api.CodeOf(err)
	if name, ok := code.Code_name[int32(c)]; ok {
		return name
	}
	return "UNKNOWN"
}
