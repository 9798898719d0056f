package identity

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"

	"github.com/mercato/mercato/platform/config"
)

// keyLength is the length of the derived key; saltLength of the salt.
const (
	keyLength  = 32
	saltLength = 16
)

// Hasher hashes passwords with argon2id into PHC strings
// ($argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>), so each stored hash
// carries the parameters it was made with.
type Hasher struct {
	params config.Argon2Config
	// dummy is a hash of a random password made with the current
	// parameters; verifying against it costs what a real check costs, so an
	// unknown email takes as long as a wrong password.
	dummy string
}

// NewHasher returns a hasher using params.
func NewHasher(params config.Argon2Config) (*Hasher, error) {
	h := &Hasher{params: params}
	var pw [16]byte
	_, _ = rand.Read(pw[:])
	dummy, err := h.Hash(string(pw[:]))
	if err != nil {
		return nil, err
	}
	h.dummy = dummy
	return h, nil
}

// Hash returns the PHC string of password with a fresh salt.
func (h *Hasher) Hash(password string) (string, error) {
	salt := make([]byte, saltLength)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	p := h.params
	key := argon2.IDKey([]byte(password), salt, p.Iterations, p.MemoryKiB, p.Parallelism, keyLength)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.MemoryKiB, p.Iterations, p.Parallelism,
		enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// errMalformedHash is a stored hash this hasher cannot read.
var errMalformedHash = errors.New("malformed password hash")

// Verify reports whether password matches the PHC string encoded, and
// whether the hash should be replaced because it was made with other
// parameters than the current ones.
func (h *Hasher) Verify(encoded, password string) (ok, rehash bool, err error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, false, errMalformedHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, false, errMalformedHash
	}
	var p config.Argon2Config
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Iterations, &p.Parallelism); err != nil {
		return false, false, errMalformedHash
	}
	enc := base64.RawStdEncoding
	salt, err := enc.DecodeString(parts[4])
	if err != nil {
		return false, false, errMalformedHash
	}
	want, err := enc.DecodeString(parts[5])
	if err != nil || len(want) == 0 {
		return false, false, errMalformedHash
	}
	got := argon2.IDKey([]byte(password), salt, p.Iterations, p.MemoryKiB, p.Parallelism, uint32(len(want)))
	ok = subtle.ConstantTimeCompare(got, want) == 1
	return ok, ok && p != h.params, nil
}

// Waste spends the time of one verification without a real hash, for logins
// with an unknown email.
func (h *Hasher) Waste(password string) {
	_, _, _ = h.Verify(h.dummy, password)
}
