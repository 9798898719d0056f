package money

import "testing"

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		m    Money
		ok   bool
	}{
		{"euro", Money{1999, "EUR"}, true},
		{"zero", Money{0, "JPY"}, true},
		{"lowercase code", Money{1, "eur"}, false},
		{"unknown code", Money{1, "XXY"}, false},
		{"negative", Money{-1, "EUR"}, false},
		{"too large", Money{MaxAmount + 1, "EUR"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.m.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate(%v) = %v", tt.m, err)
			}
		})
	}
}

func TestString(t *testing.T) {
	for m, want := range map[Money]string{
		{1999, "EUR"}: "19.99 EUR",
		{5, "EUR"}:    "0.05 EUR",
		{1500, "JPY"}: "1500 JPY",
		{1234, "KWD"}: "1.234 KWD",
	} {
		if got := m.String(); got != want {
			t.Errorf("%#v.String() = %q, want %q", m, got, want)
		}
	}
}
