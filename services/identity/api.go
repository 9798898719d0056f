package identity

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/mercato/mercato/platform/cache"
	"log/slog"
	"net/http"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/mercato/mercato/platform/auth"
	"github.com/mercato/mercato/platform/httpapi"
	"github.com/mercato/mercato/platform/id"
	"github.com/mercato/mercato/platform/problem"
)

// api translates HTTP to identity operations and errors to problems.
type api struct {
	store    *Store
	sessions *sessionStore
	accounts *accounts
	hasher   *Hasher
	tokens   *tokens
	storage  *storage
	clients  clients
	verifier *verifier
	// profiles caches the rendered GET /v1/me body per customer, the
	// hottest read of the service.
	profiles *cache.Cache[[]byte]
	log      *slog.Logger
	now      func() time.Time
}

// router is where routes are registered: the server's mux, or a recorder in
// the test that keeps routes and OpenAPI fragment in step.
type router interface {
	Handle(pattern string, h http.Handler)
}

// public registers the routes anyone may call; idempotent applies
// Idempotency-Key handling. Login, refresh and logout do not keep
// responses for replays: a replayed login or refresh would hand out stored
// tokens, which must exist only in the client and as hashes here (logout
// is idempotent by nature).
func (a *api) public(mux router, idempotent func(http.Handler) http.Handler) {
	mux.Handle("POST /v1/customers", idempotent(a.handle(a.register)))
	mux.Handle("POST /v1/auth/login", a.handle(a.login))
	mux.Handle("POST /v1/auth/refresh", a.handle(a.refresh))
	mux.Handle("POST /v1/auth/logout", a.handle(a.logout))
}

// me registers the routes of the signed-in customer; wrap applies the
// access token check and idempotency.
func (a *api) me(mux router, wrap func(http.Handler) http.Handler) {
	mux.Handle("GET /v1/me", wrap(a.handle(a.getMe)))
	mux.Handle("PATCH /v1/me", wrap(a.handle(a.patchMe)))
	mux.Handle("GET /v1/me/addresses", wrap(a.handle(a.listAddresses)))
	mux.Handle("POST /v1/me/addresses", wrap(a.handle(a.addAddress)))
	mux.Handle("GET /v1/me/addresses/{id}", wrap(a.handle(a.getAddress)))
	mux.Handle("DELETE /v1/me/addresses/{id}", wrap(a.handle(a.deleteAddress)))
	mux.Handle("GET /v1/me/sessions", wrap(a.handle(a.listSessions)))
	mux.Handle("DELETE /v1/me/sessions/{id}", wrap(a.handle(a.deleteSession)))
}

func (a *api) handle(h httpapi.HandlerFunc) http.Handler {
	return httpapi.Handle(a.log, func(w http.ResponseWriter, r *http.Request) error {
		err := h(w, r)
		if errors.Is(err, ErrUnauthenticated) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mercato", error="invalid_token"`)
		}
		return toProblem(err)
	})
}

// toProblem is the one place identity errors become HTTP problems.
func toProblem(err error) error {
	var (
		invalid *ValidationError
		limited *RateLimitedError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &invalid):
		return problem.Invalid(invalid.Fields...)
	case errors.Is(err, ErrEmailTaken):
		p := problem.Conflict("email-taken", "an account with this email exists")
		p.Errors = []problem.FieldError{{Field: "email", Message: "is already taken"}}
		return p
	case errors.Is(err, ErrInvalidCredentials):
		return problem.New(http.StatusUnauthorized, "invalid-credentials", "the email or password is incorrect")
	case errors.As(err, &limited):
		return problem.TooManyRequests("too many login attempts; try again later", limited.RetryAfter)
	case errors.Is(err, ErrInvalidRefreshToken):
		return problem.New(http.StatusUnauthorized, "invalid-refresh-token", "the refresh token is invalid, expired or was already used; sign in again")
	case errors.Is(err, ErrUnauthenticated):
		return problem.Unauthorized("a valid access token is required")
	case errors.Is(err, ErrNotFound):
		return problem.NotFound("no such resource")
	case errors.Is(err, ErrAddressLimit):
		return problem.Conflict("address-limit-reached", "a customer can save at most 20 addresses; delete one first")
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return problem.Unavailable("identity cannot reach its storage right now", time.Second)
	default:
		return err
	}
}

func (a *api) register(w http.ResponseWriter, r *http.Request) error {
	var in Registration
	if err := httpapi.Decode(r, &in); err != nil {
		return err
	}
	c, err := NewCustomer(in, a.now(), a.hasher.Hash)
	if err != nil {
		return err
	}
	if err := a.store.CreateCustomer(r.Context(), c); err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/me")
	httpapi.WriteJSON(w, http.StatusCreated, c)
	return nil
}

// tokenResponse is the body of a REST login or refresh.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    uint64 `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	IDToken      string `json:"id_token"`
}

func writeTokens(w http.ResponseWriter, t *oidc.AccessTokenResponse) {
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, tokenResponse{
		AccessToken: t.AccessToken, TokenType: t.TokenType, ExpiresIn: t.ExpiresIn, RefreshToken: t.RefreshToken, IDToken: t.IDToken,
	})
}

// credentials is the body of a REST login.
type credentials struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

func (a *api) login(w http.ResponseWriter, r *http.Request) error {
	var in credentials
	if err := httpapi.Decode(r, &in); err != nil {
		return err
	}
	var f fieldErrors
	if in.Email == "" {
		f.add("email", "is required")
	}
	if in.Password == "" {
		f.add("password", "is required")
	}
	if err := f.err(); err != nil {
		return err
	}
	c, err := a.accounts.authenticate(r.Context(), in.Email, in.Password, auth.ClientAddr(r))
	if err != nil {
		return err
	}
	sess, _, refresh, err := a.sessions.create(r.Context(), newSession{
		customerID: c.ID, clientID: StorefrontClient, userAgent: r.UserAgent(), ip: auth.ClientAddr(r),
		refresh: &refreshGrant{clientID: StorefrontClient, scopes: restScopes()},
	})
	if err != nil {
		return err
	}
	req := &tokenRequest{customer: c, sessionID: sess.ID, clientID: StorefrontClient, scopes: restScopes(), authTime: sess.AuthTime, amr: []string{"pwd"}}
	t, err := a.tokens.mint(r.Context(), req, a.clients[StorefrontClient], refresh, "")
	if err != nil {
		return err
	}
	writeTokens(w, t)
	return nil
}

// refreshBody is the body of a refresh and, optionally, of a logout.
type refreshBody struct {
	RefreshToken string `json:"refresh_token"`
}

// refresh rotates a refresh token of a public client (a confidential
// client's tokens are refreshed at the token endpoint, where the client
// authenticates). A used token revokes its session.
func (a *api) refresh(w http.ResponseWriter, r *http.Request) error {
	var in refreshBody
	if err := httpapi.Decode(r, &in); err != nil {
		return err
	}
	if in.RefreshToken == "" {
		return &ValidationError{Fields: []problem.FieldError{{Field: "refresh_token", Message: "is required"}}}
	}
	g, err := a.sessions.lookupRefresh(r.Context(), in.RefreshToken)
	if err != nil {
		return err
	}
	c := a.clients[g.clientID]
	if c == nil || !c.public() {
		return ErrInvalidRefreshToken
	}
	g, next, err := a.sessions.rotateRefresh(r.Context(), in.RefreshToken)
	if err != nil {
		return err
	}
	req, err := a.storage.tokenRequestFor(r.Context(), g.sessionID, g.clientID, g.scopes)
	if err != nil {
		return err
	}
	t, err := a.tokens.mint(r.Context(), req, c, next, "")
	if err != nil {
		return err
	}
	writeTokens(w, t)
	return nil
}

// logout revokes the session of the bearer access token and, when the
// body names one, the session of a refresh token of the same customer. A
// refresh token alone is enough, so that a client whose access token
// expired can still sign out.
func (a *api) logout(w http.ResponseWriter, r *http.Request) error {
	var in refreshBody
	if r.ContentLength != 0 {
		if err := httpapi.Decode(r, &in); err != nil {
			return err
		}
	}
	var sessions []string
	customer := ""
	if raw, ok := auth.BearerToken(r); ok {
		p, err := a.verifier.verify(r.Context(), raw)
		if err != nil {
			return err
		}
		customer = p.customerID
		sessions = append(sessions, p.sessionID)
	}
	if in.RefreshToken != "" {
		g, err := a.sessions.lookupRefresh(r.Context(), in.RefreshToken)
		switch {
		case errors.Is(err, ErrInvalidRefreshToken) && customer != "":
			// The access token already identified the session to end.
		case err != nil:
			return err
		default:
			sess, err := a.sessions.get(r.Context(), g.sessionID)
			if err == nil && (customer == "" || sess.CustomerID == customer) {
				sessions = append(sessions, sess.ID)
			}
		}
	}
	if len(sessions) == 0 {
		return ErrUnauthenticated
	}
	for _, sid := range sessions {
		if _, err := a.sessions.end(r.Context(), sid); err != nil {
			return err
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *api) getMe(w http.ResponseWriter, r *http.Request) error {
	cid := principalFrom(r.Context()).customerID
	body, err := a.profiles.Get(r.Context(), cid, func(ctx context.Context) ([]byte, int64, error) {
		c, err := a.store.Customer(ctx, cid)
		if err != nil {
			return nil, 0, err
		}
		body, err := json.Marshal(c)
		return body, c.version, err
	})
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
	return nil
}

func (a *api) patchMe(w http.ResponseWriter, r *http.Request) error {
	var p ProfilePatch
	if err := httpapi.Decode(r, &p); err != nil {
		return err
	}
	c, err := a.store.UpdateCustomer(r.Context(), principalFrom(r.Context()).customerID, func(c *Customer) error { return c.Apply(p) })
	if err != nil {
		return err
	}
	if err := a.profiles.Invalidate(r.Context(), c.ID, c.version); err != nil {
		// Other replicas' memory holds a profile for at most a second;
		// Redis keeps the old one until its TTL if this failed.
		a.log.WarnContext(r.Context(), "profile cache invalidation failed", "err", err)
	}
	httpapi.WriteJSON(w, http.StatusOK, c)
	return nil
}

func (a *api) listAddresses(w http.ResponseWriter, r *http.Request) error {
	list, err := a.store.Addresses(r.Context(), principalFrom(r.Context()).customerID)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, httpapi.Page[*Address]{Items: list})
	return nil
}

func (a *api) addAddress(w http.ResponseWriter, r *http.Request) error {
	var in AddressInput
	if err := httpapi.Decode(r, &in); err != nil {
		return err
	}
	addr, err := NewAddress(in, a.now())
	if err != nil {
		return err
	}
	if err := a.store.AddAddress(r.Context(), principalFrom(r.Context()).customerID, addr); err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/me/addresses/"+addr.ID)
	httpapi.WriteJSON(w, http.StatusCreated, addr)
	return nil
}

func (a *api) getAddress(w http.ResponseWriter, r *http.Request) error {
	aid := r.PathValue("id")
	if !id.Valid("addr", aid) {
		return ErrNotFound
	}
	addr, err := a.store.Address(r.Context(), principalFrom(r.Context()).customerID, aid)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, addr)
	return nil
}

func (a *api) deleteAddress(w http.ResponseWriter, r *http.Request) error {
	aid := r.PathValue("id")
	if !id.Valid("addr", aid) {
		return ErrNotFound
	}
	if err := a.store.DeleteAddress(r.Context(), principalFrom(r.Context()).customerID, aid); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// sessionView is a session as its customer sees it.
type sessionView struct {
	ID         string    `json:"id"`
	CreatedAt  time.Time `json:"created_at"`
	LastSeenAt time.Time `json:"last_seen_at"`
	UserAgent  string    `json:"user_agent"`
	IP         string    `json:"ip"`
	Current    bool      `json:"current"`
}

func (a *api) listSessions(w http.ResponseWriter, r *http.Request) error {
	p := principalFrom(r.Context())
	list, err := a.sessions.list(r.Context(), p.customerID)
	if err != nil {
		return err
	}
	views := make([]sessionView, len(list))
	for i, s := range list {
		views[i] = sessionView{ID: s.ID, CreatedAt: s.CreatedAt, LastSeenAt: s.LastSeen, UserAgent: s.UserAgent, IP: s.IP, Current: s.ID == p.sessionID}
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusOK, httpapi.Page[sessionView]{Items: views})
	return nil
}

func (a *api) deleteSession(w http.ResponseWriter, r *http.Request) error {
	sid := r.PathValue("id")
	sess, err := a.sessions.get(r.Context(), sid)
	if err != nil {
		return err
	}
	if sess.CustomerID != principalFrom(r.Context()).customerID {
		return ErrNotFound
	}
	if _, err := a.sessions.end(r.Context(), sid); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
