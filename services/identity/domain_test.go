package identity

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/mercato/mercato/platform/id"
)

func plainHash(p string) (string, error) { return "hash:" + p, nil }

// fieldsOf returns the fields a validation error names, or fails.
func fieldsOf(t *testing.T, err error) []string {
	t.Helper()
	var v *ValidationError
	if !errors.As(err, &v) {
		t.Fatalf("error %v is not a validation error", err)
	}
	var out []string
	for _, f := range v.Fields {
		out = append(out, f.Field)
	}
	return out
}

func TestNormalizeEmail(t *testing.T) {
	tests := []struct{ in, want string }{
		{"ada@example.com", "ada@example.com"},
		{"  Ada@Example.COM\t", "ada@example.com"},
		{"ADA.LOVELACE+shop@EXAMPLE.org", "ada.lovelace+shop@example.org"},
	}
	for _, tt := range tests {
		if got := NormalizeEmail(tt.in); got != tt.want {
			t.Errorf("NormalizeEmail(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNewCustomerValidates(t *testing.T) {
	valid := Registration{Email: "ada@example.com", Password: "correct horse", Name: "Ada"}
	tests := []struct {
		name   string
		change func(*Registration)
		fields []string
	}{
		{"valid", func(*Registration) {}, nil},
		{"email spelled differently", func(r *Registration) { r.Email = " Ada@Example.com " }, nil},
		{"missing email", func(r *Registration) { r.Email = "" }, []string{"email"}},
		{"no at sign", func(r *Registration) { r.Email = "ada.example.com" }, []string{"email"}},
		{"display name", func(r *Registration) { r.Email = "Ada <ada@example.com>" }, []string{"email"}},
		{"angle brackets", func(r *Registration) { r.Email = "<ada@example.com>" }, []string{"email"}},
		{"two addresses", func(r *Registration) { r.Email = "ada@example.com, bob@example.com" }, []string{"email"}},
		{"inner space", func(r *Registration) { r.Email = "ada lovelace@example.com" }, []string{"email"}},
		{"255 characters", func(r *Registration) { r.Email = strings.Repeat("a", 243) + "@example.com" }, []string{"email"}},
		{"254 characters", func(r *Registration) { r.Email = strings.Repeat("a", 242) + "@example.com" }, nil},
		{"nine characters", func(r *Registration) { r.Password = "123456789" }, []string{"password"}},
		{"ten characters", func(r *Registration) { r.Password = "1234567890" }, nil},
		{"ten runes, more bytes", func(r *Registration) { r.Password = "äöüßéèêëïî" }, nil},
		{"spaces count", func(r *Registration) { r.Password = "    12345 " }, nil},
		{"1025 characters", func(r *Registration) { r.Password = strings.Repeat("x", 1025) }, []string{"password"}},
		{"1024 characters", func(r *Registration) { r.Password = strings.Repeat("x", 1024) }, nil},
		{"not UTF-8", func(r *Registration) { r.Password = "\xff\xfe1234567890" }, []string{"password"}},
		{"blank name", func(r *Registration) { r.Name = "   " }, []string{"name"}},
		{"long name", func(r *Registration) { r.Name = strings.Repeat("n", 201) }, []string{"name"}},
		{"control character", func(r *Registration) { r.Name = "Ada\x00" }, []string{"name"}},
		{"everything wrong", func(r *Registration) { *r = Registration{} }, []string{"email", "password", "name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := valid
			tt.change(&in)
			hashed := false
			c, err := NewCustomer(in, time.Now(), func(p string) (string, error) { hashed = true; return plainHash(p) })
			if tt.fields == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if c.Email != NormalizeEmail(in.Email) || !id.Valid("cust", c.ID) || c.passwordHash != "hash:"+in.Password {
					t.Fatalf("customer = %+v", c)
				}
				return
			}
			if got := fieldsOf(t, err); !slices.Equal(got, tt.fields) {
				t.Fatalf("fields %v, want %v", got, tt.fields)
			}
			if hashed {
				t.Fatal("an invalid registration was hashed")
			}
		})
	}
}

func TestProfilePatch(t *testing.T) {
	c := &Customer{Name: "Ada"}
	if err := c.Apply(ProfilePatch{}); err != nil || c.Name != "Ada" {
		t.Fatalf("empty patch: %v, name %q", err, c.Name)
	}
	name := "  Ada King  "
	if err := c.Apply(ProfilePatch{Name: &name}); err != nil || c.Name != "Ada King" {
		t.Fatalf("patch: %v, name %q", err, c.Name)
	}
	empty := ""
	if got := fieldsOf(t, c.Apply(ProfilePatch{Name: &empty})); !slices.Equal(got, []string{"name"}) || c.Name != "Ada King" {
		t.Fatalf("empty name: fields %v, name %q", got, c.Name)
	}
}

func TestNewAddressValidates(t *testing.T) {
	valid := AddressInput{Name: "Ada Lovelace", Line1: "12 St James's Square", City: "London", PostalCode: "SW1Y 4JH", Country: "GB"}
	tests := []struct {
		name   string
		change func(*AddressInput)
		fields []string
	}{
		{"valid", func(*AddressInput) {}, nil},
		{"all optional fields", func(a *AddressInput) { a.Line2, a.Region, a.Phone = "Flat 2", "Westminster", "+44 20 7946 0958" }, nil},
		{"lower-case country", func(a *AddressInput) { a.Country = "de" }, nil},
		{"missing required", func(a *AddressInput) { *a = AddressInput{} }, []string{"name", "line1", "city", "postal_code", "country"}},
		{"unknown country", func(a *AddressInput) { a.Country = "XX" }, []string{"country"}},
		{"reserved code", func(a *AddressInput) { a.Country = "UK" }, []string{"country"}},
		{"alpha-3 code", func(a *AddressInput) { a.Country = "GBR" }, []string{"country"}},
		{"bad postal code", func(a *AddressInput) { a.PostalCode = "SW1Y;4JH" }, []string{"postal_code"}},
		{"long postal code", func(a *AddressInput) { a.PostalCode = strings.Repeat("1", 21) }, []string{"postal_code"}},
		{"bad phone", func(a *AddressInput) { a.Phone = "call me" }, []string{"phone"}},
		{"long line", func(a *AddressInput) { a.Line2 = strings.Repeat("x", 201) }, []string{"line2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := valid
			tt.change(&in)
			a, err := NewAddress(in, time.Now())
			if tt.fields == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if !id.Valid("addr", a.ID) || a.Country != strings.ToUpper(in.Country) {
					t.Fatalf("address = %+v", a)
				}
				return
			}
			if got := fieldsOf(t, err); !slices.Equal(got, tt.fields) {
				t.Fatalf("fields %v, want %v", got, tt.fields)
			}
		})
	}
}

func TestIsCountry(t *testing.T) {
	for _, c := range []string{"DE", "US", "GB", "JP", "BR", "ZA", "AX", "SS"} {
		if !isCountry(c) {
			t.Errorf("%s refused", c)
		}
	}
	for _, c := range []string{"", "de", "UK", "EU", "XK", "ZZ", "D", "DEU"} {
		if isCountry(c) {
			t.Errorf("%q accepted", c)
		}
	}
}

func TestGrantedScopes(t *testing.T) {
	customer := &Customer{}
	admin := &Customer{IsAdmin: true}
	tests := []struct {
		name      string
		requested []string
		c         *Customer
		want      []string
	}{
		{"customer asking for admin", restScopes(), customer, []string{"openid", "profile", "email"}},
		{"admin", restScopes(), admin, []string{"openid", "profile", "email", "admin"}},
		{"admin not asking", []string{"openid"}, admin, []string{"openid"}},
		{"duplicates", []string{"openid", "openid", "email"}, customer, []string{"openid", "email"}},
	}
	for _, tt := range tests {
		if got := grantedScopes(tt.requested, tt.c); !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestSecretsNameTheirSession(t *testing.T) {
	sid := id.New("sess")
	s, err := newSecret(sid)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := sessionOf(s); !ok || got != sid {
		t.Fatalf("sessionOf(%q) = %q, %v", s, got, ok)
	}
	other, _ := newSecret(sid)
	if other == s {
		t.Fatal("two secrets are equal")
	}
	for _, bad := range []string{"", sid, sid + ".", sid + ".short", "sess_x." + strings.Repeat("a", 43), sid + "." + strings.Repeat("*", 43), strings.Repeat("a", 43)} {
		if _, ok := sessionOf(bad); ok {
			t.Errorf("sessionOf(%q) accepted", bad)
		}
	}
	jti, err := accessTokenID(sid)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := sessionOfToken(jti); !ok || got != sid {
		t.Fatalf("sessionOfToken(%q) = %q, %v", jti, got, ok)
	}
}

func TestAuthRequestForcesLogin(t *testing.T) {
	now := time.Now()
	u := func(n uint) *uint { return &n }
	tests := []struct {
		name     string
		a        authRequest
		authTime time.Time
		want     bool
	}{
		{"plain request", authRequest{}, now.Add(-time.Hour), false},
		{"prompt=login", authRequest{Prompt: []string{oidc.PromptLogin}}, now, true},
		{"prompt=select_account", authRequest{Prompt: []string{oidc.PromptSelectAccount}}, now, true},
		{"prompt=consent", authRequest{Prompt: []string{oidc.PromptConsent}}, now, false},
		{"max_age=0", authRequest{MaxAge: u(0)}, now, true},
		{"within max_age", authRequest{MaxAge: u(600)}, now.Add(-5 * time.Minute), false},
		{"older than max_age", authRequest{MaxAge: u(600)}, now.Add(-11 * time.Minute), true},
	}
	for _, tt := range tests {
		if got := tt.a.forcesLogin(tt.authTime, now); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
