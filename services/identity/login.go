package identity

import (
	"bytes"
	"crypto/subtle"
	_ "embed"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/mercato/mercato/platform/auth"
)

// Cookies of the OpenID provider.
const (
	// sessionCookie names the browser's session, so that a later
	// authorization skips the login form.
	sessionCookie = "mercato_session"
	// loginCookie binds login forms to the browser that loaded them.
	loginCookie = "mercato_login"
)

// Messages of the login page. One message for every credential failure,
// so that the page does not tell which accounts exist.
const (
	msgInvalidCredentials = "The email or password is incorrect."
	msgExpired            = "This sign-in link has expired or was already used. Go back to the shop and sign in again."
	msgFormExpired        = "The sign-in form expired. Please enter your email and password again."
	msgUnavailable        = "Signing in is not possible right now. Please try again in a moment."
	msgMissing            = "Enter your email and password."
)

//go:embed login.html
var loginHTML string

// cookies makes the provider's cookies: HttpOnly, SameSite=Lax (sent on the
// top-level navigation back from a client), Secure when the issuer is
// https.
type cookies struct{ secure bool }

func (c cookies) session(value string, expires time.Time) *http.Cookie {
	return &http.Cookie{Name: sessionCookie, Value: value, Path: "/", Expires: expires, HttpOnly: true, Secure: c.secure, SameSite: http.SameSiteLaxMode}
}

func (c cookies) clearSession() *http.Cookie {
	return &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: c.secure, SameSite: http.SameSiteLaxMode}
}

func (c cookies) login(value string) *http.Cookie {
	return &http.Cookie{Name: loginCookie, Value: value, Path: "/login", HttpOnly: true, Secure: c.secure, SameSite: http.SameSiteLaxMode}
}

// loginPage is the server-rendered login of the authorization code flow
// (/login?authRequestID=…). GET shows the form, or, when the browser has a
// live session that the request allows to reuse, continues at once; POST
// checks the credentials with the same throttling as the REST login,
// starts a session, sets its cookie and continues to the provider's
// callback, which redirects to the client with code and state.
type loginPage struct {
	storage  *storage
	sessions *sessionStore
	accounts *accounts
	provider *op.Provider
	cookies  cookies
	issuer   string
	tmpl     *template.Template
	log      *slog.Logger
	now      func() time.Time
}

func newLoginPage(lp loginPage) (*loginPage, error) {
	t, err := template.New("login").Parse(loginHTML)
	if err != nil {
		return nil, err
	}
	lp.tmpl = t
	return &lp, nil
}

// routes registers the login page.
func (l *loginPage) routes(mux router) {
	mux.Handle("GET /login", http.HandlerFunc(l.show))
	mux.Handle("POST /login", http.HandlerFunc(l.submit))
}

// view is what the template shows.
type view struct {
	Form          bool
	AuthRequestID string
	CSRF          string
	Email         string
	Error         string
}

func (l *loginPage) render(w http.ResponseWriter, status int, v view) {
	var buf bytes.Buffer
	if err := l.tmpl.Execute(&buf, v); err != nil {
		l.log.Error("rendering the login page failed", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// No form-action: browsers apply it to the redirects that follow the
	// POST, and those lead to the client's redirect URI.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

// showForm renders the form with a fresh CSRF token bound to the auth
// request and to this browser's login cookie.
func (l *loginPage) showForm(w http.ResponseWriter, r *http.Request, a *authRequest, status int, email, message string) {
	browser := ""
	if c, err := r.Cookie(loginCookie); err == nil && validToken(c.Value) {
		browser = c.Value
	}
	if browser == "" {
		t, err := newToken()
		if err != nil {
			l.failed(w, r, err)
			return
		}
		browser = t
		http.SetCookie(w, l.cookies.login(browser))
	}
	form, err := newToken()
	if err != nil {
		l.failed(w, r, err)
		return
	}
	a.BrowserHash, a.FormHash = hashSecret(browser), hashSecret(form)
	if err := l.storage.saveAuthRequest(r.Context(), a); err != nil {
		l.failed(w, r, err)
		return
	}
	l.render(w, status, view{Form: true, AuthRequestID: a.ID, CSRF: form, Email: email, Error: message})
}

// failed answers a request the page cannot serve.
func (l *loginPage) failed(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, errAuthRequestNotFound) {
		l.render(w, http.StatusBadRequest, view{Error: msgExpired})
		return
	}
	l.log.ErrorContext(r.Context(), "login page failed", "err", err)
	l.render(w, http.StatusServiceUnavailable, view{Error: msgUnavailable})
}

func (l *loginPage) authRequest(r *http.Request) (*authRequest, error) {
	id := r.URL.Query().Get("authRequestID")
	if id == "" {
		id = r.PostFormValue("authRequestID")
	}
	if id == "" {
		return nil, errAuthRequestNotFound
	}
	return l.storage.authRequest(r.Context(), id)
}

func (l *loginPage) show(w http.ResponseWriter, r *http.Request) {
	a, err := l.authRequest(r)
	if err != nil {
		l.failed(w, r, err)
		return
	}
	if a.IsDone {
		l.toCallback(w, r, a)
		return
	}
	if sess := l.browserSession(r); sess != nil && !a.forcesLogin(sess.AuthTime, l.now()) &&
		(a.HintSubject == "" || a.HintSubject == sess.CustomerID) {
		if err := l.sessions.use(r.Context(), sess.ID); err == nil {
			l.complete(w, r, a, sess)
			return
		}
	}
	if len(a.Prompt) == 1 && a.Prompt[0] == oidc.PromptNone {
		op.AuthRequestError(w, r, a, oidc.ErrLoginRequired().WithDescription("the customer is not signed in"), l.provider)
		return
	}
	l.showForm(w, r, a, http.StatusOK, "", "")
}

// browserSession is the live session the browser's cookie names, if any.
func (l *loginPage) browserSession(r *http.Request) *Session {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	sess, err := l.sessions.byCookie(r.Context(), c.Value)
	if err != nil {
		return nil
	}
	return sess
}

func (l *loginPage) submit(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		l.render(w, http.StatusBadRequest, view{Error: msgExpired})
		return
	}
	a, err := l.authRequest(r)
	if err != nil {
		l.failed(w, r, err)
		return
	}
	if a.IsDone {
		l.toCallback(w, r, a)
		return
	}
	email := r.PostFormValue("email")
	if browserOK, formOK := l.csrfValid(r, a); !browserOK || !formOK {
		if browserOK {
			// The form's own browser: a fresh form is safe to hand out.
			l.showForm(w, r, a, http.StatusForbidden, email, msgFormExpired)
			return
		}
		// Another browser gets no form for this request, and the form
		// of the browser that loaded it stays valid.
		l.render(w, http.StatusForbidden, view{Error: msgFormExpired})
		return
	}
	password := r.PostFormValue("password")
	if email == "" || password == "" {
		l.showForm(w, r, a, http.StatusOK, email, msgMissing)
		return
	}
	c, err := l.accounts.authenticate(r.Context(), email, password, auth.ClientAddr(r))
	var limited *RateLimitedError
	switch {
	case errors.Is(err, ErrInvalidCredentials):
		l.showForm(w, r, a, http.StatusOK, email, msgInvalidCredentials)
		return
	case errors.As(err, &limited):
		minutes := int((limited.RetryAfter + time.Minute - 1) / time.Minute)
		w.Header().Set("Retry-After", strconv.Itoa(int((limited.RetryAfter+time.Second-1)/time.Second)))
		l.showForm(w, r, a, http.StatusTooManyRequests, email,
			"Too many sign-in attempts. Please try again in "+strconv.Itoa(minutes)+" minute"+plural(minutes)+".")
		return
	case err != nil:
		l.failed(w, r, err)
		return
	}
	sess, cookie, _, err := l.sessions.create(r.Context(), newSession{
		customerID: c.ID, clientID: a.ClientID, userAgent: r.UserAgent(), ip: auth.ClientAddr(r), cookie: true,
	})
	if err != nil {
		l.failed(w, r, err)
		return
	}
	http.SetCookie(w, l.cookies.session(cookie, sess.ExpiresAt))
	l.complete(w, r, a, sess)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// csrfValid checks that the POST comes from the browser that loaded this
// auth request's form (by its login cookie) and carries that form's token.
func (l *loginPage) csrfValid(r *http.Request, a *authRequest) (browserOK, formOK bool) {
	if c, err := r.Cookie(loginCookie); err == nil && a.BrowserHash != "" {
		browserOK = subtle.ConstantTimeCompare([]byte(hashSecret(c.Value)), []byte(a.BrowserHash)) == 1
	}
	if form := r.PostFormValue("csrf"); form != "" && a.FormHash != "" {
		formOK = subtle.ConstantTimeCompare([]byte(hashSecret(form)), []byte(a.FormHash)) == 1
	}
	return browserOK, formOK
}

// complete marks the auth request signed in by sess and continues to the
// provider's callback.
func (l *loginPage) complete(w http.ResponseWriter, r *http.Request, a *authRequest, sess *Session) {
	a.Subject, a.SessionID, a.AuthTime, a.AMR, a.IsDone = sess.CustomerID, sess.ID, sess.AuthTime, []string{"pwd"}, true
	a.BrowserHash, a.FormHash = "", ""
	if err := l.storage.saveAuthRequest(r.Context(), a); err != nil {
		l.failed(w, r, err)
		return
	}
	l.toCallback(w, r, a)
}

// toCallback sends the browser to the provider's callback for a, which
// answers the client with a code.
func (l *loginPage) toCallback(w http.ResponseWriter, r *http.Request, a *authRequest) {
	ctx := op.ContextWithIssuer(r.Context(), l.issuer)
	http.Redirect(w, r, op.AuthCallbackURL(l.provider)(ctx, a.ID), http.StatusSeeOther)
}
