package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"servicenow-mcp/config"
	"servicenow-mcp/oauth"
	"servicenow-mcp/storage"
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// loggedApp is newTestApp with its log kept.
func loggedApp(t *testing.T, cfg *config.Config, logs *syncBuffer) *App {
	t.Helper()
	key, err := config.DecodeEncryptionKey(cfg.EncryptionKey)
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(logs)
	store, err := storage.Open(context.Background(), storage.Options{Dir: cfg.DataDir, Keys: storage.Keyring{Current: key}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	app, err := New(Options{Config: cfg, Store: store, Logger: log, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return app
}

// serveOn serves h on ln until the test ends; closing the returned func
// frees the address earlier.
func serveOn(t *testing.T, ln net.Listener, h http.Handler) (release func()) {
	t.Helper()
	srv := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	var once sync.Once
	release = func() { once.Do(func() { _ = srv.Close(); <-done }) }
	t.Cleanup(release)
	return release
}

func nextVerdict(t *testing.T, verdicts <-chan string) string {
	t.Helper()
	select {
	case v := <-verdicts:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("no verdict about the callback address")
		return ""
	}
}

// TestCallbackPortHeldByAnotherProcess: a process that finds the callback
// address taken asks the holder who it is; only a servicenow-mcp on the
// same data directory will finish its links. Otherwise it logs one error
// naming the address and the fix, refuses to hand out links, and recovers
// when the address frees.
func TestCallbackPortHeldByAnotherProcess(t *testing.T) {
	inst := newFakeInstance(t)
	tests := []struct {
		name string
		// holder occupies ln for a configuration on dataDir.
		holder func(t *testing.T, ln net.Listener, dataDir string) (release func())
		want   string // "" (links fine) or a piece of the reason
	}{
		{"servicenow-mcp on this data directory", func(t *testing.T, ln net.Listener, dataDir string) func() {
			cfg := testConfig(t, inst, func(c *config.Config) { c.DataDir = dataDir; c.SetListen(ln.Addr().String()) })
			return serveOn(t, ln, newTestApp(t, cfg).CallbackMux())
		}, ""},
		{"servicenow-mcp on another data directory", func(t *testing.T, ln net.Listener, dataDir string) func() {
			cfg := testConfig(t, inst, func(c *config.Config) { c.SetListen(ln.Addr().String()) })
			return serveOn(t, ln, newTestApp(t, cfg).CallbackMux())
		}, "serves a different data directory"},
		{"a servicenow-mcp that does not name its data directory", func(t *testing.T, ln net.Listener, dataDir string) func() {
			return serveOn(t, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write([]byte(`{"status":"ok"}`))
			}))
		}, "does not say which data directory"},
		{"another program", func(t *testing.T, ln net.Listener, dataDir string) func() {
			return serveOn(t, ln, http.NotFoundHandler())
		}, "does not answer as servicenow-mcp"},
		{"a listener that never answers", func(t *testing.T, ln net.Listener, dataDir string) func() {
			var once sync.Once
			release := func() { once.Do(func() { _ = ln.Close() }) }
			t.Cleanup(release)
			return release
		}, "does not answer as servicenow-mcp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			cfg := testConfig(t, inst, func(c *config.Config) { c.SetListen(addr) })
			release := tt.holder(t, ln, cfg.DataDir)

			logs := &syncBuffer{}
			app := loggedApp(t, cfg, logs)
			app.cb.retry, app.cb.probe = 10*time.Millisecond, 200*time.Millisecond
			verdicts := make(chan string, 4)
			app.cb.onChange = func(r string) { verdicts <- r }
			c := stdioClient(t, app, "alice")

			got := nextVerdict(t, verdicts)
			if tt.want == "" {
				if got != "" {
					t.Fatalf("links refused: %s", got)
				}
				if text, isError := callTool(t, c, "authorize_servicenow", nil); isError || !strings.Contains(text, "authorization_url") {
					t.Fatalf("authorize_servicenow: %s", text)
				}
				return
			}
			for _, piece := range []string{tt.want, addr, "stop the other process", "server.listen"} {
				if !strings.Contains(got, piece) || app.LinksBlocked() != got {
					t.Errorf("reason %q lacks %q", got, piece)
				}
			}
			var gate *oauth.LinksUnavailableError
			if _, err := app.Tokens.Link(context.Background(), storage.AccountKey{Connection: "dev", User: "bob"}); !errors.As(err, &gate) {
				t.Errorf("Link: %v, want a LinksUnavailableError", err)
			}
			for tool, args := range map[string]map[string]any{
				"authorize_servicenow": nil,
				"servicenow_request":   {"method": "GET", "path": "/api/now/table/incident"},
			} {
				text, isError := callTool(t, c, tool, args)
				if !isError || strings.Contains(text, "authorization_url") || strings.Contains(text, inst.URL) {
					t.Errorf("%s handed out a link that cannot complete: %s", tool, text)
				}
				if !strings.Contains(text, "server.listen") || !strings.Contains(text, "operator") {
					t.Errorf("%s does not say why no link is given: %s", tool, text)
				}
			}
			if n := strings.Count(logs.String(), "authorization links are refused"); n != 1 {
				t.Errorf("the refusal is logged %d times, want once:\n%s", n, logs)
			}

			// A probe cut short by the release may give one passing verdict
			// of its own; the address is then found free on the next try.
			release()
			for got := nextVerdict(t, verdicts); got != ""; got = nextVerdict(t, verdicts) {
				t.Logf("verdict while the address frees: %s", got)
			}
			if text, isError := callTool(t, c, "authorize_servicenow", nil); isError || !strings.Contains(text, "authorization_url") {
				t.Fatalf("authorize_servicenow once the address is ours: %s", text)
			}
			var h healthAnswer
			resp, err := http.Get("http://" + addr + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			err = json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if err != nil || h.Status != "ok" || h.Service != Name || h.Store != StoreID(cfg.DataDir) || h.Store == "" {
				t.Fatalf("/healthz of the new holder: %+v %v", h, err)
			}
		})
	}
}

func TestStoreID(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	tests := []struct {
		name string
		x, y string
		same bool
	}{
		{"same directory", a, a, true},
		{"same directory, other spelling", a, a + "/./", true},
		{"other directory", a, b, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x, y := StoreID(tt.x), StoreID(tt.y)
			if (x == y) != tt.same || len(x) != 16 {
				t.Fatalf("StoreID(%q)=%q, StoreID(%q)=%q", tt.x, x, tt.y, y)
			}
		})
	}
}
