package tools_test

import (
	"strings"
	"testing"
	"time"

	"servicenow-mcp/internal/testenv"
	"servicenow-mcp/sandbox"
)

// servicenow_connection_status reports each state its description names,
// PENDING_AUTH with the open link included; and a tool's link answer says
// whether the account was never linked or its link stopped working.
func TestConnectionStatusAndLinkWording(t *testing.T) {
	env := testenv.New(t, testenv.Options{Link: []string{"alice", "bob"}})
	expire := func(t *testing.T, user string) {
		// Tokens that die at once: the API refuses the access token, and
		// the refreshed one as well, so the account is marked expired.
		env.Sandbox.Server.SetFaults(sandbox.Faults{TokenSkew: sandbox.Duration(time.Hour)})
		defer env.Sandbox.Server.SetFaults(sandbox.Faults{})
		failsWith(t, env.Call(t, user, "servicenow_list_incidents", map[string]any{"limit": 1}), "authorization_required", "no longer works")
	}
	tests := []struct {
		name    string
		user    string
		setup   func(t *testing.T) map[string]any // returns the link handed out, if any
		status  string
		pending bool
		extra   map[string]any
	}{
		{"never linked", "dave", nil, "NOT_LINKED", false, nil},
		{"link handed out by authorize", "erin", func(t *testing.T) map[string]any {
			return ok(t, env.Call(t, "erin", "authorize_servicenow", nil))
		}, "PENDING_AUTH", true, nil},
		{"link handed out by another tool", "frank", func(t *testing.T) map[string]any {
			res := env.Call(t, "frank", "servicenow_list_incidents", nil)
			failsWith(t, res, "authorization_required", "has not linked")
			return testenv.JSON(t, res)
		}, "PENDING_AUTH", true, nil},
		{"linked", "alice", nil, "ACTIVE", false, nil},
		{"refresh refused, then a new link handed out", "bob", func(t *testing.T) map[string]any {
			expire(t, "bob")
			res := env.Call(t, "bob", "servicenow_list_incidents", nil)
			failsWith(t, res, "authorization_required", "no longer works", "reason")
			if text := testenv.Text(res); strings.Contains(text, "has not linked") {
				t.Errorf("an expired account is called never linked: %s", text)
			}
			return testenv.JSON(t, res)
		}, "PENDING_AUTH", true, map[string]any{"previous_status": "EXPIRED", "servicenow_user": "bob"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var link map[string]any
			if tt.setup != nil {
				link = tt.setup(t)
			}
			got := ok(t, env.Call(t, tt.user, "servicenow_connection_status", nil))
			if got["status"] != tt.status {
				t.Fatalf("status %v, want %s: %v", got["status"], tt.status, got)
			}
			if tt.pending {
				if got["authorization_url"] == nil || got["authorization_url"] != link["authorization_url"] || got["expires_at"] != link["expires_at"] {
					t.Errorf("link %v (expires %v), want the one handed out: %v (expires %v)",
						got["authorization_url"], got["expires_at"], link["authorization_url"], link["expires_at"])
				}
			} else if got["authorization_url"] != nil {
				t.Errorf("a link is reported with status %s: %v", tt.status, got)
			}
			for k, v := range tt.extra {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}
