package identity

import (
	"strings"
	"testing"

	"github.com/mercato/mercato/platform/config"
)

// fast are cheap parameters for tests; production uses config defaults.
var fast = config.Argon2Config{MemoryKiB: 8 * 1024, Iterations: 1, Parallelism: 1}

func TestHashAndVerify(t *testing.T) {
	h, err := NewHasher(fast)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := h.Hash("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=8192,t=1,p=1$") {
		t.Fatalf("hash %q is not a PHC argon2id string with the parameters", enc)
	}
	other, _ := h.Hash("correct horse battery")
	if other == enc {
		t.Fatal("two hashes of one password are equal: no fresh salt")
	}
	tests := []struct {
		name     string
		password string
		ok       bool
	}{
		{"right password", "correct horse battery", true},
		{"wrong password", "correct horse batterY", false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, rehash, err := h.Verify(enc, tt.password)
			if err != nil || ok != tt.ok || rehash {
				t.Fatalf("Verify = %v, %v, %v", ok, rehash, err)
			}
		})
	}
}

func TestRehashWhenParametersChange(t *testing.T) {
	old, _ := NewHasher(fast)
	enc, _ := old.Hash("a long enough password")
	stronger := fast
	stronger.Iterations = 2
	h, _ := NewHasher(stronger)
	ok, rehash, err := h.Verify(enc, "a long enough password")
	if err != nil || !ok || !rehash {
		t.Fatalf("Verify with new parameters = %v, %v, %v; want ok and rehash", ok, rehash, err)
	}
	if ok, rehash, _ := h.Verify(enc, "wrong password!!"); ok || rehash {
		t.Fatal("a wrong password asked for a rehash")
	}
}

func TestMalformedHashes(t *testing.T) {
	h, _ := NewHasher(fast)
	for _, enc := range []string{"", "plain", "$argon2i$v=19$m=8192,t=1,p=1$c2FsdA$aGFzaA", "$argon2id$v=18$m=8192,t=1,p=1$c2FsdA$aGFzaA",
		"$argon2id$v=19$m=x,t=1,p=1$c2FsdA$aGFzaA", "$argon2id$v=19$m=8192,t=1,p=1$!!$aGFzaA", "$argon2id$v=19$m=8192,t=1,p=1$c2FsdA$"} {
		if ok, _, err := h.Verify(enc, "x"); ok || err == nil {
			t.Errorf("Verify(%q) = %v, %v; want an error", enc, ok, err)
		}
	}
}
