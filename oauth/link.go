package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"servicenow-mcp/storage"
)

// Link is an authorization link for one account.
type Link struct {
	Connection string    `json:"connection"`
	User       string    `json:"user"`
	URL        string    `json:"authorization_url"`
	ExpiresAt  time.Time `json:"expires_at"`
	// Warning, when set, says why this link may fail for reasons that are
	// the operator's to fix (see ClientWarning).
	Warning string `json:"warning,omitempty"`
}

// ClientWarning is Link.Warning after ServiceNow refused a code it had
// just issued for the connection.
const ClientWarning = "ServiceNow refused the last authorization code it issued on this connection, " +
	"which usually means this server's client_id, client_secret or redirect URI does not match the instance's Application Registry. " +
	"If linking fails again, tell the operator of this MCP server: it is a server configuration problem, not the user's."

// Link returns the account's pending authorization link, creating one when
// none is pending. Repeated calls within the expiry return the same link.
func (m *Manager) Link(ctx context.Context, key storage.AccountKey) (*Link, error) {
	conn, err := m.connection(key.Connection)
	if err != nil {
		return nil, err
	}
	if m.linkGate != nil {
		if err := m.linkGate(ctx); err != nil {
			return nil, err
		}
	}
	v, err, _ := m.refreshes.Do("link\x00"+key.Connection+"\x00"+key.User, func() (any, error) {
		p, err := m.store.PendingFor(ctx, key)
		// Reuse only a link built for this instance and redirect URI: the
		// connection may have moved since (another process, a new port).
		if err == nil && p.ExpiresAt.Sub(m.now()) > m.linkExpiry/5 &&
			p.RedirectURI == m.redirectURI && strings.HasPrefix(p.AuthURL, conn.oauth.Endpoint.AuthURL+"?") {
			return &Link{Connection: key.Connection, User: key.User, URL: p.AuthURL, ExpiresAt: p.ExpiresAt}, nil
		}
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("read pending authorization: %w", err)
		}

		state := randomString(32) // 256 bits
		verifier := oauth2.GenerateVerifier()
		now := m.now()
		p = &storage.PendingAuthorization{
			State:       state,
			Connection:  key.Connection,
			User:        key.User,
			Verifier:    verifier,
			RedirectURI: m.redirectURI,
			AuthURL:     conn.oauth.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)),
			CreatedAt:   now,
			ExpiresAt:   now.Add(m.linkExpiry),
		}
		if err := m.store.PutPending(ctx, p); err != nil {
			return nil, fmt.Errorf("store pending authorization: %w", err)
		}
		return &Link{Connection: key.Connection, User: key.User, URL: p.AuthURL, ExpiresAt: p.ExpiresAt}, nil
	})
	if err != nil {
		return nil, err
	}
	link := *v.(*Link)
	if conn.clientSuspect() {
		link.Warning = ClientWarning
	}
	return &link, nil
}

// Account returns the stored account, or storage.ErrNotFound.
func (m *Manager) Account(ctx context.Context, key storage.AccountKey) (*storage.Account, error) {
	return m.store.GetAccount(ctx, key)
}

// Disconnect revokes the account's tokens at ServiceNow and forgets them.
// The local copy is removed even when the instance cannot be reached; the
// returned revoked flag says whether ServiceNow confirmed the revocation.
func (m *Manager) Disconnect(ctx context.Context, key storage.AccountKey) (found, revoked bool, err error) {
	conn, err := m.connection(key.Connection)
	if err != nil {
		return false, false, err
	}
	unlock, err := m.store.LockAccount(ctx, key)
	if err != nil {
		return false, false, err
	}
	defer unlock()
	defer m.Forget(key)

	acct, err := m.store.GetAccount(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return false, false, nil
	}
	if err != nil && !errors.Is(err, storage.ErrCorrupt) {
		return false, false, err
	}
	revoked = true
	if acct != nil {
		for _, t := range []string{acct.RefreshToken, acct.AccessToken} {
			if t != "" && m.revoke(ctx, conn, t) != nil {
				revoked = false
			}
		}
	}
	if err := m.store.DeleteAccount(ctx, key); err != nil {
		return true, revoked, fmt.Errorf("forget account: %w", err)
	}
	m.log.Info().Str("connection", key.Connection).Str("user", key.User).Bool("revoked", revoked).
		Msg("account disconnected")
	return true, revoked, nil
}

func (m *Manager) revoke(ctx context.Context, conn *connection, token string) error {
	base := strings.TrimRight(conn.cfg.InstanceURL, "/")
	form := url.Values{"token": {token}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/oauth_revoke_token.do", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := m.httpClient.Do(req)
	if err != nil {
		return errors.New("revocation request failed")
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("revocation answered HTTP %d", resp.StatusCode)
	}
	return nil
}

// CallbackHandler finishes a link: GET /oauth/callback?code&state.
func (m *Manager) CallbackHandler() http.Handler {
	return http.HandlerFunc(m.serveCallback)
}

func (m *Manager) serveCallback(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		page(w, http.StatusMethodNotAllowed, "Method not allowed", "The callback only accepts GET.")
		return
	}
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" {
		page(w, http.StatusBadRequest, "Missing state",
			"This address is missing its state parameter, so it cannot be matched to a sign-in. Ask your assistant for a new authorization link.")
		return
	}

	p, err := m.store.TakePending(r.Context(), state)
	if errors.Is(err, storage.ErrNotFound) {
		page(w, http.StatusBadRequest, "Link unknown or already used",
			"This authorization link is unknown, has expired, or was already used. Ask your assistant for a new link.")
		return
	}
	if err != nil {
		m.log.Error().Err(err).Msg("callback: read pending authorization")
		page(w, http.StatusInternalServerError, "Storage error",
			"The server could not read its pending authorizations. Check the server log.")
		return
	}
	if !m.now().Before(p.ExpiresAt) {
		page(w, http.StatusBadRequest, "Link expired",
			"This authorization link has expired. Ask your assistant for a new link.")
		return
	}
	if e := q.Get("error"); e != "" {
		m.log.Info().Str("connection", p.Connection).Str("user", p.User).Str("error", e).Msg("authorization declined")
		msg := "ServiceNow did not authorize the link"
		if e == "access_denied" {
			msg = "You chose Deny on the ServiceNow consent page"
		}
		page(w, http.StatusOK, "Not linked", msg+". Nothing was stored. Ask your assistant for a new link to try again.")
		return
	}
	code := q.Get("code")
	if code == "" {
		page(w, http.StatusBadRequest, "Missing code",
			"ServiceNow sent no authorization code. Ask your assistant for a new link.")
		return
	}

	acct, err := m.finishLink(r.Context(), p, code)
	if err != nil {
		m.log.Warn().Str("connection", p.Connection).Str("user", p.User).Str("reason", err.Error()).Msg("link failed")
		page(w, http.StatusBadGateway, "Not linked", err.Error()+" Ask your assistant for a new link.")
		return
	}
	who := acct.SNUserName
	if acct.SNDisplayName != "" {
		who = fmt.Sprintf("%s (%s)", acct.SNDisplayName, acct.SNUserName)
	}
	if who == "" {
		who = "your ServiceNow user"
	}
	page(w, http.StatusOK, "ServiceNow account linked",
		fmt.Sprintf("Linked %s on connection %q for %q. You can close this tab and go back to your assistant.", who, p.Connection, p.User))
}

// finishLink exchanges the code, learns who the user is and stores the account.
func (m *Manager) finishLink(ctx context.Context, p *storage.PendingAuthorization, code string) (*storage.Account, error) {
	conn, err := m.connection(p.Connection)
	if err != nil {
		return nil, errors.New("the connection of this link is no longer configured.")
	}
	ctx = context.WithValue(context.WithoutCancel(ctx), oauth2.HTTPClient, m.httpClient)
	tok, err := conn.oauth.Exchange(ctx, code, oauth2.VerifierOption(p.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode != "" {
			// The instance issued this code a moment ago (the browser came
			// straight here), so its refusal is about us: the client id,
			// secret or redirect URI. Refusals of refresh tokens on this
			// connection are read the same way until a token request works.
			conn.refuseCode()
			m.restoreRefused(ctx, p.Connection)
			m.log.Error().Str("connection", p.Connection).Str("user", p.User).
				Msg("ServiceNow refused an authorization code it had just issued: check client_id, client_secret and the redirect URI registered for this connection")
			return nil, errors.New("ServiceNow refused the authorization code it had just issued. This usually means that this server's OAuth client settings for the connection " +
				"(client ID, client secret or redirect URL) do not match the instance's Application Registry: tell the operator of this MCP server, it is not something you did.")
		}
		return nil, fmt.Errorf("ServiceNow could not be reached to finish the link: %s.", describeTransport(err))
	}
	conn.succeeded(p.User)

	now := m.now()
	acct := &storage.Account{
		Connection:   p.Connection,
		User:         p.User,
		Status:       storage.StatusActive,
		AccessToken:  tok.AccessToken,
		RefreshToken: tok.RefreshToken,
		TokenType:    tok.TokenType,
		Expiry:       expiryOf(tok, now),
		InstanceURL:  conn.cfg.InstanceURL,
		LinkedAt:     now,
		RefreshedAt:  now,
		UpdatedAt:    now,
	}
	if s, ok := tok.Extra("scope").(string); ok {
		acct.Scope = s
	}
	if id, err := m.whoAmI(ctx, conn, tok.AccessToken); err == nil {
		acct.SNUserSysID, acct.SNUserName, acct.SNDisplayName = id.SysID, id.UserName, id.Name
	} else {
		m.log.Warn().Str("connection", p.Connection).Str("user", p.User).Str("reason", err.Error()).
			Msg("linked, but could not read the ServiceNow user")
	}

	unlock, err := m.store.LockAccount(ctx, acct.Key())
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := m.store.PutAccount(ctx, acct); err != nil {
		return nil, errors.New("the tokens could not be stored; check the server log.")
	}
	m.remember(acct.Key(), acct)
	m.log.Info().Str("connection", p.Connection).Str("user", p.User).Str("servicenow_user", acct.SNUserName).
		Msg("account linked")
	return acct, nil
}

type identity struct {
	SysID    string `json:"sys_id"`
	UserName string `json:"user_name"`
	Name     string `json:"name"`
}

// whoAmI asks the instance which sys_user the token belongs to.
func (m *Manager) whoAmI(ctx context.Context, conn *connection, access string) (*identity, error) {
	base := strings.TrimRight(conn.cfg.InstanceURL, "/")
	q := url.Values{
		"sysparm_query":  {"sys_id=javascript:gs.getUserID()"},
		"sysparm_fields": {"sys_id,user_name,name"},
		"sysparm_limit":  {"1"},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/now/table/sys_user?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+access)
	req.Header.Set("Accept", "application/json")
	resp, err := m.httpClient.Do(req)
	if err != nil {
		return nil, errors.New("instance unreachable")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("sys_user lookup answered HTTP %d", resp.StatusCode)
	}
	var body struct {
		Result []identity `json:"result"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return nil, errors.New("sys_user lookup answered something that is not JSON")
	}
	if len(body.Result) == 0 {
		return nil, errors.New("sys_user lookup found no user")
	}
	return &body.Result[0], nil
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}} · servicenow-mcp</title>
<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;line-height:1.5}</style>
</head><body><h1>{{.Title}}</h1><p>{{.Message}}</p></body></html>
`))

func page(w http.ResponseWriter, status int, title, message string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = pageTemplate.Execute(w, struct{ Title, Message string }{title, message})
}
