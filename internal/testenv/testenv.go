// Package testenv runs the whole product against a sandbox instance for
// tests: a sandbox, a store in a temporary directory, the assembled
// server, and end users whose ServiceNow accounts are linked through the
// sandbox's real consent form.
package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/rs/zerolog"

	"servicenow-mcp/config"
	"servicenow-mcp/sandbox"
	"servicenow-mcp/server"
	"servicenow-mcp/storage"
	"servicenow-mcp/tools"
)

// Connection is the name of the one connection of an Env.
const Connection = "sandbox"

// Options shape an Env. The zero value links alice, bob and carol with
// the default tool selection.
type Options struct {
	// Sandbox options; ClientID, ClientSecret and RedirectURIs are set by New.
	Sandbox sandbox.Options
	// Tools is the tool selection (toolsets, tools, exclusions, read-only).
	// Empty means every toolset ("all"), so tests can call any tool.
	Tools config.Tools
	// Budget is the answer budget in bytes; 0 keeps the default.
	Budget int
	// Link lists the end users to link, each to the sandbox user of the
	// same name. Nil means alice, bob and carol; use []string{} for none.
	Link []string
	// Configure, when set, may change the config before the server is built.
	Configure func(*config.Config)
	// Logger receives the store's and the server's logs; nil discards them.
	Logger *zerolog.Logger
}

// Env is one running product against one sandbox.
type Env struct {
	Sandbox *sandbox.Running
	Config  *config.Config
	Store   storage.Store
	App     *server.App

	callback *httptest.Server
	ids      atomic.Int64
}

// New starts everything and links the users; all of it stops when the
// test ends.
func New(t testing.TB, opts Options) *Env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	// The callback server must exist before the config, which names it in
	// the redirect URI; its handler is set once the app exists.
	var handler atomic.Value
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, _ := handler.Load().(http.Handler)
		if h == nil {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(cb.Close)

	sbOpts := opts.Sandbox
	sbOpts.ClientID, sbOpts.ClientSecret = "testenv-client", "testenv-secret"
	redirect := cb.URL + config.CallbackPath
	sbOpts.RedirectURIs = []string{redirect}
	sb, err := sandbox.Start(ctx, "127.0.0.1:0", sbOpts)
	if err != nil {
		t.Fatalf("start sandbox: %v", err)
	}
	t.Cleanup(sb.Close)

	cfg := config.Default(func(string) (string, bool) { return "", false })
	cfg.DataDir = t.TempDir()
	cfg.Server.PublicURL = cb.URL
	cfg.Server.Listen = strings.TrimPrefix(cb.URL, "http://")
	cfg.Connections = []config.Connection{{
		Name: Connection, InstanceURL: sb.URL, ClientID: sbOpts.ClientID, ClientSecret: sbOpts.ClientSecret, Default: true,
	}}
	cfg.Tools = opts.Tools
	if len(cfg.Tools.Toolsets) == 0 && len(cfg.Tools.Enable) == 0 {
		cfg.Tools.Toolsets = []string{"all"}
	}
	if opts.Budget > 0 {
		cfg.Tools.AnswerBudget = opts.Budget
	}
	if opts.Configure != nil {
		opts.Configure(cfg)
	}

	logger := zerolog.Nop()
	if opts.Logger != nil {
		logger = *opts.Logger
	}
	key := bytes.Repeat([]byte{7}, 32)
	store, err := storage.Open(ctx, storage.Options{Dir: cfg.DataDir, Keys: storage.Keyring{Current: key}, Logger: logger})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })

	app, err := server.New(server.Options{Config: cfg, Store: store, Logger: logger, Version: "test"})
	if err != nil {
		t.Fatalf("build server: %v", err)
	}
	handler.Store(app.CallbackMux())

	env := &Env{Sandbox: sb, Config: cfg, Store: store, App: app, callback: cb}
	env.App.MCP.HandleMessage(ctx, env.message("initialize", map[string]any{
		"protocolVersion": mcp.LATEST_PROTOCOL_VERSION, "capabilities": map[string]any{},
		"clientInfo": map[string]any{"name": "testenv", "version": "0"},
	}))
	users := opts.Link
	if users == nil {
		users = []string{"alice", "bob", "carol"}
	}
	for _, u := range users {
		env.LinkAs(t, u, u)
	}
	return env
}

// LinkAs links end user user to the sandbox sign-in snUser by filling in
// the sandbox consent form, as a person would in a browser.
func (e *Env) LinkAs(t testing.TB, user, snUser string) {
	t.Helper()
	ctx := context.Background()
	link, err := e.App.Tokens.Link(ctx, storage.AccountKey{Connection: Connection, User: user})
	if err != nil {
		t.Fatalf("link %s: %v", user, err)
	}
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	form, err := get(browser, link.URL)
	if err != nil {
		t.Fatalf("open consent page for %s: %v", user, err)
	}
	m := regexp.MustCompile(`name="sysparm_request" value="([^"]+)"`).FindStringSubmatch(form)
	if m == nil {
		t.Fatalf("consent page for %s has no request id:\n%s", user, form)
	}
	consent, _ := url.Parse(link.URL)
	consent.RawQuery = ""
	resp, err := browser.PostForm(consent.String(), url.Values{
		"sysparm_request": {m[1]}, "user_name": {snUser}, "user_password": {sandbox.SeedPassword}, "action": {"allow"},
	})
	if err != nil {
		t.Fatalf("consent for %s: %v", user, err)
	}
	resp.Body.Close()
	back := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || back == "" {
		t.Fatalf("consent for %s: status %d, no redirect", user, resp.StatusCode)
	}
	page, err := get(browser, back)
	if err != nil || !strings.Contains(page, "linked") {
		t.Fatalf("callback for %s: %v\n%s", user, err, page)
	}
}

func get(c *http.Client, u string) (string, error) {
	resp, err := c.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		return string(b), fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return string(b), err
}

func (e *Env) message(method string, params any) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": e.ids.Add(1), "method": method, "params": params})
	return b
}

// Call runs one tool as user through the MCP server's message handler,
// the way a transport does, and returns its result. A protocol error
// fails the test: tools answer problems as results.
func (e *Env) Call(t testing.TB, user, tool string, args any) *mcp.CallToolResult {
	t.Helper()
	ctx := tools.WithCaller(context.Background(), tools.Caller{User: user})
	reply := e.App.MCP.HandleMessage(ctx, e.message("tools/call", map[string]any{"name": tool, "arguments": args}))
	b, err := json.Marshal(reply)
	if err != nil {
		t.Fatalf("encode reply: %v", err)
	}
	var out struct {
		Result *json.RawMessage `json:"result"`
		Error  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("decode reply: %v", err)
	}
	if out.Error != nil {
		t.Fatalf("%s: protocol error %d: %s", tool, out.Error.Code, out.Error.Message)
	}
	if out.Result == nil {
		t.Fatalf("%s: reply without result: %s", tool, b)
	}
	res, err := mcp.ParseCallToolResult(out.Result)
	if err != nil {
		t.Fatalf("%s: parse result: %v", tool, err)
	}
	return res
}

// ListTools returns the server's tools/list answer.
func (e *Env) ListTools(t testing.TB) []mcp.Tool {
	t.Helper()
	reply := e.App.MCP.HandleMessage(context.Background(), e.message("tools/list", map[string]any{}))
	b, _ := json.Marshal(reply)
	var out struct {
		Result mcp.ListToolsResult `json:"result"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("decode tools/list: %v", err)
	}
	return out.Result.Tools
}

// Text is the text of a result's first content.
func Text(res *mcp.CallToolResult) string {
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			return tc.Text
		}
	}
	return ""
}

// JSON decodes a result's text into a map, failing the test otherwise.
func JSON(t testing.TB, res *mcp.CallToolResult) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(Text(res)), &m); err != nil {
		t.Fatalf("result is not a JSON object: %v\n%s", err, Text(res))
	}
	return m
}

// APIRequests is how many /api/* requests the sandbox has served so far.
func (e *Env) APIRequests() int64 { return e.Sandbox.Server.Stats().APIRequests }
