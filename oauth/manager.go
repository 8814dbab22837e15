// Package oauth makes servicenow-mcp the OAuth 2.0 client of each user's
// ServiceNow account: authorization links with PKCE, the callback that
// exchanges the code, and the token manager that refreshes and persists.
package oauth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"servicenow-mcp/config"
	"servicenow-mcp/storage"
)

// Errors the rest of the product branches on.
var (
	// ErrNeedsAuthorization means the account has no usable tokens: it was
	// never linked, was disconnected, or ServiceNow refused its refresh.
	ErrNeedsAuthorization = errors.New("the ServiceNow account is not linked")
	// ErrUnknownConnection means no connection has the requested name.
	ErrUnknownConnection = errors.New("unknown connection")
)

// UnavailableError reports a token endpoint that could not be reached or
// answered something other than a token or a refusal. Tokens are kept.
type UnavailableError struct {
	Connection string
	Reason     string
	RetryAfter time.Time // zero when no back-off is in force
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("ServiceNow instance of connection %q is unreachable: %s", e.Connection, e.Reason)
}

// ClientRejectedError reports that ServiceNow refused the connection's own
// client credentials: an operator's configuration error, not the user's.
type ClientRejectedError struct{ Connection string }

func (e *ClientRejectedError) Error() string {
	return fmt.Sprintf("ServiceNow rejected the OAuth client of connection %q: check client_id and client_secret in the server configuration", e.Connection)
}

// LinksUnavailableError reports that this process cannot hand out an
// authorization link that would complete (its OAuth callback address is
// served by another process that does not know its links). Reason says
// why and what the operator can do; it holds no secret.
type LinksUnavailableError struct{ Reason string }

func (e *LinksUnavailableError) Error() string { return e.Reason }

// Options configure a Manager.
type Options struct {
	Store         storage.Store
	Connections   []config.Connection
	RedirectURI   string
	RefreshMargin time.Duration
	LinkExpiry    time.Duration
	// HTTPClient talks to token endpoints; it must carry a timeout.
	HTTPClient *http.Client
	Logger     zerolog.Logger
	Now        func() time.Time
	// LinkGate, when set, is asked before every Link; an error (normally
	// a *LinksUnavailableError) is returned instead of a link.
	LinkGate func(ctx context.Context) error
}

// Manager owns links and tokens for every (connection, user).
type Manager struct {
	store       storage.Store
	conns       map[string]*connection
	redirectURI string
	margin      time.Duration
	linkExpiry  time.Duration
	httpClient  *http.Client
	log         zerolog.Logger
	now         func() time.Time
	linkGate    func(ctx context.Context) error

	refreshes singleflight.Group

	mu    sync.RWMutex
	cache map[storage.AccountKey]cachedToken
}

type connection struct {
	cfg   config.Connection
	oauth *oauth2.Config

	mu sync.Mutex
	// down backs off the whole connection after failures that say the
	// instance is unwell (unreachable, slow, an HTML page); accounts backs
	// off one user after an answer that may concern that account alone
	// (a JSON 5xx), so that it never holds up the others.
	down     backoff
	accounts map[string]*backoff
	// refusals counts distinct accounts refused since the last success;
	// several in a row are worth a hint to the operator.
	refusals map[string]bool
	// codeRefused is set when ServiceNow refused an authorization code it
	// had just issued, which points at the client credentials (or the
	// redirect URI) at once, even with a single user.
	codeRefused bool
}

type cachedToken struct {
	access string
	expiry time.Time
}

// NewManager builds a Manager.
func NewManager(opts Options) *Manager {
	m := &Manager{
		store:       opts.Store,
		conns:       map[string]*connection{},
		redirectURI: opts.RedirectURI,
		margin:      opts.RefreshMargin,
		linkExpiry:  opts.LinkExpiry,
		httpClient:  opts.HTTPClient,
		log:         opts.Logger,
		now:         opts.Now,
		linkGate:    opts.LinkGate,
		cache:       map[storage.AccountKey]cachedToken{},
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.linkExpiry <= 0 {
		m.linkExpiry = 10 * time.Minute
	}
	if m.httpClient == nil {
		m.httpClient = &http.Client{Timeout: 20 * time.Second}
	}
	for _, c := range opts.Connections {
		base := strings.TrimRight(c.InstanceURL, "/")
		m.conns[c.Name] = &connection{
			cfg: c,
			oauth: &oauth2.Config{
				ClientID:     c.ClientID,
				ClientSecret: c.ClientSecret,
				Endpoint: oauth2.Endpoint{
					AuthURL:   base + "/oauth_auth.do",
					TokenURL:  base + "/oauth_token.do",
					AuthStyle: oauth2.AuthStyleInParams,
				},
				RedirectURL: opts.RedirectURI,
				Scopes:      scopesToSend(c.Scopes),
			},
			refusals: map[string]bool{},
			accounts: map[string]*backoff{},
		}
	}
	return m
}

// scopesToSend drops ServiceNow's implicit default scope: an instance
// grants "useraccount" without being asked, and some reject it as a request.
func scopesToSend(scopes []string) []string {
	var out []string
	for _, s := range scopes {
		if s != "" && s != "useraccount" {
			out = append(out, s)
		}
	}
	return out
}

// Store returns the manager's store.
func (m *Manager) Store() storage.Store { return m.store }

func (m *Manager) connection(name string) (*connection, error) {
	c, ok := m.conns[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownConnection, name)
	}
	return c, nil
}

// Token returns a usable access token for the account, refreshing first
// when it is within the refresh margin of its expiry.
func (m *Manager) Token(ctx context.Context, key storage.AccountKey) (string, error) {
	m.mu.RLock()
	t, ok := m.cache[key]
	m.mu.RUnlock()
	if ok && m.now().Add(m.margin).Before(t.expiry) {
		return t.access, nil
	}
	return m.refresh(ctx, key, "")
}

// ForceRefresh is called after the API answered 401 to stale: it returns
// a different token, refreshing unless another worker already did.
func (m *Manager) ForceRefresh(ctx context.Context, key storage.AccountKey, stale string) (string, error) {
	m.mu.Lock()
	if t, ok := m.cache[key]; ok && t.access == stale {
		delete(m.cache, key)
	}
	m.mu.Unlock()
	return m.refresh(ctx, key, stale)
}

// Forget drops what the manager remembers of an account in memory.
func (m *Manager) Forget(key storage.AccountKey) {
	m.mu.Lock()
	delete(m.cache, key)
	m.mu.Unlock()
}

// refresh runs at most one refresh per account in this process; the
// store's account lock extends that to every process on the data dir.
func (m *Manager) refresh(ctx context.Context, key storage.AccountKey, stale string) (string, error) {
	sfKey := key.Connection + "\x00" + key.User + "\x00" + stale
	ch := m.refreshes.DoChan(sfKey, func() (any, error) {
		// Detached from the caller: a cancelled tool call must not leave
		// a half-done refresh whose rotated token is never stored.
		bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.httpClient.Timeout+10*time.Second)
		defer cancel()
		tok, err := m.refreshLocked(bg, key, stale)
		var rejected *ClientRejectedError
		if errors.As(err, &rejected) {
			m.restoreRefused(bg, key.Connection)
		}
		return tok, err
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return "", res.Err
		}
		return res.Val.(string), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (m *Manager) refreshLocked(ctx context.Context, key storage.AccountKey, stale string) (string, error) {
	conn, err := m.connection(key.Connection)
	if err != nil {
		return "", err
	}

	unlock, err := m.store.LockAccount(ctx, key)
	if err != nil {
		return "", fmt.Errorf("lock account: %w", err)
	}
	defer unlock()

	// Re-read under the lock: another worker or process may have refreshed.
	acct, err := m.store.GetAccount(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		m.Forget(key)
		return "", ErrNeedsAuthorization
	}
	if errors.Is(err, storage.ErrCorrupt) {
		// One damaged record: this account needs a new link, which
		// replaces the record; every other account carries on.
		m.Forget(key)
		m.log.Error().Str("connection", key.Connection).Str("user", key.User).Str("error", err.Error()).
			Msg("the stored account record is corrupted; the user is asked to link again")
		return "", ErrNeedsAuthorization
	}
	if err != nil {
		return "", fmt.Errorf("read account: %w", err)
	}
	if acct.Status != storage.StatusActive || acct.RefreshToken == "" && acct.AccessToken == "" {
		m.Forget(key)
		return "", ErrNeedsAuthorization
	}
	now := m.now()
	fresh := now.Add(m.margin).Before(acct.Expiry)
	if fresh && acct.AccessToken != stale {
		m.remember(key, acct)
		return acct.AccessToken, nil
	}
	stillValid := now.Before(acct.Expiry) && acct.AccessToken != stale

	if wait := conn.backoff(now, key.User); wait > 0 {
		if stillValid {
			m.remember(key, acct)
			return acct.AccessToken, nil
		}
		return "", &UnavailableError{Connection: key.Connection, Reason: "the token endpoint failed recently; not retrying yet", RetryAfter: now.Add(wait)}
	}
	if acct.RefreshToken == "" {
		return "", m.expire(ctx, acct, "no refresh token was issued")
	}

	tok, err := m.exchangeRefresh(ctx, conn, acct.RefreshToken)
	if isRefusal(err) {
		// Lost a race? Whoever holds newer tokens (another worker whose
		// lock did not reach us, or a new link) wrote them to the store:
		// re-read before giving up, and never overwrite them with ours.
		newer, changed := m.newerAccount(ctx, acct)
		if changed && m.now().Add(m.margin).Before(newer.Expiry) {
			m.remember(key, newer)
			return newer.AccessToken, nil
		}
		if changed {
			acct = newer
			stillValid = m.now().Before(acct.Expiry)
			tok, err = m.exchangeRefresh(ctx, conn, acct.RefreshToken)
		}
	}
	if err != nil {
		return m.refreshFailed(ctx, conn, acct, err, stillValid)
	}
	conn.succeeded(key.User)

	acct.AccessToken = tok.AccessToken
	if tok.RefreshToken != "" {
		acct.RefreshToken = tok.RefreshToken
	}
	if tok.TokenType != "" {
		acct.TokenType = tok.TokenType
	}
	if s, ok := tok.Extra("scope").(string); ok && s != "" {
		acct.Scope = s
	}
	acct.Expiry = expiryOf(tok, m.now())
	acct.RefreshedAt = m.now()
	acct.UpdatedAt = acct.RefreshedAt
	acct.LastError = ""
	// Persist before use: a rotated refresh token that is not on disk
	// would be lost with this process.
	if err := m.store.PutAccount(ctx, acct); err != nil {
		return "", fmt.Errorf("store refreshed token: %w", err)
	}
	m.remember(key, acct)
	m.log.Info().Str("connection", key.Connection).Str("user", key.User).
		Time("expires", acct.Expiry).Msg("access token refreshed")
	return acct.AccessToken, nil
}

func (m *Manager) exchangeRefresh(ctx context.Context, conn *connection, refreshToken string) (*oauth2.Token, error) {
	return conn.oauth.TokenSource(
		context.WithValue(ctx, oauth2.HTTPClient, m.httpClient),
		&oauth2.Token{RefreshToken: refreshToken, Expiry: m.now().Add(-time.Hour)},
	).Token()
}

// newerAccount re-reads the account and reports whether it now holds
// other, still active tokens than used.
func (m *Manager) newerAccount(ctx context.Context, used *storage.Account) (*storage.Account, bool) {
	acct, err := m.store.GetAccount(ctx, used.Key())
	if err != nil || acct.Status != storage.StatusActive || acct.RefreshToken == "" {
		return nil, false
	}
	if acct.RefreshToken == used.RefreshToken && acct.AccessToken == used.AccessToken {
		return nil, false
	}
	return acct, true
}

// isRefusal reports a token endpoint that answered with an OAuth error:
// ServiceNow refused the grant (or the client), as opposed to failing.
func isRefusal(err error) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.Response != nil &&
		(re.Response.StatusCode == 401 || re.Response.StatusCode == 400) && re.ErrorCode != ""
}

func (m *Manager) refreshFailed(ctx context.Context, conn *connection, acct *storage.Account, err error, stillValid bool) (string, error) {
	key := acct.Key()
	if isRefusal(err) {
		clientSuspect, inARow := conn.refused(key.User)
		if clientSuspect {
			m.log.Error().Str("connection", key.Connection).
				Msg("refresh refused after ServiceNow also refused a fresh authorization code: the connection's client_id or client_secret is wrong")
			return "", &ClientRejectedError{Connection: key.Connection}
		}
		if inARow == 3 {
			m.log.Warn().Str("connection", key.Connection).Int("users", inARow).
				Msg("refreshes refused for several users in a row; if they did not revoke access, check the connection's client_id and client_secret")
		}
		return "", m.expire(ctx, acct, refusedWhy)
	}

	reason := describeTransport(err)
	wait := conn.failed(m.now(), key.User, instanceWide(err))
	m.log.Warn().Str("connection", key.Connection).Str("user", key.User).
		Str("reason", reason).Dur("backoff", wait).Msg("token refresh failed; tokens kept")
	if stillValid {
		m.remember(key, acct)
		return acct.AccessToken, nil
	}
	return "", &UnavailableError{Connection: key.Connection, Reason: reason, RetryAfter: m.now().Add(wait)}
}

// refusedWhy is the LastError of an account expired by a refused refresh.
const refusedWhy = "ServiceNow refused the refresh token"

// restoreRefused undoes the expiry of accounts whose refresh was refused
// before the refusals were seen to be the client's: their users did nothing
// wrong, and once the operator fixes the client credentials their kept
// tokens work again. It reads the store, not this process's memory, so an
// account expired by another process sharing the data directory, or
// before a restart, is restored too; only recent expiries by a refusal
// count. It runs holding no account lock, taking each in turn.
func (m *Manager) restoreRefused(ctx context.Context, connection string) {
	accounts, _, err := m.store.ListAccounts(ctx)
	if err != nil {
		return
	}
	since := m.now().Add(-restoreWindow)
	for _, listed := range accounts {
		if listed.Connection != connection || listed.Status != storage.StatusExpired ||
			listed.LastError != refusedWhy || listed.UpdatedAt.Before(since) {
			continue
		}
		key := listed.Key()
		unlock, err := m.store.LockAccount(ctx, key)
		if err != nil {
			return
		}
		acct, err := m.store.GetAccount(ctx, key)
		if err == nil && acct.Status == storage.StatusExpired && acct.LastError == refusedWhy {
			acct.Status = storage.StatusActive
			acct.LastError = "refresh refused while ServiceNow rejected the OAuth client"
			acct.UpdatedAt = m.now()
			if err := m.store.PutAccount(ctx, acct); err == nil {
				m.log.Info().Str("connection", key.Connection).Str("user", key.User).
					Msg("account kept: its refresh was refused because of the client credentials, not the user")
			}
		}
		unlock()
	}
}

// restoreWindow bounds how far back restoreRefused looks: an account that
// expired by a refusal long before the client was found at fault most
// likely lost its grant for its own reasons.
const restoreWindow = 24 * time.Hour

// expire marks the account EXPIRED. The sealed tokens stay in the store:
// ServiceNow answers a bad client secret and a dead refresh token alike,
// so nothing is thrown away on a refusal that may be the operator's.
func (m *Manager) expire(ctx context.Context, acct *storage.Account, why string) error {
	m.Forget(acct.Key())
	acct.Status = storage.StatusExpired
	acct.LastError = why
	acct.UpdatedAt = m.now()
	if err := m.store.PutAccount(ctx, acct); err != nil {
		return fmt.Errorf("mark account expired: %w", err)
	}
	m.log.Warn().Str("connection", acct.Connection).Str("user", acct.User).Str("reason", why).
		Msg("account needs a new authorization")
	return ErrNeedsAuthorization
}

// Expire marks an account as needing a new link, after the API refused a
// freshly refreshed token.
func (m *Manager) Expire(ctx context.Context, key storage.AccountKey, why string) error {
	unlock, err := m.store.LockAccount(ctx, key)
	if err != nil {
		return err
	}
	defer unlock()
	acct, err := m.store.GetAccount(ctx, key)
	if err != nil {
		m.Forget(key)
		return ErrNeedsAuthorization
	}
	return m.expire(ctx, acct, why)
}

func (m *Manager) remember(key storage.AccountKey, a *storage.Account) {
	m.mu.Lock()
	m.cache[key] = cachedToken{access: a.AccessToken, expiry: a.Expiry}
	m.mu.Unlock()
}

func expiryOf(tok *oauth2.Token, now time.Time) time.Time {
	if tok.ExpiresIn > 0 {
		return now.Add(time.Duration(tok.ExpiresIn) * time.Second)
	}
	if !tok.Expiry.IsZero() {
		return tok.Expiry
	}
	// ServiceNow's documented default lifetime.
	return now.Add(30 * time.Minute)
}

func describeTransport(err error) string {
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re) && re.Response != nil:
		ct := re.Response.Header.Get("Content-Type")
		if strings.Contains(ct, "html") {
			return fmt.Sprintf("token endpoint answered HTTP %d with an HTML page (instance down, waking up or behind a proxy error)", re.Response.StatusCode)
		}
		return fmt.Sprintf("token endpoint answered HTTP %d", re.Response.StatusCode)
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Client.Timeout"):
		return "token endpoint did not answer in time"
	case strings.Contains(err.Error(), "cannot parse") || strings.Contains(err.Error(), "missing access_token"):
		return "token endpoint answered something that is not a token (a hibernating developer instance answers with an HTML page)"
	default:
		return "could not reach the token endpoint"
	}
}

// instanceWide reports a token-endpoint failure that concerns the whole
// instance rather than one account: no answer, or an answer that is not
// the token endpoint's JSON (a proxy error or hibernation page).
func instanceWide(err error) bool {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response == nil {
		return true
	}
	ct := re.Response.Header.Get("Content-Type")
	return !strings.Contains(ct, "json")
}

// backoff is a doubling wait after consecutive failures.
type backoff struct {
	failures int
	until    time.Time
}

func (b *backoff) fail(now time.Time) time.Duration {
	b.failures++
	wait := time.Second << min(b.failures-1, 6) // 1s, 2s … 64s
	b.until = now.Add(wait)
	return wait
}

func (b *backoff) left(now time.Time) time.Duration {
	if b == nil || !now.Before(b.until) {
		return 0
	}
	return b.until.Sub(now)
}

// backoff is how long refreshes for user should still wait.
func (c *connection) backoff(now time.Time, user string) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(c.down.left(now), c.accounts[user].left(now))
}

// failed records a failed refresh for user, for the whole connection when
// wide, and returns the wait before the next try.
func (c *connection) failed(now time.Time, user string, wide bool) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if wide {
		return c.down.fail(now)
	}
	b := c.accounts[user]
	if b == nil {
		b = &backoff{}
		c.accounts[user] = b
	}
	return b.fail(now)
}

// succeeded records a token answer: the instance and the client work.
func (c *connection) succeeded(user string) {
	c.mu.Lock()
	c.down = backoff{}
	delete(c.accounts, user)
	clear(c.refusals)
	c.codeRefused = false
	c.mu.Unlock()
}

// refused records a refusal for user. It says whether a refused
// authorization code since the last success makes the client itself the
// likely cause, and how many distinct users have been refused in a row.
func (c *connection) refused(user string) (clientSuspect bool, inARow int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refusals[user] = true
	return c.codeRefused, len(c.refusals)
}

// refuseCode records that ServiceNow refused a fresh authorization code.
func (c *connection) refuseCode() {
	c.mu.Lock()
	c.codeRefused = true
	c.mu.Unlock()
}

// clientSuspect says whether a refused code since the last success makes
// the client credentials suspect.
func (c *connection) clientSuspect() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.codeRefused
}

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
