package idempotency

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"
)

// One Redis string per (scope, key) holds either the lock of the request in
// flight or the completed response. Its value is a line of JSON metadata, a
// newline, then the raw response body (empty for a lock); encoding/json never
// writes a raw newline, so the first one ends the metadata.

const (
	recordVersion = 1
	stateInFlight = "in_flight"
	stateDone     = "done"
)

// meta is the JSON line at the head of every stored value.
type meta struct {
	Version     int         `json:"v"`
	State       string      `json:"state"`
	Fingerprint string      `json:"fp"`
	Token       string      `json:"token,omitempty"`
	Status      int         `json:"status,omitempty"`
	Header      http.Header `json:"header,omitempty"`
}

// lock is what a request in flight holds: its fingerprint, to tell a replay
// from a different request, and a random token, so that only the holder can
// complete, renew or release it.
type lock struct {
	Fingerprint string
	// value is the exact stored form, which the scripts compare against
	// before touching the key.
	value string
}

func newLock(fingerprint string) lock {
	// 128 random bits make a token no other request can hold.
	b, _ := json.Marshal(meta{Version: recordVersion, State: stateInFlight, Fingerprint: fingerprint, Token: rand.Text()})
	return lock{Fingerprint: fingerprint, value: string(b) + "\n"}
}

// record is a decoded value: a lock in flight or a completed response.
type record struct {
	InFlight    bool
	Fingerprint string
	Status      int
	Header      http.Header
	Body        []byte
}

func (r record) encode() []byte {
	m, _ := json.Marshal(meta{Version: recordVersion, State: stateDone, Fingerprint: r.Fingerprint, Status: r.Status, Header: r.Header})
	out := make([]byte, 0, len(m)+1+len(r.Body))
	out = append(out, m...)
	out = append(out, '\n')
	return append(out, r.Body...)
}

func decodeRecord(v []byte) (record, error) {
	head, body, ok := bytes.Cut(v, []byte{'\n'})
	if !ok {
		return record{}, errors.New("no metadata line")
	}
	var m meta
	if err := json.Unmarshal(head, &m); err != nil {
		return record{}, fmt.Errorf("metadata: %w", err)
	}
	if m.Version != recordVersion {
		return record{}, fmt.Errorf("unknown record version %d", m.Version)
	}
	switch m.State {
	case stateInFlight:
		return record{InFlight: true, Fingerprint: m.Fingerprint}, nil
	case stateDone:
		if m.Status < 100 || m.Status > 999 {
			return record{}, fmt.Errorf("bad status %d", m.Status)
		}
		return record{Fingerprint: m.Fingerprint, Status: m.Status, Header: m.Header, Body: body}, nil
	}
	return record{}, fmt.Errorf("unknown state %q", m.State)
}

// scripts are the Lua scripts that change a record atomically. Each takes the
// record key as KEYS[1]; all but acquire act only while the key still holds
// the caller's exact lock value, so a request whose lock expired and was
// taken over can neither overwrite nor free the newer request's key.
type scripts struct {
	acquire, complete, renew, release *redis.Script
}

func newScripts() scripts {
	return scripts{
		// ARGV: lock value, lock TTL in ms. Returns the current value when
		// the key is taken, or nil after taking it.
		acquire: redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false`),
		// ARGV: lock value, completed record, record TTL in ms.
		complete: redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1`),
		// ARGV: lock value, lock TTL in ms.
		renew: redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])`),
		// ARGV: lock value.
		release: redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])`),
	}
}

// recordKey is <namespace>:<service>:idem:<scope digest>:<key>. The scope is
// hashed because scopes may hold ':' (which would let "a:b"+"c" and
// "a"+"b:c" collide across callers) and may be derived from credentials or
// client addresses that do not belong in key names; the digest has a fixed
// length, so the key after it is unambiguous even when it holds ':'.
func (s *Store) recordKey(scope, key string) string {
	d := sha256.Sum256([]byte(scope))
	return s.keys.Key("idem", hex.EncodeToString(d[:16]), key)
}

// acquire takes the key for lk, or returns the value that holds it.
func (s *Store) acquire(ctx context.Context, rkey string, lk lock, ttl time.Duration) (existing []byte, acquired bool, err error) {
	v, err := s.scripts.acquire.Run(ctx, s.rdb, []string{rkey}, lk.value, ttl.Milliseconds()).Text()
	if errors.Is(err, redis.Nil) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("acquire %s: %w", rkey, err)
	}
	return []byte(v), false, nil
}

// complete replaces lk with rec; false means lk was no longer held.
func (s *Store) complete(ctx context.Context, rkey string, lk lock, rec record, ttl time.Duration) (bool, error) {
	n, err := s.scripts.complete.Run(ctx, s.rdb, []string{rkey}, lk.value, rec.encode(), ttl.Milliseconds()).Int64()
	if err != nil {
		return false, fmt.Errorf("complete %s: %w", rkey, err)
	}
	return n == 1, nil
}

// renew extends lk by ttl; false means lk was no longer held.
func (s *Store) renew(ctx context.Context, rkey string, lk lock, ttl time.Duration) (bool, error) {
	n, err := s.scripts.renew.Run(ctx, s.rdb, []string{rkey}, lk.value, ttl.Milliseconds()).Int64()
	if err != nil {
		return false, fmt.Errorf("renew %s: %w", rkey, err)
	}
	return n == 1, nil
}

// unlock frees the key if lk still holds it.
func (s *Store) unlock(ctx context.Context, rkey string, lk lock) error {
	if err := s.scripts.release.Run(ctx, s.rdb, []string{rkey}, lk.value).Err(); err != nil {
		return fmt.Errorf("release %s: %w", rkey, err)
	}
	return nil
}
