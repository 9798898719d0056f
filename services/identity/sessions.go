package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/mercato/mercato/platform/id"
	"github.com/mercato/mercato/platform/redisx"
)

// Bounds of the session store.
const (
	// maxSessionsPerCustomer bounds the live sessions of one account; a
	// login beyond it ends the oldest, so a script that logs in forever
	// cannot grow one customer's index without limit.
	maxSessionsPerCustomer = 100
	// maxUsedRefreshTokens bounds the used-token markers of one session
	// (about 80 bytes each). A session refreshing every 15 minutes for 30
	// days makes 2,880; a token older than the last 1,000 rotations is
	// refused as unknown instead of revoking the session.
	maxUsedRefreshTokens = 1000
	// maxRevocationsPerPage bounds one ListRevokedSessions answer; a
	// verifier gets the rest at its next poll.
	maxRevocationsPerPage = 5000
	// maxUserAgent bounds the user agent kept with a session.
	maxUserAgent = 512
	// secretBytes is the entropy of refresh tokens and session cookies.
	secretBytes = 32
)

// errRefreshReplayed is a used refresh token presented again: the session
// it belonged to has been revoked.
var errRefreshReplayed = fmt.Errorf("%w: replayed", ErrInvalidRefreshToken)

// Session is one sign-in of a customer on one device: every token minted
// from it carries its id as sid, and revoking it stops them all.
type Session struct {
	ID         string
	CustomerID string
	ClientID   string
	CreatedAt  time.Time
	LastSeen   time.Time
	// AuthTime is when the customer last typed the password for this
	// session (auth_time in ID tokens; max_age compares against it).
	AuthTime time.Time
	// ExpiresAt is the absolute end of the session, whatever its use.
	ExpiresAt time.Time
	UserAgent string
	IP        string
	// cookieHash is the SHA-256 of the browser cookie that names the
	// session, for sessions made by the login page.
	cookieHash string
}

// refreshGrant is what an active refresh token allows: new tokens for one
// client and scopes, in one session.
type refreshGrant struct {
	sessionID string
	clientID  string
	scopes    []string
}

// encode is the form a grant is stored in beside the token's hash.
func (g refreshGrant) encode() string {
	return g.clientID + " " + strings.Join(g.scopes, " ")
}

func decodeGrant(sessionID, v string) refreshGrant {
	fields := strings.Fields(v)
	g := refreshGrant{sessionID: sessionID}
	if len(fields) > 0 {
		g.clientID, g.scopes = fields[0], fields[1:]
	}
	return g
}

// revocation is one revoked session, as ListRevokedSessions reports it.
type revocation struct {
	sessionID string
	revokedAt time.Time
	// expiresAt is when the session's last access token expires; after it
	// the revocation no longer matters.
	expiresAt time.Time
}

// sessionOptions are the lifetimes sessions are kept with.
type sessionOptions struct {
	// ttl is the absolute life of a session.
	ttl time.Duration
	// idle ends a session that has not been used for this long.
	idle time.Duration
	// tokenLife is how long an access token minted just before a
	// revocation stays valid at a verifier (access token TTL plus leeway);
	// a revocation is kept that long.
	tokenLife time.Duration
	now       func() time.Time
}

// sessionStore keeps sessions in Redis, sized for a million customers: one
// hash per session (with a TTL of the nearer of its absolute and idle
// expiry, extended by use), a hash of its active refresh tokens and a
// sorted set of used ones beside it (same TTL, same cluster slot), and one
// sorted set per customer indexing its sessions, cleaned lazily. Refresh
// tokens are stored only as SHA-256 hashes. Revocations go to one sorted
// set scored by a strictly increasing Redis-clock timestamp, so that
// verifiers can poll it with a cursor and never miss one.
type sessionStore struct {
	rdb  *redis.Client
	keys redisx.Keys
	opts sessionOptions
	log  *slog.Logger
	// replays counts used refresh tokens presented again (a sign of stolen
	// tokens); nil in tests that do not look.
	replays prometheus.Counter

	addRefresh *redis.Script
	rotate     *redis.Script
	touch      *redis.Script
	index      *redis.Script
	revoke     *redis.Script
}

func newSessionStore(rdb *redis.Client, keys redisx.Keys, opts sessionOptions, log *slog.Logger) *sessionStore {
	return &sessionStore{
		rdb: rdb, keys: keys, opts: opts, log: log,
		addRefresh: redis.NewScript(addRefreshLua),
		rotate:     redis.NewScript(rotateLua),
		touch:      redis.NewScript(touchLua),
		index:      redis.NewScript(indexLua),
		revoke:     redis.NewScript(revokeLua),
	}
}

// Key layout. The braces are Redis Cluster hash tags: a session's three
// keys share one slot, so scripts may touch them together; the two
// revocation keys share another.
func (s *sessionStore) sessionKey(sid string) string { return s.keys.Key("sess", "{"+sid+"}") }
func (s *sessionStore) refreshKey(sid string) string { return s.keys.Key("sess", "{"+sid+"}", "rt") }
func (s *sessionStore) usedKey(sid string) string    { return s.keys.Key("sess", "{"+sid+"}", "used") }
func (s *sessionStore) indexKey(customerID string) string {
	return s.keys.Key("customer", customerID, "sessions")
}
func (s *sessionStore) revokedKey() string     { return s.keys.Key("{revoked}") }
func (s *sessionStore) revokedLastKey() string { return s.keys.Key("{revoked}", "last") }

// newToken returns 256 random bits as 43 base64url characters.
func newToken() (string, error) {
	b := make([]byte, secretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// validToken reports whether s has the form newToken makes.
func validToken(s string) bool {
	if len(s) != base64.RawURLEncoding.EncodedLen(secretBytes) {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil
}

// newSecret returns sid.<newToken>: the form of refresh tokens and session
// cookies, which name their session so that finding it takes no index.
func newSecret(sid string) (string, error) {
	t, err := newToken()
	if err != nil {
		return "", err
	}
	return sid + "." + t, nil
}

// sessionOf returns the session a refresh token or cookie names, if it has
// the right form.
func sessionOf(secret string) (string, bool) {
	sid, t, ok := strings.Cut(secret, ".")
	if !ok || !validToken(t) {
		return "", false
	}
	return sid, id.Valid("sess", sid)
}

// hashSecret is the stored form of a refresh token or cookie.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// newSession describes a sign-in.
type newSession struct {
	customerID string
	clientID   string
	userAgent  string
	ip         string
	// cookie asks for a browser cookie (the login page's sessions).
	cookie bool
	// refresh, when set, asks for a first refresh token for this grant
	// (the REST login's sessions).
	refresh *refreshGrant
}

// create starts a session. It returns the session, and the cookie and
// refresh token that were asked for.
func (s *sessionStore) create(ctx context.Context, in newSession) (_ *Session, cookie, refresh string, err error) {
	// Stored in milliseconds; the session returned says what was stored.
	now := s.opts.now().UTC().Truncate(time.Millisecond)
	ua := in.userAgent
	if len(ua) > maxUserAgent {
		ua = ua[:maxUserAgent]
		for !utf8.ValidString(ua) {
			ua = ua[:len(ua)-1]
		}
	}
	sess := &Session{
		ID: id.New("sess"), CustomerID: in.customerID, ClientID: in.clientID,
		CreatedAt: now, LastSeen: now, AuthTime: now, ExpiresAt: now.Add(s.opts.ttl),
		UserAgent: ua, IP: in.ip,
	}
	fields := []any{
		"c", sess.CustomerID, "cl", sess.ClientID, "ca", ms(now), "ls", ms(now), "at", ms(now),
		"abs", ms(sess.ExpiresAt), "idle", strconv.FormatInt(s.opts.idle.Milliseconds(), 10), "ua", ua, "ip", in.ip,
	}
	if in.cookie {
		if cookie, err = newSecret(sess.ID); err != nil {
			return nil, "", "", err
		}
		sess.cookieHash = hashSecret(cookie)
		fields = append(fields, "ck", sess.cookieHash)
	}
	ttl := min(s.opts.ttl, s.opts.idle)
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.sessionKey(sess.ID), fields...)
		p.PExpire(ctx, s.sessionKey(sess.ID), ttl)
		if in.refresh != nil {
			g := *in.refresh
			g.sessionID = sess.ID
			if refresh, err = newSecret(sess.ID); err != nil {
				return err
			}
			p.HSet(ctx, s.refreshKey(sess.ID), hashSecret(refresh), g.encode())
			p.PExpire(ctx, s.refreshKey(sess.ID), ttl)
		}
		return nil
	})
	if err != nil {
		return nil, "", "", fmt.Errorf("create session: %w", err)
	}
	count, err := s.index.Run(ctx, s.rdb, []string{s.indexKey(sess.CustomerID)},
		ms(now), sess.ID, s.opts.ttl.Milliseconds()).Int()
	if err != nil {
		return nil, "", "", fmt.Errorf("index session: %w", err)
	}
	if count > maxSessionsPerCustomer {
		if err := s.prune(ctx, sess.CustomerID); err != nil {
			s.log.WarnContext(ctx, "pruning a customer's sessions failed", "customer_id", sess.CustomerID, "err", err)
		}
	}
	return sess, cookie, refresh, nil
}

// indexLua adds a session to its customer's index (score: creation time)
// and keeps the index alive as long as its newest session may live.
// KEYS: index. ARGV: score, session id, ttl ms. Returns the index size.
const indexLua = `
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return redis.call('ZCARD', KEYS[1])
`

// prune drops ended sessions from a customer's index and revokes the
// oldest live ones beyond maxSessionsPerCustomer.
func (s *sessionStore) prune(ctx context.Context, customerID string) error {
	live, err := s.liveIDs(ctx, customerID)
	if err != nil {
		return err
	}
	for i := 0; i < len(live)-maxSessionsPerCustomer; i++ {
		if _, err := s.end(ctx, live[i]); err != nil {
			return err
		}
	}
	return nil
}

// liveIDs lists a customer's sessions that still exist, oldest first,
// removing ended ones from the index on the way.
func (s *sessionStore) liveIDs(ctx context.Context, customerID string) ([]string, error) {
	ids, err := s.rdb.ZRange(ctx, s.indexKey(customerID), 0, -1).Result()
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	exists := make([]*redis.IntCmd, len(ids))
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, sid := range ids {
			exists[i] = p.Exists(ctx, s.sessionKey(sid))
		}
		return nil
	}); err != nil {
		return nil, err
	}
	var live []string
	var dead []any
	for i, sid := range ids {
		if exists[i].Val() == 1 {
			live = append(live, sid)
		} else {
			dead = append(dead, sid)
		}
	}
	if len(dead) > 0 {
		if err := s.rdb.ZRem(ctx, s.indexKey(customerID), dead...).Err(); err != nil {
			return nil, err
		}
	}
	return live, nil
}

// get reads a live session; ErrNotFound when it ended or never existed.
func (s *sessionStore) get(ctx context.Context, sid string) (*Session, error) {
	if !id.Valid("sess", sid) {
		return nil, ErrNotFound
	}
	m, err := s.rdb.HGetAll(ctx, s.sessionKey(sid)).Result()
	if err != nil {
		return nil, err
	}
	return parseSession(sid, m)
}

func parseSession(sid string, m map[string]string) (*Session, error) {
	if len(m) == 0 || m["c"] == "" {
		return nil, ErrNotFound
	}
	at := func(f string) time.Time {
		v, _ := strconv.ParseInt(m[f], 10, 64)
		return time.UnixMilli(v).UTC()
	}
	return &Session{
		ID: sid, CustomerID: m["c"], ClientID: m["cl"], CreatedAt: at("ca"), LastSeen: at("ls"), AuthTime: at("at"),
		ExpiresAt: at("abs"), UserAgent: m["ua"], IP: m["ip"], cookieHash: m["ck"],
	}, nil
}

// byCookie reads the live session a browser cookie names; ErrNotFound for
// a cookie that is malformed, ended or not the session's.
func (s *sessionStore) byCookie(ctx context.Context, cookie string) (*Session, error) {
	sid, ok := sessionOf(cookie)
	if !ok {
		return nil, ErrNotFound
	}
	sess, err := s.get(ctx, sid)
	if err != nil {
		return nil, err
	}
	if sess.cookieHash == "" || subtle.ConstantTimeCompare([]byte(sess.cookieHash), []byte(hashSecret(cookie))) != 1 {
		return nil, ErrNotFound
	}
	return sess, nil
}

// list returns a customer's live sessions, newest first.
func (s *sessionStore) list(ctx context.Context, customerID string) ([]*Session, error) {
	ids, err := s.liveIDs(ctx, customerID)
	if err != nil {
		return nil, err
	}
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, sid := range ids {
			cmds[i] = p.HGetAll(ctx, s.sessionKey(sid))
		}
		return nil
	}); err != nil {
		return nil, err
	}
	out := make([]*Session, 0, len(ids))
	for i := len(ids) - 1; i >= 0; i-- {
		// A session may end between the two reads; it is simply left out.
		if sess, err := parseSession(ids[i], cmds[i].Val()); err == nil && sess.CustomerID == customerID {
			out = append(out, sess)
		}
	}
	return out, nil
}

// touchLua records a use of a session and extends its idle expiry, never
// past its absolute one. KEYS: session, refresh, used. ARGV: now ms.
// Returns 0 when the session has ended.
const touchLua = `
local abs = redis.call('HGET', KEYS[1], 'abs')
if not abs then return 0 end
local now = tonumber(ARGV[1])
local ttl = math.min(tonumber(abs) - now, tonumber(redis.call('HGET', KEYS[1], 'idle')))
if ttl <= 0 then return 0 end
redis.call('HSET', KEYS[1], 'ls', ARGV[1])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end
return 1
`

// use records that a session was used now (a sign-in through its cookie),
// extending its idle expiry.
func (s *sessionStore) use(ctx context.Context, sid string) error {
	ok, err := s.touch.Run(ctx, s.rdb, []string{s.sessionKey(sid), s.refreshKey(sid), s.usedKey(sid)}, ms(s.opts.now())).Int()
	if err != nil {
		return err
	}
	if ok == 0 {
		return ErrNotFound
	}
	return nil
}

// addRefreshLua stores a new active refresh token for a live session.
// KEYS: session, refresh. ARGV: token hash, grant. Returns 0 when the
// session has ended.
const addRefreshLua = `
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
`

// issueRefresh makes a new refresh token for g in its session.
func (s *sessionStore) issueRefresh(ctx context.Context, g refreshGrant) (string, error) {
	token, err := newSecret(g.sessionID)
	if err != nil {
		return "", err
	}
	ok, err := s.addRefresh.Run(ctx, s.rdb, []string{s.sessionKey(g.sessionID), s.refreshKey(g.sessionID)}, hashSecret(token), g.encode()).Int()
	if err != nil {
		return "", err
	}
	if ok == 0 {
		return "", ErrInvalidRefreshToken
	}
	return token, nil
}

// lookupRefresh reads what an active refresh token allows without using
// it. A used token revokes its session (replay detection).
func (s *sessionStore) lookupRefresh(ctx context.Context, token string) (refreshGrant, error) {
	sid, ok := sessionOf(token)
	if !ok {
		return refreshGrant{}, ErrInvalidRefreshToken
	}
	h := hashSecret(token)
	var active *redis.StringCmd
	var used *redis.FloatCmd
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		active = p.HGet(ctx, s.refreshKey(sid), h)
		used = p.ZScore(ctx, s.usedKey(sid), h)
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return refreshGrant{}, err
	}
	if v, err := active.Result(); err == nil {
		return decodeGrant(sid, v), nil
	}
	if used.Err() == nil {
		return refreshGrant{}, s.replayed(ctx, sid)
	}
	return refreshGrant{}, ErrInvalidRefreshToken
}

// rotateLua exchanges an active refresh token for a new one: the old one
// becomes a used marker (kept as long as the session, newest
// maxUsedRefreshTokens only), the session's idle expiry is extended. A
// used token is reported as a replay. KEYS: session, refresh, used. ARGV:
// old hash, new hash, now ms, used cap.
const rotateLua = `
local abs = redis.call('HGET', KEYS[1], 'abs')
if not abs then return {'ended'} end
local grant = redis.call('HGET', KEYS[2], ARGV[1])
if grant then
  local now = tonumber(ARGV[3])
  local ttl = math.min(tonumber(abs) - now, tonumber(redis.call('HGET', KEYS[1], 'idle')))
  if ttl <= 0 then return {'ended'} end
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[2], grant)
  redis.call('ZADD', KEYS[3], now, ARGV[1])
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[4]) + 1))
  redis.call('HSET', KEYS[1], 'ls', ARGV[3])
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end
  return {'ok', grant}
end
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then return {'replay'} end
return {'unknown'}
`

// rotateRefresh uses a refresh token: it returns what the token allowed
// and its successor. A used token revokes its session and fails with
// errRefreshReplayed; an unknown one, or one of an ended session, with
// ErrInvalidRefreshToken.
func (s *sessionStore) rotateRefresh(ctx context.Context, token string) (refreshGrant, string, error) {
	sid, ok := sessionOf(token)
	if !ok {
		return refreshGrant{}, "", ErrInvalidRefreshToken
	}
	next, err := newSecret(sid)
	if err != nil {
		return refreshGrant{}, "", err
	}
	res, err := s.rotate.Run(ctx, s.rdb, []string{s.sessionKey(sid), s.refreshKey(sid), s.usedKey(sid)},
		hashSecret(token), hashSecret(next), ms(s.opts.now()), maxUsedRefreshTokens).StringSlice()
	if err != nil {
		return refreshGrant{}, "", err
	}
	switch res[0] {
	case "ok":
		return decodeGrant(sid, res[1]), next, nil
	case "replay":
		return refreshGrant{}, "", s.replayed(ctx, sid)
	default:
		return refreshGrant{}, "", ErrInvalidRefreshToken
	}
}

// replayed revokes the session of a replayed refresh token: whoever holds
// its tokens, the thief or the customer, must sign in again.
func (s *sessionStore) replayed(ctx context.Context, sid string) error {
	s.log.WarnContext(ctx, "a used refresh token was presented again; revoking its session", "session_id", sid)
	if s.replays != nil {
		s.replays.Inc()
	}
	if _, err := s.end(ctx, sid); err != nil {
		return err
	}
	return errRefreshReplayed
}

// revokeLua records a revocation with a score from the Redis clock in
// microseconds, strictly greater than every earlier one (so that a cursor
// never skips a revocation made in the same microsecond or by a replica
// with a slower clock), and trims revocations whose tokens have all
// expired. KEYS: revoked set, last score. ARGV: session id, horizon µs.
// Returns the score.
const revokeLua = `
local existing = redis.call('ZSCORE', KEYS[1], ARGV[1])
if existing then return existing end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local score = now
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if score <= last then score = last + 1 end
local s = string.format('%.0f', score)
redis.call('SET', KEYS[2], s)
redis.call('ZADD', KEYS[1], s, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.0f', now - tonumber(ARGV[2])))
return s
`

// end revokes a session: it records the revocation for verifiers first (so
// that a crash in between leaves the tokens refused, not a session
// deleted but its tokens trusted), then deletes the session and its
// tokens. It reports whether the session existed.
func (s *sessionStore) end(ctx context.Context, sid string) (bool, error) {
	customerID, err := s.rdb.HGet(ctx, s.sessionKey(sid), "c").Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := s.revoke.Run(ctx, s.rdb, []string{s.revokedKey(), s.revokedLastKey()}, sid, s.opts.tokenLife.Microseconds()).Err(); err != nil {
		return false, fmt.Errorf("record revocation: %w", err)
	}
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Unlink(ctx, s.sessionKey(sid), s.refreshKey(sid), s.usedKey(sid))
		p.ZRem(ctx, s.indexKey(customerID), sid)
		return nil
	}); err != nil {
		return false, err
	}
	return true, nil
}

// revocations lists revocations after cursor (exclusive; 0 for all that
// still matter), oldest first, at most limit, and the cursor to ask with
// next time.
func (s *sessionStore) revocations(ctx context.Context, cursor int64, limit int) ([]revocation, int64, error) {
	min := "-inf"
	if cursor > 0 {
		min = "(" + strconv.FormatInt(cursor, 10)
	}
	zs, err := s.rdb.ZRangeByScoreWithScores(ctx, s.revokedKey(), &redis.ZRangeBy{Min: min, Max: "+inf", Count: int64(limit)}).Result()
	if err != nil {
		return nil, cursor, err
	}
	next := cursor
	if len(zs) == 0 && cursor == 0 {
		// Nothing revoked yet: start the caller at the newest score, so its
		// next poll is incremental.
		if last, err := s.rdb.Get(ctx, s.revokedLastKey()).Int64(); err == nil {
			next = last
		}
	}
	now := s.opts.now()
	out := make([]revocation, 0, len(zs))
	for _, z := range zs {
		score := int64(z.Score)
		next = score
		r := revocation{sessionID: z.Member.(string), revokedAt: time.UnixMicro(score).UTC()}
		r.expiresAt = r.revokedAt.Add(s.opts.tokenLife)
		if r.expiresAt.Before(now) {
			continue // trimmed at the next revocation; no token needs it
		}
		out = append(out, r)
	}
	return out, next, nil
}
