package loadtest

import (
	"math"
	"slices"
	"strconv"
	"time"
)

// Result is the outcome of one case, printed as one JSON line.
type Result struct {
	// Scenario names the case, such as "browse/product_detail".
	Scenario string `json:"scenario"`
	// RPS is successful requests per second of the measured window.
	RPS float64 `json:"rps"`
	// P50ms, P95ms and P99ms are latency percentiles of the successful
	// requests, in milliseconds.
	P50ms float64 `json:"p50_ms"`
	P95ms float64 `json:"p95_ms"`
	P99ms float64 `json:"p99_ms"`
	// Errors counts failed requests: transport failures, timeouts and
	// unexpected statuses.
	Errors int64 `json:"errors"`
	// Requests counts every request of the window, failed ones included,
	// except the successes of requests marked Unmeasured.
	Requests int64 `json:"requests"`
	// DurationS is the length of the measured window in seconds.
	DurationS float64 `json:"duration_s"`
	// Concurrency is the number of closed-loop workers.
	Concurrency int `json:"concurrency"`
	// ErrorKinds splits Errors by kind: "status_NNN" or one of the Kind
	// constants; for the flash sale's RPCs, "timeout" or the Connect
	// code's name.
	ErrorKinds map[string]int64 `json:"error_kinds"`
	// FlashSaleResult holds the flash-sale scenario's counts, printed
	// among the fields above; nil, and absent from the line, for the
	// other scenarios.
	*FlashSaleResult
}

// tally is what one worker counted in the measured window; each worker owns
// one, so counting needs no lock.
type tally struct {
	latencies []time.Duration // of successful requests
	requests  int64
	errors    int64
	kinds     map[string]int64 // failures without a status, by kind
	statuses  map[int]int64    // failures with an unexpected status
}

func newTally() *tally {
	return &tally{kinds: map[string]int64{}, statuses: map[int]int64{}}
}

func (t *tally) success(d time.Duration) {
	t.requests++
	t.latencies = append(t.latencies, d)
}

func (t *tally) failure(kind string) {
	t.requests++
	t.errors++
	t.kinds[kind]++
}

// badStatus counts an unexpected status; the kind's name is made when the
// tallies merge, so a stream of 503s allocates nothing.
func (t *tally) badStatus(status int) {
	t.requests++
	t.errors++
	t.statuses[status]++
}

// summarize merges the workers' tallies into the result of a window.
func summarize(name string, concurrency int, window time.Duration, tallies []*tally) Result {
	r := Result{
		Scenario:    name,
		Concurrency: concurrency,
		DurationS:   round(window.Seconds(), 3),
		ErrorKinds:  map[string]int64{},
	}
	n := 0
	for _, t := range tallies {
		n += len(t.latencies)
	}
	all := make([]time.Duration, 0, n)
	for _, t := range tallies {
		all = append(all, t.latencies...)
		r.Requests += t.requests
		r.Errors += t.errors
		for k, v := range t.kinds {
			r.ErrorKinds[k] += v
		}
		for s, v := range t.statuses {
			r.ErrorKinds["status_"+strconv.Itoa(s)] += v
		}
	}
	slices.Sort(all)
	if window > 0 {
		r.RPS = round(float64(len(all))/window.Seconds(), 1)
	}
	r.P50ms = millis(percentile(all, 50))
	r.P95ms = millis(percentile(all, 95))
	r.P99ms = millis(percentile(all, 99))
	return r
}

// percentile returns the nearest-rank q-th percentile of sorted samples:
// the smallest sample that at least q% of the samples do not exceed.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// The epsilon keeps q*n/100 that is an integer in exact arithmetic
	// (99.9% of 1000) from rounding up to the next rank.
	rank := int(math.Ceil(q*float64(len(sorted))/100 - 1e-9))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func millis(d time.Duration) float64 {
	return round(float64(d)/float64(time.Millisecond), 3)
}

func round(x float64, decimals int) float64 {
	p := math.Pow10(decimals)
	return math.Round(x*p) / p
}
