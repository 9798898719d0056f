package loadtest

import (
	"maps"
	"reflect"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		out := make([]time.Duration, len(n))
		for i, v := range n {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	oneToN := func(n int) []time.Duration {
		out := make([]time.Duration, n)
		for i := range out {
			out[i] = time.Duration(i+1) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample is every percentile", ms(7), 99, 7 * time.Millisecond},
		{"p0 is the minimum", ms(1, 2, 3), 0, time.Millisecond},
		{"p100 is the maximum", ms(1, 2, 3), 100, 3 * time.Millisecond},
		{"median of an even count is the lower middle", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"median of an odd count is the middle", ms(1, 2, 3, 4, 5), 50, 3 * time.Millisecond},
		{"p50 of 1..100", oneToN(100), 50, 50 * time.Millisecond},
		{"p95 of 1..100", oneToN(100), 95, 95 * time.Millisecond},
		{"p99 of 1..100", oneToN(100), 99, 99 * time.Millisecond},
		{"p99 of 1..1000", oneToN(1000), 99, 990 * time.Millisecond},
		{"p99.9 of 1..1000 does not round up", oneToN(1000), 99.9, 999 * time.Millisecond},
		{"p99 of 1..10 rounds the rank up", oneToN(10), 99, 10 * time.Millisecond},
		{"p95 of 1..10 rounds the rank up", oneToN(10), 95, 10 * time.Millisecond},
		{"p50 of 1..10", oneToN(10), 50, 5 * time.Millisecond},
		{"one outlier in a hundred is p100 only", append(ms(make([]int, 99)...), time.Second), 99, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.q); got != tt.want {
				t.Errorf("percentile(%d samples, %v) = %v, want %v", len(tt.sorted), tt.q, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	a := newTally()
	for i := 1; i <= 50; i++ {
		a.success(time.Duration(2*i) * time.Millisecond) // 2, 4, …, 100 ms
	}
	a.badStatus(500)
	a.badStatus(500)
	a.failure(KindTimeout)
	b := newTally()
	for i := 1; i <= 50; i++ {
		b.success(time.Duration(2*i-1) * time.Millisecond) // 1, 3, …, 99 ms
	}
	b.badStatus(503)
	b.failure(KindTimeout)
	b.failure(KindClosed)
	empty := newTally()

	got := summarize("x/y", 3, 2*time.Second, []*tally{a, b, empty})

	want := Result{
		Scenario: "x/y", RPS: 50, P50ms: 50, P95ms: 95, P99ms: 99,
		Errors: 6, Requests: 106, DurationS: 2, Concurrency: 3,
		ErrorKinds: map[string]int64{"status_500": 2, "status_503": 1, "timeout": 2, "closed": 1},
	}
	if !maps.Equal(got.ErrorKinds, want.ErrorKinds) {
		t.Errorf("ErrorKinds = %v, want %v", got.ErrorKinds, want.ErrorKinds)
	}
	got.ErrorKinds, want.ErrorKinds = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("summarize = %+v\nwant        %+v", got, want)
	}
}

func TestSummarizeNothingMeasured(t *testing.T) {
	got := summarize("x", 1, 0, []*tally{newTally()})
	if got.RPS != 0 || got.P99ms != 0 || got.Requests != 0 || got.ErrorKinds == nil {
		t.Errorf("summarize of nothing = %+v, want zeros and an empty (non-nil) ErrorKinds", got)
	}
}
