// Package cache is Mercato's read-through cache: process memory in front of
// Redis in front of the source of truth, kept correct by record versions so
// that an invalidation can never be undone by a reader that was slower than it.
//
// # Versions and tombstones
//
// Every entry carries the version of the record it was read from, a number
// that grows with every change (a row version). Writes to either tier follow
// one order: a value may replace anything of the same or an older version; an
// invalidation at version v replaces only entries older than v, with a
// tombstone that remembers v and holds no value. In Redis both rules are Lua
// scripts run atomically against a hash {v: version, d: encoded value}; in
// memory they are an otter Compute under the key's bucket lock. So a reader
// that read version 1 before the change to version 2 and fills after its
// invalidation is refused in both tiers: the stale-fill race.
//
// # Where memory cannot remember
//
// Tombstones in memory count against LocalSize and expire after LocalTTL, and
// PurgeLocal drops them all. To stay safe when a tombstone is gone, each
// cache counts invalidations in a fixed array of generations shared by keys
// through a hash. A fetch notes its key's generation before it reads; when it
// fills memory and finds no entry, it fills only if the generation has not
// moved. Invalidate writes Redis first and moves the generation before it
// writes the memory tombstone, so any fetch either began after the Redis
// tombstone existed or sees the moved generation or the tombstone.
//
// # Shared fetches
//
// Concurrent misses of one key share one fetch (golang.org/x/sync/singleflight):
// one Redis read and at most one load. A caller that joins a fetch which began
// before an invalidation the caller has already seen complete waits for a
// fresh fetch instead, so a read that begins after Invalidate returned never
// returns the invalidated version.
//
// # When Redis fails
//
// Every Redis call has a short deadline. A failed read or fill is counted,
// logged at most once per ten seconds, and the read falls through to the
// loader; memory still guards itself. After repeated failures a breaker makes
// reads and fills skip Redis for a second at a time. Invalidate always tries
// Redis and returns its error, after invalidating memory, so that the caller
// (an event consumer) retries.
package cache
