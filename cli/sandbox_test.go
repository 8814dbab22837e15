package cli

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"servicenow-mcp/config"
	"servicenow-mcp/sandbox"
	"servicenow-mcp/server"
	"servicenow-mcp/storage"
)

// sandboxHome isolates the user cache directory, where sandbox state
// files live.
func sandboxHome(t *testing.T) {
	t.Helper()
	home := isolate(t)
	t.Setenv("XDG_CACHE_HOME", home+"/cache")
}

func sandboxConfig(t *testing.T, dataDir string) *config.Config {
	t.Helper()
	cfg := config.Default(func(string) (string, bool) { return "", false })
	cfg.DataDir = dataDir
	return cfg
}

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// sandboxFor runs a sandbox for dataDir's state file at addr.
func sandboxFor(t *testing.T, dataDir, addr string) *sandbox.Running {
	t.Helper()
	state, err := sandboxStateFile(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	run, err := sandbox.Start(context.Background(), addr, sandbox.Options{StateFile: state})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(run.Close)
	return run
}

func sandboxURLOf(t *testing.T, cfg *config.Config) string {
	t.Helper()
	c, err := cfg.Connection(sandboxConnection)
	if err != nil {
		t.Fatal(err)
	}
	return c.InstanceURL
}

// TestSandboxSharedOnlyForItsDataDir: serve --sandbox shares a running
// sandbox only when it keeps this data directory's state, and otherwise
// runs its own.
func TestSandboxSharedOnlyForItsDataDir(t *testing.T) {
	tests := []struct {
		name string
		// setup occupies (or not) the stable address and returns the URL
		// the connection must get, or "" for "some other port".
		setup func(t *testing.T, dataDir, addr string) string
	}{
		{"stable port free: own instance there", func(t *testing.T, dataDir, addr string) string {
			return "http://" + addr
		}},
		{"this data directory's sandbox on the stable port: shared", func(t *testing.T, dataDir, addr string) string {
			return sandboxFor(t, dataDir, addr).URL
		}},
		{"another data directory's sandbox on the stable port: own instance elsewhere", func(t *testing.T, dataDir, addr string) string {
			sandboxFor(t, t.TempDir(), addr)
			return ""
		}},
		{"a sandbox without a state file on the stable port: own instance elsewhere", func(t *testing.T, dataDir, addr string) string {
			run, err := sandbox.Start(context.Background(), addr, sandbox.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(run.Close)
			return ""
		}},
		{"another program on the stable port: own instance elsewhere", func(t *testing.T, dataDir, addr string) string {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.NotFoundHandler()}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			return ""
		}},
		{"this data directory's sandbox on another port, as recorded: shared", func(t *testing.T, dataDir, addr string) string {
			sandboxFor(t, t.TempDir(), addr)
			ours := sandboxFor(t, dataDir, "127.0.0.1:0")
			state, _ := sandboxStateFile(dataDir)
			if err := os.WriteFile(strings.TrimSuffix(state, ".json")+".url", []byte(ours.URL+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return ours.URL
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sandboxHome(t)
			dataDir, addr := t.TempDir(), freeAddr(t)
			want := tt.setup(t, dataDir, addr)
			cfg := sandboxConfig(t, dataDir)
			sb, err := startSandboxAt(context.Background(), cfg, zerolog.Nop(), addr)
			if err != nil {
				t.Fatal(err)
			}
			defer sb.Close()
			got := sandboxURLOf(t, cfg)
			if want != "" && got != want {
				t.Fatalf("connection sandbox at %s, want %s", got, want)
			}
			if want == "" && got == "http://"+addr {
				t.Fatalf("connection sandbox shares %s, which is not this data directory's sandbox", got)
			}
			// Whatever it got answers as this data directory's sandbox.
			state, _ := sandboxStateFile(dataDir)
			if id, _, ok := probeSandbox(context.Background(), got); !ok || id != sandbox.StateID(state) {
				t.Fatalf("the sandbox at %s keeps state %q (ok=%v), want %q", got, id, ok, sandbox.StateID(state))
			}
		})
	}
}

// TestSandboxTokensSurviveAPortChange: an account linked on the sandbox
// keeps working when the next run's sandbox listens on another port
// (because another data directory's sandbox took the usual one). The
// stored account records the instance URL of its link, but refreshes and
// calls go to the connection's current URL, and the sandbox's state file
// (per data directory) still knows the tokens.
func TestSandboxTokensSurviveAPortChange(t *testing.T) {
	sandboxHome(t)
	ctx := context.Background()
	dataDir, addr := t.TempDir(), freeAddr(t)
	key := storage.AccountKey{Connection: sandboxConnection, User: "alice"}

	// The callback server exists before the config, which names it.
	cb, handler := swappableServer(t)

	runOnce := func(t *testing.T, do func(app *server.App, url string)) {
		t.Helper()
		cfg := sandboxConfig(t, dataDir)
		cfg.Server.PublicURL = cb.URL
		sb, err := startSandboxAt(ctx, cfg, zerolog.Nop(), addr)
		if err != nil {
			t.Fatal(err)
		}
		defer sb.Close()
		store, err := storage.Open(ctx, storage.Options{Dir: dataDir, Keys: storage.Keyring{Current: make([]byte, 32)}, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		app, err := server.New(server.Options{Config: cfg, Store: store, Logger: zerolog.Nop(), Version: "test"})
		if err != nil {
			t.Fatal(err)
		}
		handler.Store(app.CallbackMux())
		do(app, sandboxURLOf(t, cfg))
	}

	var firstURL, access string
	runOnce(t, func(app *server.App, url string) {
		firstURL = url
		link, err := app.Tokens.Link(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		consent(t, link.URL, "alice")
		if access, err = app.Tokens.Token(ctx, key); err != nil {
			t.Fatalf("token after the link: %v", err)
		}
	})

	sandboxFor(t, t.TempDir(), addr) // the usual port is now another data directory's

	runOnce(t, func(app *server.App, url string) {
		if url == firstURL {
			t.Fatalf("the second run's sandbox is at %s again; the test needs another port", url)
		}
		fresh, err := app.Tokens.ForceRefresh(ctx, key, access)
		if err != nil || fresh == access {
			t.Fatalf("refresh on the moved sandbox: %v", err)
		}
		req, _ := http.NewRequest(http.MethodGet, url+"/api/now/table/sys_user?sysparm_limit=1", nil)
		req.Header.Set("Authorization", "Bearer "+fresh)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("API call with the refreshed token: status %d", resp.StatusCode)
		}
		acct, err := app.Tokens.Account(ctx, key)
		if err != nil || acct.Status != storage.StatusActive {
			t.Fatalf("account after the move: %v %+v", err, acct)
		}
	})
}

// TestSandboxTakenOverWhenItsRunnerStops: processes sharing the sandbox
// that another runs for their data directory keep an instance when that
// process stops: one of them runs it in its place, at the same address and
// with the same state, so the account linked before keeps working; and so
// again when that one stops.
func TestSandboxTakenOverWhenItsRunnerStops(t *testing.T) {
	sandboxHome(t)
	ctx := context.Background()
	dataDir, addr := t.TempDir(), freeAddr(t)
	key := storage.AccountKey{Connection: sandboxConnection, User: "alice"}

	cb, handler := swappableServer(t)
	start := func(t *testing.T) (*localSandbox, *config.Config) {
		t.Helper()
		cfg := sandboxConfig(t, dataDir)
		cfg.Server.PublicURL = cb.URL
		sb, err := startSandboxAt(ctx, cfg, zerolog.Nop(), addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sb.Close)
		return sb, cfg
	}
	runs := func(sb *localSandbox) bool {
		select {
		case <-sb.running:
			return true
		default:
			return false
		}
	}

	a, _ := start(t)
	b, cfg := start(t)
	c, _ := start(t)
	if !runs(a) || runs(b) || runs(c) || b.url != a.url || c.url != a.url {
		t.Fatalf("a runs %v at %s; b runs %v at %s; c runs %v at %s: want a to run it and b and c to share it",
			runs(a), a.url, runs(b), b.url, runs(c), c.url)
	}

	store, err := storage.Open(ctx, storage.Options{Dir: dataDir, Keys: storage.Keyring{Current: make([]byte, 32)}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	app, err := server.New(server.Options{Config: cfg, Store: store, Logger: zerolog.Nop(), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	handler.Store(app.CallbackMux())
	link, err := app.Tokens.Link(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	consent(t, link.URL, "alice")
	access, err := app.Tokens.Token(ctx, key)
	if err != nil {
		t.Fatalf("token after the link: %v", err)
	}

	// stillWorks refreshes alice's token on the connection "sandbox" and
	// calls the Table API with the fresh one.
	stillWorks := func(t *testing.T, after string) {
		t.Helper()
		fresh, err := app.Tokens.ForceRefresh(ctx, key, access)
		if err != nil || fresh == access {
			t.Fatalf("refresh after %s: %v", after, err)
		}
		access = fresh
		req, _ := http.NewRequest(http.MethodGet, sandboxURLOf(t, cfg)+"/api/now/table/sys_user?sysparm_limit=1", nil)
		req.Header.Set("Authorization", "Bearer "+fresh)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("API call after %s: %v", after, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("API call after %s: status %d", after, resp.StatusCode)
		}
	}
	// takesOver waits until x or y runs the instance, and returns it first.
	takesOver := func(t *testing.T, x, y *localSandbox) (*localSandbox, *localSandbox) {
		t.Helper()
		select {
		case <-x.running:
			return x, y
		case <-y.running:
			return y, x
		case <-time.After(15 * time.Second):
			t.Fatal("no sharer runs the instance 15s after the process running it stopped")
		}
		return nil, nil
	}
	stillWorks(t, "the link")

	a.Close()
	next, other := takesOver(t, b, c)
	if runs(other) {
		t.Fatal("both sharers run the instance")
	}
	stillWorks(t, "the first takeover")

	next.Close()
	if last, _ := takesOver(t, other, other); last != other {
		t.Fatal("the remaining sharer did not take over")
	}
	stillWorks(t, "the second takeover")
	state, _ := sandboxStateFile(dataDir)
	if b, err := os.ReadFile(strings.TrimSuffix(state, ".json") + ".url"); err != nil || strings.TrimSpace(string(b)) != a.url {
		t.Fatalf("the recorded URL is %q (%v), want %s for processes starting later", b, err, a.url)
	}
}

// consent signs in on the sandbox's consent page and follows the
// redirect to the callback, as a browser would.
func consent(t *testing.T, link, user string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := browser.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="sysparm_request" value="([^"]+)"`).FindSubmatch(page)
	if m == nil {
		t.Fatalf("consent page without a request id: %s", page)
	}
	u, _ := url.Parse(link)
	u.RawQuery = ""
	resp, err = browser.PostForm(u.String(), url.Values{"sysparm_request": {string(m[1])}, "user_name": {user},
		"user_password": {sandbox.SeedPassword}, "action": {"allow"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	back := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || back == "" {
		t.Fatalf("consent: status %d", resp.StatusCode)
	}
	resp, err = browser.Get(back)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "Linked") {
		t.Fatalf("callback: status %d %s", resp.StatusCode, body)
	}
}

// swappableServer serves whatever handler is stored in the returned value,
// so that a callback URL can be named before the app that answers it.
func swappableServer(t *testing.T) (*httptest.Server, *atomic.Value) {
	t.Helper()
	handler := &atomic.Value{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler.Load().(http.Handler).ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, handler
}
