package sandbox

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"html/template"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

type token struct {
	Value   string    `json:"value"`
	Kind    string    `json:"kind"` // "access" or "refresh"
	User    string    `json:"user"` // sys_user sys_id
	Client  string    `json:"client"`
	Family  string    `json:"family"`
	Issued  time.Time `json:"issued"`
	Expires time.Time `json:"expires"`
	Revoked bool      `json:"revoked,omitempty"`
	Rotated bool      `json:"rotated,omitempty"` // replaced by rotation
}

type authRequest struct {
	ClientID, RedirectURI, State, Challenge, Scope string
	Expires                                        time.Time
}

type authCode struct {
	authRequest
	User   string
	Family string
	Used   bool
}

// tokenLive is called with s.mu held (read or write).
func (s *Server) tokenLive(t *token) bool {
	if t.Revoked || t.Rotated {
		return false
	}
	exp := t.Expires
	if t.Kind == "access" {
		exp = exp.Add(-time.Duration(s.Faults().TokenSkew))
	}
	return s.now().Before(exp)
}

// ---------- /oauth_auth.do ----------

var authTmpl = template.Must(template.New("auth").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>ServiceNow sandbox - Sign in</title></head>
<body>
<h1>Sign in to the ServiceNow sandbox</h1>
<p>The application <b>{{.ClientID}}</b> asks to connect to your account (scope: useraccount).</p>
{{if .Error}}<p class="error" role="alert">{{.Error}}</p>{{end}}
<form method="post" action="/oauth_auth.do">
<input type="hidden" name="sysparm_request" value="{{.RequestID}}">
<p><label>User name <input type="text" name="user_name" value="{{.UserName}}"></label></p>
<p><label>Password <input type="password" name="user_password"></label></p>
<p><button type="submit" name="action" value="allow">Allow</button>
<button type="submit" name="action" value="deny">Deny</button></p>
</form>
<h2>Sandbox users</h2>
<table border="1"><tr><th>user_name</th><th>password</th><th>name</th><th>roles</th></tr>
{{range .Users}}<tr><td>{{.UserName}}</td><td>{{.Password}}</td><td>{{.Name}}</td><td>{{range $i, $r := .Roles}}{{if $i}}, {{end}}{{$r}}{{end}}</td></tr>
{{end}}</table>
</body></html>
`))

var errTmpl = template.Must(template.New("err").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>OAuth error</title></head>
<body><h1>OAuth error</h1><p class="error" role="alert">{{.}}</p></body></html>
`))

func oauthErrorPage(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = errTmpl.Execute(w, msg)
}

func (s *Server) redirectAllowed(uri string) bool {
	if len(s.opts.RedirectURIs) == 0 {
		u, err := url.Parse(uri)
		return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.Fragment == ""
	}
	for _, r := range s.opts.RedirectURIs {
		if r == uri {
			return true
		}
	}
	return false
}

func (s *Server) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		s.authorizeGet(w, r)
	case http.MethodPost:
		s.authorizePost(w, r)
	default:
		oauthErrorPage(w, http.StatusMethodNotAllowed, "Method not allowed")
	}
}

func (s *Server) authorizeGet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != s.opts.ClientID {
		oauthErrorPage(w, http.StatusBadRequest, "Invalid client_id: "+q.Get("client_id"))
		return
	}
	redirect := q.Get("redirect_uri")
	if redirect == "" && len(s.opts.RedirectURIs) > 0 {
		redirect = s.opts.RedirectURIs[0]
	}
	if redirect == "" || !s.redirectAllowed(redirect) {
		oauthErrorPage(w, http.StatusBadRequest, "Invalid redirect_uri: it does not match a redirect URL registered for this client")
		return
	}
	if q.Get("response_type") != "code" {
		oauthErrorPage(w, http.StatusBadRequest, "Unsupported response_type; only code is supported")
		return
	}
	state := q.Get("state")
	if state == "" && s.stateRequired() {
		oauthErrorPage(w, http.StatusBadRequest, "Missing State parameter in request")
		return
	}
	ch := q.Get("code_challenge")
	if ch != "" {
		if q.Get("code_challenge_method") != "S256" {
			oauthErrorPage(w, http.StatusBadRequest, "Invalid code_challenge_method: only S256 is supported")
			return
		}
		if len(ch) < 43 || len(ch) > 128 {
			oauthErrorPage(w, http.StatusBadRequest, "Invalid code_challenge")
			return
		}
	} else if q.Get("code_challenge_method") != "" {
		oauthErrorPage(w, http.StatusBadRequest, "code_challenge_method without code_challenge")
		return
	}
	id := randToken()
	s.mu.Lock()
	now := s.now()
	for k, p := range s.pending {
		if now.After(p.Expires) {
			delete(s.pending, k)
		}
	}
	for k, c := range s.codes {
		if now.After(c.Expires.Add(time.Hour)) {
			delete(s.codes, k)
		}
	}
	s.pending[id] = &authRequest{ClientID: s.opts.ClientID, RedirectURI: q.Get("redirect_uri"),
		State: state, Challenge: ch, Scope: q.Get("scope"), Expires: now.Add(30 * time.Minute)}
	s.mu.Unlock()
	s.showForm(w, http.StatusOK, id, "", "")
}

func (s *Server) showForm(w http.ResponseWriter, status int, id, user, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = authTmpl.Execute(w, map[string]any{"ClientID": s.opts.ClientID, "RequestID": id,
		"UserName": user, "Error": msg, "Users": s.users})
}

func (s *Server) authorizePost(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthErrorPage(w, http.StatusBadRequest, "Bad form")
		return
	}
	id := r.PostForm.Get("sysparm_request")
	s.mu.RLock()
	req := s.pending[id]
	s.mu.RUnlock()
	if req == nil || s.now().After(req.Expires) {
		oauthErrorPage(w, http.StatusBadRequest, "The authorization request is unknown or has expired; start again")
		return
	}
	redirect := req.RedirectURI
	if redirect == "" {
		redirect = s.opts.RedirectURIs[0]
	}
	back := func(params url.Values) {
		if req.State != "" {
			params.Set("state", req.State)
		}
		sep := "?"
		if strings.Contains(redirect, "?") {
			sep = "&"
		}
		http.Redirect(w, r, redirect+sep+params.Encode(), http.StatusFound)
	}
	switch r.PostForm.Get("action") {
	case "deny":
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
		s.countAuthz("deny")
		back(url.Values{"error": {"access_denied"}, "error_description": {"The user denied the request"}})
		return
	case "allow":
	default:
		s.showForm(w, http.StatusBadRequest, id, r.PostForm.Get("user_name"), "Choose Allow or Deny.")
		return
	}
	name, pass := r.PostForm.Get("user_name"), r.PostForm.Get("user_password")
	s.mu.Lock()
	pw, ok := s.pwd[name]
	uid := s.userIDByNameLocked(name)
	if !ok || uid == "" || subtle.ConstantTimeCompare([]byte(pw), []byte(pass)) != 1 || s.principalLocked(uid) == nil {
		s.mu.Unlock()
		s.countAuthz("bad_password")
		s.showForm(w, http.StatusOK, id, name, "User name or password invalid")
		return
	}
	delete(s.pending, id)
	code := randToken()
	s.codes[code] = &authCode{authRequest: *req, User: uid, Family: newSysID()}
	s.codes[code].Expires = s.now().Add(s.opts.CodeTTL)
	s.mu.Unlock()
	s.persistGrant()
	s.countAuthz("allow")
	back(url.Values{"code": {code}})
}

// ---------- /oauth_token.do ----------

func tokenRefused(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusUnauthorized, map[string]string{"error_description": "access_denied", "error": "server_error"})
}

// peekTokenUser finds the user_name behind a token request without
// changing anything (used for per-user fault targeting).
func (s *Server) peekTokenUser(form url.Values) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	uid := ""
	switch form.Get("grant_type") {
	case "authorization_code":
		if c := s.codes[form.Get("code")]; c != nil {
			uid = c.User
		}
	case "refresh_token":
		if t := s.tokens[form.Get("refresh_token")]; t != nil {
			uid = t.User
		}
	case "password":
		return form.Get("username")
	}
	if u := s.data["sys_user"].rows[uid]; u != nil {
		return u["user_name"]
	}
	return ""
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var form url.Values
	if r.Method == http.MethodPost && ct == "application/x-www-form-urlencoded" {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<16)
		if err := r.ParseForm(); err == nil {
			form = r.PostForm
		}
	}
	user := ""
	if form != nil {
		user = s.peekTokenUser(form)
	}
	if s.applyFaults(w, r, scopeToken, user) {
		return
	}
	if form == nil {
		// ServiceNow documents only that a JSON body "results in an
		// unspecified error"; we answer like every other refusal.
		s.countToken("none", "refused", "")
		tokenRefused(w)
		return
	}
	grant := form.Get("grant_type")
	switch grant {
	case "authorization_code", "refresh_token", "password":
	default:
		s.countToken("other", "refused", "")
		tokenRefused(w)
		return
	}
	clientID, secret := form.Get("client_id"), form.Get("client_secret")
	if bu, bp, ok := r.BasicAuth(); ok && clientID == "" {
		clientID, secret = bu, bp
	}
	if clientID != s.opts.ClientID || subtle.ConstantTimeCompare([]byte(secret), []byte(s.opts.ClientSecret)) != 1 {
		s.countToken(grant, "refused", "")
		tokenRefused(w)
		return
	}
	var resp map[string]any
	var refreshUser string
	switch grant {
	case "authorization_code":
		resp = s.exchangeCode(form)
	case "refresh_token":
		resp, refreshUser = s.refresh(form)
	case "password":
		resp = s.passwordGrant(form)
	}
	// Saved before answering, refusals included: a refusal may have used
	// a code or revoked a token family.
	s.persistGrant()
	if resp == nil {
		s.countToken(grant, "refused", "")
		tokenRefused(w)
		return
	}
	s.countToken(grant, "ok", refreshUser)
	if s.truncateFault(scopeToken, r.URL.Path, user) {
		buf := &bufferWriter{header: http.Header{}}
		buf.header.Set("Cache-Control", "no-store")
		writeJSON(buf, http.StatusOK, resp)
		writeTruncated(w, buf)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, resp)
}

// issueLocked creates an access token (and a refresh token when refresh is
// empty) for a family; s.mu must be held for writing.
func (s *Server) issueLocked(user, family, refresh string) map[string]any {
	now := s.now()
	at := &token{Value: randToken(), Kind: "access", User: user, Client: s.opts.ClientID, Family: family,
		Issued: now, Expires: now.Add(s.opts.AccessTTL)}
	s.tokens[at.Value] = at
	if refresh == "" {
		rt := &token{Value: randToken(), Kind: "refresh", User: user, Client: s.opts.ClientID, Family: family,
			Issued: now, Expires: now.Add(s.opts.RefreshTTL)}
		s.tokens[rt.Value] = rt
		refresh = rt.Value
	}
	exp := int64((s.opts.AccessTTL - time.Second) / time.Second)
	if exp < 1 {
		exp = int64(s.opts.AccessTTL / time.Second)
	}
	return map[string]any{"access_token": at.Value, "refresh_token": refresh, "scope": "useraccount",
		"token_type": "Bearer", "expires_in": exp}
}

func (s *Server) exchangeCode(form url.Values) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	code := form.Get("code")
	c := s.codes[code]
	if c == nil {
		return nil
	}
	if c.Used {
		// Reuse of a code: refuse and revoke what it produced (RFC 6749 4.1.2).
		s.revokeFamilyLocked(c.Family)
		return nil
	}
	c.Used = true // single use, whatever happens next
	if c.ClientID != form.Get("client_id") && form.Get("client_id") != "" {
		return nil
	}
	if !s.now().Before(c.Expires) {
		return nil
	}
	// redirect_uri must repeat the authorization request's; when that one
	// was omitted, either nothing or the registered default may be sent.
	if got := form.Get("redirect_uri"); got != c.RedirectURI &&
		!(c.RedirectURI == "" && len(s.opts.RedirectURIs) > 0 && got == s.opts.RedirectURIs[0]) {
		return nil
	}
	if c.Challenge != "" {
		v := form.Get("code_verifier")
		sum := sha256.Sum256([]byte(v))
		if v == "" || base64.RawURLEncoding.EncodeToString(sum[:]) != c.Challenge {
			return nil
		}
	}
	if s.principalLocked(c.User) == nil {
		return nil
	}
	return s.issueLocked(c.User, c.Family, "")
}

func (s *Server) passwordGrant(form url.Values) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := form.Get("username")
	pw, ok := s.pwd[name]
	uid := s.userIDByNameLocked(name)
	if !ok || uid == "" || subtle.ConstantTimeCompare([]byte(pw), []byte(form.Get("password"))) != 1 || s.principalLocked(uid) == nil {
		return nil
	}
	return s.issueLocked(uid, newSysID(), "")
}

func (s *Server) refresh(form url.Values) (map[string]any, string) {
	rotate := s.opts.RotateRefresh || s.Faults().RotateRefresh
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokens[form.Get("refresh_token")]
	if t == nil || t.Kind != "refresh" || t.Client != s.opts.ClientID {
		return nil, ""
	}
	if t.Rotated && !t.Revoked {
		// A replaced refresh token came back: assume theft, kill the family.
		s.revokeFamilyLocked(t.Family)
		return nil, ""
	}
	if !s.tokenLive(t) {
		return nil, ""
	}
	p := s.principalLocked(t.User)
	if p == nil {
		return nil, ""
	}
	if !rotate {
		resp := s.issueLocked(t.User, t.Family, t.Value)
		if s.opts.RefreshOmitsToken {
			delete(resp, "refresh_token")
		}
		return resp, p.UserName
	}
	resp := s.issueLocked(t.User, t.Family, "")
	t.Rotated = true
	return resp, p.UserName
}

func (s *Server) revokeFamilyLocked(family string) {
	for _, t := range s.tokens {
		if t.Family == family {
			t.Revoked = true
		}
	}
}

// ---------- /oauth_revoke_token.do ----------

func (s *Server) serveRevoke(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	v := r.Form.Get("token")
	s.mu.Lock()
	if t := s.tokens[v]; t != nil {
		t.Revoked = true
		if t.Kind == "refresh" {
			for _, o := range s.tokens {
				if o.Family == t.Family && o.Kind == "access" {
					o.Revoked = true
				}
			}
		}
	}
	s.mu.Unlock()
	s.persistGrant()
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// RevokeUser expires every token of a user (by user_name) server-side, or
// of every user when name is empty. It returns how many live tokens died.
func (s *Server) RevokeUser(name string) int {
	s.mu.Lock()
	uid := ""
	if name != "" {
		uid = s.userIDByNameLocked(name)
		if uid == "" {
			s.mu.Unlock()
			return 0
		}
	}
	n := 0
	for _, t := range s.tokens {
		if (uid == "" || t.User == uid) && !t.Revoked {
			if s.tokenLive(t) {
				n++
			}
			t.Revoked = true
		}
	}
	s.mu.Unlock()
	s.persistGrant()
	return n
}

var _ = strconv.Itoa
