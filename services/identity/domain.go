package identity

import (
	"errors"
	"fmt"
	"net/mail"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mercato/mercato/platform/id"
	"github.com/mercato/mercato/platform/problem"
)

// Limits on what an account and an address may hold.
const (
	maxEmail       = 254 // RFC 5321's limit on a forward path
	minPassword    = 10
	maxPassword    = 1024
	maxName        = 200
	maxAddressLine = 200
	maxCity        = 100
	maxRegion      = 100
	maxPostalCode  = 20
	maxPhone       = 32
	// maxAddresses bounds the saved addresses of one customer.
	maxAddresses = 20
)

// Domain errors; the HTTP and RPC edges translate them.
var (
	// ErrNotFound is a resource that does not exist or that the caller may
	// not see.
	ErrNotFound = errors.New("not found")
	// ErrEmailTaken is a registration with an email another account has.
	ErrEmailTaken = errors.New("email taken")
	// ErrInvalidCredentials is a login with an unknown email or a wrong
	// password; the two are deliberately one error.
	ErrInvalidCredentials = errors.New("invalid credentials")
	// ErrAddressLimit is a customer who already saved maxAddresses.
	ErrAddressLimit = errors.New("address limit reached")
	// ErrUnauthenticated is a missing, malformed, expired or revoked access
	// token.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrInvalidRefreshToken is a refresh token that is unknown, expired,
	// belongs to an ended session or was already used.
	ErrInvalidRefreshToken = errors.New("invalid refresh token")
)

// ValidationError lists every invalid field of an input.
type ValidationError struct{ Fields []problem.FieldError }

// Error lists the fields and what is wrong with each.
func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + " " + f.Message
	}
	return "invalid: " + strings.Join(parts, "; ")
}

// RateLimitedError is a login refused by throttling; RetryAfter says when
// the next attempt may succeed.
type RateLimitedError struct {
	RetryAfter time.Duration
}

// Error says when to retry.
func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("too many login attempts; retry after %s", e.RetryAfter)
}

// fieldErrors collects validation failures.
type fieldErrors []problem.FieldError

func (f *fieldErrors) add(field, format string, args ...any) {
	*f = append(*f, problem.FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (f fieldErrors) err() error {
	if len(f) == 0 {
		return nil
	}
	return &ValidationError{Fields: f}
}

// Customer is an account: who may sign in and what they are called.
type Customer struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	// IsAdmin grants the admin scope; it is not part of the public body.
	IsAdmin bool `json:"-"`
	// passwordHash is the argon2id PHC string; it never leaves the service.
	passwordHash string
	// version is updated_at in microseconds: it grows with every change and
	// orders cached profiles against invalidations.
	version int64
}

// Registration is what a client sends to create an account.
type Registration struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Name     string `json:"name"`
}

// NormalizeEmail is the form an email is stored and compared in: trimmed and
// lower-cased, so that one mailbox is one account whatever its spelling.
func NormalizeEmail(email string) string {
	return strings.ToLower(strings.TrimSpace(email))
}

// validateEmail checks an already normalised email: a bare address as
// net/mail reads it (no display name, no angle brackets) within 254 bytes.
func validateEmail(f *fieldErrors, field, email string) {
	switch {
	case email == "":
		f.add(field, "is required")
	case len(email) > maxEmail:
		f.add(field, "must be at most %d characters", maxEmail)
	default:
		addr, err := mail.ParseAddress(email)
		if err != nil || addr.Name != "" || addr.Address != email || strings.ContainsAny(email, " \t\r\n<>") {
			f.add(field, "is not a valid email address")
		}
	}
}

// validatePassword applies the password rules. Passwords are never trimmed:
// every character the customer typed counts.
func validatePassword(f *fieldErrors, field, password string) {
	n := utf8.RuneCountInString(password)
	switch {
	case !utf8.ValidString(password):
		f.add(field, "must be valid UTF-8 text")
	case n < minPassword:
		f.add(field, "must be at least %d characters", minPassword)
	case n > maxPassword:
		f.add(field, "must be at most %d characters", maxPassword)
	}
}

// cleanText trims s and checks that it is printable text of min..max
// characters; it returns the trimmed text.
func cleanText(f *fieldErrors, field, s string, min, max int) string {
	s = strings.TrimSpace(s)
	n := utf8.RuneCountInString(s)
	switch {
	case !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0:
		f.add(field, "must be printable text")
	case n < min && min == 1:
		f.add(field, "is required")
	case n < min:
		f.add(field, "must be at least %d characters", min)
	case n > max:
		f.add(field, "must be at most %d characters", max)
	}
	return s
}

// NewCustomer validates a registration and builds a customer with a fresh
// id; hash turns the password into its stored form once it is known to be
// acceptable, so an invalid request costs no hashing.
func NewCustomer(in Registration, now time.Time, hash func(string) (string, error)) (*Customer, error) {
	var f fieldErrors
	email := NormalizeEmail(in.Email)
	validateEmail(&f, "email", email)
	validatePassword(&f, "password", in.Password)
	name := cleanText(&f, "name", in.Name, 1, maxName)
	if err := f.err(); err != nil {
		return nil, err
	}
	h, err := hash(in.Password)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	return &Customer{ID: id.New("cust"), Email: email, Name: name, CreatedAt: now.UTC().Truncate(time.Microsecond), passwordHash: h}, nil
}

// ProfilePatch changes the fields it names.
type ProfilePatch struct {
	Name *string `json:"name"`
}

// Apply validates p and changes c accordingly.
func (c *Customer) Apply(p ProfilePatch) error {
	var f fieldErrors
	if p.Name != nil {
		name := cleanText(&f, "name", *p.Name, 1, maxName)
		if err := f.err(); err != nil {
			return err
		}
		c.Name = name
	}
	return nil
}

// Address is a saved postal address of a customer.
type Address struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Line1      string    `json:"line1"`
	Line2      string    `json:"line2,omitempty"`
	City       string    `json:"city"`
	Region     string    `json:"region,omitempty"`
	PostalCode string    `json:"postal_code"`
	Country    string    `json:"country"`
	Phone      string    `json:"phone,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// AddressInput is what a client sends to save an address.
type AddressInput struct {
	Name       string `json:"name"`
	Line1      string `json:"line1"`
	Line2      string `json:"line2"`
	City       string `json:"city"`
	Region     string `json:"region"`
	PostalCode string `json:"postal_code"`
	Country    string `json:"country"`
	Phone      string `json:"phone"`
}

var (
	postalCodePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 -]*$`)
	phonePattern      = regexp.MustCompile(`^\+?[0-9][0-9 ().-]*$`)
)

// NewAddress validates in and builds an address with a fresh id.
func NewAddress(in AddressInput, now time.Time) (*Address, error) {
	var f fieldErrors
	a := &Address{
		ID:        id.New("addr"),
		Name:      cleanText(&f, "name", in.Name, 1, maxName),
		Line1:     cleanText(&f, "line1", in.Line1, 1, maxAddressLine),
		Line2:     cleanText(&f, "line2", in.Line2, 0, maxAddressLine),
		City:      cleanText(&f, "city", in.City, 1, maxCity),
		Region:    cleanText(&f, "region", in.Region, 0, maxRegion),
		CreatedAt: now.UTC().Truncate(time.Microsecond),
	}
	if a.PostalCode = cleanText(&f, "postal_code", in.PostalCode, 1, maxPostalCode); a.PostalCode != "" && !postalCodePattern.MatchString(a.PostalCode) {
		f.add("postal_code", "may hold only letters, digits, spaces and hyphens")
	}
	a.Country = strings.ToUpper(strings.TrimSpace(in.Country))
	switch {
	case a.Country == "":
		f.add("country", "is required")
	case !isCountry(a.Country):
		f.add("country", "must be an ISO 3166-1 alpha-2 country code such as DE or US")
	}
	if a.Phone = cleanText(&f, "phone", in.Phone, 0, maxPhone); a.Phone != "" && !phonePattern.MatchString(a.Phone) {
		f.add("phone", "may hold only digits, spaces, parentheses, dots, hyphens and a leading +")
	}
	if err := f.err(); err != nil {
		return nil, err
	}
	return a, nil
}
