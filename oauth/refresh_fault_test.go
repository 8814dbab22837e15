package oauth_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"servicenow-mcp/config"
	"servicenow-mcp/oauth"
	"servicenow-mcp/sandbox"
	"servicenow-mcp/servicenow"
	"servicenow-mcp/storage"
)

// manager builds another token manager on the env's store and sandbox,
// as a second worker would, with its own HTTP client and client secret.
func (e *env) manager(store storage.Store, httpClient *http.Client, secret string) *oauth.Manager {
	return oauth.NewManager(oauth.Options{
		Store: store,
		Connections: []config.Connection{{
			Name: "sandbox", InstanceURL: e.sandbox.URL, ClientID: "sandbox-client", ClientSecret: secret,
		}},
		RedirectURI:   e.callback.URL + "/oauth/callback",
		RefreshMargin: time.Minute,
		HTTPClient:    httpClient,
		Logger:        zerolog.Nop(),
		Now:           e.clock.Now,
	})
}

func (e *env) instanceClient(tokens servicenow.Tokens) *servicenow.Client {
	e.t.Helper()
	c, err := servicenow.NewClient(tokens, []config.Connection{{Name: "sandbox", InstanceURL: e.sandbox.URL}}, 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) account(user string) *storage.Account {
	e.t.Helper()
	a, err := e.store.GetAccount(context.Background(), key(user))
	if err != nil {
		e.t.Fatalf("read %s: %v", user, err)
	}
	return a
}

// Issue 5, point 1: fifty concurrent API calls for one user whose access
// token has already expired (at the instance too) cause exactly one
// refresh, and every call gets its data.
func TestFiftyCallsOnExpiredTokenRefreshOnce(t *testing.T) {
	e := newEnv(t, sandbox.Options{AccessTTL: 30 * time.Minute, RotateRefresh: true})
	e.linkUser("alice")
	e.clock.Add(45 * time.Minute)
	client := e.instanceClient(e.mgr)

	errs := make([]error, 50)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			resp, err := client.Do(context.Background(), key("alice"), servicenow.Request{
				Method: "GET", Path: "/api/now/table/incident", Query: url.Values{"sysparm_limit": {"1"}},
			})
			if err == nil && resp.Status != 200 {
				err = errors.New(resp.Header.Get("Content-Type"))
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if n := e.tokenRequests("refresh_token", "ok"); n != 1 {
		t.Fatalf("%d refreshes for fifty calls, want exactly 1", n)
	}
	if n := e.tokenRequests("refresh_token", "refused"); n != 0 {
		t.Fatalf("%d refused refreshes", n)
	}
}

// unlockedStore is a store whose account lock does not serialise: a
// worker whose lock failed to reach the others (another host's process
// on a network share, an older binary).
type unlockedStore struct{ storage.Store }

func (unlockedStore) LockAccount(context.Context, storage.AccountKey) (func(), error) {
	return func() {}, nil
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Issue 5, point 1: a refresh that loses a race re-reads the store before
// it gives up. While a worker refreshes with the old refresh token, the
// user links again elsewhere and the old grant is revoked; the worker's
// refresh is refused, and it must pick up the new link instead of marking
// the account expired over it.
func TestRefusedRefreshRereadsStoreBeforeGivingUp(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, sandbox.Options{})
	e.linkUser("alice")
	old := e.account("alice")
	e.clock.Add(31 * time.Minute)

	var once sync.Once
	loser := e.manager(unlockedStore{e.store}, &http.Client{Timeout: 5 * time.Second, Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		once.Do(func() {
			// The race the worker loses: a new link lands, the old grant dies.
			e.linkUser("alice")
			resp, err := http.PostForm(e.sandbox.URL+"/oauth_revoke_token.do", url.Values{"token": {old.RefreshToken}})
			if err == nil {
				resp.Body.Close()
			}
		})
		return http.DefaultTransport.RoundTrip(r)
	})}, "sandbox-secret")

	tok, err := loser.Token(ctx, key("alice"))
	if err != nil {
		t.Fatalf("Token gave up instead of re-reading the store: %v", err)
	}
	now := e.account("alice")
	if now.Status != storage.StatusActive || now.RefreshToken == old.RefreshToken {
		t.Fatalf("the new link was overwritten: status %s, old refresh token back=%v", now.Status, now.RefreshToken == old.RefreshToken)
	}
	if tok != now.AccessToken {
		t.Fatal("the returned token is not the one of the new link")
	}
}

// Issue 5, point 3: a token endpoint that is down, cut short, hangs or
// answers HTML keeps the tokens, says the instance is unreachable and
// backs off instead of hammering it.
func TestTokenEndpointFailuresKeepTokensAndBackOff(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		faults sandbox.Faults
		reason string
	}{
		{"connection closed", sandbox.Faults{TokenEndpoint: "close"}, "could not reach"},
		{"503 maintenance page", sandbox.Faults{TokenEndpoint: "503"}, "HTTP 503"},
		{"HTML login page", sandbox.Faults{TokenEndpoint: "html"}, "not a token"},
		{"hangs", sandbox.Faults{TokenEndpoint: "hang"}, "in time"},
		{"slow beyond the bound", sandbox.Faults{Delay: sandbox.Duration(2 * time.Second), Scope: "token"}, "in time"},
		{"answer cut short", sandbox.Faults{Truncate: true, Scope: "token"}, "token endpoint"},
		{"hibernating", sandbox.Faults{Hibernate: true}, "not a token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, sandbox.Options{})
			e.linkUser("alice")
			before := e.account("alice")
			mgr := e.manager(e.store, &http.Client{Timeout: 500 * time.Millisecond}, "sandbox-secret")
			e.sandbox.Server.SetFaults(tt.faults)
			e.clock.Add(31 * time.Minute)

			start := time.Now()
			_, err := mgr.Token(ctx, key("alice"))
			var down *oauth.UnavailableError
			if !errors.As(err, &down) || !strings.Contains(down.Error(), tt.reason) {
				t.Fatalf("Token error = %T %v; want unreachable (%q)", err, err, tt.reason)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("the failing refresh took %s", took)
			}
			after := e.account("alice")
			if after.Status != storage.StatusActive || after.RefreshToken != before.RefreshToken {
				t.Fatalf("tokens not kept: status %s", after.Status)
			}

			hits := func() int64 {
				s := e.sandbox.Server.Stats().TokenRequests["refresh_token"]
				return s["fault"] + s["ok"] + s["refused"]
			}
			n := hits()
			for range 5 {
				if _, err := mgr.Token(ctx, key("alice")); !errors.As(err, &down) || down.RetryAfter.IsZero() {
					t.Fatalf("during back-off: %v", err)
				}
			}
			if hits() != n {
				t.Fatalf("the failing token endpoint was called %d more times during back-off", hits()-n)
			}

			e.sandbox.Server.SetFaults(sandbox.Faults{})
			e.clock.Add(2 * time.Minute)
			if _, err := mgr.Token(ctx, key("alice")); err != nil {
				t.Fatalf("after the endpoint recovered: %v", err)
			}
		})
	}
}

// Issue 5, point 3: a refused refresh marks the account expired (tokens
// kept sealed) and the next call needs a link.
func TestRefusedRefreshExpiresAccount(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, sandbox.Options{})
	e.linkUser("alice")
	e.sandbox.Server.RevokeUser("alice")
	e.clock.Add(31 * time.Minute)

	if _, err := e.mgr.Token(ctx, key("alice")); !errors.Is(err, oauth.ErrNeedsAuthorization) {
		t.Fatalf("Token = %v, want ErrNeedsAuthorization", err)
	}
	if a := e.account("alice"); a.Status != storage.StatusExpired || a.RefreshToken == "" {
		t.Fatalf("account = %s, refresh token kept=%v", a.Status, a.RefreshToken != "")
	}
	link, err := e.mgr.Link(ctx, key("alice"))
	if err != nil || !strings.Contains(link.URL, "/oauth_auth.do") {
		t.Fatalf("no new link: %v", err)
	}
}

// TestRejectedClientSecretIsOperatorError: ServiceNow answers a wrong
// client secret like a dead refresh token, so the first refusal can only
// expire that account (tokens kept) and hand out a link. When ServiceNow
// then refuses the authorization code it issued a moment ago, the cause is
// plain: the callback page and the next link say it is the operator's to
// fix, later refusals leave accounts alone, the accounts expired on the
// way are restored, and once the secret is fixed nobody links again.
func TestRejectedClientSecretIsOperatorError(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, sandbox.Options{})
	for _, u := range []string{"alice", "bob", "carol"} {
		e.linkUser(u)
	}
	e.clock.Add(31 * time.Minute)
	// Two workers with the wrong secret, as two processes on one data
	// directory: one refreshes, the other owns the callback.
	wrong := e.manager(e.store, &http.Client{Timeout: 5 * time.Second}, "not-the-secret")
	callbackWorker := e.manager(e.store, &http.Client{Timeout: 5 * time.Second}, "not-the-secret")
	e.serving.Store(callbackWorker)

	if _, err := wrong.Token(ctx, key("alice")); !errors.Is(err, oauth.ErrNeedsAuthorization) {
		t.Fatalf("first refusal = %v, want a new link (nothing tells it from a dead refresh token)", err)
	}
	if a := e.account("alice"); a.Status != storage.StatusExpired {
		t.Fatalf("alice is %s after her refresh was refused", a.Status)
	}

	link, err := wrong.Link(ctx, key("alice"))
	if err != nil || link.Warning != "" {
		t.Fatalf("first link: %+v, %v (no warning expected yet)", link, err)
	}
	status, page := e.consent(link.URL, "alice", "allow")
	for _, want := range []string{"refused the authorization code it had just issued", "client secret", "operator"} {
		if status == http.StatusOK || !strings.Contains(page, want) {
			t.Errorf("callback %d lacks %q: %s", status, want, page)
		}
	}
	// The account expired by the other worker is restored from the store:
	// its user did nothing wrong.
	if a := e.account("alice"); a.Status != storage.StatusActive {
		t.Fatalf("alice is %s after the refused code showed the client at fault", a.Status)
	}
	again, err := callbackWorker.Link(ctx, key("dave"))
	if err != nil || again.Warning != oauth.ClientWarning {
		t.Fatalf("link after the refused code: %+v, %v, want the client warning", again, err)
	}
	var rejected *oauth.ClientRejectedError
	if _, err := callbackWorker.Token(ctx, key("alice")); !errors.As(err, &rejected) {
		t.Fatalf("alice after the refused code: %v, want ClientRejectedError, not another link", err)
	}

	for _, u := range []string{"bob", "carol"} {
		if _, err := callbackWorker.Token(ctx, key(u)); !errors.As(err, &rejected) || !strings.Contains(rejected.Error(), "client_secret") {
			t.Fatalf("%s: %v, want ClientRejectedError naming client_secret", u, err)
		}
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		if a := e.account(u); a.Status != storage.StatusActive {
			t.Errorf("%s is %s: the user was blamed for the server's credentials", u, a.Status)
		}
	}

	fixed := e.manager(e.store, &http.Client{Timeout: 5 * time.Second}, "sandbox-secret")
	for _, u := range []string{"alice", "bob", "carol"} {
		if _, err := fixed.Token(ctx, key(u)); err != nil {
			t.Errorf("%s after the fix: %v", u, err)
		}
	}
}

// TestOneAccountsFailuresDoNotHoldUpOthers: a JSON 5xx from the token
// endpoint for one user backs off that user only; the instance being
// unreachable backs off everyone.
func TestOneAccountsFailuresDoNotHoldUpOthers(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, sandbox.Options{})
	for _, u := range []string{"alice", "bob"} {
		e.linkUser(u)
	}
	mgr := e.manager(e.store, &http.Client{Timeout: 500 * time.Millisecond}, "sandbox-secret")
	e.clock.Add(31 * time.Minute)

	e.sandbox.Server.SetFaults(sandbox.Faults{Status: 500, Scope: "token", User: "alice"})
	var down *oauth.UnavailableError
	for range 4 {
		if _, err := mgr.Token(ctx, key("alice")); !errors.As(err, &down) {
			t.Fatalf("alice: %v, want unreachable", err)
		}
		e.clock.Add(time.Second) // some of the waits pass, not all
	}
	if _, err := mgr.Token(ctx, key("bob")); err != nil {
		t.Fatalf("bob waits behind alice's failures: %v", err)
	}

	e.sandbox.Server.SetFaults(sandbox.Faults{TokenEndpoint: "close"})
	e.clock.Add(31 * time.Minute)
	if _, err := mgr.Token(ctx, key("bob")); !errors.As(err, &down) {
		t.Fatalf("bob with the endpoint down: %v", err)
	}
	n := e.sandbox.Server.Stats().TokenRequests["refresh_token"]["fault"]
	if _, err := mgr.Token(ctx, key("alice")); !errors.As(err, &down) || down.RetryAfter.IsZero() {
		t.Fatalf("alice with the instance down: %v, want to wait", err)
	}
	if got := e.sandbox.Server.Stats().TokenRequests["refresh_token"]["fault"]; got != n {
		t.Errorf("the unreachable instance was asked again for alice (%d more)", got-n)
	}
}
