package e2e

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// shutdownBound is timeouts.shutdown, which the test configuration leaves
// at its default.
const shutdownBound = 10 * time.Second

// TestHTTPShutdownWithCallsInFlight stops an HTTP server with SIGTERM
// while a call on each HTTP transport waits for the instance: both calls
// get their answer, the process exits 0 within the shutdown bound and
// says the transport stopped, the store is closed (Badger's lock file is
// gone), and a new process on the same data directory owns the store at
// once and still has the linked account.
func TestHTTPShutdownWithCallsInFlight(t *testing.T) {
	t.Parallel()
	requireClients(t)
	cfg := newServerConfig(t)
	sb := startSandbox(t, cfg.redirectURI())
	gate := newInstanceGate(t, sb.URL)
	cfg.write(t, gate.URL)
	srv := startHTTPServer(t, cfg)
	alice := sb.user(t, "alice")

	// No API keys on a loopback listener: every caller is e2e-user.
	s := startClient(t, "http", srv.URL+"/mcp")
	link := checkAuthorizationRequired(t, s.call("servicenow_request", myIncidents), gate.URL, cfg.redirectURI())
	if consent := s.step(map[string]any{"op": "consent", "url": link, "user": "alice", "password": "sandbox"}); !consent.OK {
		t.Fatalf("consent as alice: %s", consent.Error)
	}
	checkIncidentsOf(t, s.mustCall("servicenow_request", myIncidents), alice.SysID)
	sse := startClient(t, "sse", srv.URL+"/sse")
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "LOCK")); err != nil {
		t.Fatalf("the running server holds no Badger lock file in its data directory: %v", err)
	}

	// One call per transport, each held at the instance, then SIGTERM.
	gate.hold()
	call := map[string]any{"op": "call", "tool": "servicenow_request", "args": myIncidents}
	s.send(call)
	sse.send(call)
	gate.waitHeld(t, 2)
	sigterm := time.Now()
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	// The calls are let through only once the server is draining, so
	// their answers show that it waited for them.
	var draining map[string]any
	waitFor(t, "the server to log that it is shutting down", 5*time.Second, func() (bool, error) {
		draining = findLog(srv.stderr.String(), "shutting down: no new connections")
		return draining != nil, nil
	})
	if n, _ := draining["in_flight"].(float64); n != 2 {
		t.Errorf("the server began shutting down with %v calls in flight, want the 2 held: %v", draining["in_flight"], draining)
	}
	gate.open()
	for name, c := range map[string]*session{"streamable HTTP": s, "SSE": sse} {
		r := c.next()
		if !r.OK {
			t.Errorf("the call in flight over %s at SIGTERM failed: %s", name, r.Error)
			continue
		}
		var answer callResult
		if err := json.Unmarshal(r.Result, &answer); err != nil || answer.IsError {
			t.Errorf("the call in flight over %s at SIGTERM: want its answer, got %s", name, r.Result)
			continue
		}
		checkIncidentsOf(t, answer, alice.SysID)
	}

	select {
	case <-srv.done:
	case <-time.After(shutdownBound + 5*time.Second):
		t.Fatalf("the HTTP server did not exit within %s of SIGTERM", shutdownBound+5*time.Second)
	}
	took := time.Since(sigterm)
	if code := srv.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("the HTTP server exited with status %d after SIGTERM, want 0", code)
	}
	if took > shutdownBound {
		t.Errorf("the HTTP server took %s to exit after SIGTERM, more than the bound %s", took, shutdownBound)
	}
	s.close()
	sse.close()
	log := srv.stderr.String()
	if findLog(log, "HTTP transport stopped") == nil {
		t.Errorf("the server did not log that the HTTP transport stopped")
	}
	checkNoErrorLogs(t, "the stopped server", log)

	// The server says it closed the store, and Badger removed its lock
	// file, which a process that died with the database open leaves behind.
	if findLog(log, "store closed") == nil {
		t.Errorf("the server did not log that it closed the store")
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "LOCK")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the store was not closed: Badger's lock file is still in the data directory (%v)", err)
	}

	// A new process on the same data directory: it owns the database at
	// once (it did not find another owner to share with) and alice's
	// account works without a new link.
	next := startHTTPServer(t, cfg)
	s2 := startClient(t, "http", next.URL+"/mcp")
	status := s2.mustCall("servicenow_connection_status", nil)
	if status.Parsed["status"] != "ACTIVE" || status.Parsed["servicenow_user"] != "alice" {
		t.Errorf("after the restart: want ACTIVE as alice, got %s", status.text())
	}
	checkIncidentsOf(t, s2.mustCall("servicenow_request", myIncidents), alice.SysID)
	s2.close()
	if got := sb.stats(t).grants("authorization_code", "ok"); got != 1 {
		t.Errorf("sandbox saw %d code exchanges, want 1: the restart must not need a new link", got)
	}
	log = next.stderr.String()
	for _, want := range []string{"storage: this process owns the database", "storage database open"} {
		if findLog(log, want) == nil {
			t.Errorf("the new process did not log %q", want)
		}
	}
	checkNoErrorLogs(t, "the new process", log)
}

// instanceGate is a reverse proxy in front of the sandbox that can hold
// API requests until it is opened, so that a test knows a call is in
// flight instead of guessing with a sleep.
type instanceGate struct {
	URL string

	mu       sync.Mutex
	holding  bool
	held     chan struct{} // one value per request held
	released chan struct{} // closed by open
	once     sync.Once
}

func newInstanceGate(t *testing.T, target string) *instanceGate {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	g := &instanceGate{held: make(chan struct{}, 64), released: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") && g.isHolding() {
			g.held <- struct{}{}
			select {
			case <-g.released:
			case <-r.Context().Done():
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	g.URL = srv.URL
	t.Cleanup(func() {
		g.open()
		srv.Close()
	})
	return g
}

// hold makes the gate hold every API request from now until open.
func (g *instanceGate) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.holding = true
}

func (g *instanceGate) isHolding() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.holding
}

// waitHeld waits until n requests are being held.
func (g *instanceGate) waitHeld(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-g.held:
		case <-time.After(stepTimeout):
			t.Fatalf("%d of %d calls reached the instance within %s", i, n, stepTimeout)
		}
	}
}

// open lets the held requests, and all later ones, through.
func (g *instanceGate) open() {
	g.once.Do(func() {
		g.mu.Lock()
		g.holding = false
		g.mu.Unlock()
		close(g.released)
	})
}

// findLog returns the first JSON log entry of out with this message, or
// nil. Lines that are not JSON (a race report, say) are skipped.
func findLog(out, message string) map[string]any {
	for _, line := range strings.Split(out, "\n") {
		var entry map[string]any
		if json.Unmarshal([]byte(line), &entry) == nil && entry["message"] == message {
			return entry
		}
	}
	return nil
}

// checkNoErrorLogs fails the test for each error-level entry of out.
func checkNoErrorLogs(t *testing.T, who, out string) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		var entry map[string]any
		if json.Unmarshal([]byte(line), &entry) == nil && entry["level"] == "error" {
			t.Errorf("%s logged an error: %s", who, line)
		}
	}
}
