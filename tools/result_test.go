package tools_test

import (
	"strings"
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
