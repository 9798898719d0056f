package natsbroker

import (
	"strings"
	"testing"
)

func TestSupportsMultipleFilters(t *testing.T) {
	cases := []struct {
		version string
		want    bool
	}{
		{"2.9.10", false},
		{"2.10.0", true},
		{"2.15.2", true},
		{"v2.11.1", true},
		{"3.0.0", true},
		{"2.10.0-beta.1", true},
		{"", false},
		{"garbage", false},
	}
	for _, c := range cases {
		t.Run(c.version, func(t *testing.T) {
			if got := supportsMultipleFilters(c.version); got != c.want {
				t.Errorf("supportsMultipleFilters(%q) = %v, want %v", c.version, got, c.want)
			}
		})
	}
}

func TestPerTopicNameIsStableAndDistinct(t *testing.T) {
	a := perTopicName("inventory", "mercato.order.placed")
	if a != perTopicName("inventory", "mercato.order.placed") {
		t.Error("per-topic name changes between calls")
	}
	if a == perTopicName("inventory", "mercato.order.cancelled") {
		t.Error("two topics share a per-topic name")
	}
	// JetStream consumer names must not contain these.
	if strings.ContainsAny(a, ".*> /\\") {
		t.Errorf("per-topic name %q is not a valid consumer name", a)
	}
}
