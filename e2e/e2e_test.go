package e2e

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// accessTTL is the sandbox's access token lifetime: long enough for the
// calls right after linking to use the first token even on a loaded
// machine (the server refreshes one second before expires_in, which is one
// second short of the lifetime), short enough to wait out.
const accessTTL = 8 * time.Second

var wantTools = []string{
	"authorize_servicenow",
	"servicenow_request",
	"servicenow_connection_status",
	"disconnect_servicenow",
}

// tokenLog remembers every token the sandbox has issued while the test
// watched its state file.
type tokenLog struct {
	sb   *sandboxProc
	seen map[string]sandboxToken
}

func (l *tokenLog) refresh() ([]sandboxToken, error) {
	toks, err := l.sb.liveTokens()
	for _, tok := range toks {
		l.seen[tok.Value] = tok
	}
	return toks, err
}

func (l *tokenLog) count(kind string) int {
	n := 0
	for _, tok := range l.seen {
		if tok.Kind == kind {
			n++
		}
	}
	return n
}

// waitAccessTokens polls the sandbox state until n access tokens were seen.
func (l *tokenLog) waitAccessTokens(t *testing.T, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d access tokens in the sandbox state file", n), 10*time.Second, func() (bool, error) {
		_, err := l.refresh()
		return l.count("access") >= n, err
	})
}

// TestLinkCallRefreshRestart walks the core story through the real binary
// and the official SDK client over stdio: an unlinked user gets a link,
// signs in on the instance, calls work as that user, an expired access
// token is refreshed exactly once, a restarted server keeps the account,
// and no token is stored in plain text.
func TestLinkCallRefreshRestart(t *testing.T) {
	t.Parallel()
	requireClients(t)
	cfg := newServerConfig(t)
	sb := startSandbox(t, cfg.redirectURI(), "--access-ttl", accessTTL.String())
	cfg.write(t, sb.URL)
	alice := sb.user(t, "alice")
	tokens := &tokenLog{sb: sb, seen: map[string]sandboxToken{}}
	incidents := map[string]any{
		"method": "GET",
		"path":   "/api/now/table/incident",
		"query": map[string]any{
			"sysparm_query":  "caller_id=" + alice.SysID,
			"sysparm_fields": "number,caller_id,short_description",
			"sysparm_limit":  "5",
		},
	}

	s := startSession(t, cfg)

	// (a) The four tools are listed, each with all four annotation hints.
	listed := s.step(map[string]any{"op": "list_tools"})
	if !listed.OK {
		t.Fatalf("tools/list: %s", listed.Error)
	}
	checkToolList(t, listed.Result)

	// (b) An unlinked user gets the authorization link instead of data.
	before := s.call("servicenow_request", incidents)
	link := checkAuthorizationRequired(t, before, sb.URL, cfg.redirectURI())

	// (c) Alice signs in on the consent page; the callback names her.
	cfg.waitHealthy(t)
	consent := s.step(map[string]any{"op": "consent", "url": link, "user": "alice", "password": "sandbox"})
	if !consent.OK {
		t.Fatalf("consent: %s", consent.Error)
	}
	var page struct {
		Redirect       string `json:"redirect"`
		CallbackStatus int    `json:"callback_status"`
		Page           string `json:"page"`
	}
	if err := json.Unmarshal(consent.Result, &page); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(page.Redirect, cfg.redirectURI()+"?") {
		t.Errorf("consent redirected to %q, want our callback %s", page.Redirect, cfg.redirectURI())
	}
	if page.CallbackStatus != 200 || !strings.Contains(page.Page, "alice") {
		t.Fatalf("callback page (%d) does not name the ServiceNow user alice:\n%s", page.CallbackStatus, page.Page)
	}
	tokens.waitAccessTokens(t, 1)

	// (d) The same call now returns alice's incidents, fetched as alice.
	apiBefore := sb.stats(t).APIByUser["alice"]
	records := checkIncidentsOf(t, s.mustCall("servicenow_request", incidents), alice.SysID)
	if got := sb.stats(t).APIByUser["alice"]; got != apiBefore+1 {
		t.Errorf("sandbox counted %d API requests as alice, want %d", got, apiBefore+1)
	}
	created := s.mustCall("servicenow_request", map[string]any{
		"method": "POST",
		"path":   "/api/now/table/incident",
		"body":   map[string]any{"short_description": "e2e: created through servicenow-mcp"},
	})
	if by := resultField(t, created, "sys_created_by"); by != "alice" {
		t.Errorf("created incident has sys_created_by %q, want alice", by)
	}
	status := s.mustCall("servicenow_connection_status", nil)
	if status.Parsed["status"] != "ACTIVE" || status.Parsed["servicenow_user"] != "alice" {
		t.Errorf("connection status after linking: %s", status.text())
	}
	if n := sb.stats(t).grants("refresh_token", "ok"); n != 0 {
		t.Fatalf("the server refreshed %d times within seconds of linking, before the token was due; "+
			"on a very slow machine raise accessTTL", n)
	}
	t.Logf("linked as alice; %d of her incidents listed", records)

	// (e) Once the access token has expired, a call still works, through
	// exactly one refresh grant.
	first := onlyAccessToken(t, tokens)
	if wait := time.Until(first.Expires); wait > 0 {
		time.Sleep(wait + 100*time.Millisecond) // the deadline is known; nothing to poll
	}
	waitFor(t, "the sandbox to refuse the first access token", 10*time.Second, func() (bool, error) {
		return sb.refuses(first.Value)
	})
	checkIncidentsOf(t, s.mustCall("servicenow_request", incidents), alice.SysID)
	st := sb.stats(t)
	if got := st.grants("refresh_token", "ok"); got != 1 {
		t.Errorf("sandbox saw %d successful refresh grants after the expiry, want exactly 1 (all: %v)",
			got, st.TokenRequests)
	}
	if n := sumOutcomes(st.TokenRequests["refresh_token"]); n != 1 {
		t.Errorf("sandbox saw %d refresh requests in all, want 1: %v", n, st.TokenRequests["refresh_token"])
	}
	tokens.waitAccessTokens(t, 2)

	// Bad input is refused by the server itself: nothing reaches the
	// instance and no token is requested.
	t.Run("bad input", func(t *testing.T) {
		checkBadInput(t, s, sb)
	})

	// (f) A new process on the same data directory finds the account
	// ACTIVE and calls work without a new link.
	s.close()
	s2 := startSession(t, cfg)
	status = s2.mustCall("servicenow_connection_status", nil)
	if status.Parsed["status"] != "ACTIVE" || status.Parsed["servicenow_user"] != "alice" {
		t.Errorf("connection status after a restart: %s", status.text())
	}
	checkIncidentsOf(t, s2.mustCall("servicenow_request", incidents), alice.SysID)
	if got := sb.stats(t).grants("authorization_code", "ok"); got != 1 {
		t.Errorf("sandbox saw %d code exchanges, want 1: the restart must not need a new link", got)
	}

	// The same account through the MCP Inspector CLI, as a second process
	// sharing the data directory with the running server.
	t.Run("inspector", func(t *testing.T) {
		checkInspector(t, cfg, alice.SysID)
	})
	s2.close()

	// (g) No token the sandbox issued is stored in plain text.
	sb.stop(t)
	if _, err := tokens.refresh(); err != nil {
		t.Fatalf("read the sandbox state file: %v", err)
	}
	if tokens.count("access") < 2 || tokens.count("refresh") < 1 {
		t.Fatalf("saw %d access and %d refresh tokens; want at least 2 and 1",
			tokens.count("access"), tokens.count("refresh"))
	}
	checkNoPlainTokens(t, cfg.DataDir, tokens.seen)
}

// checkToolList wants the four tools, each with all four annotation hints.
func checkToolList(t *testing.T, raw json.RawMessage) {
	t.Helper()
	var list struct {
		Tools []struct {
			Name        string                     `json:"name"`
			Annotations map[string]json.RawMessage `json:"annotations"`
		} `json:"tools"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Fatal(err)
	}
	byName := map[string]map[string]json.RawMessage{}
	for _, tool := range list.Tools {
		byName[tool.Name] = tool.Annotations
	}
	for _, name := range wantTools {
		ann, ok := byName[name]
		if !ok {
			t.Errorf("tools/list lacks %s (has %d tools)", name, len(list.Tools))
			continue
		}
		for _, hint := range []string{"readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"} {
			if _, ok := ann[hint]; !ok {
				t.Errorf("tool %s has no %s annotation", name, hint)
			}
		}
	}
}

// checkAuthorizationRequired wants an isError result carrying a link to the
// instance's consent page with PKCE, state and our redirect URI.
func checkAuthorizationRequired(t *testing.T, c callResult, instance, redirectURI string) string {
	t.Helper()
	if !c.IsError || c.Parsed["status"] != "authorization_required" {
		t.Fatalf("unlinked call: want isError with status authorization_required, got isError=%v %s", c.IsError, c.text())
	}
	link, _ := c.Parsed["authorization_url"].(string)
	u, err := url.Parse(link)
	if err != nil || !strings.HasPrefix(link, instance+"/oauth_auth.do?") {
		t.Fatalf("authorization_url %q is not the instance's /oauth_auth.do", link)
	}
	q := u.Query()
	if q.Get("response_type") != "code" || q.Get("client_id") != sandboxClientID ||
		q.Get("redirect_uri") != redirectURI || q.Get("state") == "" ||
		q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256" {
		t.Errorf("authorization_url lacks a parameter: %s", link)
	}
	exp, _ := c.Parsed["expires_at"].(string)
	if at, err := time.Parse(time.RFC3339, exp); err != nil || !at.After(time.Now()) {
		t.Errorf("expires_at %q is not a future RFC 3339 time", exp)
	}
	if msg, _ := c.Parsed["message"].(string); msg == "" {
		t.Errorf("authorization_required has no message for the model: %s", c.text())
	}
	return link
}

// checkIncidentsOf wants a 200 answer whose records all have callerID as
// caller, and returns how many there are (at least one).
func checkIncidentsOf(t *testing.T, c callResult, callerID string) int {
	t.Helper()
	var answer struct {
		Status int `json:"status"`
		Body   struct {
			Result []map[string]any `json:"result"`
		} `json:"body"`
	}
	if err := json.Unmarshal([]byte(c.text()), &answer); err != nil {
		t.Fatalf("servicenow_request answer is not JSON: %v\n%s", err, c.text())
	}
	if answer.Status != 200 || len(answer.Body.Result) == 0 {
		t.Fatalf("want status 200 and some incidents, got: %s", c.text())
	}
	for _, rec := range answer.Body.Result {
		if callerRef(rec["caller_id"]) != callerID {
			t.Errorf("incident %v has caller %v, want %s", rec["number"], rec["caller_id"], callerID)
		}
	}
	return len(answer.Body.Result)
}

// callerRef reads a reference field, given as a sys_id or as {value, link}.
func callerRef(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case map[string]any:
		s, _ := v["value"].(string)
		return s
	}
	return ""
}

// resultField reads body.result.<field> of a single-record answer.
func resultField(t *testing.T, c callResult, field string) string {
	t.Helper()
	var answer struct {
		Body struct {
			Result map[string]any `json:"result"`
		} `json:"body"`
	}
	if err := json.Unmarshal([]byte(c.text()), &answer); err != nil {
		t.Fatalf("answer is not a single record: %v\n%s", err, c.text())
	}
	s, _ := answer.Body.Result[field].(string)
	return s
}

func onlyAccessToken(t *testing.T, l *tokenLog) sandboxToken {
	t.Helper()
	var found []sandboxToken
	for _, tok := range l.seen {
		if tok.Kind == "access" {
			found = append(found, tok)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one access token issued so far, saw %d", len(found))
	}
	return found[0]
}

func sumOutcomes(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// checkBadInput sends requests the server must refuse itself, with a clear
// message, and checks that none reached the instance.
func checkBadInput(t *testing.T, s *session, sb *sandboxProc) {
	before := sb.stats(t)
	cases := []struct {
		name string
		args map[string]any
		want []string // substrings of the message, any case
	}{
		{"path outside /api/", map[string]any{"method": "GET", "path": "/sys_user.do"},
			[]string{"/sys_user.do", "/api/"}},
		{"dot-dot segment", map[string]any{"method": "GET", "path": "/api/now/../../oauth_token.do"},
			[]string{".."}},
		{"absolute URL", map[string]any{"method": "GET", "path": "https://evil.example/api/now/table/incident"},
			[]string{"evil.example", "url"}},
		{"protocol-relative URL", map[string]any{"method": "GET", "path": "//evil.example/api/now/table/incident"},
			[]string{"evil.example"}},
		{"unknown connection", map[string]any{"method": "GET", "path": "/api/now/table/incident",
			"query": map[string]any{"sysparm_limit": "1"}, "connection": "nope"},
			[]string{"nope", "sandbox"}},
		{"method outside the list", map[string]any{"method": "TRACE", "path": "/api/now/table/incident"},
			[]string{"TRACE"}},
	}
	for _, tc := range cases {
		c := s.call("servicenow_request", tc.args)
		if !c.IsError {
			t.Errorf("%s: want isError, got %s", tc.name, c.text())
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(strings.ToLower(c.text()), strings.ToLower(w)) {
				t.Errorf("%s: message does not mention %q: %s", tc.name, w, c.text())
			}
		}
	}
	unknown := s.call("servicenow_connection_status", map[string]any{"connection": "nope"})
	if !unknown.IsError || !strings.Contains(unknown.text(), "sandbox") {
		t.Errorf("connection status of an unknown connection: want isError naming sandbox, got isError=%v %s",
			unknown.IsError, unknown.text())
	}

	after := sb.stats(t)
	if after.APIRequests != before.APIRequests {
		t.Errorf("refused requests reached the instance: API requests went from %d to %d",
			before.APIRequests, after.APIRequests)
	}
	if a, b := sumAll(after.TokenRequests), sumAll(before.TokenRequests); a != b {
		t.Errorf("refused requests asked for tokens: token requests went from %d to %d", b, a)
	}
}

func sumAll(m map[string]map[string]int64) int64 {
	var n int64
	for _, o := range m {
		n += sumOutcomes(o)
	}
	return n
}

// checkInspector runs tools/list and tools/call through the MCP Inspector
// CLI v2 against a fresh stdio server on the linked account.
func checkInspector(t *testing.T, cfg serverConfig, aliceID string) {
	out, code := inspector(t, cfg, "--method", "tools/list")
	if code != 0 {
		t.Fatalf("inspector tools/list exited %d: %s", code, out)
	}
	var listed struct {
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil {
		t.Fatalf("inspector tools/list printed no JSON: %v: %s", err, out)
	}
	checkToolList(t, listed.Result)

	args, _ := json.Marshal(map[string]any{
		"method": "GET",
		"path":   "/api/now/table/incident",
		"query":  map[string]any{"sysparm_query": "caller_id=" + aliceID, "sysparm_limit": "3"},
	})
	out, code = inspector(t, cfg, "--method", "tools/call", "--tool-name", "servicenow_request",
		"--tool-args-json", string(args))
	if code != 0 {
		t.Fatalf("inspector tools/call servicenow_request exited %d: %s", code, out)
	}
	var called struct {
		Result callResult `json:"result"`
	}
	if err := json.Unmarshal([]byte(out), &called); err != nil {
		t.Fatalf("inspector tools/call printed no JSON: %v: %s", err, out)
	}
	checkIncidentsOf(t, called.Result, aliceID)

	// A tool error is exit status 5, with the result still printed.
	out, code = inspector(t, cfg, "--method", "tools/call", "--tool-name", "servicenow_request",
		"--tool-args-json", `{"method":"GET","path":"/api/../oauth_token.do"}`)
	if code != 5 || !strings.Contains(out, "..") {
		t.Errorf("inspector call with a bad path: want exit 5 and the reason, got %d: %s", code, out)
	}
}

// checkNoPlainTokens reads every file under dir and fails if any token
// value appears in it.
func checkNoPlainTokens(t *testing.T, dir string, seen map[string]sandboxToken) {
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
		for value, tok := range seen {
			if strings.Contains(string(b), value) {
				t.Errorf("%s holds a %s token in plain text", path, tok.Kind)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatalf("no files under the data directory %s", dir)
	}
	t.Logf("checked %d files under the data directory for %d tokens", files, len(seen))
}
