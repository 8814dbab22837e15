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
	itil      bool   // snUser may create incidents
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
// their own ServiceNow account, calls as themselves (the sandbox counts
// every call as that member's ServiceNow user, answers "my incidents" with
// theirs and records them as the creator), gets exactly one refresh of
// their own token once the first expires, and then uses the other HTTP
// transport in a new session without a new link; the MCP Inspector CLI
// does the same over both transports. Requests without the right
// credentials are refused before they reach a tool.
func TestTeamOverHTTP(t *testing.T) {
	t.Parallel()
	requireClients(t)
	cfg := newServerConfig(t)
	sb := startSandbox(t, cfg.redirectURI(), "--access-ttl", accessTTL.String())
	writeTeamConfig(t, cfg, sb.URL)
	srv := startHTTPServer(t, cfg)

	team := []teamMember{
		{endUser: "alice@team", key: teamGatewayKey, gateway: true, snUser: "alice", itil: true, transport: "http"},
		{endUser: "bob@team", key: teamGatewayKey, gateway: true, snUser: "bob", itil: true, transport: "sse"},
		{endUser: "carol-local", key: teamCarolKey, snUser: "carol", transport: "http"},
	}
	for i := range team {
		team[i].sysID = sb.user(t, team[i].snUser).SysID
	}

	// Link, call and refresh, all three at once, each on its first
	// transport; each member learns how many API requests the sandbox has
	// counted as their ServiceNow user after their last call.
	apiSeen := make([]int64, len(team))
	t.Run("link call refresh", func(t *testing.T) {
		for i, m := range team {
			t.Run(m.endUser+" over "+m.transport, func(t *testing.T) {
				t.Parallel()
				apiSeen[i] = linkCallRefresh(t, sb, cfg, srv.URL, m)
			})
		}
	})
	if t.Failed() {
		return
	}
	st := sb.stats(t)
	if got := st.grants("authorization_code", "ok"); got != int64(len(team)) {
		t.Errorf("sandbox saw %d code exchanges, want one per user (%d)", got, len(team))
	}
	checkOwnTokens(t, st, team, apiSeen)

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
				mine, _ := requestAs(t, s, sb, m.snUser, myIncidents)
				checkIncidentsOf(t, mine, m.sysID)
				createAs(t, s, sb, m, "over "+other(m.transport))
				s.close()
			})
		}
	})

	t.Run("inspector", func(t *testing.T) {
		for _, m := range team {
			for _, transport := range []string{"http", "sse"} {
				t.Run(m.endUser+" over "+transport, func(t *testing.T) {
					t.Parallel()
					args, _ := json.Marshal(myIncidents)
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

// myIncidents asks for the incidents whose caller is the user of the
// token: the instance works out who that is, so checkIncidentsOf against a
// member's sys_id fails when the call went out with another member's token
// (itil users may read each other's incidents, so a filter on a fixed
// caller_id would not tell).
var myIncidents = map[string]any{
	"method": "GET",
	"path":   "/api/now/table/incident",
	"query": map[string]any{
		"sysparm_query":  "caller_id=javascript:gs.getUserID()",
		"sysparm_fields": "number,caller_id",
		"sysparm_limit":  "5",
	},
}

// linkCallRefresh is the core story for one member on one transport. It
// returns how many API requests the sandbox had counted as the member's
// ServiceNow user after their last call.
func linkCallRefresh(t *testing.T, sb *sandboxProc, cfg serverConfig, base string, m teamMember) int64 {
	s := startClient(t, m.clientArgs(base, m.transport)...)

	status := s.mustCall("servicenow_connection_status", nil)
	if status.Parsed["status"] != "NOT_LINKED" || status.Parsed["user"] != m.endUser {
		t.Fatalf("before linking: want NOT_LINKED for %s, got %s", m.endUser, status.text())
	}
	link := checkAuthorizationRequired(t, s.call("servicenow_request", myIncidents), sb.URL, cfg.redirectURI())

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

	// The other members link and call at the same moment: each call must
	// reach the sandbox with this member's token, never another's.
	got, _ := requestAs(t, s, sb, m.snUser, myIncidents)
	checkIncidentsOf(t, got, m.sysID)
	createAs(t, s, sb, m, "over "+m.transport)
	linked := s.mustCall("servicenow_connection_status", nil)
	if linked.Parsed["servicenow_user"] != m.snUser {
		t.Fatalf("%s is linked as %v, want %s", m.endUser, linked.Parsed["servicenow_user"], m.snUser)
	}
	firstExpiry := parseTime(t, linked.Parsed["token_expires_at"])
	if n := sb.stats(t).RefreshesByUser[m.snUser]; n != 0 {
		t.Fatalf("%s's token was refreshed %d times before it was due; on a very slow machine raise accessTTL",
			m.snUser, n)
	}

	// The sandbox refuses the first token after accessTTL; the deadline is
	// known, so there is nothing to poll. The next call refreshes this
	// member's token, once, and the new token is still theirs.
	time.Sleep(time.Until(firstExpiry) + 200*time.Millisecond)
	got, _ = requestAs(t, s, sb, m.snUser, myIncidents)
	checkIncidentsOf(t, got, m.sysID)
	if n := sb.stats(t).RefreshesByUser[m.snUser]; n != 1 {
		t.Errorf("after %s's token expired, the sandbox counted %d refreshes for %s, want 1", m.snUser, n, m.snUser)
	}
	seen := createAs(t, s, sb, m, "after the refresh")
	refreshed := s.mustCall("servicenow_connection_status", nil)
	if next := parseTime(t, refreshed.Parsed["token_expires_at"]); !next.After(firstExpiry) {
		t.Errorf("%s: the token expiring %s was not replaced (now %s)", m.endUser, firstExpiry, next)
	}
	if refreshed.Parsed["servicenow_user"] != m.snUser || refreshed.Parsed["user"] != m.endUser {
		t.Errorf("after the refresh: %s", refreshed.text())
	}
	s.close()
	return seen
}

// requestAs makes one servicenow_request call and wants the sandbox to
// count exactly one more API request as snUser. The sandbox counts by the
// user the bearer token was issued to, so a call sent with another user's
// token is missing here. It returns the answer and snUser's new count.
func requestAs(t *testing.T, s *session, sb *sandboxProc, snUser string, args map[string]any) (callResult, int64) {
	t.Helper()
	before := sb.stats(t).APIByUser[snUser]
	c := s.mustCall("servicenow_request", args)
	return c, countedOnce(t, sb, snUser, before)
}

// countedOnce wants the sandbox's count of API requests as snUser to have
// grown from before by exactly one, and returns it.
func countedOnce(t *testing.T, sb *sandboxProc, snUser string, before int64) int64 {
	t.Helper()
	// The sandbox counts a request once its handler returns, which may be
	// just after the answer reached the server.
	var after int64
	waitFor(t, "the sandbox to count the call of "+snUser, 5*time.Second, func() (bool, error) {
		after = sb.stats(t).APIByUser[snUser]
		return after > before, nil
	})
	if after != before+1 {
		t.Errorf("one call by %s: the sandbox counted %d API requests as %s, want 1", snUser, after-before, snUser)
	}
	return after
}

// createAs creates an incident as m and wants m's ServiceNow user as its
// creator: the sandbox sets sys_created_by from the token. A member
// without the itil role is refused instead, which an itil member's token
// would not be. It returns the API request count of m's user after the call.
func createAs(t *testing.T, s *session, sb *sandboxProc, m teamMember, note string) int64 {
	t.Helper()
	before := sb.stats(t).APIByUser[m.snUser]
	c := s.call("servicenow_request", map[string]any{
		"method": "POST",
		"path":   "/api/now/table/incident",
		"query":  map[string]any{"sysparm_fields": "sys_id,number,sys_created_by"},
		"body":   map[string]any{"short_description": "e2e team: created by " + m.endUser + " " + note},
	})
	n := countedOnce(t, sb, m.snUser, before)
	switch {
	case !m.itil:
		if !c.IsError || !strings.Contains(c.text(), "403") {
			t.Errorf("%s, without the itil role, created an incident %s: %s", m.snUser, note, c.text())
		}
	case c.IsError:
		t.Errorf("%s could not create an incident %s: %s", m.snUser, note, c.text())
	default:
		if by := resultField(t, c, "sys_created_by"); by != m.snUser {
			t.Errorf("an incident %s created %s has sys_created_by %q, want %s", m.endUser, note, by, m.snUser)
		}
	}
	return n
}

// checkOwnTokens wants the sandbox's per-user counters to match what each
// member did: every API request counted as a member's ServiceNow user was
// one of that member's own calls (apiSeen), and each member's token was
// refreshed exactly once, with no refresh for anyone else.
func checkOwnTokens(t *testing.T, st sandboxStats, team []teamMember, apiSeen []int64) {
	t.Helper()
	for i, m := range team {
		if got := st.APIByUser[m.snUser]; got != apiSeen[i] {
			t.Errorf("the sandbox counted %d API requests as %s, but %s's own calls account for %d: "+
				"another session used %s's token", got, m.snUser, m.endUser, apiSeen[i], m.snUser)
		}
		if got := st.RefreshesByUser[m.snUser]; got != 1 {
			t.Errorf("the sandbox counted %d refreshes of %s's token, want exactly 1", got, m.snUser)
		}
	}
	if got := sumOutcomes(st.RefreshesByUser); got != int64(len(team)) {
		t.Errorf("the sandbox counted refreshes %v, want one for each of the %d members and none else",
			st.RefreshesByUser, len(team))
	}
	if got := st.grants("refresh_token", "ok"); got != int64(len(team)) {
		t.Errorf("the sandbox granted %d refreshes, want %d", got, len(team))
	}
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
