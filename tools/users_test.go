package tools_test

import (
	"testing"

	"servicenow-mcp/internal/testenv"
)

func TestUsers(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	runChecks(t, env, []check{
		{name: "by part of a name", user: "carol", tool: "servicenow_find_users",
			args: map[string]any{"query": "archer"}, want: []string{`"user_name":"alice"`, `"total":1`}},
		{name: "by email", user: "carol", tool: "servicenow_find_users",
			args: map[string]any{"query": "bob@example.com"}, want: []string{`"name":"Bob Baker"`}},
		{name: "by department", user: "carol", tool: "servicenow_find_users",
			args: map[string]any{"query": "e", "department": "Finance"}, want: []string{"carol"}, absent: []string{"alice", "dave"}},
		{name: "query cannot widen the filter", user: "carol", tool: "servicenow_find_users", wantErr: true,
			args: map[string]any{"query": "zz^ORactive=true"}, want: []string{"no way to escape"}},
		{name: "empty query refused", user: "carol", tool: "servicenow_find_users", wantErr: true,
			args: map[string]any{"query": "  "}, want: []string{"query"}},
		{name: "groups by name", user: "carol", tool: "servicenow_find_groups",
			args: map[string]any{"query": "net"}, want: []string{`"name":"Network"`}, absent: []string{"Service Desk"}},
		{name: "all groups", user: "carol", tool: "servicenow_find_groups",
			args: map[string]any{}, want: []string{"CAB Approval", "Software", `"total":6`}},
		{name: "members by group name", user: "carol", tool: "servicenow_list_group_members",
			args: map[string]any{"group": "Service Desk"}, want: []string{"Alice Archer", "Bob Baker", `"user.email":"bob@example.com"`}, absent: []string{"Dave"}},
		{name: "unknown group is named", user: "carol", tool: "servicenow_list_group_members", wantErr: true,
			args: map[string]any{"group": "Plumbers"}, want: []string{"Plumbers"}},
	})
}
