// Package metrics defines the Prometheus metrics of a Latchkey instance. Each app
// gets its own registry, so several instances can run in one process (tests).
package metrics

import (
	"database/sql"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the instruments of one instance.
type Metrics struct {
	Registry *prometheus.Registry
	// AuthFailures counts refused credentials by reason (unknown and invalid keys are
	// counted here, never stored per key).
	AuthFailures *prometheus.CounterVec
	// Operations counts GraphQL operations by type and outcome.
	Operations *prometheus.CounterVec
	// OperationSeconds observes operation latency by type.
	OperationSeconds *prometheus.HistogramVec
	// RateLimited counts operations denied by the rate limiter or the quota.
	RateLimited *prometheus.CounterVec
	// WebhookAttempts counts delivery attempts by outcome; WebhookSeconds their latency.
	WebhookAttempts *prometheus.CounterVec
	WebhookSeconds  prometheus.Histogram
	// UsageWriteSeconds observes the duration of usage batch writes (committed or not).
	UsageWriteSeconds prometheus.Histogram
	// Verifications counts consumer-key verifications by code (NOT_FOUND ones are
	// counted only here: they are not stored).
	Verifications *prometheus.CounterVec

	// Children of the vectors counted on every request, by label values (a
	// WithLabelValues hashes the values and locks the vector each time).
	operations    children[[2]string, operation]
	verifications children[string, prometheus.Counter]
}

type operation struct {
	count   prometheus.Counter
	seconds prometheus.Observer
}

// children keeps what a vector's WithLabelValues returned, by label values.
type children[K comparable, V any] struct {
	mu sync.RWMutex
	m  map[K]V
}

// get returns the child of k, made by newChild on first use.
func (c *children[K, V]) get(k K, newChild func() V) V {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	if !ok {
		v = newChild()
		c.mu.Lock()
		if c.m == nil {
			c.m = map[K]V{}
		}
		c.m[k] = v
		c.mu.Unlock()
	}
	return v
}

// Operation counts one operation of type typ that ended with outcome in Operations,
// and observes its duration in OperationSeconds.
func (m *Metrics) Operation(typ, outcome string, seconds float64) {
	o := m.operations.get([2]string{typ, outcome}, func() operation {
		return operation{m.Operations.WithLabelValues(typ, outcome), m.OperationSeconds.WithLabelValues(typ)}
	})
	o.count.Inc()
	o.seconds.Observe(seconds)
}

// Verification counts one verification that answered code in Verifications.
func (m *Metrics) Verification(code string) {
	m.verifications.get(code, func() prometheus.Counter { return m.Verifications.WithLabelValues(code) }).Inc()
}

// New returns a fresh set of metrics on its own registry, with the Go and process
// collectors registered.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "latchkey_auth_failures_total",
			Help: "Credentials refused, by reason.",
		}, []string{"reason"}),
		Operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "latchkey_operations_total",
			Help: "Authenticated GraphQL operations, by operation type and outcome.",
		}, []string{"type", "outcome"}),
		OperationSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "latchkey_operation_duration_seconds",
			Help:    "GraphQL operation latency.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"type"}),
		RateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "latchkey_rate_limited_total",
			Help: "Operations denied by the rate limiter or the quota, by outcome.",
		}, []string{"outcome"}),
	}
	m.WebhookAttempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "latchkey_webhook_attempts_total",
		Help: "Webhook delivery attempts, by outcome (delivered, retry, failed, lease_lost).",
	}, []string{"outcome"})
	m.WebhookSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "latchkey_webhook_attempt_duration_seconds",
		Help:    "Webhook attempt latency.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 13),
	})
	m.UsageWriteSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "latchkey_usage_write_seconds",
		Help:    "Duration of usage batch writes (raw rows and rollups, one transaction).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})
	m.Verifications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "latchkey_verifications_total",
		Help: "Consumer-key verifications, by code.",
	}, []string{"code"})
	m.Registry.MustRegister(m.AuthFailures, m.Operations, m.OperationSeconds, m.RateLimited,
		m.WebhookAttempts, m.WebhookSeconds, m.UsageWriteSeconds, m.Verifications,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Counter registers a counter whose value f reads (e.g. from a component's stats).
func (m *Metrics) Counter(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
}

// Gauge registers a gauge whose value f reads.
func (m *Metrics) Gauge(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// DB registers the database pool statistics.
func (m *Metrics) DB(db *sql.DB) {
	m.Registry.MustRegister(collectors.NewDBStatsCollector(db, "latchkey"))
}
