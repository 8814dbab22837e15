package tools_test

import (
	"testing"

	"servicenow-mcp/internal/testenv"
)

func TestChanges(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	runChecks(t, env, []check{
		{name: "list by state label", tool: "servicenow_list_change_requests",
			args: map[string]any{"state": "Scheduled"}, want: []string{"Upgrade core router firmware", `"total":1`}},
		{name: "list by type and group", tool: "servicenow_list_change_requests",
			args: map[string]any{"type": "Normal", "assignment_group": "Network"},
			want: []string{"Upgrade core router firmware", "Migrate mail gateway"}, absent: []string{"UPS"}},
		{name: "unknown type is named", tool: "servicenow_list_change_requests", wantErr: true,
			args: map[string]any{"type": "urgent"}, want: []string{"urgent", "emergency"}},
		{name: "planned start window", tool: "servicenow_list_change_requests",
			args: map[string]any{"starts_after": "1d"}, want: []string{"Decommission legacy"}, absent: []string{"Upgrade core router firmware", "Apply monthly OS patches"}},
		{name: "text search", tool: "servicenow_list_change_requests",
			args: map[string]any{"text": "deadlock"}, want: []string{"Emergency fix for database deadlock"}},
		{name: "get with tasks", tool: "servicenow_get_change_request",
			args: map[string]any{"change": "CHG0010001"},
			want: []string{`"number":"CHG0010001"`, "CTASK0010001", "CTASK0010002", "Restore from backup.", `"display":"Scheduled"`}},
		{name: "unknown change", tool: "servicenow_get_change_request", wantErr: true,
			args: map[string]any{"change": "CHG0099999"}, want: []string{"CHG0099999"}},
		{name: "create defaults to normal and reads dates", tool: "servicenow_create_change_request",
			args: map[string]any{"short_description": "Rotate TLS certificates", "risk": "Low", "assignment_group": "Network",
				"start_date": "2030-02-01T22:00:00Z", "end_date": "2030-02-01 23:30:00", "backout_plan": "Restore the old certificates."},
			want: []string{`"action":"created"`, `"number":"CHG0010007"`, `"value":"normal"`, `"start_date":"2030-02-01T22:00:00Z"`, `"end_date":"2030-02-01T23:30:00Z"`}},
		{name: "a span is not a planned date", tool: "servicenow_create_change_request", wantErr: true,
			args: map[string]any{"short_description": "x", "start_date": "3d"}, want: []string{"start_date"}},
		{name: "create refused without itil", user: "carol", tool: "servicenow_create_change_request", wantErr: true,
			args: map[string]any{"short_description": "Move my desk"}, want: []string{"403", "itil"}},
		{name: "update state with a work note", tool: "servicenow_update_change_request",
			args: map[string]any{"change": "CHG0010007", "state": "Assess", "work_note": "Sent to CAB."},
			want: []string{`"display":"Assess"`}},
		{name: "the work note is in the journal", tool: "servicenow_get_change_request",
			args: map[string]any{"change": "CHG0010007"}, want: []string{"Sent to CAB.", `"type":"work_note"`}},
		{name: "add a task", tool: "servicenow_add_change_task",
			args: map[string]any{"change": "CHG0010007", "short_description": "Verify certificate chain", "assigned_to": "bob",
				"planned_start_date": "2030-02-01 23:00:00"},
			want: []string{`"action":"created"`, "CTASK", `"display":"CHG0010007"`, `"display":"Bob Baker"`}},
		{name: "the task is listed on the change", tool: "servicenow_get_change_request",
			args: map[string]any{"change": "CHG0010007", "journal_entries": 0}, want: []string{"Verify certificate chain"}, absent: []string{`"journal"`}},
		{name: "task on an unknown change", tool: "servicenow_add_change_task", wantErr: true,
			args: map[string]any{"change": "CHG0099999", "short_description": "x"}, want: []string{"CHG0099999"}},
	})
}
