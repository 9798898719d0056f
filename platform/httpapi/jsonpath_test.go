package httpapi

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestPathAtFindsTheValueATypeErrorNames(t *testing.T) {
	type leaf struct {
		N int `json:"n"`
	}
	tests := []struct {
		name, body string
		into       any
		want       string
	}{
		{"top level", `{"n":"x"}`, &leaf{}, "n"},
		{"array of objects", `{"items":[{"n":1},{"n":2},{"n":"x"}]}`, &struct{ Items []leaf }{}, "items[2].n"},
		{"array of arrays", `{"grid":[[1,2],[3,"x"]]}`, &struct{ Grid [][]int }{}, "grid[1][1]"},
		{"after nested containers", `{"a":{"b":[1,{"c":2}]},"n":"x"}`, &struct {
			A any
			N int `json:"n"`
		}{}, "n"},
		{"object where a number belongs", `{"n":{"deep":[1]}}`, &leaf{}, "n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := json.Unmarshal([]byte(tt.body), tt.into)
			var typeErr *json.UnmarshalTypeError
			if !errors.As(err, &typeErr) {
				t.Fatalf("no type error: %v", err)
			}
			if got := pathAt([]byte(tt.body), typeErr.Offset); got != tt.want {
				t.Fatalf("pathAt = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestKeyPath(t *testing.T) {
	tests := []struct {
		name, body, key, want string
	}{
		{"top level", `{"colour":1}`, "colour", "colour"},
		{"nested in an array", `{"variants":[{"sku":"a"},{"colour":"red"}]}`, "colour", "variants[1].colour"},
		{"twice: the bare name, not a guess", `{"a":{"colour":1},"b":{"colour":2}}`, "colour", "colour"},
		{"absent", `{"a":1}`, "colour", "colour"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := keyPath([]byte(tt.body), tt.key); got != tt.want {
				t.Fatalf("keyPath = %q, want %q", got, tt.want)
			}
		})
	}
}
