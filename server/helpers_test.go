package server

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/rs/zerolog"

	"servicenow-mcp/config"
	"servicenow-mcp/storage"
)

// Keys of the test configuration, with the users they stand for.
const (
	aliceKey   = "snmcp_test_alice_0123456789abcdef"
	gatewayKey = "snmcp_test_gateway_0123456789abcdef"
	userHeader = config.DefaultUserHeader
)

// fakeInstance is a minimal ServiceNow: a token endpoint for refreshes and
// a Table API that answers with the user its bearer token belongs to.
// A refresh token listed in holdRefresh waits until its channel closes.
type fakeInstance struct {
	*httptest.Server

	mu          sync.Mutex
	tokens      map[string]string // access token → user
	refreshes   map[string]string // refresh token → user
	holdRefresh map[string]chan struct{}
	holdAPI     map[string]chan struct{} // user → release
	arrived     chan string              // user of each API or refresh request, when watched
}

func newFakeInstance(t *testing.T) *fakeInstance {
	f := &fakeInstance{
		tokens:      map[string]string{},
		refreshes:   map[string]string{},
		holdRefresh: map[string]chan struct{}{},
		holdAPI:     map[string]chan struct{}{},
		arrived:     make(chan string, 64),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth_token.do", f.token)
	mux.HandleFunc("GET /api/now/table/", f.table)
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

func (f *fakeInstance) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.Form.Get("grant_type") != "refresh_token" {
		http.Error(w, `{"error":"unsupported_grant_type"}`, http.StatusBadRequest)
		return
	}
	rt := r.Form.Get("refresh_token")
	f.mu.Lock()
	user, ok := f.refreshes[rt]
	hold := f.holdRefresh[rt]
	f.mu.Unlock()
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"server_error","error_description":"access_denied"}`))
		return
	}
	f.arrived <- "refresh:" + user
	if hold != nil {
		<-hold
	}

	access, refresh := "at-"+user+"-"+rand8(), "rt-"+user+"-"+rand8()
	f.mu.Lock()
	f.tokens[access] = user
	f.refreshes[refresh] = user
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": access, "refresh_token": refresh, "token_type": "Bearer", "expires_in": 1800,
	})
}

func (f *fakeInstance) table(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	user, ok := f.tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	hold := f.holdAPI[user]
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":{"message":"User Not Authenticated","detail":"Required to provide Auth information"},"status":"failure"}`))
		return
	}
	f.arrived <- "api:" + user
	if hold != nil {
		<-hold
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"result": []map[string]any{{"number": "INC-" + user, "caller": user}},
	})
}

var randMu sync.Mutex
var randN int

func rand8() string {
	randMu.Lock()
	defer randMu.Unlock()
	randN++
	return fmt.Sprintf("%08d", randN)
}

// link stores an ACTIVE account for user with a fresh or an expired
// access token.
func (f *fakeInstance) link(t *testing.T, app *App, user string, expired bool) {
	t.Helper()
	access, refresh := "at-"+user+"-"+rand8(), "rt-"+user+"-"+rand8()
	f.mu.Lock()
	f.tokens[access] = user
	f.refreshes[refresh] = user
	f.mu.Unlock()
	expiry := time.Now().Add(time.Hour)
	if expired {
		expiry = time.Now().Add(-time.Minute)
	}
	now := time.Now()
	err := app.store.PutAccount(context.Background(), &storage.Account{
		Connection: "dev", User: user, Status: storage.StatusActive,
		AccessToken: access, RefreshToken: refresh, TokenType: "Bearer", Expiry: expiry,
		InstanceURL: f.URL, SNUserName: user, LinkedAt: now, RefreshedAt: now, UpdatedAt: now,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// holdRefreshOf makes the next refreshes of user wait for the returned
// release function.
func (f *fakeInstance) holdRefreshOf(user string) (release func()) {
	ch := make(chan struct{})
	f.mu.Lock()
	for rt, u := range f.refreshes {
		if u == user {
			f.holdRefresh[rt] = ch
		}
	}
	f.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func (f *fakeInstance) holdAPIOf(user string) (release func()) {
	ch := make(chan struct{})
	f.mu.Lock()
	f.holdAPI[user] = ch
	f.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

// awaitArrival waits until the fake instance has seen each of what, in
// any order.
func (f *fakeInstance) awaitArrival(t *testing.T, what ...string) {
	t.Helper()
	missing := map[string]bool{}
	for _, w := range what {
		missing[w] = true
	}
	timeout := time.After(10 * time.Second)
	for len(missing) > 0 {
		select {
		case got := <-f.arrived:
			delete(missing, got)
		case <-timeout:
			t.Fatalf("the instance never saw %v", missing)
		}
	}
}

// testConfig is a valid configuration with one connection to inst, a key
// bound to alice and a gateway key.
func testConfig(t *testing.T, inst *fakeInstance, mutate func(*config.Config)) *config.Config {
	t.Helper()
	home := t.TempDir()
	cfg := &config.Config{
		DataDir:       t.TempDir(),
		EncryptionKey: base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))),
		User:          "local",
		Server: config.Server{
			APIKeys: []config.APIKey{
				{Name: "alice-laptop", Hash: config.HashAPIKey(aliceKey), User: "alice"},
				{Name: "agent-gateway", Hash: config.HashAPIKey(gatewayKey), Gateway: true},
			},
		},
		Connections: []config.Connection{{
			Name: "dev", InstanceURL: inst.URL, ClientID: "client-id", ClientSecret: "client-secret",
		}},
	}
	cfg.ApplyDefaults(func(name string) (string, bool) {
		if name == "HOME" {
			return home, true
		}
		return "", false
	})
	if mutate != nil {
		mutate(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// newTestApp assembles an App on a fresh store.
func newTestApp(t *testing.T, cfg *config.Config) *App {
	t.Helper()
	key, err := config.DecodeEncryptionKey(cfg.EncryptionKey)
	if err != nil {
		t.Fatal(err)
	}
	store, err := storage.Open(context.Background(), storage.Options{
		Dir: cfg.DataDir, Keys: storage.Keyring{Current: key}, Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	app, err := New(Options{Config: cfg, Store: store, Logger: zerolog.Nop(), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return app
}

// testOptions keep streams chatty and shutdown quick.
func testOptions() httpOptions {
	return httpOptions{keepAlive: 50 * time.Millisecond, sessionIdleTTL: time.Minute, bodyReadTimeout: 5 * time.Second}
}

// runningServer is serveHTTP on a loopback listener.
type runningServer struct {
	URL    string
	cancel context.CancelFunc
	done   chan error
}

// newTestServer serves a test configuration on a fresh loopback port
// until the test ends or stop is called; public_url follows the port
// unless mutate sets it.
func newTestServer(t *testing.T, inst *fakeInstance, mutate func(*config.Config)) (*App, *runningServer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, inst, func(c *config.Config) {
		c.SetListen(ln.Addr().String())
		if mutate != nil {
			mutate(c)
		}
	})
	app := newTestApp(t, cfg)
	return app, startServer(t, app, ln)
}

// startServer serves app on ln until the test ends or stop is called.
func startServer(t *testing.T, app *App, ln net.Listener) *runningServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rs := &runningServer{URL: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { rs.done <- app.serveHTTP(ctx, ln, testOptions()) }()
	t.Cleanup(func() { _ = rs.stop() })
	return rs
}

// stop cancels the server and returns what serveHTTP returned.
func (rs *runningServer) stop() error {
	rs.cancel()
	err, ok := <-rs.done
	if ok {
		close(rs.done)
	}
	return err
}

// headersFor are the HTTP headers of a caller: an API key and, for the
// gateway, the end user.
func headersFor(key, user string) map[string]string {
	h := map[string]string{"Authorization": "Bearer " + key}
	if user != "" {
		h[userHeader] = user
	}
	return h
}

// connect opens an initialized MCP client over "sse" or "http".
func connect(t *testing.T, base, kind string, headers map[string]string) *client.Client {
	t.Helper()
	var tr transport.Interface
	var err error
	switch kind {
	case "sse":
		tr, err = transport.NewSSE(base+SSEPath, transport.WithHeaders(headers))
	case "http":
		tr, err = transport.NewStreamableHTTP(base+StreamablePath, transport.WithHTTPHeaders(headers))
	default:
		t.Fatalf("unknown transport %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	c := client.NewClient(tr, client.WithProtocolVersion(mcp.ProtocolVersion20250618))
	initialize(t, c)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func initialize(t *testing.T, c *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The SSE transport's stream lives as long as Start's context.
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("start client: %v", err)
	}
	req := mcp.InitializeRequest{}
	req.Params.ProtocolVersion = mcp.ProtocolVersion20250618
	req.Params.ClientInfo = mcp.Implementation{Name: "server-test", Version: "1"}
	if _, err := c.Initialize(ctx, req); err != nil {
		t.Fatalf("initialize: %v", err)
	}
}

// callTool calls name and returns the text of the result.
func callTool(t *testing.T, c *client.Client, name string, args map[string]any) (string, bool) {
	t.Helper()
	text, isError, err := tryCallTool(c, name, args)
	if err != nil {
		t.Errorf("call %s: %v", name, err)
	}
	return text, isError
}

func tryCallTool(c *client.Client, name string, args map[string]any) (string, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	res, err := c.CallTool(ctx, req)
	if err != nil {
		return "", true, err
	}
	var b strings.Builder
	for _, content := range res.Content {
		if text, ok := content.(mcp.TextContent); ok {
			b.WriteString(text.Text)
		}
	}
	return b.String(), res.IsError, nil
}

// rawRequest sends one HTTP request with the given headers.
func rawRequest(t *testing.T, method, target string, headers map[string]string, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == "" {
		req.Body = http.NoBody
	}
	for k, v := range headers {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	if body != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

const initializeBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

// openSSE opens an SSE stream and returns the response and a reader of
// its events.
func openSSE(t *testing.T, target string, headers map[string]string) (*http.Response, *bufio.Reader) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

// nextEvent reads one SSE event: its name and data.
func nextEvent(t *testing.T, r *bufio.Reader) (name, data string) {
	t.Helper()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read SSE: %v", err)
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "" && (name != "" || data != ""):
			return name, data
		case strings.HasPrefix(line, "event:"):
			name = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			data += strings.TrimSpace(strings.TrimPrefix(line, "data:"))
		}
	}
}

// sessionFromEndpoint extracts the sessionId of an SSE endpoint event.
func sessionFromEndpoint(t *testing.T, endpoint string) string {
	t.Helper()
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("sessionId")
}

// awaitKeepAlive reads a stream until a keep-alive comment arrives.
func awaitKeepAlive(t *testing.T, r *bufio.Reader) {
	t.Helper()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read stream: %v", err)
		}
		if strings.HasPrefix(line, ":") {
			return
		}
	}
}
