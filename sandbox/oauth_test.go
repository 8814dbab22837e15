package sandbox

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestOAuthHappyPath(t *testing.T) {
	e := newEnv(t, Options{})
	v, ch := pkcePair()
	q := e.signIn("alice", ch, "allow")
	if q.Get("state") != "st-123" || q.Get("code") == "" {
		t.Fatalf("redirect query %v", q)
	}
	r := e.exchange(q.Get("code"), v)
	if r.status != 200 {
		t.Fatalf("exchange %d %s", r.status, r.body)
	}
	m := r.json(t)
	if m["scope"] != "useraccount" || m["token_type"] != "Bearer" || m["expires_in"] != float64(1799) {
		t.Fatalf("token answer %s", r.body)
	}
	at, rt := m["access_token"].(string), m["refresh_token"].(string)
	if len(at) != 86 || len(rt) != 86 || at == rt {
		t.Fatalf("token shapes %q %q", at, rt)
	}
	me := e.api("GET", "/api/now/table/sys_user?sysparm_query=sys_id=javascript:gs.getUserID()&sysparm_fields=user_name,sys_id", at, nil).list(t)
	if len(me) != 1 || me[0]["user_name"] != "alice" {
		t.Fatalf("who am I: %v", me)
	}
}

func TestAuthorizeValidation(t *testing.T) {
	e := newEnv(t, Options{})
	cases := []struct {
		name  string
		extra url.Values
		want  string
	}{
		{"missing state", url.Values{"state": {""}}, "Missing State parameter in request"},
		{"bad client", url.Values{"client_id": {"nope"}}, "Invalid client_id"},
		{"unregistered redirect", url.Values{"redirect_uri": {"http://127.0.0.1:9999/other"}}, "Invalid redirect_uri"},
		{"plain PKCE", url.Values{"code_challenge": {strings.Repeat("a", 43)}, "code_challenge_method": {"plain"}}, "only S256"},
		{"PKCE without method", url.Values{"code_challenge": {strings.Repeat("a", 43)}}, "only S256"},
		{"response type", url.Values{"response_type": {"token"}}, "response_type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.get(e.authURL(tc.extra))
			if r.status != 400 || !strings.Contains(string(r.body), tc.want) {
				t.Fatalf("got %d %s", r.status, r.body)
			}
			if strings.Contains(string(r.body), "sysparm_request") {
				t.Fatal("error page must not hold the sign-in form")
			}
		})
	}
	t.Run("state optional", func(t *testing.T) {
		e2 := newEnv(t, Options{StateOptional: true})
		if r := e2.get(e2.authURL(url.Values{"state": {""}})); r.status != 200 {
			t.Fatalf("got %d", r.status)
		}
	})
}

func TestSignInFormWrongPasswordAndDeny(t *testing.T) {
	e := newEnv(t, Options{})
	page := e.get(e.authURL(nil))
	f := formFields(string(page.body))
	for _, k := range []string{"sysparm_request", "user_name", "user_password"} {
		if _, ok := f[k]; !ok {
			t.Fatalf("form lacks %s: %s", k, page.body)
		}
	}
	if !strings.Contains(string(page.body), `name="action" value="allow"`) || !strings.Contains(string(page.body), `name="action" value="deny"`) {
		t.Fatal("form lacks the allow/deny buttons")
	}
	r := e.postForm("/oauth_auth.do", url.Values{"sysparm_request": {f["sysparm_request"]}, "user_name": {"alice"}, "user_password": {"wrong"}, "action": {"allow"}})
	if r.status != 200 || !strings.Contains(string(r.body), "invalid") || formFields(string(r.body))["sysparm_request"] != f["sysparm_request"] {
		t.Fatalf("wrong password: %d %s", r.status, r.body)
	}
	q := e.signIn("bob", "", "deny")
	if q.Get("error") != "access_denied" || q.Get("state") != "st-123" || q.Get("code") != "" {
		t.Fatalf("deny: %v", q)
	}
}

func TestTokenRefusals(t *testing.T) {
	e := newEnv(t, Options{CodeTTL: time.Minute})
	type setup func() url.Values
	base := func(code, verifier string) url.Values {
		return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {testRedirect},
			"client_id": {"sandbox-client"}, "client_secret": {"sandbox-secret"}, "code_verifier": {verifier}}
	}
	fresh := func() (string, string) {
		v, ch := pkcePair()
		return e.signIn("alice", ch, "allow").Get("code"), v
	}
	cases := []struct {
		name string
		make setup
	}{
		{"PKCE mismatch", func() url.Values { c, _ := fresh(); return base(c, "x"+strings.Repeat("y", 50)) }},
		{"missing verifier", func() url.Values { c, _ := fresh(); f := base(c, ""); f.Del("code_verifier"); return f }},
		{"bad secret", func() url.Values { c, v := fresh(); f := base(c, v); f.Set("client_secret", "nope"); return f }},
		{"no secret", func() url.Values { c, v := fresh(); f := base(c, v); f.Del("client_secret"); return f }},
		{"bad client", func() url.Values { c, v := fresh(); f := base(c, v); f.Set("client_id", "other"); return f }},
		{"redirect mismatch", func() url.Values { c, v := fresh(); f := base(c, v); f.Set("redirect_uri", testRedirect+"x"); return f }},
		{"unknown code", func() url.Values { return base("nope", "nope") }},
		{"expired code", func() url.Values { c, v := fresh(); e.clk.Add(61 * time.Second); return base(c, v) }},
		{"unknown grant", func() url.Values { f := base("", ""); f.Set("grant_type", "client_credentials"); return f }},
		{"bad refresh token", func() url.Values {
			return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"nope"}, "client_id": {"sandbox-client"}, "client_secret": {"sandbox-secret"}}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assertRefused(t, e.postForm("/oauth_token.do", tc.make()))
		})
	}
	t.Run("JSON body", func(t *testing.T) {
		req, _ := http.NewRequest("POST", e.srv.URL+"/oauth_token.do", strings.NewReader(`{"grant_type":"password"}`))
		req.Header.Set("Content-Type", "application/json")
		assertRefused(t, e.do(req))
	})
	t.Run("code reuse revokes what it gave", func(t *testing.T) {
		c, v := fresh()
		r := e.exchange(c, v)
		if r.status != 200 {
			t.Fatalf("first use: %d", r.status)
		}
		at := r.json(t)["access_token"].(string)
		assertRefused(t, e.exchange(c, v))
		assertEnvelope(t, e.api("GET", "/api/now/table/incident?sysparm_limit=1", at, nil), 401, "User Not Authenticated", "Required to provide Auth information")
	})
	st := e.sb.Stats()
	if st.TokenRequests["authorization_code"]["refused"] < 8 {
		t.Fatalf("stats: %+v", st.TokenRequests)
	}
}

func TestRefreshSameToken(t *testing.T) {
	e := newEnv(t, Options{AccessTTL: 10 * time.Minute})
	at, rt := e.tokens("bob")
	e.clk.Add(10 * time.Minute)
	assertEnvelope(t, e.api("GET", "/api/now/table/incident?sysparm_limit=1", at, nil), 401, "User Not Authenticated", "Required to provide Auth information")
	r := e.refresh(rt)
	if r.status != 200 {
		t.Fatalf("refresh %d %s", r.status, r.body)
	}
	m := r.json(t)
	if m["refresh_token"] != rt || m["access_token"] == at || m["expires_in"] != float64(599) {
		t.Fatalf("refresh answer %s", r.body)
	}
	if r := e.api("GET", "/api/now/table/incident?sysparm_limit=1", m["access_token"].(string), nil); r.status != 200 {
		t.Fatalf("new token: %d", r.status)
	}
	if e.sb.Stats().RefreshesByUser["bob"] != 1 {
		t.Fatalf("stats %+v", e.sb.Stats())
	}
	// refresh token expiry
	e.clk.Add(8640000 * time.Second)
	assertRefused(t, e.refresh(rt))
}

func TestRefreshRotationReuse(t *testing.T) {
	for _, viaFault := range []bool{false, true} {
		e := newEnv(t, Options{RotateRefresh: !viaFault})
		if viaFault {
			e.sb.SetFaults(Faults{RotateRefresh: true})
		}
		_, rt1 := e.tokens("alice")
		r := e.refresh(rt1)
		m := r.json(t)
		rt2, at2 := m["refresh_token"].(string), m["access_token"].(string)
		if rt2 == rt1 {
			t.Fatal("rotation must give a new refresh token")
		}
		assertRefused(t, e.refresh(rt1)) // reuse: family revoked
		assertRefused(t, e.refresh(rt2))
		if r := e.api("GET", "/api/now/table/incident", at2, nil); r.status != 401 {
			t.Fatalf("family access token still works: %d", r.status)
		}
	}
}

// TestRefreshOmitsRefreshToken: with RefreshOmitsToken the refresh grant
// answers an access token only, and the refresh token goes on working.
func TestRefreshOmitsRefreshToken(t *testing.T) {
	e := newEnv(t, Options{RefreshOmitsToken: true})
	_, rt := e.tokens("alice")
	for range 2 {
		m := e.refresh(rt).json(t)
		if _, has := m["refresh_token"]; has || m["access_token"] == nil {
			t.Fatalf("refresh answered %v, want an access token only", m)
		}
	}
}

func TestRevoke(t *testing.T) {
	e := newEnv(t, Options{})
	at, rt := e.tokens("alice")
	if r := e.get("/oauth_revoke_token.do?token=" + url.QueryEscape(at)); r.status != 200 {
		t.Fatalf("revoke %d", r.status)
	}
	assertEnvelope(t, e.api("GET", "/api/now/table/incident", at, nil), 401, "User Not Authenticated", "Required to provide Auth information")
	at2 := e.refresh(rt).json(t)["access_token"].(string)
	if r := e.postForm("/oauth_revoke_token.do", url.Values{"token": {rt}}); r.status != 200 {
		t.Fatalf("revoke %d", r.status)
	}
	assertRefused(t, e.refresh(rt))
	if r := e.api("GET", "/api/now/table/incident", at2, nil); r.status != 401 {
		t.Fatal("revoking the refresh token must kill its access tokens")
	}
}

func TestAPIAuthEnvelope(t *testing.T) {
	e := newEnv(t, Options{})
	for _, tok := range []string{"", "garbage"} {
		assertEnvelope(t, e.api("GET", "/api/now/table/incident", tok, nil), 401, "User Not Authenticated", "Required to provide Auth information")
	}
	req, _ := http.NewRequest("GET", e.srv.URL+"/api/now/table/incident?sysparm_limit=1", nil)
	req.SetBasicAuth("alice", SeedPassword)
	if r := e.do(req); r.status != 200 {
		t.Fatalf("basic auth %d", r.status)
	}
	pw := e.postForm("/oauth_token.do", url.Values{"grant_type": {"password"}, "username": {"carol"}, "password": {SeedPassword},
		"client_id": {"sandbox-client"}, "client_secret": {"sandbox-secret"}})
	if pw.status != 200 {
		t.Fatalf("password grant %d", pw.status)
	}
}
