package amqpbroker

import (
	"testing"
	"time"
)

func TestTierOf(t *testing.T) {
	cases := []struct {
		delay    time.Duration
		ms, tier int64
	}{
		{time.Millisecond, 1, 1},
		{1500 * time.Microsecond, 2, 2},
		{200 * time.Millisecond, 200, 256},
		{256 * time.Millisecond, 256, 256},
		{257 * time.Millisecond, 257, 512},
		{30 * time.Second, 30000, 32768},
	}
	for _, c := range cases {
		t.Run(c.delay.String(), func(t *testing.T) {
			ms, tier := tierOf(c.delay)
			if ms != c.ms || tier != c.tier {
				t.Errorf("tierOf(%v) = %d, %d; want %d, %d", c.delay, ms, tier, c.ms, c.tier)
			}
		})
	}
}

func TestHeaderInt(t *testing.T) {
	cases := []struct {
		name string
		v    any
		want int
	}{
		{"missing", nil, 0},
		{"int32", int32(3), 3},
		{"int64", int64(4), 4},
		{"int16", int16(5), 5},
		{"string", "6", 6},
		{"garbage", "x", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := headerInt(c.v); got != c.want {
				t.Errorf("headerInt(%#v) = %d, want %d", c.v, got, c.want)
			}
		})
	}
}
