package identity

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mercato/mercato/platform/id"
	"github.com/mercato/mercato/platform/pg"
)

// Tokens are signed with RS256 and RSA-2048 keys: verification is the hot
// path (every request at the gateway and again in services), and RSA
// verifies about 2.4 times faster than ECDSA P-256 on this CPU.
const (
	signingAlgorithm = jose.RS256
	rsaBits          = 2048
	// keysLock serialises key creation among replicas
	// (pg_advisory_xact_lock key, unique within the identity database).
	keysLock = 0x6b657973 // "keys"
)

// signingKey is one RSA key from the signing_keys table.
type signingKey struct {
	kid     string
	private *rsa.PrivateKey
	created time.Time
	// retired is when a newer key took (or takes) over signing; zero while
	// the key is the newest.
	retired time.Time
}

// SignatureAlgorithm is RS256 (op.SigningKey).
func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return signingAlgorithm }

// Key is the private key the signer uses (op.SigningKey).
func (k *signingKey) Key() any { return k.private }

// ID is the kid put in the header of every token the key signs
// (op.SigningKey).
func (k *signingKey) ID() string { return k.kid }

// publicKey is a signing key as the JWKS publishes it (op.Key).
type publicKey struct{ k *signingKey }

// ID is the key's kid.
func (p publicKey) ID() string { return p.k.kid }

// Algorithm is RS256.
func (p publicKey) Algorithm() jose.SignatureAlgorithm { return signingAlgorithm }

// Use marks the key as a signature key.
func (p publicKey) Use() string { return "sig" }

// Key is the RSA public key.
func (p publicKey) Key() any { return &p.k.private.PublicKey }

// keySet is what a replica knows about keys at one moment.
type keySet struct {
	// signer signs every token minted now.
	signer *signingKey
	// published are the keys that may still verify a live token, newest
	// first; the JWKS lists them.
	published []*signingKey
}

// keyOptions tune key rotation.
type keyOptions struct {
	// rotation is how long one key signs before a new one takes over.
	rotation time.Duration
	// retention is how long a retired key stays published: the longest
	// life of a token it signed (access token TTL plus ID token TTL).
	retention time.Duration
	// reload is how often each replica rereads the table.
	reload time.Duration
	now    func() time.Time
}

// keyManager keeps the signing keys that every replica shares in
// PostgreSQL. The newest key that has been published for lead signs; a new
// key is created a lead before the current one is rotation old, under an
// advisory lock so that replicas create exactly one, and published at once
// so that every replica and verifier knows it before the first token it
// signs exists. A retired key stays published until every token it signed
// has expired, then it is deleted.
type keyManager struct {
	pool    *pgxpool.Pool
	opts    keyOptions
	log     *slog.Logger
	current atomic.Pointer[keySet]
}

func newKeyManager(pool *pgxpool.Pool, opts keyOptions, log *slog.Logger) *keyManager {
	return &keyManager{pool: pool, opts: opts, log: log}
}

// lead is how long a new key is published before it signs: two reload
// periods, so that every replica has loaded it by then (bounded by half the
// rotation period for the short periods of tests).
func (m *keyManager) lead() time.Duration {
	return min(2*m.opts.reload, m.opts.rotation/2)
}

// keys returns the current key set; sync must have succeeded once.
func (m *keyManager) keys() *keySet { return m.current.Load() }

// run rereads the keys every reload period until ctx ends, rotating when
// due. A failed reload keeps the keys already loaded: they stay valid for
// a whole rotation period.
func (m *keyManager) run(ctx context.Context) error {
	t := time.NewTicker(m.opts.reload)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := m.sync(ctx); err != nil && ctx.Err() == nil {
				m.log.WarnContext(ctx, "reloading signing keys failed; still using the loaded ones", "err", err)
			}
		}
	}
}

// sync loads the keys, creates a new one when rotation is due, and
// chooses the signer.
func (m *keyManager) sync(ctx context.Context) error {
	now := m.opts.now()
	keys, err := m.load(ctx, now)
	if err != nil {
		return err
	}
	if len(keys) == 0 || m.due(keys[0].created, now) {
		if err := m.rotate(ctx, now); err != nil {
			return err
		}
		if keys, err = m.load(ctx, now); err != nil {
			return err
		}
	}
	if len(keys) == 0 {
		return errors.New("no signing key after rotation")
	}
	set := &keySet{published: keys}
	for _, k := range keys {
		if !k.created.After(now.Add(-m.lead())) {
			set.signer = k
			break
		}
	}
	if set.signer == nil {
		// Only the very first key can be this new with no older one to
		// sign meanwhile; no verifier has cached a JWKS without it yet.
		set.signer = keys[0]
	}
	if prev := m.current.Swap(set); prev == nil || prev.signer.kid != set.signer.kid {
		m.log.InfoContext(ctx, "signing key in use", "kid", set.signer.kid, "published", len(keys))
	}
	return nil
}

// due reports whether the newest key, created at created, should get a
// successor now: a lead before it has signed for a whole rotation period.
func (m *keyManager) due(created, now time.Time) bool {
	return !created.After(now.Add(-(m.opts.rotation - m.lead())))
}

// load reads every key still published at now, newest first.
func (m *keyManager) load(ctx context.Context, now time.Time) ([]*signingKey, error) {
	rows, err := m.pool.Query(ctx, `SELECT kid, private_key, created_at, retired_at FROM signing_keys
		WHERE algorithm = $1 AND (retired_at IS NULL OR retired_at > $2)
		ORDER BY created_at DESC, kid DESC`, string(signingAlgorithm), now.Add(-m.opts.retention))
	if err != nil {
		return nil, fmt.Errorf("load signing keys: %w", err)
	}
	defer rows.Close()
	var keys []*signingKey
	for rows.Next() {
		var (
			k       signingKey
			der     []byte
			retired *time.Time
		)
		if err := rows.Scan(&k.kid, &der, &k.created, &retired); err != nil {
			return nil, err
		}
		parsed, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			return nil, fmt.Errorf("signing key %s: %w", k.kid, err)
		}
		priv, ok := parsed.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("signing key %s is not an RSA key", k.kid)
		}
		k.private = priv
		if retired != nil {
			k.retired = *retired
		}
		keys = append(keys, &k)
	}
	return keys, rows.Err()
}

// rotate creates a new key unless another replica just did, retires the
// others from the moment it takes over, and deletes keys that no live
// token can need any more.
func (m *keyManager) rotate(ctx context.Context, now time.Time) error {
	return pg.InTx(ctx, m.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(keysLock)); err != nil {
			return err
		}
		var newest time.Time
		err := tx.QueryRow(ctx, `SELECT created_at FROM signing_keys WHERE algorithm = $1 AND retired_at IS NULL
			ORDER BY created_at DESC LIMIT 1`, string(signingAlgorithm)).Scan(&newest)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return err
		case !m.due(newest, now):
			return nil // another replica rotated while this one waited
		}
		priv, err := rsa.GenerateKey(rand.Reader, rsaBits)
		if err != nil {
			return fmt.Errorf("generate signing key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return err
		}
		kid := id.New("key")
		if _, err := tx.Exec(ctx, `INSERT INTO signing_keys (kid, algorithm, private_key, created_at) VALUES ($1, $2, $3, $4)`,
			kid, string(signingAlgorithm), der, now); err != nil {
			return fmt.Errorf("store signing key: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE signing_keys SET retired_at = $2 WHERE retired_at IS NULL AND kid <> $1`,
			kid, now.Add(m.lead())); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM signing_keys WHERE retired_at < $1`, now.Add(-m.opts.retention)); err != nil {
			return err
		}
		m.log.InfoContext(ctx, "created signing key", "kid", kid, "signs_from", now.Add(m.lead()))
		return nil
	})
}
