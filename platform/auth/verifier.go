package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/maypok86/otter/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mercato/mercato/platform/config"
)

// Bounds of the verifier.
const (
	// cacheSize bounds the verified-token cache. An entry is a 32-byte hash
	// and a shared Identity, a few hundred bytes: 100,000 tokens — every
	// customer active in the last access-token lifetime of a large shop —
	// fit in a few tens of MiB.
	cacheSize = 100_000
	// maxTokenBytes refuses absurd tokens before any parsing; identity's
	// are under 1 KiB.
	maxTokenBytes = 8 << 10
	// startupGrace bounds how long a new process reports not ready while it
	// cannot reach identity; after it the process serves anonymous requests
	// and answers tokens with 503 until identity answers.
	startupGrace = 10 * time.Second
	// firstRetry is the delay before retrying a failed first load; it
	// doubles up to the normal interval.
	firstRetry = 100 * time.Millisecond
	// maxKeyRetry bounds the wait before retrying a failed periodic JWKS
	// refresh, and maxFirstRetry before retrying a failed first fetch.
	maxKeyRetry   = time.Minute
	maxFirstRetry = 2 * time.Second
)

// allowedAlgorithms is the only signature algorithm accepted: the allow-list
// is what refuses alg none, HMAC signed with the public key (key confusion)
// and every other algorithm, before a key is chosen.
var allowedAlgorithms = []jose.SignatureAlgorithm{jose.RS256}

// Verifier checks access tokens: RS256 signature by a key identity
// publishes, exact issuer, audience, expiry with leeway, and a session that
// was not revoked. It keeps three things in memory so that a verification
// costs no network call:
//
//   - identity's JWKS, fetched at start, refreshed every auth.jwks_refresh
//     and refetched at once when a token names an unknown kid (at most once
//     per 5 seconds);
//   - the revoked sessions, polled from identity every auth.revocation_poll
//     (live), so a revoked session's tokens are refused within about one
//     poll interval everywhere;
//   - a bounded cache of tokens already verified, keyed by the token's
//     SHA-256 and kept until the token expires. A hit costs a hash and two
//     map lookups instead of an RSA verification and JSON decoding; the
//     revocation set and the key's presence are still checked on every
//     hit, so the cache never outlives a revocation or a withdrawn key.
//
// Until both the keys and the revocations have loaded once, Verify fails
// closed with ErrUnavailable. Afterwards an identity outage keeps the last
// keys and revocations (see docs/adr/0012-token-verification.md).
//
// Create one per process with NewVerifier, run Run for its lifetime, and
// share it.
type Verifier struct {
	store    *config.Store
	log      *slog.Logger
	m        *metrics
	keys     *keys
	revoked  *revocations
	cache    *otter.Cache[[sha256.Size]byte, *verified]
	issuer   string
	audience string
	created  time.Time
	// now is the clock; tests move it.
	now func() time.Time

	graceOnce sync.Once
}

// verified is a cached verification.
type verified struct {
	id  *Identity
	kid string
}

// tokenClaims are the claims of an access token.
type tokenClaims struct {
	jwt.Claims
	Scope     string `json:"scope"`
	SessionID string `json:"sid"`
	ClientID  string `json:"client_id"`
}

// NewVerifier returns a verifier that fetches identity's JWKS with client
// from <services.identity.url>/keys and learns revoked sessions from
// sessions, reading auth.* and the issuer (public_url) from store. Its
// metrics go to reg. Call Run to load and keep refreshing both.
func NewVerifier(store *config.Store, client HTTPDoer, sessions SessionLister, log *slog.Logger, reg prometheus.Registerer) (*Verifier, error) {
	if store == nil || client == nil || sessions == nil || log == nil || reg == nil {
		return nil, errors.New("auth verifier: store, http client, session lister, logger and registerer are required")
	}
	cfg := store.Get()
	if cfg.Auth.Audience == "" {
		return nil, errors.New("auth verifier: auth.audience is empty; every token would be accepted for any audience")
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	log = log.With("component", "auth")
	v := &Verifier{
		store:    store,
		log:      log,
		m:        m,
		issuer:   Issuer(cfg),
		audience: cfg.Auth.Audience,
		created:  time.Now(),
		now:      time.Now,
	}
	v.keys = &keys{client: client, store: store, log: log, m: m}
	v.revoked = &revocations{sessions: sessions, store: store, log: log, m: m, now: func() time.Time { return v.now() }, started: v.created}
	v.cache, err = otter.New(&otter.Options[[sha256.Size]byte, *verified]{
		MaximumSize: cacheSize,
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[[sha256.Size]byte, *verified]) time.Duration {
			// Kept until the token expires; the leeway is not worth keeping
			// for, and Verify checks the expiry on every hit anyway.
			return max(time.Until(e.Value.id.ExpiresAt), time.Millisecond)
		}),
		Logger: otterLogger{log},
	})
	if err != nil {
		return nil, fmt.Errorf("auth verifier cache: %w", err)
	}
	return v, nil
}

// Issuer is the iss the verifier accepts.
func (v *Verifier) Issuer() string { return v.issuer }

// Verify checks token and returns its verified caller. Errors wrap one of
// the Err* values of this package; ErrUnavailable means the verifier could
// not decide (not the client's fault), any other means the token is not
// acceptable.
func (v *Verifier) Verify(ctx context.Context, token string) (*Identity, error) {
	id, err := v.verify(ctx, token)
	v.m.observe(err)
	return id, err
}

func (v *Verifier) verify(ctx context.Context, token string) (*Identity, error) {
	if !v.loaded() {
		return nil, fmt.Errorf("%w: identity's keys and revoked sessions are not loaded yet", ErrUnavailable)
	}
	if len(token) > maxTokenBytes {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, maxTokenBytes)
	}
	now := v.now()
	leeway := v.store.Get().Auth.Leeway
	sum := sha256.Sum256([]byte(token))
	if c, ok := v.cache.GetIfPresent(sum); ok {
		switch {
		case now.After(c.id.ExpiresAt.Add(leeway)):
			v.cache.Invalidate(sum)
			return nil, ErrExpired
		case v.revoked.revoked(c.id.SessionID):
			return nil, ErrRevoked
		case v.keys.has(c.kid):
			v.m.cacheHits.Inc()
			return c.id, nil
		}
		// Its key was withdrawn: verify again, which refuses it.
		v.cache.Invalidate(sum)
	}
	id, kid, err := v.verifySigned(ctx, token, now, leeway)
	if err != nil {
		return nil, err
	}
	v.cache.Set(sum, &verified{id: id, kid: kid})
	return id, nil
}

// verifySigned is the full verification of a token not in the cache.
func (v *Verifier) verifySigned(ctx context.Context, token string, now time.Time, leeway time.Duration) (*Identity, string, error) {
	tok, err := jwt.ParseSigned(token, allowedAlgorithms)
	if err != nil {
		if _, ok := errors.AsType[*jose.ErrUnexpectedSignatureAlgorithm](err); ok {
			return nil, "", fmt.Errorf("%w: %v", ErrBadAlgorithm, err)
		}
		return nil, "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(tok.Headers) != 1 {
		return nil, "", fmt.Errorf("%w: %d signatures", ErrMalformed, len(tok.Headers))
	}
	kid := tok.Headers[0].KeyID
	if kid == "" {
		return nil, "", fmt.Errorf("%w: no kid", ErrUnknownKey)
	}
	key, err := v.keys.lookup(ctx, kid)
	if err != nil {
		return nil, "", err
	}
	var c tokenClaims
	if err := tok.Claims(key, &c); err != nil {
		if errors.Is(err, jose.ErrCryptoFailure) {
			return nil, "", ErrBadSignature
		}
		return nil, "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	// go-jose skips a missing exp; an access token without one would never
	// expire.
	if c.Expiry == nil {
		return nil, "", fmt.Errorf("%w: no exp", ErrMalformed)
	}
	err = c.Claims.ValidateWithLeeway(jwt.Expected{Issuer: v.issuer, AnyAudience: jwt.Audience{v.audience}, Time: now}, leeway)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return nil, "", ErrWrongIssuer
	case errors.Is(err, jwt.ErrInvalidAudience):
		return nil, "", ErrWrongAudience
	case errors.Is(err, jwt.ErrExpired):
		return nil, "", ErrExpired
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return nil, "", ErrNotYetValid
	default:
		return nil, "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if c.Subject == "" || c.SessionID == "" {
		return nil, "", fmt.Errorf("%w: sub and sid are required", ErrMalformed)
	}
	if v.revoked.revoked(c.SessionID) {
		return nil, "", ErrRevoked
	}
	return &Identity{
		Subject:   c.Subject,
		SessionID: c.SessionID,
		Scopes:    strings.Fields(c.Scope),
		ClientID:  c.ClientID,
		ExpiresAt: c.Expiry.Time(),
	}, kid, nil
}

// loaded reports whether both the keys and the revocations have loaded.
func (v *Verifier) loaded() bool {
	return v.keys.current() != nil && v.revoked.synced.Load()
}

// Check is a readiness check: it fails until the keys and revocations have
// loaded once, so a new replica takes traffic only when it can verify
// tokens — but for at most 10 seconds, after which a replica that still
// cannot reach identity reports ready anyway, serves anonymous requests,
// and answers requests with tokens 503. Later identity outages never fail
// it: the last keys and revocations keep working.
func (v *Verifier) Check(context.Context) error {
	if v.loaded() {
		return nil
	}
	if time.Since(v.created) >= startupGrace {
		v.graceOnce.Do(func() {
			v.log.Warn("identity still unreachable; ready without token verification (tokens get 503 until it answers)")
		})
		return nil
	}
	return errors.New("identity's keys and revoked sessions not loaded yet")
}

// Run loads identity's keys and revoked sessions and keeps them current
// until ctx ends: the keys every auth.jwks_refresh, the revocations every
// auth.revocation_poll. Failures are logged and retried, never returned.
func (v *Verifier) Run(ctx context.Context) error {
	v.keys.life.Store(&ctx)
	var wg sync.WaitGroup
	wg.Go(func() { v.refreshKeys(ctx) })
	wg.Go(func() { v.pollRevocations(ctx) })
	wg.Wait()
	return nil
}

func (v *Verifier) refreshKeys(ctx context.Context) {
	retry := firstRetry
	var failingSince, lastWarn time.Time
	for {
		interval := v.store.Get().Auth.JWKSRefresh
		if interval <= 0 {
			interval = config.Defaults().Auth.JWKSRefresh
		}
		err := v.keys.fetch(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			now := time.Now()
			if failingSince.IsZero() {
				failingSince = now
			}
			switch {
			case v.keys.current() == nil && now.Sub(v.created) < startupGrace:
				// Services start together; identity may simply not listen
				// yet.
				v.log.Debug("waiting for identity's keys", "err", err)
			case now.Sub(lastWarn) >= 30*time.Second:
				lastWarn = now
				v.log.Warn("cannot fetch identity's keys; keeping the last ones", "err", err,
					"have_keys", v.keys.current() != nil, "failing_for", now.Sub(failingSince).Round(time.Second))
			}
			// Without keys every token gets 503, so keep trying often.
			limit := maxKeyRetry
			if v.keys.current() == nil {
				limit = maxFirstRetry
			}
			retry = min(retry, limit)
			interval = min(retry, interval)
			retry *= 2
		default:
			if !failingSince.IsZero() {
				v.log.Info("identity's keys fetched again", "failed_for", time.Since(failingSince).Round(time.Second))
			}
			failingSince, lastWarn, retry = time.Time{}, time.Time{}, firstRetry
		}
		if !sleep(ctx, interval) {
			return
		}
	}
}

func (v *Verifier) pollRevocations(ctx context.Context) {
	retry := firstRetry
	for {
		interval := v.store.Get().Auth.RevocationPoll
		if interval <= 0 {
			interval = config.Defaults().Auth.RevocationPoll
		}
		if err := v.revoked.poll(ctx); err != nil && !v.revoked.synced.Load() {
			// Not loaded yet: every token gets 503 until this succeeds, so
			// try again soon rather than a whole interval later.
			retry = min(retry, interval)
			interval, retry = retry, retry*2
		}
		if !sleep(ctx, interval) {
			return
		}
	}
}

// sleep waits d, reporting false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// otterLogger sends the cache's own warnings to the service log.
type otterLogger struct{ log *slog.Logger }

func (l otterLogger) Warn(ctx context.Context, msg string, err error) {
	l.log.WarnContext(ctx, msg, "err", err)
}

func (l otterLogger) Error(ctx context.Context, msg string, err error) {
	l.log.ErrorContext(ctx, msg, "err", err)
}
