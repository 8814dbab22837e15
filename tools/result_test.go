package tools_test

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"servicenow-mcp/config"
	"servicenow-mcp/internal/testenv"
	"servicenow-mcp/sandbox"
)

// A write that reached ServiceNow without a whole answer coming back may
// have been made: every tool says the outcome is unknown and to check
// before repeating, never "retry later", whatever cut the answer off. A
// read in the same trouble still says to retry.
func TestWriteWithoutAnswerHasUnknownOutcome(t *testing.T) {
	const slow = sandbox.Duration(1500 * time.Millisecond)
	tests := []struct {
		name     string
		toolCall time.Duration
		request  time.Duration
		faults   sandbox.Faults
		tool     string
		args     map[string]any
		unknown  bool
		want     []string
	}{
		{"request POST past the request bound", 10 * time.Second, 300 * time.Millisecond,
			sandbox.Faults{Delay: slow, Scope: "api"}, "servicenow_request",
			map[string]any{"method": "POST", "path": "/api/now/table/incident", "body": map[string]any{"short_description": "outcome test"}},
			true, []string{"POST", "per-request time limit"}},
		{"request POST answer cut short", 10 * time.Second, 5 * time.Second,
			sandbox.Faults{Truncate: true, Scope: "api"}, "servicenow_request",
			map[string]any{"method": "POST", "path": "/api/now/table/incident", "body": map[string]any{"short_description": "outcome test"}},
			true, []string{"POST", "cut short", "HTTP 201"}},
		{"create_incident past the tool-call bound", 800 * time.Millisecond, 10 * time.Second,
			sandbox.Faults{Delay: slow, Scope: "api"}, "servicenow_create_incident",
			map[string]any{"short_description": "outcome test"},
			true, []string{"POST", "time limit"}},
		{"create_incident answer cut short", 10 * time.Second, 5 * time.Second,
			sandbox.Faults{Truncate: true, Scope: "api"}, "servicenow_create_incident",
			map[string]any{"short_description": "outcome test"},
			true, []string{"POST", "cut short"}},
		{"update_record past the request bound", 10 * time.Second, 300 * time.Millisecond,
			sandbox.Faults{Delay: slow, Scope: "api"}, "servicenow_update_record",
			map[string]any{"table": "incident", "record": "INC0010001", "values": map[string]any{"short_description": "outcome test"}},
			true, []string{"PATCH", "per-request time limit"}},
		{"request GET answer cut short", 10 * time.Second, 5 * time.Second,
			sandbox.Faults{Truncate: true, Scope: "api"}, "servicenow_request",
			map[string]any{"method": "GET", "path": "/api/now/table/incident", "query": map[string]any{"sysparm_limit": "1"}},
			false, []string{"cut short", "retry the call"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := testenv.New(t, testenv.Options{Link: []string{"alice"}, Configure: func(c *config.Config) {
				c.Timeouts.ToolCall, c.Timeouts.Request = tt.toolCall, tt.request
			}})
			// Warm the caches, so that the write is the call's only request
			// and the fault (Count 1) hits just that one.
			ok(t, env.Call(t, "alice", tt.tool, tt.args))
			faults := tt.faults
			faults.Count = 1
			env.Sandbox.Server.SetFaults(faults)
			before := env.APIRequests()

			res := env.Call(t, "alice", tt.tool, tt.args)
			failsWith(t, res, tt.want...)
			text := testenv.Text(res)
			// The sandbox counts a request when it is done with it, which
			// for one abandoned part way may be after the answer.
			for end := time.Now().Add(3 * time.Second); env.APIRequests() == before && time.Now().Before(end); {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond)
			if n := env.APIRequests() - before; n != 1 {
				t.Errorf("the call sent %d requests, want 1 (never a second write)", n)
			}
			if got := strings.Contains(text, `"outcome":"unknown"`); got != tt.unknown {
				t.Fatalf("outcome unknown %v, want %v: %s", got, tt.unknown, text)
			}
			if !tt.unknown {
				return
			}
			for _, bad := range []string{"retry later", "retry the call", "No data from this answer was used"} {
				if strings.Contains(text, bad) {
					t.Errorf("the answer tells the model to %q: %s", bad, text)
				}
			}
			if !strings.Contains(text, "may or may not have been made") || !strings.Contains(text, "Check first") {
				t.Errorf("the answer does not say to check before repeating: %s", text)
			}
		})
	}
}

// A request that cannot work as asked is the caller's to change: refused
// before it is sent when that can be known (a header with a line break, a
// URL past the limit), and a proxy's refusal without ServiceNow's JSON is
// shown with its status. None is "unavailable, retry later".
func TestRequestProblemsAreNotUnavailable(t *testing.T) {
	var proxyRefuses atomic.Int32 // the status a proxy answers with, 0 for none
	env, sent := watchedEnv(t, testenv.Options{Link: []string{"alice"}}, func(r *http.Response) error {
		if status := int(proxyRefuses.Load()); status != 0 {
			r.Body.Close()
			r.StatusCode = status
			r.Header = http.Header{"Content-Type": {"text/html"}}
			r.Body = io.NopCloser(strings.NewReader("<html><body>" + http.StatusText(status) + "</body></html>"))
			r.ContentLength = -1
		}
		return nil
	})
	huge := strings.Repeat("printer ", 2<<20) // 16 MiB of words
	tests := []struct {
		name  string
		proxy int
		tool  string
		args  map[string]any
		sends int
		want  []string
	}{
		{"line break in a header value", 0, "servicenow_request",
			map[string]any{"method": "GET", "path": "/api/now/table/incident", "headers": map[string]any{"Accept-Language": "fr\r\nX-Injected: 1"}},
			0, []string{`argument "headers"`, "Accept-Language", "control character"}},
		{"text too long for a URL", 0, "servicenow_list_incidents",
			map[string]any{"text": huge},
			0, []string{"16 KiB", `shorten argument "text"`}},
		{"query too long for a URL", 0, "servicenow_request",
			map[string]any{"method": "GET", "path": "/api/now/table/incident", "query": map[string]any{"sysparm_query": huge[:40<<10]}},
			0, []string{"16 KiB", `shorten argument "query"`}},
		{"a proxy answers 431 with a page", 431, "servicenow_list_incidents",
			map[string]any{"text": "printer"},
			1, []string{"431", "Request Header Fields Too Large", "headers are too large"}},
		{"a proxy answers 414 with a page", 414, "servicenow_request",
			map[string]any{"method": "GET", "path": "/api/now/table/incident"},
			1, []string{"414", "URL is too long"}},
		{"a proxy answers 400 with a page", 400, "servicenow_request",
			map[string]any{"method": "POST", "path": "/api/now/table/incident", "body": map[string]any{"short_description": "x"}},
			1, []string{"400", "Bad Request"}},
	}
	// Warm the metadata caches, so that each call below sends at most
	// the one request it is about.
	ok(t, env.Call(t, "alice", "servicenow_list_incidents", map[string]any{"text": "printer"}))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proxyRefuses.Store(int32(tt.proxy))
			defer proxyRefuses.Store(0)
			before := len(sent())

			res := env.Call(t, "alice", tt.tool, tt.args)
			failsWith(t, res, tt.want...)
			text := testenv.Text(res)
			for _, bad := range []string{"unavailable", "retry later", "network error"} {
				if strings.Contains(text, bad) {
					t.Errorf("the answer says %q: %s", bad, text)
				}
			}
			if n := len(sent()) - before; n != tt.sends {
				t.Errorf("%d requests reached the instance, want %d", n, tt.sends)
			}
		})
	}
}

// ServiceNow's error envelope sent with HTTP 200 is shown as the error
// it is, with ServiceNow's message, in every tool.
func TestErrorEnvelopeWithSuccessStatus(t *testing.T) {
	env := testenv.New(t, testenv.Options{Link: []string{"alice"}})
	tests := []struct {
		tool string
		args map[string]any
	}{
		{"servicenow_list_incidents", map[string]any{"limit": 2}},
		{"servicenow_query_records", map[string]any{"table": "incident", "limit": 2}},
		{"servicenow_get_incident", map[string]any{"incident": "INC0010001"}},
		{"servicenow_request", map[string]any{"method": "GET", "path": "/api/now/table/incident"}},
		{"servicenow_aggregate_records", map[string]any{"table": "incident", "group_by": []string{"state"}}},
	}
	for _, tt := range tests {
		t.Run(tt.tool, func(t *testing.T) {
			ok(t, env.Call(t, "alice", tt.tool, tt.args)) // warm the caches
			env.Sandbox.Server.SetFaults(sandbox.Faults{Status: 200, Scope: "api"})
			defer env.Sandbox.Server.SetFaults(sandbox.Faults{})

			res := env.Call(t, "alice", tt.tool, tt.args)
			failsWith(t, res, `"status":200`, `"error":"OK"`, "HTTP status said success")
			if text := testenv.Text(res); strings.Contains(text, "internal error") {
				t.Errorf("shown as an internal error: %s", text)
			}
		})
	}
}
