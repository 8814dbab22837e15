package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Keys of the team configuration.
const (
	teamGatewayKey = "e2e-team-gateway-key-0123456789abcdef"
	teamCarolKey   = "e2e-team-carol-key-0123456789abcdef"
	teamUserHeader = "X-ServiceNow-MCP-User"
)

// teamMember is one end user of the team server: who they are to the
// caller, the key that speaks for them, and their ServiceNow sign-in.
type teamMember struct {
	endUser   string // the server's user: the gateway's header, or the key's bound user
	key       string
	gateway   bool
	snUser    string // sandbox user_name they sign in as
	sysID     string
	transport string // first transport; the other one comes second
}

func (m teamMember) headers() []string {
	h := []string{"Authorization: Bearer " + m.key}
	if m.gateway {
		h = append(h, teamUserHeader+": "+m.endUser)
	}
	return h
}

func (m teamMember) clientArgs(base, transport string) []string {
	var args []string
	for _, h := range m.headers() {
		args = append(args, "--header", h)
	}
	return append(args, transport, endpoint(base, transport))
}

func endpoint(base, transport string) string {
	if transport == "sse" {
		return base + "/sse"
	}
	return base + "/mcp"
}

func other(transport string) string {
	if transport == "sse" {
		return "http"
	}
	return "sse"
}

// writeTeamConfig writes a configuration with a gateway key and a key
// bound to carol-local, for an HTTP server shared by a team.
func writeTeamConfig(t *testing.T, c serverConfig, instanceURL string) {
	t.Helper()
	hash := func(key string) string { return fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(key))) }
	yaml := fmt.Sprintf(`data_dir: %s
encryption_key_file: %s
user: e2e-operator
log:
  level: debug
  format: json
server:
  listen: %s
  api_keys:
    - {name: agent-gateway, hash: %q, gateway: true}
    - {name: carol-laptop, hash: %q, user: carol-local}
timeouts:
  refresh_margin: 1s
connections:
  - name: sandbox
    instance_url: %s
    client_id: %s
    client_secret: ${%s}
    scopes: [useraccount]
    default: true
`, c.DataDir, c.KeyFile, c.Listen, hash(teamGatewayKey), hash(teamCarolKey),
		instanceURL, sandboxClientID, secretEnv)
	if err := os.WriteFile(c.Path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestTeamOverHTTP serves three users at once from one HTTP server: two
// through one gateway key, one through a key bound to them. Each links
// their own ServiceNow account, calls as themselves, gets a refreshed
// token once the first expires, and then uses the other HTTP transport
// in a new session without a new link; the MCP Inspector CLI does the
// same over both transports. Requests without the right credentials are
// refused before they reach a tool.
func TestTeamOverHTTP(t *testing.T) {
	t.Parallel()
	requireClients(t)
	cfg := newServerConfig(t)
	sb := startSandbox(t, cfg.redirectURI(), "--access-ttl", accessTTL.String())
	writeTeamConfig(t, cfg, sb.URL)
	srv := startHTTPServer(t, cfg)

	team := []teamMember{
		{endUser: "alice@team", key: teamGatewayKey, gateway: true, snUser: "alice", transport: "http"},
		{endUser: "bob@team", key: teamGatewayKey, gateway: true, snUser: "bob", transport: "sse"},
		{endUser: "carol-local", key: teamCarolKey, snUser: "carol", transport: "http"},
	}
	for i := range team {
		team[i].sysID = sb.user(t, team[i].snUser).SysID
	}

	// Link, call and refresh, all three at once, each on its first transport.
	t.Run("link call refresh", func(t *testing.T) {
		for _, m := range team {
			t.Run(m.endUser+" over "+m.transport, func(t *testing.T) {
				t.Parallel()
				linkCallRefresh(t, sb, cfg, srv.URL, m)
			})
		}
	})
	if t.Failed() {
		return
	}
	if got := sb.stats(t).grants("authorization_code", "ok"); got != int64(len(team)) {
		t.Errorf("sandbox saw %d code exchanges, want one per user (%d)", got, len(team))
	}

	// A new session on the other transport: the account belongs to
	// (connection, user), not to a session, so no new link is needed.
	t.Run("other transport", func(t *testing.T) {
		for _, m := range team {
			t.Run(m.endUser+" over "+other(m.transport), func(t *testing.T) {
				t.Parallel()
				s := startClient(t, m.clientArgs(srv.URL, other(m.transport))...)
				status := s.mustCall("servicenow_connection_status", nil)
				if status.Parsed["status"] != "ACTIVE" || status.Parsed["user"] != m.endUser ||
					status.Parsed["servicenow_user"] != m.snUser {
					t.Errorf("status: want ACTIVE for %s as ServiceNow user %s, got %s", m.endUser, m.snUser, status.text())
				}
				checkIncidentsOf(t, s.mustCall("servicenow_request", incidentsOf(m.sysID)), m.sysID)
				s.close()
			})
		}
	})

	t.Run("inspector", func(t *testing.T) {
		for _, m := range team {
			for _, transport := range []string{"http", "sse"} {
				t.Run(m.endUser+" over "+transport, func(t *testing.T) {
					t.Parallel()
					args, _ := json.Marshal(incidentsOf(m.sysID))
					out, code := inspectorHTTP(t, endpoint(srv.URL, transport), m.headers(),
						"--method", "tools/call", "--tool-name", "servicenow_request", "--tool-args-json", string(args))
					if code != 0 {
						t.Fatalf("inspector exited %d: %s", code, out)
					}
					var called struct {
						Result callResult `json:"result"`
					}
					if err := json.Unmarshal([]byte(out), &called); err != nil {
						t.Fatalf("inspector printed no JSON: %v: %s", err, out)
					}
					checkIncidentsOf(t, called.Result, m.sysID)
				})
			}
		}
	})

	if got := sb.stats(t).grants("authorization_code", "ok"); got != int64(len(team)) {
		t.Errorf("sandbox saw %d code exchanges in all, want %d: a new session must not need a new link", got, len(team))
	}

	t.Run("refusals", func(t *testing.T) {
		checkRefusals(t, srv.URL)
	})
}

func incidentsOf(sysID string) map[string]any {
	return map[string]any{
		"method": "GET",
		"path":   "/api/now/table/incident",
		"query": map[string]any{
			"sysparm_query":  "caller_id=" + sysID,
			"sysparm_fields": "number,caller_id",
			"sysparm_limit":  "5",
		},
	}
}

// linkCallRefresh is the core story for one member on one transport.
func linkCallRefresh(t *testing.T, sb *sandboxProc, cfg serverConfig, base string, m teamMember) {
	s := startClient(t, m.clientArgs(base, m.transport)...)
	mine := incidentsOf(m.sysID)

	status := s.mustCall("servicenow_connection_status", nil)
	if status.Parsed["status"] != "NOT_LINKED" || status.Parsed["user"] != m.endUser {
		t.Fatalf("before linking: want NOT_LINKED for %s, got %s", m.endUser, status.text())
	}
	link := checkAuthorizationRequired(t, s.call("servicenow_request", mine), sb.URL, cfg.redirectURI())

	consent := s.step(map[string]any{"op": "consent", "url": link, "user": m.snUser, "password": "sandbox"})
	var page struct {
		CallbackStatus int    `json:"callback_status"`
		Page           string `json:"page"`
	}
	if !consent.OK || json.Unmarshal(consent.Result, &page) != nil {
		t.Fatalf("consent as %s: %s %s", m.snUser, consent.Error, consent.Result)
	}
	if page.CallbackStatus != http.StatusOK || !strings.Contains(page.Page, m.snUser) || !strings.Contains(page.Page, m.endUser) {
		t.Fatalf("callback page (%d) does not name %s and %s:\n%s", page.CallbackStatus, m.snUser, m.endUser, page.Page)
	}

	checkIncidentsOf(t, s.mustCall("servicenow_request", mine), m.sysID)
	linked := s.mustCall("servicenow_connection_status", nil)
	if linked.Parsed["servicenow_user"] != m.snUser {
		t.Fatalf("%s is linked as %v, want %s", m.endUser, linked.Parsed["servicenow_user"], m.snUser)
	}
	firstExpiry := parseTime(t, linked.Parsed["token_expires_at"])

	// The sandbox refuses the first token after accessTTL; the deadline is
	// known, so there is nothing to poll.
	time.Sleep(time.Until(firstExpiry) + 200*time.Millisecond)
	checkIncidentsOf(t, s.mustCall("servicenow_request", mine), m.sysID)
	refreshed := s.mustCall("servicenow_connection_status", nil)
	if next := parseTime(t, refreshed.Parsed["token_expires_at"]); !next.After(firstExpiry) {
		t.Errorf("%s: the token expiring %s was not replaced (now %s)", m.endUser, firstExpiry, next)
	}
	if refreshed.Parsed["servicenow_user"] != m.snUser || refreshed.Parsed["user"] != m.endUser {
		t.Errorf("after the refresh: %s", refreshed.text())
	}
	s.close()
}

func parseTime(t *testing.T, v any) time.Time {
	t.Helper()
	s, _ := v.(string)
	at, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("%v is not an RFC 3339 time", v)
	}
	return at
}

// checkRefusals sends requests that must be refused before any tool runs.
func checkRefusals(t *testing.T, base string) {
	initialize := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`
	tests := []struct {
		name    string
		method  string
		path    string
		headers map[string]string
		body    string
		status  int
	}{
		{"no key", http.MethodPost, "/mcp", nil, initialize, http.StatusUnauthorized},
		{"no key on SSE", http.MethodGet, "/sse", nil, "", http.StatusUnauthorized},
		{"wrong key", http.MethodPost, "/mcp", map[string]string{"Authorization": "Bearer not-a-key"}, initialize, http.StatusUnauthorized},
		{"bound key names another user", http.MethodPost, "/mcp",
			map[string]string{"Authorization": "Bearer " + teamCarolKey, teamUserHeader: "alice@team"}, initialize, http.StatusForbidden},
		{"gateway key without the user header", http.MethodPost, "/mcp",
			map[string]string{"Authorization": "Bearer " + teamGatewayKey}, initialize, http.StatusBadRequest},
		{"oversized body", http.MethodPost, "/mcp",
			map[string]string{"Authorization": "Bearer " + teamCarolKey},
			`{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"` + strings.Repeat("x", 2<<20) + `"}}`,
			http.StatusRequestEntityTooLarge},
		{"unknown session", http.MethodPost, "/mcp",
			map[string]string{"Authorization": "Bearer " + teamCarolKey, "Mcp-Session-Id": "mcp-session-unknown",
				"Mcp-Protocol-Version": "2025-06-18"},
			`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, http.StatusNotFound},
		{"unknown SSE session", http.MethodPost, "/message?sessionId=unknown",
			map[string]string{"Authorization": "Bearer " + teamCarolKey}, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`,
			http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, base+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %q", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
}

// inspectorHTTP runs the MCP Inspector CLI (v2) once against an HTTP
// endpoint with the given headers and returns its stdout and exit status.
func inspectorHTTP(t *testing.T, url string, headers []string, args ...string) (string, int) {
	t.Helper()
	launcher := filepath.Join(e2eDir(t), "node_modules", "@modelcontextprotocol", "inspector",
		"clients", "launcher", "build", "index.js")
	full := []string{launcher, "--cli", "--format", "json", url}
	for _, h := range headers {
		full = append(full, "--header", h)
	}
	cmd := exec.Command("node", append(full, args...)...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "MCP_INSPECTOR_SECRET_STORE=memory")
	var out bytes.Buffer
	errBuf := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = &out, errBuf
	if err := runBounded(t, cmd); err != nil {
		t.Fatalf("inspector %v: %v; stderr:\n%s", args, err, errBuf.String())
	}
	if cmd.ProcessState.ExitCode() != 0 {
		t.Logf("inspector %v stderr:\n%s", args, errBuf.String())
	}
	return out.String(), cmd.ProcessState.ExitCode()
}
