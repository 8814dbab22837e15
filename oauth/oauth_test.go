package oauth_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"servicenow-mcp/config"
	"servicenow-mcp/oauth"
	"servicenow-mcp/sandbox"
	"servicenow-mcp/storage"
)

// clock is a settable time shared by the sandbox and the manager.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

type env struct {
	t        *testing.T
	clock    *clock
	sandbox  *sandbox.Running
	store    storage.Store
	dir      string // the store's data directory
	key      []byte // the store's encryption key
	mgr      *oauth.Manager
	callback *httptest.Server
	// serving is the manager whose callback handler the callback server
	// runs (mgr unless a test swaps in another worker).
	serving atomic.Pointer[oauth.Manager]
}

func newEnv(t *testing.T, opts sandbox.Options) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &env{t: t, clock: &clock{now: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}}

	// The callback server must exist before the sandbox so that its URL
	// can be registered as the redirect URI.
	e.callback = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.serving.Load().CallbackHandler().ServeHTTP(w, r)
	}))
	t.Cleanup(e.callback.Close)
	redirect := e.callback.URL + "/oauth/callback"

	opts.RedirectURIs = []string{redirect}
	opts.Now = e.clock.Now
	run, err := sandbox.Start(ctx, "127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(run.Close)
	e.sandbox = run

	key := make([]byte, 32)
	e.dir, e.key = t.TempDir(), key
	st, err := storage.Open(ctx, storage.Options{Dir: e.dir, Keys: storage.Keyring{Current: key}, Logger: zerolog.Nop(), Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.store = st

	e.mgr = oauth.NewManager(oauth.Options{
		Store: st,
		Connections: []config.Connection{{
			Name: "sandbox", InstanceURL: run.URL, ClientID: "sandbox-client", ClientSecret: "sandbox-secret",
		}},
		RedirectURI:   redirect,
		RefreshMargin: time.Minute,
		LinkExpiry:    10 * time.Minute,
		HTTPClient:    &http.Client{Timeout: 5 * time.Second},
		Logger:        zerolog.Nop(),
		Now:           e.clock.Now,
	})
	e.serving.Store(e.mgr)
	return e
}

var noFollow = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// consent plays the browser: open the link, sign in as user, press action,
// and follow the redirect to the callback. It returns the callback page.
func (e *env) consent(link, user, action string) (int, string) {
	e.t.Helper()
	resp, err := http.Get(link)
	if err != nil {
		e.t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="sysparm_request" value="([^"]+)"`).FindSubmatch(page)
	if m == nil {
		e.t.Fatalf("no consent form in %d page: %s", resp.StatusCode, page)
	}
	u, _ := url.Parse(link)
	form := url.Values{"sysparm_request": {string(m[1])}, "user_name": {user}, "user_password": {"sandbox"}, "action": {action}}
	resp, err = noFollow.PostForm(u.Scheme+"://"+u.Host+"/oauth_auth.do", form)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, e.callback.URL) {
		e.t.Fatalf("consent answered %d Location %q", resp.StatusCode, loc)
	}
	return e.get(loc)
}

func (e *env) get(u string) (int, string) {
	e.t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *env) link(user string) string {
	e.t.Helper()
	l, err := e.mgr.Link(context.Background(), key(user))
	if err != nil {
		e.t.Fatal(err)
	}
	return l.URL
}

func (e *env) linkUser(user string) {
	e.t.Helper()
	if status, page := e.consent(e.link(user), user, "allow"); status != 200 || !strings.Contains(page, "linked") {
		e.t.Fatalf("callback %d: %s", status, page)
	}
}

func (e *env) tokenRequests(grant, outcome string) int64 {
	return e.sandbox.Server.Stats().TokenRequests[grant][outcome]
}

func key(user string) storage.AccountKey {
	return storage.AccountKey{Connection: "sandbox", User: user}
}

func TestLinkIsReusedAndCarriesPKCE(t *testing.T) {
	e := newEnv(t, sandbox.Options{})
	first := e.link("alice")
	if again := e.link("alice"); again != first {
		t.Fatalf("second link differs:\n%s\n%s", first, again)
	}
	if other := e.link("bob"); other == first {
		t.Fatal("bob got alice's link")
	}
	u, _ := url.Parse(first)
	q := u.Query()
	if q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) < 43 {
		t.Errorf("no S256 challenge in %s", first)
	}
	if len(q.Get("state")) < 22 { // 128 bits in base64url
		t.Errorf("state %q is shorter than 128 bits", q.Get("state"))
	}
	if strings.Contains(first, "verifier") || strings.Contains(first, "sandbox-secret") {
		t.Error("link leaks a secret")
	}
}

func TestCallback(t *testing.T) {
	e := newEnv(t, sandbox.Options{})

	t.Run("allow links the ServiceNow user", func(t *testing.T) {
		status, page := e.consent(e.link("alice"), "alice", "allow")
		if status != 200 || !strings.Contains(page, "alice") {
			t.Fatalf("callback %d: %s", status, page)
		}
		acct, err := e.store.GetAccount(context.Background(), key("alice"))
		if err != nil || acct.Status != storage.StatusActive || acct.SNUserName != "alice" || acct.SNUserSysID == "" {
			t.Fatalf("account = %+v, %v", acct, err)
		}
	})

	tests := []struct {
		name string
		url  func() string
		want string
	}{
		{"missing state", func() string { return e.callback.URL + "/oauth/callback?code=x" }, "Missing state"},
		{"unknown state", func() string { return e.callback.URL + "/oauth/callback?code=x&state=nope" }, "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.tokenRequests("authorization_code", "ok") + e.tokenRequests("authorization_code", "refused")
			status, page := e.get(tt.url())
			if status != http.StatusBadRequest || !strings.Contains(page, tt.want) {
				t.Fatalf("got %d %s", status, page)
			}
			after := e.tokenRequests("authorization_code", "ok") + e.tokenRequests("authorization_code", "refused")
			if after != before {
				t.Error("the token endpoint was called")
			}
		})
	}

	t.Run("replayed callback is refused without a token request", func(t *testing.T) {
		link := e.link("bob")
		resp, _ := http.Get(link)
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		id := regexp.MustCompile(`name="sysparm_request" value="([^"]+)"`).FindSubmatch(page)[1]
		u, _ := url.Parse(link)
		resp, _ = noFollow.PostForm(u.Scheme+"://"+u.Host+"/oauth_auth.do", url.Values{
			"sysparm_request": {string(id)}, "user_name": {"bob"}, "user_password": {"sandbox"}, "action": {"allow"}})
		resp.Body.Close()
		cb := resp.Header.Get("Location")
		if status, _ := e.get(cb); status != 200 {
			t.Fatalf("first callback %d", status)
		}
		before := e.tokenRequests("authorization_code", "ok")
		status, page2 := e.get(cb)
		if status != http.StatusBadRequest || !strings.Contains(page2, "already used") {
			t.Fatalf("replay answered %d %s", status, page2)
		}
		if e.tokenRequests("authorization_code", "ok") != before {
			t.Error("replay reached the token endpoint")
		}
	})

	t.Run("deny stores nothing", func(t *testing.T) {
		status, page := e.consent(e.link("carol"), "carol", "deny")
		if status != 200 || !strings.Contains(page, "Deny") {
			t.Fatalf("deny page %d %s", status, page)
		}
		if _, err := e.store.GetAccount(context.Background(), key("carol")); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("carol has an account after deny: %v", err)
		}
	})

	t.Run("expired link", func(t *testing.T) {
		link := e.link("dave")
		e.clock.Add(11 * time.Minute)
		defer e.clock.Add(-11 * time.Minute)
		state := mustQuery(link, "state")
		status, page := e.get(e.callback.URL + "/oauth/callback?code=x&state=" + url.QueryEscape(state))
		if status != http.StatusBadRequest || !strings.Contains(strings.ToLower(page), "expired") && !strings.Contains(page, "unknown") {
			t.Fatalf("expired link answered %d %s", status, page)
		}
	})
}

func mustQuery(link, name string) string {
	u, _ := url.Parse(link)
	return u.Query().Get(name)
}

func TestTokenRefresh(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, sandbox.Options{AccessTTL: 30 * time.Minute})
	e.linkUser("alice")

	first, err := e.mgr.Token(ctx, key("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := e.mgr.Token(ctx, key("alice")); again != first {
		t.Fatal("a fresh token was replaced")
	}
	if n := e.tokenRequests("refresh_token", "ok"); n != 0 {
		t.Fatalf("%d refreshes before expiry", n)
	}

	// Within the margin: fifty concurrent callers cause exactly one refresh.
	e.clock.Add(29*time.Minute + 30*time.Second)
	var wg sync.WaitGroup
	tokens := make([]string, 50)
	errs := make([]error, 50)
	for i := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tokens[i], errs[i] = e.mgr.Token(ctx, key("alice"))
		}()
	}
	wg.Wait()
	for i := range tokens {
		if errs[i] != nil || tokens[i] == first || tokens[i] != tokens[0] {
			t.Fatalf("call %d: token changed=%v err=%v", i, tokens[i] != first, errs[i])
		}
	}
	if n := e.tokenRequests("refresh_token", "ok"); n != 1 {
		t.Fatalf("%d refreshes, want exactly 1", n)
	}
	acct, _ := e.store.GetAccount(ctx, key("alice"))
	if acct.AccessToken != tokens[0] || acct.RefreshToken == "" {
		t.Fatal("the refreshed token was not persisted before use")
	}

	// A 401 for the current token forces one more refresh.
	forced, err := e.mgr.ForceRefresh(ctx, key("alice"), tokens[0])
	if err != nil || forced == tokens[0] {
		t.Fatalf("forced refresh: %v", err)
	}
	if n := e.tokenRequests("refresh_token", "ok"); n != 2 {
		t.Fatalf("%d refreshes after a forced one, want 2", n)
	}
}

// TestRefreshAnswerWithoutRefreshToken: a refresh answered with an access
// token only keeps the refresh token the account had, which goes on working.
func TestRefreshAnswerWithoutRefreshToken(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, sandbox.Options{RefreshOmitsToken: true})
	e.linkUser("alice")
	linked, err := e.store.GetAccount(ctx, key("alice"))
	if err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 2; round++ {
		e.clock.Add(31 * time.Minute)
		tok, err := e.mgr.Token(ctx, key("alice"))
		if err != nil || tok == linked.AccessToken {
			t.Fatalf("refresh %d: %v (same access token: %v)", round, err, tok == linked.AccessToken)
		}
		a, err := e.store.GetAccount(ctx, key("alice"))
		if err != nil || a.RefreshToken != linked.RefreshToken || a.Status != storage.StatusActive {
			t.Fatalf("refresh %d: stored refresh token kept = %v, status %s, %v", round, a.RefreshToken == linked.RefreshToken, a.Status, err)
		}
	}
	if n := e.tokenRequests("refresh_token", "ok"); n != 2 {
		t.Fatalf("%d refreshes, want 2", n)
	}
}

func TestRefreshFailures(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name       string
		faults     sandbox.Faults
		revoke     bool
		wantErr    func(error) bool
		wantStatus storage.Status
	}{
		{
			name:       "refused refresh token expires the account",
			revoke:     true,
			wantErr:    func(err error) bool { return errors.Is(err, oauth.ErrNeedsAuthorization) },
			wantStatus: storage.StatusExpired,
		},
		{
			name:       "token endpoint down keeps the tokens",
			faults:     sandbox.Faults{TokenEndpoint: "503"},
			wantErr:    func(err error) bool { var u *oauth.UnavailableError; return errors.As(err, &u) },
			wantStatus: storage.StatusActive,
		},
		{
			name:       "token endpoint answering HTML keeps the tokens",
			faults:     sandbox.Faults{TokenEndpoint: "html"},
			wantErr:    func(err error) bool { var u *oauth.UnavailableError; return errors.As(err, &u) },
			wantStatus: storage.StatusActive,
		},
		{
			name:       "hibernating instance keeps the tokens",
			faults:     sandbox.Faults{Hibernate: true},
			wantErr:    func(err error) bool { var u *oauth.UnavailableError; return errors.As(err, &u) },
			wantStatus: storage.StatusActive,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, sandbox.Options{})
			e.linkUser("alice")
			before, _ := e.store.GetAccount(ctx, key("alice"))
			if tt.revoke {
				resp, err := http.PostForm(e.sandbox.URL+"/oauth_revoke_token.do", url.Values{"token": {before.RefreshToken}})
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			e.sandbox.Server.SetFaults(tt.faults)
			e.clock.Add(31 * time.Minute)

			_, err := e.mgr.Token(ctx, key("alice"))
			if !tt.wantErr(err) {
				t.Fatalf("Token error = %T %v", err, err)
			}
			after, gerr := e.store.GetAccount(ctx, key("alice"))
			if gerr != nil || after.Status != tt.wantStatus {
				t.Fatalf("account after failure: %+v %v", after, gerr)
			}
			if after.RefreshToken != before.RefreshToken {
				t.Error("the refresh token was changed or dropped")
			}
			if tt.wantStatus == storage.StatusActive {
				// Backing off: an immediate second call does not hit the endpoint again.
				n := e.tokenRequests("refresh_token", "fault") + e.tokenRequests("refresh_token", "ok")
				_, _ = e.mgr.Token(ctx, key("alice"))
				if m := e.tokenRequests("refresh_token", "fault") + e.tokenRequests("refresh_token", "ok"); m != n {
					t.Error("a failing token endpoint was hit again without back-off")
				}
				// Once the fault clears and the back-off passes, the refresh succeeds.
				e.sandbox.Server.SetFaults(sandbox.Faults{})
				e.clock.Add(2 * time.Minute)
				if _, err := e.mgr.Token(ctx, key("alice")); err != nil {
					t.Fatalf("after recovery: %v", err)
				}
			}
		})
	}
}

func TestDisconnectRevokes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, sandbox.Options{})
	e.linkUser("alice")
	acct, _ := e.store.GetAccount(ctx, key("alice"))

	found, revoked, err := e.mgr.Disconnect(ctx, key("alice"))
	if err != nil || !found || !revoked {
		t.Fatalf("Disconnect = %v %v %v", found, revoked, err)
	}
	if _, err := e.store.GetAccount(ctx, key("alice")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("account still stored: %v", err)
	}
	req, _ := http.NewRequest("GET", e.sandbox.URL+"/api/now/table/incident?sysparm_limit=1", nil)
	req.Header.Set("Authorization", "Bearer "+acct.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoked token still works: %d", resp.StatusCode)
	}
	if _, err := e.mgr.Token(ctx, key("alice")); !errors.Is(err, oauth.ErrNeedsAuthorization) {
		t.Fatalf("Token after disconnect: %v", err)
	}
}

func TestLinkIsNotReusedForAnotherInstance(t *testing.T) {
	e := newEnv(t, sandbox.Options{})
	first := e.link("alice")

	moved := oauth.NewManager(oauth.Options{
		Store: e.store,
		Connections: []config.Connection{{
			Name: "sandbox", InstanceURL: "http://127.0.0.1:1", ClientID: "sandbox-client", ClientSecret: "sandbox-secret",
		}},
		RedirectURI: e.callback.URL + "/oauth/callback",
		LinkExpiry:  10 * time.Minute,
		Logger:      zerolog.Nop(),
		Now:         e.clock.Now,
	})
	l, err := moved.Link(context.Background(), key("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if l.URL == first || !strings.HasPrefix(l.URL, "http://127.0.0.1:1/oauth_auth.do?") {
		t.Fatalf("link for the moved instance = %s", l.URL)
	}
}
