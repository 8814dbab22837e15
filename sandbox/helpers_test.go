package sandbox

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	t   *testing.T
	sb  *Server
	srv *httptest.Server
	clk *clock
	c   *http.Client
}

const testRedirect = "http://127.0.0.1:9999/oauth/callback"

func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	clk := &clock{t: time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)}
	if opts.Now == nil {
		opts.Now = clk.Now
	}
	if opts.RedirectURIs == nil {
		opts.RedirectURIs = []string{testRedirect}
	}
	sb := New(opts)
	srv := httptest.NewServer(sb)
	e := &env{t: t, sb: sb, srv: srv, clk: clk, c: &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	t.Cleanup(func() {
		_ = sb.Close()
		srv.Close()
	})
	return e
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("not JSON (status %d): %q", r.status, r.body)
	}
	return m
}

func (r resp) list(t *testing.T) []map[string]any {
	t.Helper()
	var m struct{ Result []map[string]any }
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("not a JSON list (status %d): %q", r.status, r.body)
	}
	return m.Result
}

func (r resp) one(t *testing.T) map[string]any {
	t.Helper()
	var m struct{ Result map[string]any }
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("not a JSON record (status %d): %q", r.status, r.body)
	}
	return m.Result
}

func (e *env) do(req *http.Request) resp {
	e.t.Helper()
	res, err := e.c.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatalf("read body: %v", err)
	}
	return resp{res.StatusCode, res.Header, b}
}

func (e *env) get(path string) resp {
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	return e.do(req)
}

func (e *env) postForm(path string, form url.Values) resp {
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return e.do(req)
}

// api calls /api with a bearer token and an optional JSON body.
func (e *env) api(method, path, tok string, body any) resp {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return e.do(req)
}

var inputRe = regexp.MustCompile(`<input[^>]*>`)
var attrRe = regexp.MustCompile(`(\w+)="([^"]*)"`)

// formFields reads the <input> names and values of the sign-in page.
func formFields(page string) map[string]string {
	out := map[string]string{}
	for _, in := range inputRe.FindAllString(page, -1) {
		attrs := map[string]string{}
		for _, m := range attrRe.FindAllStringSubmatch(in, -1) {
			attrs[m[1]] = html.UnescapeString(m[2])
		}
		if attrs["name"] != "" {
			out[attrs["name"]] = attrs["value"]
		}
	}
	return out
}

func pkcePair() (verifier, challenge string) {
	verifier = strings.Repeat("v", 20) + randToken()[:30]
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

func (e *env) authURL(extra url.Values) string {
	q := url.Values{"response_type": {"code"}, "client_id": {"sandbox-client"}, "redirect_uri": {testRedirect}, "state": {"st-123"}}
	for k, v := range extra {
		if len(v) == 0 || v[0] == "" {
			delete(q, k)
		} else {
			q[k] = v
		}
	}
	return "/oauth_auth.do?" + q.Encode()
}

// signIn completes the sign-in form like a browserless client and returns
// the redirect's query.
func (e *env) signIn(user, challenge, action string) url.Values {
	e.t.Helper()
	extra := url.Values{}
	if challenge != "" {
		extra.Set("code_challenge", challenge)
		extra.Set("code_challenge_method", "S256")
	}
	page := e.get(e.authURL(extra))
	if page.status != 200 || !strings.Contains(string(page.body), `action="/oauth_auth.do"`) {
		e.t.Fatalf("authorize page: %d %s", page.status, page.body)
	}
	if strings.Contains(string(page.body), "<script") {
		e.t.Fatal("sign-in page must not use JavaScript")
	}
	f := formFields(string(page.body))
	form := url.Values{"sysparm_request": {f["sysparm_request"]}, "user_name": {user}, "user_password": {SeedPassword}, "action": {action}}
	r := e.postForm("/oauth_auth.do", form)
	if r.status != http.StatusFound {
		e.t.Fatalf("sign-in answer: %d %s", r.status, r.body)
	}
	loc, err := url.Parse(r.header.Get("Location"))
	if err != nil || !strings.HasPrefix(loc.String(), testRedirect+"?") {
		e.t.Fatalf("redirect %q", r.header.Get("Location"))
	}
	return loc.Query()
}

func (e *env) exchange(code, verifier string) resp {
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {testRedirect},
		"client_id": {"sandbox-client"}, "client_secret": {"sandbox-secret"}}
	if verifier != "" {
		form.Set("code_verifier", verifier)
	}
	return e.postForm("/oauth_token.do", form)
}

// tokens runs the whole authorization code flow for a user.
func (e *env) tokens(user string) (access, refresh string) {
	e.t.Helper()
	v, ch := pkcePair()
	q := e.signIn(user, ch, "allow")
	r := e.exchange(q.Get("code"), v)
	if r.status != 200 {
		e.t.Fatalf("exchange: %d %s", r.status, r.body)
	}
	m := r.json(e.t)
	return m["access_token"].(string), m["refresh_token"].(string)
}

func (e *env) refresh(rt string) resp {
	return e.postForm("/oauth_token.do", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt},
		"client_id": {"sandbox-client"}, "client_secret": {"sandbox-secret"}})
}

const refusedBody = `{"error":"server_error","error_description":"access_denied"}`

func assertRefused(t *testing.T, r resp) {
	t.Helper()
	if r.status != 401 {
		t.Fatalf("want 401, got %d %s", r.status, r.body)
	}
	m := r.json(t)
	if len(m) != 2 || m["error"] != "server_error" || m["error_description"] != "access_denied" {
		t.Fatalf("refusal body %s", r.body)
	}
}

func assertEnvelope(t *testing.T, r resp, status int, msg string, detail any) {
	t.Helper()
	if r.status != status {
		t.Fatalf("want %d, got %d %s", status, r.status, r.body)
	}
	m := r.json(t)
	if m["status"] != "failure" {
		t.Fatalf("status field: %s", r.body)
	}
	er, _ := m["error"].(map[string]any)
	if er == nil || er["message"] != msg {
		t.Fatalf("want message %q, got %s", msg, r.body)
	}
	if detail != "*" && er["detail"] != detail {
		t.Fatalf("want detail %v, got %s", detail, r.body)
	}
}

// userTokens caches one access token per seeded user.
func (e *env) userTokens(users ...string) map[string]string {
	out := map[string]string{}
	for _, u := range users {
		out[u], _ = e.tokens(u)
	}
	return out
}
