package inventory

import "sync"

// admission bounds the reservations one process works on at once, in all
// and per variant, and refuses beyond the bounds at once: in a flash sale a
// queue only turns overload into timeouts, and a hot variant that took
// every slot would slow the others.
type admission struct {
	mu         sync.Mutex
	total      int
	perVariant map[string]int
}

func newAdmission() *admission { return &admission{perVariant: map[string]int{}} }

// enter admits a reservation of variants under the limits (0: none) and
// returns the function that ends it, or false when a limit is reached.
func (a *admission) enter(variants []string, maxTotal, maxPerVariant int) (func(), bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if maxTotal > 0 && a.total >= maxTotal {
		return nil, false
	}
	if maxPerVariant > 0 {
		for _, v := range variants {
			if a.perVariant[v] >= maxPerVariant {
				return nil, false
			}
		}
	}
	a.total++
	for _, v := range variants {
		a.perVariant[v]++
	}
	return func() { a.leave(variants) }, true
}

func (a *admission) leave(variants []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	for _, v := range variants {
		if a.perVariant[v]--; a.perVariant[v] <= 0 {
			delete(a.perVariant, v)
		}
	}
}
