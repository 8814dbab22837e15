package faulttest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"servicenow-mcp/config"
	"servicenow-mcp/internal/testenv"
	"servicenow-mcp/sandbox"
)

// lockedBuffer collects log output written from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// leakStory is everything the product showed to anyone during one run.
type leakStory struct {
	t       *testing.T
	e       *testenv.Env
	proxy   *instanceProxy
	logs    *lockedBuffer
	shown   []string          // tool results, callback pages, HTTP answers
	secrets map[string]string // value → what it is, beyond what the proxy saw
}

func (s *leakStory) call(tool string, args map[string]any) {
	s.t.Helper()
	s.shown = append(s.shown, testenv.Text(s.e.Call(s.t, "alice", tool, args)))
}

func (s *leakStory) read() {
	s.t.Helper()
	s.call("servicenow_request", map[string]any{"method": "GET", "path": "/api/now/table/incident", "query": map[string]any{"sysparm_limit": "2"}})
}

func (s *leakStory) get(u string) {
	s.t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	s.shown = append(s.shown, string(b))
}

// expireAccessToken makes the stored access token look dead so that the
// next call refreshes.
func (s *leakStory) expireAccessToken() {
	s.t.Helper()
	ctx := context.Background()
	a := stored(s.t, s.e, "alice")
	a.Expiry = time.Now().Add(-time.Minute)
	if err := s.e.Store.PutAccount(ctx, a); err != nil {
		s.t.Fatal(err)
	}
	s.e.App.Tokens.Forget(accountKey("alice"))
}

// mcpOverHTTP initialises a streamable HTTP session with the API key and
// calls one tool, keeping the session id as a secret.
func (s *leakStory) mcpOverHTTP(base, apiKey string) {
	s.t.Helper()
	post := func(session, body string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, base+"/mcp", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+apiKey)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if session != "" {
			req.Header.Set("Mcp-Session-Id", session)
			req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			s.t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		s.shown = append(s.shown, string(b))
		return resp
	}
	resp := post("", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"leak","version":"0"}}}`)
	session := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != 200 || session == "" {
		s.t.Fatalf("initialize over HTTP: %d, session %q", resp.StatusCode, session)
	}
	s.secrets[session] = "MCP session id"
	post(session, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	post(session, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"servicenow_request","arguments":{"method":"GET","path":"/api/now/table/incident","query":{"sysparm_limit":"1"}}}}`)
	post(session, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"servicenow_connection_status","arguments":{}}}`)
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Issue 5, point 7: with every secret known, the whole story — link, calls
// over stdio-style handling and over HTTP, every fault of docs/FAULTS.md,
// refreshes, a refused grant and a new link, callback error pages — runs at
// trace level, and no secret shows up in the logs, in any answer or page,
// or in plain form under the data directory.
func TestNoSecretEscapes(t *testing.T) {
	logs := &lockedBuffer{}
	logger := zerolog.New(logs).Level(zerolog.TraceLevel).With().Timestamp().Logger()
	apiKey := "smk_" + strings.Repeat("K3y", 12)
	httpAddr := freeLoopbackAddr(t)
	e, proxy := newEnv(t, testenv.Options{Logger: &logger, Configure: func(c *config.Config) {
		c.Log.Level = "trace"
		c.Server.Listen = httpAddr
		c.Server.APIKeys = []config.APIKey{{Name: "leak-test", Hash: config.HashAPIKey(apiKey), User: "alice"}}
		c.Timeouts.Request = 2 * time.Second
	}})
	encKey := bytes.Repeat([]byte{7}, 32) // testenv's encryption key
	s := &leakStory{t: t, e: e, proxy: proxy, logs: logs, secrets: map[string]string{
		apiKey:                     "API key",
		hex.EncodeToString(encKey): "encryption key (hex)",
		base64.StdEncoding.EncodeToString(encKey):    "encryption key (base64)",
		base64.RawURLEncoding.EncodeToString(encKey): "encryption key (base64url)",
	}}
	ctx, cancel := context.WithCancel(context.Background())
	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		if err := e.App.ServeHTTP(ctx); err != nil {
			t.Errorf("ServeHTTP: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-httpDone })
	waitHealthy(t, "http://"+httpAddr)

	// Calls, over HTTP with an API key and session, and in process.
	s.mcpOverHTTP("http://"+httpAddr, apiKey)
	s.read()
	s.call("servicenow_connection_status", map[string]any{})

	// Every API fault.
	for _, f := range []sandbox.Faults{
		{Hibernate: true}, {Status: 502}, {Status: 503}, {Status: 500}, {Status: 429, RetryAfter: 3600},
		{Truncate: true, Scope: "api"}, {Hang: true, Scope: "api", Count: 1},
	} {
		e.Sandbox.Server.SetFaults(f)
		s.read()
	}
	e.Sandbox.Server.SetFaults(sandbox.Faults{})

	// A 401 for a token that looked valid, and a proactive refresh.
	a := stored(t, e, "alice")
	s.get(e.Sandbox.URL + "/oauth_revoke_token.do?token=" + url.QueryEscape(a.AccessToken))
	s.shown = s.shown[:len(s.shown)-1] // the revoke answer is ours, not the product's
	s.read()
	s.expireAccessToken()
	s.read()

	// Every token-endpoint fault, then recovery.
	for _, f := range []sandbox.Faults{{TokenEndpoint: "html"}, {TokenEndpoint: "503"}, {TokenEndpoint: "close"}, {Truncate: true, Scope: "token"}} {
		e.Sandbox.Server.SetFaults(f)
		s.expireAccessToken()
		s.read()
	}
	e.Sandbox.Server.SetFaults(sandbox.Faults{})

	// Tokens dying early: second 401, a link; then a refused grant; a new link.
	e.Sandbox.Server.SetFaults(sandbox.Faults{TokenSkew: sandbox.Duration(time.Hour)})
	s.read()
	e.Sandbox.Server.SetFaults(sandbox.Faults{})
	e.LinkAs(t, "alice", "alice")
	e.Sandbox.Server.RevokeUser("alice")
	s.expireAccessToken()
	s.read()
	s.call("authorize_servicenow", map[string]any{})
	e.LinkAs(t, "alice", "alice")
	s.read()

	// Callback error pages.
	cb := e.Config.RedirectURI()
	s.get(cb + "?state=nope&code=whatever")
	s.get(cb + "?error=access_denied&state=nope")
	s.get(cb)

	seen := proxy.Secrets()
	for v, what := range s.secrets {
		seen[v] = what
	}
	wantKinds := []string{"access token", "refresh token", "authorization code", "code_verifier", "client_secret", "MCP session id", "API key"}
	for _, kind := range wantKinds {
		found := false
		for _, what := range seen {
			found = found || what == kind
		}
		if !found {
			t.Fatalf("the story never saw a %s, so the test would prove nothing about it", kind)
		}
	}

	cancel()
	<-httpDone
	logText := logs.String()
	if !strings.Contains(logText, `"level":"debug"`) && !strings.Contains(logText, `"level":"trace"`) && !strings.Contains(logText, "tool call") {
		t.Fatal("no log output was captured")
	}
	for value, what := range seen {
		if strings.Contains(logText, value) {
			t.Errorf("the log holds a %s", what)
		}
		for _, shown := range s.shown {
			if strings.Contains(shown, value) {
				t.Errorf("an answer or page holds a %s: %.300s", what, shown)
				break
			}
		}
	}
	scanDataDir(t, e.Config.DataDir, seen)
}

func waitHealthy(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the HTTP transport did not come up")
}

// scanDataDir reads every file under dir and fails on any secret in plain form.
func scanDataDir(t *testing.T, dir string, secrets map[string]string) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for value, what := range secrets {
			if bytes.Contains(b, []byte(value)) {
				t.Errorf("%s holds a %s in plain form", path, what)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatal("the data directory is empty: nothing was checked")
	}
}
