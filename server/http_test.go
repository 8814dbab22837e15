package server

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"servicenow-mcp/config"
	"servicenow-mcp/storage"
)

func TestCheckExposure(t *testing.T) {
	t.Parallel()
	withKey := []config.APIKey{{Name: "k", Hash: config.HashAPIKey("x"), User: "u"}}
	tests := []struct {
		listen  string
		keys    []config.APIKey
		refused bool
	}{
		{"127.0.0.1:8765", nil, false},
		{"[::1]:8765", nil, false},
		{"localhost:8765", nil, false},
		{"0.0.0.0:8765", nil, true},
		{":8765", nil, true},
		{"192.0.2.10:8765", nil, true},
		{"0.0.0.0:8765", withKey, false},
	}
	for _, tt := range tests {
		t.Run(tt.listen, func(t *testing.T) {
			err := checkExposure(&config.Server{Listen: tt.listen, APIKeys: tt.keys}, "alice")
			if (err != nil) != tt.refused {
				t.Fatalf("checkExposure(%s, %d keys) = %v, want refused=%v", tt.listen, len(tt.keys), err, tt.refused)
			}
			if err != nil && !strings.Contains(err.Error(), "without API keys") {
				t.Errorf("the message does not say why: %v", err)
			}
		})
	}
}

func TestServeHTTPRefusesOpenNonLoopback(t *testing.T) {
	inst := newFakeInstance(t)
	app := newTestApp(t, testConfig(t, inst, func(c *config.Config) {
		c.Server.APIKeys = nil
		c.SetListen("0.0.0.0:8765") // refused before it binds
	}))
	err := app.ServeHTTP(context.Background())
	if err == nil || !strings.Contains(err.Error(), "without API keys") {
		t.Fatalf("ServeHTTP = %v, want a refusal that says why", err)
	}
}

// TestAuthentication sends the same requests to each MCP endpoint with
// every kind of right and wrong credential.
func TestAuthentication(t *testing.T) {
	inst := newFakeInstance(t)
	_, srv := newTestServer(t, inst, nil)

	// A live SSE session of the gateway's user bob, for the message endpoint.
	_, events := openSSE(t, srv.URL+SSEPath, headersFor(gatewayKey, "bob"))
	_, endpoint := nextEvent(t, events)
	bobSession := sessionFromEndpoint(t, endpoint)

	tests := []struct {
		name      string
		headers   map[string]string
		status    int
		challenge string // a substring of WWW-Authenticate on 401
		// added are header lines sent after headers, so a name may repeat.
		added [][2]string
	}{
		{"no key", map[string]string{}, http.StatusUnauthorized, `Bearer realm="servicenow-mcp"`, nil},
		{"wrong key", headersFor("snmcp_wrong", ""), http.StatusUnauthorized, `error="invalid_token"`, nil},
		{"basic scheme", map[string]string{"Authorization": "Basic " + aliceKey}, http.StatusUnauthorized, "Bearer", nil},
		{"empty bearer", map[string]string{"Authorization": "Bearer "}, http.StatusUnauthorized, "Bearer", nil},
		{"bound key names another user", headersFor(aliceKey, "mallory"), http.StatusForbidden, "", nil},
		{"bound key names itself", headersFor(aliceKey, "alice"), 0, "", nil},
		{"bound key", headersFor(aliceKey, ""), 0, "", nil},
		{"bound key with an empty user header", map[string]string{"Authorization": "Bearer " + aliceKey, userHeader: " "}, http.StatusBadRequest, "", nil},
		{"gateway without user header", headersFor(gatewayKey, ""), http.StatusBadRequest, "", nil},
		{"gateway with blank user header", map[string]string{"Authorization": "Bearer " + gatewayKey, userHeader: " "}, http.StatusBadRequest, "", nil},
		{"gateway with an overlong user", headersFor(gatewayKey, strings.Repeat("u", config.MaxUserLength+1)), http.StatusBadRequest, "", nil},
		{"gateway names bob", headersFor(gatewayKey, "bob"), 0, "", nil},
		{"lower-case scheme", map[string]string{"Authorization": "bearer " + aliceKey}, 0, "", nil},
		// A proxy that appends the user header instead of replacing it
		// must not let the client choose who it is.
		{"gateway with the user header twice", headersFor(gatewayKey, "mallory"), http.StatusBadRequest, "",
			[][2]string{{userHeader, "bob"}}},
		{"gateway with two users in one header", headersFor(gatewayKey, "mallory, bob"), http.StatusBadRequest, "", nil},
		{"two Authorization headers", headersFor(gatewayKey, "bob"), http.StatusBadRequest, "",
			[][2]string{{"Authorization", "Bearer " + aliceKey}}},
	}
	endpoints := []struct {
		name, method, path, body string
		ok                       int
	}{
		{"streamable POST", http.MethodPost, StreamablePath, initializeBody, http.StatusOK},
		{"SSE stream", http.MethodGet, SSEPath, "", http.StatusOK},
		// bob's session answers 404 to everyone but bob: authentication
		// comes first, so only the status of a refused caller is checked.
		{"SSE message", http.MethodPost, MessagePath + "?sessionId=" + bobSession, `{"jsonrpc":"2.0","id":1,"method":"ping"}`, 0},
	}
	for _, ep := range endpoints {
		for _, tt := range tests {
			t.Run(ep.name+"/"+tt.name, func(t *testing.T) {
				want := tt.status
				if want == 0 {
					want = ep.ok
				}
				if want == 0 {
					return
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, ep.method, srv.URL+ep.path, strings.NewReader(ep.body))
				for k, v := range tt.headers {
					req.Header.Set(k, v)
				}
				for _, kv := range tt.added {
					req.Header.Add(kv[0], kv[1])
				}
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != want {
					body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
					t.Fatalf("status %d, want %d: %s", resp.StatusCode, want, body)
				}
				if want == http.StatusUnauthorized && !strings.Contains(resp.Header.Get("WWW-Authenticate"), tt.challenge) {
					t.Errorf("WWW-Authenticate %q lacks %q", resp.Header.Get("WWW-Authenticate"), tt.challenge)
				}
			})
		}
	}

	t.Run("bob's session with bob", func(t *testing.T) {
		resp := rawRequest(t, http.MethodPost, srv.URL+MessagePath+"?sessionId="+bobSession,
			headersFor(gatewayKey, "bob"), `{"jsonrpc":"2.0","id":1,"method":"ping"}`)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("status %d, want 202", resp.StatusCode)
		}
	})

	t.Run("callback and health need no key", func(t *testing.T) {
		resp := rawRequest(t, http.MethodGet, srv.URL+"/healthz", nil, "")
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("/healthz: status %d", resp.StatusCode)
		}
		// An unknown state is the callback's own error page, not a 401.
		resp = rawRequest(t, http.MethodGet, srv.URL+"/oauth/callback?state=unknown&code=x", nil, "")
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusNotFound {
			t.Errorf("/oauth/callback: status %d", resp.StatusCode)
		}
	})
}

// TestToolArgumentCannotNameUser: a user-bound key cannot act for someone
// else through the optional user argument either; a gateway key can when
// the operator turned the argument on.
func TestToolArgumentCannotNameUser(t *testing.T) {
	inst := newFakeInstance(t)
	_, srv := newTestServer(t, inst, func(c *config.Config) { c.Server.AllowUserArgument = true })

	for _, kind := range []string{"http", "sse"} {
		t.Run(kind, func(t *testing.T) {
			alice := connect(t, srv.URL, kind, headersFor(aliceKey, ""))
			text, isError := callTool(t, alice, "servicenow_connection_status", map[string]any{"user": "mallory"})
			if !isError || !strings.Contains(text, "not allowed") {
				t.Errorf("bound key naming mallory: isError=%v %s", isError, text)
			}

			gateway := connect(t, srv.URL, kind, headersFor(gatewayKey, "bob"))
			text, isError = callTool(t, gateway, "servicenow_connection_status", map[string]any{"user": "carol"})
			if isError || userOf(t, text) != "carol" {
				t.Errorf("gateway naming carol: isError=%v %s", isError, text)
			}

			// The argument is held to the same rules as the user header.
			for _, bad := range []struct{ user, want string }{
				{strings.Repeat("u", config.MaxUserLength+1), "longer than"},
				{"carol\nadmin", "control or invisible"},
				{"x\x00y", "control or invisible"},
				{"admin\u202e", "control or invisible"},
			} {
				text, isError = callTool(t, gateway, "servicenow_connection_status", map[string]any{"user": bad.user})
				if !isError || !strings.Contains(text, `argument "user"`) || !strings.Contains(text, bad.want) {
					t.Errorf("gateway naming %q: isError=%v %s", bad.user, isError, text)
				}
			}
		})
	}
}

func userOf(t *testing.T, statusJSON string) string {
	t.Helper()
	var out struct {
		User string `json:"user"`
	}
	if err := json.Unmarshal([]byte(statusJSON), &out); err != nil {
		t.Fatalf("status is not JSON: %v: %s", err, statusJSON)
	}
	return out.User
}

func TestBodyLimit(t *testing.T) {
	inst := newFakeInstance(t)
	_, srv := newTestServer(t, inst, func(c *config.Config) { c.Server.MaxBodyBytes = 4096 })
	big := `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"` + strings.Repeat("x", 5000) + `"}}`

	for _, tt := range []struct {
		name    string
		path    string
		chunked bool
	}{
		{"streamable with length", StreamablePath, false},
		{"streamable chunked", StreamablePath, true},
		{"SSE message", MessagePath + "?sessionId=whatever", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(big)
			if tt.chunked {
				body = io.MultiReader(strings.NewReader(big)) // unknown length: sent chunked
			}
			req, _ := http.NewRequest(http.MethodPost, srv.URL+tt.path, body)
			req.Header.Set("Authorization", "Bearer "+aliceKey)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d, want 413", resp.StatusCode)
			}
		})
	}

	t.Run("a body under the limit passes", func(t *testing.T) {
		resp := rawRequest(t, http.MethodPost, srv.URL+StreamablePath, headersFor(aliceKey, ""), initializeBody)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
	})
}

// TestSessions: unknown, ended and foreign session ids all get 404.
func TestSessions(t *testing.T) {
	inst := newFakeInstance(t)
	_, srv := newTestServer(t, inst, nil)
	alice := headersFor(aliceKey, "")
	list := `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`

	open := func(h map[string]string) string {
		resp := rawRequest(t, http.MethodPost, srv.URL+StreamablePath, h, initializeBody)
		resp.Body.Close()
		id := resp.Header.Get("Mcp-Session-Id")
		if resp.StatusCode != http.StatusOK || id == "" {
			t.Fatalf("initialize: status %d, session %q", resp.StatusCode, id)
		}
		return id
	}
	with := func(h map[string]string, session string) map[string]string {
		out := map[string]string{"Mcp-Session-Id": session, "Mcp-Protocol-Version": "2025-06-18"}
		for k, v := range h {
			out[k] = v
		}
		return out
	}
	expect := func(name string, resp *http.Response, want int) {
		t.Helper()
		defer resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: status %d, want %d", name, resp.StatusCode, want)
		}
		if want >= 400 {
			var body struct {
				Error struct{ Message string } `json:"error"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Error.Message == "" {
				t.Errorf("%s: the answer is not a JSON-RPC error (%v)", name, err)
			}
		}
	}

	session := open(alice)
	expect("live session", rawRequest(t, http.MethodPost, srv.URL+StreamablePath, with(alice, session), list), http.StatusOK)
	expect("unknown session", rawRequest(t, http.MethodPost, srv.URL+StreamablePath, with(alice, "mcp-session-nope"), list), http.StatusNotFound)
	expect("unknown session GET", rawRequest(t, http.MethodGet, srv.URL+StreamablePath, with(alice, "mcp-session-nope"), ""), http.StatusNotFound)
	expect("GET without a session", rawRequest(t, http.MethodGet, srv.URL+StreamablePath, alice, ""), http.StatusBadRequest)
	expect("unknown session DELETE", rawRequest(t, http.MethodDelete, srv.URL+StreamablePath, with(alice, "mcp-session-nope"), ""), http.StatusNotFound)

	bob := headersFor(gatewayKey, "bob")
	expect("alice's session used by bob", rawRequest(t, http.MethodPost, srv.URL+StreamablePath, with(bob, session), list), http.StatusNotFound)
	expect("alice's session streamed by bob", rawRequest(t, http.MethodGet, srv.URL+StreamablePath, with(bob, session), ""), http.StatusNotFound)
	expect("alice's session deleted by bob", rawRequest(t, http.MethodDelete, srv.URL+StreamablePath, with(bob, session), ""), http.StatusNotFound)
	carol := headersFor(gatewayKey, "carol")
	bobs := open(bob)
	expect("bob's session used by carol via the same gateway", rawRequest(t, http.MethodPost, srv.URL+StreamablePath, with(carol, bobs), list), http.StatusNotFound)
	expect("alice's session still live", rawRequest(t, http.MethodPost, srv.URL+StreamablePath, with(alice, session), list), http.StatusOK)

	expect("DELETE", rawRequest(t, http.MethodDelete, srv.URL+StreamablePath, with(alice, session), ""), http.StatusOK)
	expect("ended session", rawRequest(t, http.MethodPost, srv.URL+StreamablePath, with(alice, session), list), http.StatusNotFound)
	expect("DELETE without a session", rawRequest(t, http.MethodDelete, srv.URL+StreamablePath, alice, ""), http.StatusBadRequest)

	t.Run("SSE", func(t *testing.T) {
		resp := rawRequest(t, http.MethodPost, srv.URL+MessagePath+"?sessionId=nope", alice, list)
		expect("unknown SSE session", resp, http.StatusNotFound)

		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+SSEPath, nil)
		req.Header.Set("Authorization", "Bearer "+aliceKey)
		stream, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		n, _ := stream.Body.Read(buf)
		id := sessionFromEndpoint(t, strings.TrimSpace(strings.SplitN(strings.SplitN(string(buf[:n]), "data: ", 2)[1], "\n", 2)[0]))
		expect("bob on alice's SSE session", rawRequest(t, http.MethodPost, srv.URL+MessagePath+"?sessionId="+id, bob, list), http.StatusNotFound)
		expect("alice on her SSE session", rawRequest(t, http.MethodPost, srv.URL+MessagePath+"?sessionId="+id, alice, list), http.StatusAccepted)

		cancel()
		stream.Body.Close()
		waitFor(t, "the ended SSE session to answer 404", func() bool {
			resp := rawRequest(t, http.MethodPost, srv.URL+MessagePath+"?sessionId="+id, alice, list)
			resp.Body.Close()
			return resp.StatusCode == http.StatusNotFound
		})
	})
}

// waitFor polls cond: the end of a stream on the server side has no
// signal a client can observe.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStreamsAndPublicURL: the SSE endpoint event is built from
// public_url whatever the Host header says; streams carry keep-alives and
// the header that turns proxy buffering off.
func TestStreamsAndPublicURL(t *testing.T) {
	inst := newFakeInstance(t)
	_, srv := newTestServer(t, inst, func(c *config.Config) {
		c.Server.PublicURL = "https://mcp.example.com/servicenow"
	})

	for _, host := range []string{"", "mcp.example.com", "localhost:1"} {
		h := headersFor(aliceKey, "")
		if host != "" {
			h["Host"] = host
		}
		resp, events := openSSE(t, srv.URL+SSEPath, h)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("Host %q: status %d", host, resp.StatusCode)
		}
		if got := resp.Header.Get("X-Accel-Buffering"); got != "no" {
			t.Errorf("SSE X-Accel-Buffering = %q", got)
		}
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("SSE Access-Control-Allow-Origin = %q, want none", got)
		}
		name, data := nextEvent(t, events)
		if name != "endpoint" || !strings.HasPrefix(data, "https://mcp.example.com/servicenow/message?sessionId=") {
			t.Errorf("Host %q: endpoint event %s %q", host, name, data)
		}
		awaitKeepAlive(t, events)
	}

	t.Run("streamable GET stream", func(t *testing.T) {
		resp := rawRequest(t, http.MethodPost, srv.URL+StreamablePath, headersFor(aliceKey, ""), initializeBody)
		resp.Body.Close()
		h := headersFor(aliceKey, "")
		h["Mcp-Session-Id"] = resp.Header.Get("Mcp-Session-Id")
		h["Mcp-Protocol-Version"] = "2025-06-18"
		stream, events := openSSE(t, srv.URL+StreamablePath, h)
		if stream.StatusCode != http.StatusOK || stream.Header.Get("X-Accel-Buffering") != "no" {
			t.Fatalf("GET stream: status %d, X-Accel-Buffering %q", stream.StatusCode, stream.Header.Get("X-Accel-Buffering"))
		}
		awaitKeepAlive(t, events)
	})

	t.Run("links use public_url", func(t *testing.T) {
		c := connect(t, srv.URL, "http", headersFor(aliceKey, ""))
		text, _ := callTool(t, c, "authorize_servicenow", nil)
		if !strings.Contains(text, "redirect_uri=https%3A%2F%2Fmcp.example.com%2Fservicenow%2Foauth%2Fcallback") {
			t.Errorf("the link does not carry the public redirect URI: %s", text)
		}
	})
}

func TestDNSRebindingGuard(t *testing.T) {
	inst := newFakeInstance(t)
	_, srv := newTestServer(t, inst, func(c *config.Config) {
		c.Server.PublicURL = "https://mcp.example.com"
	})

	for _, tt := range []struct {
		name    string
		headers map[string]string
		want    int
	}{
		{"foreign Host", map[string]string{"Host": "evil.example.com"}, http.StatusForbidden},
		{"foreign Origin", map[string]string{"Origin": "https://evil.example.com"}, http.StatusForbidden},
		{"null Origin", map[string]string{"Origin": "null"}, http.StatusForbidden},
		{"public Host behind a proxy", map[string]string{"Host": "mcp.example.com"}, http.StatusOK},
		{"public Origin", map[string]string{"Origin": "https://mcp.example.com"}, http.StatusOK},
		{"loopback Host", map[string]string{"Host": "localhost:9"}, http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := headersFor(aliceKey, "")
			for k, v := range tt.headers {
				h[k] = v
			}
			resp := rawRequest(t, http.MethodPost, srv.URL+StreamablePath, h, initializeBody)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

// TestUsersActAsThemselves: several users call at once over both HTTP
// transports, through a user-bound key and a gateway key, and each acts
// on ServiceNow with their own token while another user's refresh hangs.
func TestUsersActAsThemselves(t *testing.T) {
	inst := newFakeInstance(t)
	app, srv := newTestServer(t, inst, nil)
	for _, user := range []string{"alice", "bob", "carol"} {
		inst.link(t, app, user, false)
	}
	inst.link(t, app, "dave", true) // needs a refresh first
	releaseDave := inst.holdRefreshOf("dave")
	defer releaseDave()

	callers := []struct {
		user, key, header string
	}{
		{"alice", aliceKey, ""},
		{"bob", gatewayKey, "bob"},
		{"carol", gatewayKey, "carol"},
	}
	incidents := map[string]any{"method": "GET", "path": "/api/now/table/incident", "query": map[string]any{"sysparm_limit": "1"}}

	// dave's refresh hangs at the instance for the whole test.
	daveDone := make(chan string, 1)
	dave := connect(t, srv.URL, "sse", headersFor(gatewayKey, "dave"))
	go func() {
		text, _ := callTool(t, dave, "servicenow_request", incidents)
		daveDone <- text
	}()
	inst.awaitArrival(t, "refresh:dave")

	var wg sync.WaitGroup
	for _, kind := range []string{"http", "sse"} {
		for _, c := range callers {
			cl := connect(t, srv.URL, kind, headersFor(c.key, c.header))
			for i := range 5 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					text, isError := callTool(t, cl, "servicenow_request", incidents)
					if isError || !strings.Contains(text, "INC-"+c.user) || strings.Contains(text, "INC-dave") {
						t.Errorf("%s call %d as %s: isError=%v %s", kind, i, c.user, isError, text)
					}
					status, _ := callTool(t, cl, "servicenow_connection_status", nil)
					if got := userOf(t, status); got != c.user {
						t.Errorf("%s: connection status names %q, want %q", kind, got, c.user)
					}
				}()
			}
		}
	}
	wg.Wait()

	select {
	case text := <-daveDone:
		t.Fatalf("dave's call finished while his refresh was held: %s", text)
	default:
	}
	releaseDave()
	if text := <-daveDone; !strings.Contains(text, "INC-dave") {
		t.Errorf("dave after his refresh: %s", text)
	}

	t.Run("links and pending authorizations stay apart", func(t *testing.T) {
		links := map[string]string{}
		var mu sync.Mutex
		var lw sync.WaitGroup
		for _, u := range []string{"erin", "frank"} {
			lw.Add(1)
			go func() {
				defer lw.Done()
				c := connect(t, srv.URL, "http", headersFor(gatewayKey, u))
				text, _ := callTool(t, c, "authorize_servicenow", nil)
				mu.Lock()
				links[u] = text
				mu.Unlock()
			}()
		}
		lw.Wait()
		if links["erin"] == links["frank"] {
			t.Fatal("two users got the same link")
		}
		for u, text := range links {
			var out struct {
				URL string `json:"authorization_url"`
			}
			_ = json.Unmarshal([]byte(text), &out)
			p, err := app.store.PendingFor(context.Background(), storage.AccountKey{Connection: "dev", User: u})
			if err != nil || p.AuthURL != out.URL || p.User != u {
				t.Errorf("%s: pending %+v, err %v, link %s", u, p, err, out.URL)
			}
		}
	})
}

// TestGracefulShutdown: a call in flight on each transport finishes after
// the signal; new connections are refused meanwhile.
func TestGracefulShutdown(t *testing.T) {
	inst := newFakeInstance(t)
	app, srv := newTestServer(t, inst, nil)
	inst.link(t, app, "alice", false)
	inst.link(t, app, "bob", false)
	releaseAlice := inst.holdAPIOf("alice")
	releaseBob := inst.holdAPIOf("bob")
	defer releaseAlice()
	defer releaseBob()

	incidents := map[string]any{"method": "GET", "path": "/api/now/table/incident"}
	results := make(chan string, 2)
	viaHTTP := connect(t, srv.URL, "http", headersFor(aliceKey, ""))
	viaSSE := connect(t, srv.URL, "sse", headersFor(gatewayKey, "bob"))
	go func() { text, _ := callTool(t, viaHTTP, "servicenow_request", incidents); results <- text }()
	go func() { text, _ := callTool(t, viaSSE, "servicenow_request", incidents); results <- text }()
	inst.awaitArrival(t, "api:alice", "api:bob")

	stopped := make(chan error, 1)
	go func() { stopped <- srv.stop() }()
	addr := strings.TrimPrefix(srv.URL, "http://")
	waitFor(t, "the listener to close", func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
	select {
	case err := <-stopped:
		t.Fatalf("the server stopped with calls in flight: %v", err)
	default:
	}

	releaseAlice()
	releaseBob()
	got := []string{<-results, <-results}
	joined := strings.Join(got, "\n")
	if !strings.Contains(joined, "INC-alice") || !strings.Contains(joined, "INC-bob") {
		t.Errorf("calls in flight did not finish: %s", joined)
	}
	if err := <-stopped; err != nil {
		t.Errorf("serveHTTP: %v", err)
	}
}

// TestShutdownBound: a call that never ends does not hold shutdown past
// timeouts.shutdown.
func TestShutdownBound(t *testing.T) {
	inst := newFakeInstance(t)
	app, srv := newTestServer(t, inst, func(c *config.Config) { c.Timeouts.Shutdown = 300 * time.Millisecond })
	inst.link(t, app, "alice", false)
	release := inst.holdAPIOf("alice")
	defer release()

	c := connect(t, srv.URL, "http", headersFor(aliceKey, ""))
	answer := make(chan string, 1)
	go func() {
		text, _, err := tryCallTool(c, "servicenow_request", map[string]any{"method": "GET", "path": "/api/now/table/incident"})
		if err != nil {
			text = "no answer: " + err.Error()
		}
		answer <- text
	}()
	inst.awaitArrival(t, "api:alice")

	start := time.Now()
	if err := srv.stop(); err != nil {
		t.Errorf("serveHTTP: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("shutdown took %s with a bound of 300ms", took)
	}
	// The call was told, not cut off without a word.
	if text := <-answer; !strings.Contains(text, "shutting down") {
		t.Errorf("the call in flight answered %q, want that the server is shutting down", text)
	}
	release()
}

func TestInflight(t *testing.T) {
	t.Parallel()
	f := newInflight()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := f.wait(ctx); err != nil {
		t.Fatalf("idle wait: %v", err)
	}
	f.add("")
	f.add("s1")
	f.add("s1")
	f.done("s2") // not counted: ignored
	f.done("")
	if f.count() != 2 {
		t.Fatalf("count %d, want 2", f.count())
	}
	short, cancelShort := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancelShort()
	if err := f.wait(short); err == nil {
		t.Fatal("wait returned with work in flight")
	}
	f.dropSession("s1")
	if err := f.wait(ctx); err != nil || f.count() != 0 {
		t.Fatalf("after dropping s1: %v, count %d", err, f.count())
	}
}

func TestIsSSEResponseEvent(t *testing.T) {
	t.Parallel()
	for event, want := range map[string]bool{
		"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n\n":                      true,
		"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"error\":{\"code\":1}}\n\n":             true,
		"event: message\ndata:{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\"}\n\n":                 false,
		"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n":       false,
		"event: endpoint\ndata: https://x/message?sessionId=1\r\n\r\n":                                false,
		fmt.Sprintf("event: message\ndata: {\"id\":\"a\",\"result\":{\"content\":[%q]}}\n\n", "x\ny"): true,
	} {
		if got := isSSEResponseEvent([]byte(event)); got != want {
			t.Errorf("isSSEResponseEvent(%q) = %v, want %v", event, got, want)
		}
	}
}

// TestTLS serves HTTPS from a certificate and key file; public_url then
// defaults to https and the SSE endpoint event says so.
func TestTLS(t *testing.T) {
	inst := newFakeInstance(t)
	certFile, keyFile, pool := selfSignedCert(t)
	_, srv := newTestServer(t, inst, func(c *config.Config) {
		c.Server.TLSCert, c.Server.TLSKey = certFile, keyFile
		c.Server.PublicURL = "https://" + strings.TrimPrefix(c.Server.PublicURL, "http://")
	})
	base := "https://" + strings.TrimPrefix(srv.URL, "http://")
	httpsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer httpsClient.CloseIdleConnections()

	req, _ := http.NewRequest(http.MethodPost, base+StreamablePath, strings.NewReader(initializeBody))
	req.Header.Set("Authorization", "Bearer "+aliceKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := httpsClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("initialize over HTTPS: status %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, base+SSEPath, nil)
	req.Header.Set("Authorization", "Bearer "+aliceKey)
	stream, err := httpsClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	if name, data := nextEvent(t, bufio.NewReader(stream.Body)); name != "endpoint" || !strings.HasPrefix(data, base+MessagePath+"?sessionId=") {
		t.Errorf("endpoint event %s %q, want %s%s", name, data, base, MessagePath)
	}

	plain := rawRequest(t, http.MethodGet, srv.URL+"/healthz", nil, "")
	plain.Body.Close()
	if plain.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP to the TLS listener: status %d, want 400", plain.StatusCode)
	}
}

// selfSignedCert writes a certificate for 127.0.0.1 and its key, and
// returns their paths and a pool that trusts the certificate.
func selfSignedCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "servicenow-mcp test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestTLSBadCertificate(t *testing.T) {
	inst := newFakeInstance(t)
	certFile, _, _ := selfSignedCert(t)
	garbage := filepath.Join(t.TempDir(), "garbage.key")
	if err := os.WriteFile(garbage, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	app := newTestApp(t, testConfig(t, inst, func(c *config.Config) {
		c.Server.TLSCert, c.Server.TLSKey = certFile, garbage
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = app.serveHTTP(context.Background(), ln, testOptions())
	if err == nil || !strings.Contains(err.Error(), "server.tls_cert_file") {
		t.Fatalf("serveHTTP with a bad key file = %v, want an error naming the config keys", err)
	}
}
