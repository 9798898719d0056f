package auth

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a verifier's series.
type metrics struct {
	verifications      *prometheus.CounterVec
	cacheHits          prometheus.Counter
	jwksFetches        *prometheus.CounterVec
	jwksKeys           prometheus.Gauge
	revocationPolls    *prometheus.CounterVec
	revocationLastSync prometheus.Gauge
	revokedSessions    prometheus.Gauge

	// Resolved once: the hot path must not look labels up.
	ok        prometheus.Counter
	byFailure map[string]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auth_token_verifications_total",
			Help: "Access tokens verified, by result (ok, malformed, bad_algorithm, unknown_key, bad_signature, wrong_issuer, wrong_audience, expired, not_yet_valid, revoked, unavailable).",
		}, []string{"result"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auth_token_cache_hits_total",
			Help: "Verifications answered from the verified-token cache (revocation still checked).",
		}),
		jwksFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auth_jwks_fetches_total",
			Help: "Fetches of identity's JWKS, by result (ok, error).",
		}, []string{"result"}),
		jwksKeys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "auth_jwks_keys",
			Help: "Verification keys currently known.",
		}),
		revocationPolls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auth_revocation_polls_total",
			Help: "Polls of identity's revoked sessions, by result (ok, error).",
		}, []string{"result"}),
		revocationLastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "auth_revocation_last_sync_timestamp_seconds",
			Help: "When revoked sessions were last polled successfully; alert on its age.",
		}),
		revokedSessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "auth_revoked_sessions",
			Help: "Revoked sessions whose tokens may still be presented, held locally.",
		}),
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.verifications, m.cacheHits, m.jwksFetches, m.jwksKeys, m.revocationPolls, m.revocationLastSync, m.revokedSessions} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("auth metrics: %w", err)
	}
	m.ok = m.verifications.WithLabelValues("ok")
	m.byFailure = map[string]prometheus.Counter{}
	for _, r := range results {
		m.byFailure[r.label] = m.verifications.WithLabelValues(r.label)
	}
	return m, nil
}

// observe counts one verification.
func (m *metrics) observe(err error) {
	if err == nil {
		m.ok.Inc()
		return
	}
	m.byFailure[resultLabel(err)].Inc()
}
