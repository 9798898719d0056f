package identity

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// accounts checks credentials, for the REST login and the login page alike.
type accounts struct {
	store    *Store
	hasher   *Hasher
	throttle *throttle
	log      *slog.Logger
	// logins counts login attempts by result (success,
	// invalid_credentials, rate_limited, error).
	logins *prometheus.CounterVec
}

func newLoginCounter(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "identity_logins_total",
		Help: "Login attempts (REST and login page) by result.",
	}, []string{"result"})
	reg.MustRegister(c)
	return c
}

// authenticate returns the customer whose email and password these are.
// An unknown email and a wrong password are the same ErrInvalidCredentials
// and cost the same hashing work; each counts against the account's failure
// budget. A hash made with old parameters is replaced on success.
func (a *accounts) authenticate(ctx context.Context, email, password, clientAddr string) (*Customer, error) {
	c, err := a.check(ctx, NormalizeEmail(email), password, clientAddr)
	var limited *RateLimitedError
	switch {
	case err == nil:
		a.logins.WithLabelValues("success").Inc()
	case errors.Is(err, ErrInvalidCredentials):
		a.logins.WithLabelValues("invalid_credentials").Inc()
	case errors.As(err, &limited):
		a.logins.WithLabelValues("rate_limited").Inc()
	default:
		a.logins.WithLabelValues("error").Inc()
	}
	return c, err
}

func (a *accounts) check(ctx context.Context, email, password, clientAddr string) (*Customer, error) {
	if err := a.throttle.before(ctx, email, clientAddr); err != nil {
		return nil, err
	}
	c, err := a.store.CustomerByEmail(ctx, email)
	if errors.Is(err, ErrNotFound) {
		a.hasher.Waste(password)
		a.throttle.failed(ctx, email, a.log)
		return nil, ErrInvalidCredentials
	}
	if err != nil {
		return nil, err
	}
	ok, rehash, err := a.hasher.Verify(c.passwordHash, password)
	if err != nil {
		// The hash itself is never logged.
		a.log.ErrorContext(ctx, "stored password hash is unreadable", "customer_id", c.ID, "err", err)
	}
	if !ok {
		a.throttle.failed(ctx, email, a.log)
		return nil, ErrInvalidCredentials
	}
	if rehash {
		if h, err := a.hasher.Hash(password); err == nil {
			err = a.store.SetPasswordHash(ctx, c.ID, c.passwordHash, h)
			if err != nil {
				a.log.WarnContext(ctx, "rehashing a password failed; it stays on the old parameters", "customer_id", c.ID, "err", err)
			} else {
				c.passwordHash = h
				a.log.InfoContext(ctx, "password rehashed with the current argon2id parameters", "customer_id", c.ID)
			}
		}
	}
	return c, nil
}
