package auth

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/mercato/mercato/platform/config"
)

// Bounds of the key fetcher.
const (
	// refetchGap is the least time between two fetches forced by unknown
	// key ids, so a flood of tokens with made-up kids costs identity one
	// request every few seconds, not one per token.
	refetchGap = 5 * time.Second
	// maxJWKSBytes bounds the JWKS document read.
	maxJWKSBytes = 1 << 20
	// minRSABits refuses keys too short to trust.
	minRSABits = 2048
)

// HTTPDoer sends HTTP requests; *http.Client is one.
type HTTPDoer interface {
	Do(*http.Request) (*http.Response, error)
}

// keySet is one fetched JWKS: the RS256 verification keys by key id.
type keySet struct {
	byKID map[string]*rsa.PublicKey
}

// keys fetches identity's JWKS, keeps the last good one, and refetches when
// a token names a key it does not know (a rotation it has not seen yet).
type keys struct {
	client HTTPDoer
	store  *config.Store
	log    *slog.Logger
	m      *metrics

	cur atomic.Pointer[keySet]
	// lastFailed tells whether the latest fetch failed, so an unknown kid
	// can be told apart from keys that could not be refreshed.
	lastFailed atomic.Bool

	// life is the context of Verifier.Run; forced fetches end with it.
	life atomic.Pointer[context.Context]

	mu sync.Mutex
	// lastForced is when the latest fetch forced by an unknown kid began;
	// forcing is non-nil while it runs and is closed when it ends.
	lastForced time.Time
	forcing    chan struct{}
}

// current returns the last good key set, or nil before the first one.
func (k *keys) current() *keySet { return k.cur.Load() }

// has reports whether kid is among the current keys; a cached token whose
// key was withdrawn is verified again (and refused).
func (k *keys) has(kid string) bool {
	s := k.cur.Load()
	return s != nil && s.byKID[kid] != nil
}

// fetch loads the JWKS once, replacing the key set when it holds at least
// one usable key. A failed fetch keeps the last good set.
func (k *keys) fetch(ctx context.Context) error {
	set, err := k.load(ctx)
	if err != nil && ctx.Err() != nil {
		return ctx.Err() // stopping, not failing
	}
	if err != nil {
		k.lastFailed.Store(true)
		k.m.jwksFetches.WithLabelValues("error").Inc()
		return err
	}
	k.cur.Store(set)
	k.lastFailed.Store(false)
	k.m.jwksFetches.WithLabelValues("ok").Inc()
	k.m.jwksKeys.Set(float64(len(set.byKID)))
	return nil
}

func (k *keys) load(ctx context.Context) (*keySet, error) {
	cfg := k.store.Get()
	timeout := cfg.RPC.Timeout
	if timeout <= 0 {
		timeout = config.Defaults().RPC.Timeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	url := strings.TrimSuffix(cfg.Service("identity").URL, "/") + "/keys"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", url, err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks %s: status %d", url, resp.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", url, err)
	}
	if len(raw) > maxJWKSBytes {
		return nil, fmt.Errorf("jwks %s: larger than %d bytes", url, maxJWKSBytes)
	}
	set, skipped, err := parseJWKS(raw)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", url, err)
	}
	if skipped > 0 {
		k.log.Debug("jwks keys skipped: not RS256 signing keys of at least 2048 bits", "skipped", skipped)
	}
	return set, nil
}

// parseJWKS keeps the keys of a JWK set that can verify RS256 access
// tokens: RSA public keys of at least 2048 bits with a kid, meant for
// signatures. Other keys (encryption keys, other algorithms) are skipped
// one by one rather than failing the set; a set without a usable key is an
// error, so a broken answer never replaces good keys.
func parseJWKS(raw []byte) (*keySet, int, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, 0, fmt.Errorf("not a JWK set: %w", err)
	}
	set := &keySet{byKID: map[string]*rsa.PublicKey{}}
	skipped := 0
	for _, rawKey := range doc.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(rawKey); err != nil {
			skipped++
			continue
		}
		pub, ok := k.Key.(*rsa.PublicKey)
		usable := ok && k.KeyID != "" &&
			(k.Use == "" || k.Use == "sig") &&
			(k.Algorithm == "" || k.Algorithm == string(jose.RS256)) &&
			pub.N.BitLen() >= minRSABits
		if !usable {
			skipped++
			continue
		}
		set.byKID[k.KeyID] = pub
	}
	if len(set.byKID) == 0 {
		return nil, skipped, errors.New("no usable RS256 key")
	}
	return set, skipped, nil
}

// lookup returns the key named kid. An unknown kid forces one refetch —
// shared by every request that waits for it, and at most one per
// refetchGap — so tokens signed with a freshly rotated key are accepted
// at once. It returns ErrUnknownKey when the kid is still unknown after a
// good fetch, and ErrUnavailable when identity could not be asked.
func (k *keys) lookup(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	if s := k.cur.Load(); s != nil {
		if pub := s.byKID[kid]; pub != nil {
			return pub, nil
		}
	}
	if wait := k.force(); wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
		}
	}
	if s := k.cur.Load(); s != nil {
		if pub := s.byKID[kid]; pub != nil {
			return pub, nil
		}
	}
	if k.lastFailed.Load() {
		return nil, fmt.Errorf("%w: keys could not be refreshed for kid %q", ErrUnavailable, kid)
	}
	return nil, ErrUnknownKey
}

// force starts a refetch unless one runs (then it joins it) or one began
// less than refetchGap ago (then it returns nil: the keys are fresh enough
// to say the kid is unknown).
func (k *keys) force() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.forcing != nil {
		return k.forcing
	}
	now := time.Now()
	if !k.lastForced.IsZero() && now.Sub(k.lastForced) < refetchGap {
		return nil
	}
	k.lastForced = now
	done := make(chan struct{})
	k.forcing = done
	// The fetch is shared, so it must not end with the request that began
	// it, only with the verifier; load bounds it with rpc.timeout.
	ctx := context.Background()
	if life := k.life.Load(); life != nil {
		ctx = *life
	}
	go func() {
		if err := k.fetch(ctx); err != nil && ctx.Err() == nil {
			k.log.Warn("jwks refetch for an unknown key id failed", "err", err)
		}
		k.mu.Lock()
		k.forcing = nil
		k.mu.Unlock()
		close(done)
	}()
	return done
}
