package faulttest

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"servicenow-mcp/config"
	"servicenow-mcp/internal/testenv"
	"servicenow-mcp/sandbox"
	"servicenow-mcp/storage"
)

// counters are the sandbox counts a fault test compares before and after.
type counters struct {
	api, refreshes, tokenCalls int64
}

func count(e *testenv.Env) counters {
	s := e.Sandbox.Server.Stats()
	var c counters
	c.api = s.APIRequests
	r := s.TokenRequests["refresh_token"]
	c.refreshes = r["ok"]
	c.tokenCalls = r["ok"] + r["refused"] + r["fault"]
	return c
}

func stored(t *testing.T, e *testenv.Env, user string) *storage.Account {
	t.Helper()
	a, err := e.Store.GetAccount(context.Background(), accountKey(user))
	if err != nil {
		t.Fatalf("read %s: %v", user, err)
	}
	return a
}

func sameTokens(a, b *storage.Account) bool {
	return a.Status == b.Status && a.AccessToken == b.AccessToken &&
		a.RefreshToken == b.RefreshToken && a.Expiry.Equal(b.Expiry)
}

func getIncidents(t *testing.T, e *testenv.Env) *mcp.CallToolResult {
	return e.Call(t, "alice", "servicenow_request", map[string]any{
		"method": "GET", "path": "/api/now/table/incident", "query": map[string]any{"sysparm_limit": "2"},
	})
}

func createIncident(t *testing.T, e *testenv.Env) *mcp.CallToolResult {
	return e.Call(t, "alice", "servicenow_request", map[string]any{
		"method": "POST", "path": "/api/now/table/incident", "body": map[string]any{"short_description": "fault test"},
	})
}

func mustContain(t *testing.T, res *mcp.CallToolResult, wantError bool, parts ...string) string {
	t.Helper()
	text := testenv.Text(res)
	if res.IsError != wantError {
		t.Fatalf("isError=%v, want %v: %s", res.IsError, wantError, text)
	}
	for _, p := range parts {
		if !strings.Contains(text, p) {
			t.Fatalf("answer lacks %q: %s", p, text)
		}
	}
	return text
}

// Issue 5, point 4: a 401 for a token that still looked valid (revoked
// server-side) causes one refresh and one retry, and the call succeeds.
func TestAPI401RefreshesOnceAndRetries(t *testing.T) {
	e, _ := newEnv(t, testenv.Options{})
	acct := stored(t, e, "alice")
	resp, err := http.PostForm(e.Sandbox.URL+"/oauth_revoke_token.do", url.Values{"token": {acct.AccessToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	before := count(e)
	mustContain(t, getIncidents(t, e), false, `"result"`)
	after := count(e)
	if after.refreshes-before.refreshes != 1 || after.api-before.api != 2 {
		t.Fatalf("refreshes +%d, API requests +%d; want one refresh and one retry",
			after.refreshes-before.refreshes, after.api-before.api)
	}
}

// Issue 5, point 4: the instance's clock jumps ahead while a token is out
// (clock_offset), so the token dies earlier than expires_in said although
// the client's clock says it is good: one refresh, one retry, the answer.
func TestAPIClockJumpRefreshesOnce(t *testing.T) {
	e, _ := newEnv(t, testenv.Options{})
	mustContain(t, getIncidents(t, e), false, `"result"`)
	e.Sandbox.Server.SetFaults(sandbox.Faults{ClockOffset: sandbox.Duration(2 * time.Hour)})

	before := count(e)
	mustContain(t, getIncidents(t, e), false, `"result"`)
	after := count(e)
	if after.refreshes-before.refreshes != 1 || after.api-before.api != 2 {
		t.Fatalf("refreshes +%d, API requests +%d; want one refresh and one retry",
			after.refreshes-before.refreshes, after.api-before.api)
	}
	if a := stored(t, e, "alice"); a.Status != storage.StatusActive {
		t.Fatalf("account is %s after the clock jump, want ACTIVE", a.Status)
	}
}

// Issue 5, point 4: when the freshly refreshed token is refused as well
// (tokens die earlier than expires_in said), the call answers with a link
// and the account is marked expired.
func TestAPISecond401AnswersWithLink(t *testing.T) {
	e, _ := newEnv(t, testenv.Options{})
	e.Sandbox.Server.SetFaults(sandbox.Faults{TokenSkew: sandbox.Duration(time.Hour)})

	before := count(e)
	mustContain(t, getIncidents(t, e), true, "authorization_required", "/oauth_auth.do")
	if n := count(e).refreshes - before.refreshes; n != 1 {
		t.Fatalf("%d refreshes, want exactly one before giving up", n)
	}
	if a := stored(t, e, "alice"); a.Status != storage.StatusExpired {
		t.Fatalf("account is %s, want EXPIRED", a.Status)
	}
}

// Issue 5, point 4: answers that are not data. Each leaves the tokens
// exactly as they were and never calls the token endpoint.
func TestAPIFailuresNeverTouchTokens(t *testing.T) {
	tests := []struct {
		name    string
		faults  sandbox.Faults
		call    func(*testing.T, *testenv.Env) *mcp.CallToolResult
		want    []string
		retries int64 // API requests the call makes
	}{
		{"hibernating instance", sandbox.Faults{Hibernate: true}, getIncidents,
			[]string{"hibernating", "developer"}, 1},
		{"HTML 502 on a read is retried", sandbox.Faults{Status: 502}, getIncidents,
			[]string{"unavailable", "HTTP 502", "HTML"}, 3},
		// The page may come from a proxy in front of an instance that got
		// the write: never resent, and the outcome is unknown.
		{"HTML 503 on a write is not retried", sandbox.Faults{Status: 503}, createIncident,
			[]string{"outcome of this POST is unknown", "HTTP 503", "may or may not have been made"}, 1},
		{"JSON 500 on a read is retried", sandbox.Faults{Status: 500}, getIncidents,
			[]string{"500"}, 3},
		{"JSON 500 on a write is not retried", sandbox.Faults{Status: 500}, createIncident,
			[]string{"500"}, 1},
		{"body cut short", sandbox.Faults{Truncate: true, Scope: "api"}, getIncidents,
			[]string{"cut short", "No data from this answer was used"}, 1},
		{"rate limit longer than the call's budget", sandbox.Faults{Status: 429, RetryAfter: 3600}, getIncidents,
			[]string{"429", "retry_at", "retry_after_seconds"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := newEnv(t, testenv.Options{})
			tokensBefore := stored(t, e, "alice")
			e.Sandbox.Server.SetFaults(tt.faults)
			before := count(e)

			text := mustContain(t, tt.call(t, e), true, tt.want...)
			if strings.Contains(text, `"result"`) || strings.Contains(text, "authorization_required") {
				t.Fatalf("a failure was shown as data or as an authorization problem: %s", text)
			}
			after := count(e)
			if n := after.api - before.api; n != tt.retries {
				t.Errorf("%d API requests, want %d", n, tt.retries)
			}
			if after.tokenCalls != before.tokenCalls {
				t.Errorf("the token endpoint was called")
			}
			if !sameTokens(tokensBefore, stored(t, e, "alice")) {
				t.Errorf("the stored tokens changed")
			}
		})
	}
}

// Issue 5, point 4: a 429 whose Retry-After fits the call's budget is
// waited out and retried, without a refresh.
func TestAPIRateLimitWithinBudgetIsRetried(t *testing.T) {
	e, _ := newEnv(t, testenv.Options{})
	e.Sandbox.Server.SetFaults(sandbox.Faults{Status: 429, RetryAfter: 1, Count: 1})
	before := count(e)
	start := time.Now()
	mustContain(t, getIncidents(t, e), false, `"result"`)
	if took := time.Since(start); took < time.Second {
		t.Errorf("answered after %s: Retry-After was not honoured", took)
	}
	after := count(e)
	if after.api-before.api != 2 || after.tokenCalls != before.tokenCalls {
		t.Fatalf("API +%d, token calls +%d; want one retry and no refresh", after.api-before.api, after.tokenCalls-before.tokenCalls)
	}
}

// Issue 5, point 4: a 429 that does not fit answers at once.
func TestAPIRateLimitBeyondBudgetAnswersAtOnce(t *testing.T) {
	e, _ := newEnv(t, testenv.Options{})
	e.Sandbox.Server.SetFaults(sandbox.Faults{Status: 429, RetryAfter: 120})
	start := time.Now()
	mustContain(t, getIncidents(t, e), true, "rate limit", "retry_at")
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("a 429 that cannot fit the budget still took %s", took)
	}
}

// Issue 5, point 4: a failure while paging (the second page is cut
// short) is an error, never an empty page or "no records".
func TestAPIFailureWhilePagingIsNotNoRecords(t *testing.T) {
	e, _ := newEnv(t, testenv.Options{})
	args := map[string]any{"table": "incident", "limit": 2, "fields": []string{"number"}}
	first := mustContain(t, e.Call(t, "alice", "servicenow_query_records", args), false, "next_offset")
	if !strings.Contains(first, "INC") {
		t.Fatalf("first page has no incidents: %s", first)
	}

	e.Sandbox.Server.SetFaults(sandbox.Faults{Truncate: true, Scope: "api"})
	args["offset"] = 2
	text := mustContain(t, e.Call(t, "alice", "servicenow_query_records", args), true, "cut short")
	for _, bad := range []string{`"returned":0`, `"records":[]`, "no records", "No records"} {
		if strings.Contains(text, bad) {
			t.Fatalf("a failed page reads as %q: %s", bad, text)
		}
	}
}

// Issue 5, point 5: every outbound request has its own bound, shorter
// than the tool call's: one hung answer costs one attempt, and a read is
// retried within the call.
func TestOutboundRequestBound(t *testing.T) {
	e, proxy := newEnv(t, testenv.Options{Configure: func(c *config.Config) {
		c.Timeouts.ToolCall = 20 * time.Second
		c.Timeouts.Request = 700 * time.Millisecond
	}})
	e.Sandbox.Server.SetFaults(sandbox.Faults{Hang: true, Scope: "api", Count: 1})
	proxy.drain()

	start := time.Now()
	mustContain(t, getIncidents(t, e), false, `"result"`)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("took %s: the hung request was not cut at the request bound", took)
	}
	if err := <-proxy.ended; err == nil {
		t.Fatal("the first request was not aborted")
	}
}

// Issue 5, point 5: a tool call has a bound even when every request hangs.
func TestToolCallBound(t *testing.T) {
	e, _ := newEnv(t, testenv.Options{Configure: func(c *config.Config) {
		c.Timeouts.ToolCall = 1500 * time.Millisecond
		c.Timeouts.Request = 10 * time.Second
	}})
	e.Sandbox.Server.SetFaults(sandbox.Faults{Hang: true, Scope: "api"})

	start := time.Now()
	mustContain(t, getIncidents(t, e), true, "time limit")
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("the tool call took %s with a 1.5s bound", took)
	}
}
