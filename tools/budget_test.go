package tools_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"servicenow-mcp/internal/testenv"
)

// Every answer fits the budget, the envelope included: a record too large
// on its own keeps its shape with its long values cut, and the answer
// says what was cut.
func TestAnswersFitTheBudget(t *testing.T) {
	const budget = 4096
	env := testenv.New(t, testenv.Options{Link: []string{"alice"}, Budget: budget})
	// 6160 bytes in 3920 characters (the field holds 4000), with quotes
	// and line breaks that grow when encoded.
	long := strings.Repeat("東京 \"x\"\n", 560)
	created := ok(t, env.Call(t, "alice", "servicenow_create_record", map[string]any{"table": "incident",
		"values": map[string]any{"short_description": "Budget test", "caller_id": "me", "description": long}, "fields": []string{"number"}}))
	rec := created["record"].(map[string]any)
	number, sysID := value(rec["number"]), value(rec["sys_id"])
	for i := range 3 {
		ok(t, env.Call(t, "alice", "servicenow_add_incident_comment", map[string]any{"incident": number,
			"text": strings.Repeat(string(rune('a'+i)), 1500)}))
	}

	tests := []struct {
		name string
		tool string
		args map[string]any
		// want are substrings of an answer that says what was cut.
		want []string
	}{
		{"query_records, one record", "servicenow_query_records", map[string]any{"table": "incident",
			"filters": map[string]any{"number": number}, "fields": []string{"number", "short_description", "description"}},
			[]string{"_cut_fields", "description", "larger than the size budget"}},
		{"query_records, the big record first", "servicenow_query_records", map[string]any{"table": "incident",
			"query": "descriptionLIKE東京^ORnumber=INC0010001", "order_by": []string{"-number"}, "fields": []string{"number", "description"}},
			[]string{"_cut_fields", "larger than the size budget", "whole records kept"}},
		{"list_incidents", "servicenow_list_incidents", map[string]any{"text": "東京", "fields": []string{"number", "description"}},
			[]string{"_cut_fields", "larger than the size budget"}},
		{"get_record", "servicenow_get_record", map[string]any{"table": "incident", "record": number},
			[]string{"_cut_fields", "description"}},
		{"get_incident with its journal", "servicenow_get_incident", map[string]any{"incident": number},
			[]string{"_cut_fields", "budget_note", "journal keeps the first"}},
		{"get_incident with one entry", "servicenow_get_incident", map[string]any{"incident": number, "journal_entries": 1},
			[]string{"_cut_fields", "budget_note"}},
		{"update_record", "servicenow_update_record", map[string]any{"table": "incident", "record": number,
			"values": map[string]any{"urgency": "2"}, "fields": []string{"number", "description", "urgency"}},
			[]string{"_cut_fields", `"action":"updated"`}},
		{"request, one record", "servicenow_request", map[string]any{"method": "GET", "path": "/api/now/table/incident/" + sysID},
			[]string{"_cut_fields", `"truncated":true`, "long values were cut"}},
		{"request, one record with display values", "servicenow_request", map[string]any{"method": "GET", "path": "/api/now/table/incident/" + sysID,
			"query": map[string]any{"sysparm_display_value": "all"}},
			[]string{"_cut_fields", `"truncated":true`, "long values were cut"}},
		{"request, a list led by the big record", "servicenow_request", map[string]any{"method": "GET", "path": "/api/now/table/incident",
			"query": map[string]any{"sysparm_query": "number=" + number + "^ORnumber=INC0010001^ORDERBYDESCnumber", "sysparm_limit": "2"}},
			[]string{"_cut_fields", `"truncated":true`, "kept the first of"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := env.Call(t, "alice", tt.tool, tt.args)
			text := testenv.Text(res)
			if res.IsError {
				t.Fatalf("error: %s", text)
			}
			if len(text) > budget {
				t.Errorf("the answer is %d bytes, over the budget of %d", len(text), budget)
			}
			if !json.Valid([]byte(text)) {
				t.Fatalf("the answer is not JSON: %s", text)
			}
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("the answer does not say %q:\n%s", w, text)
				}
			}
			// What is left of the description is its start, marked as cut.
			var m any
			_ = json.Unmarshal([]byte(text), &m)
			if d := findDescription(m); d == "" || !strings.HasSuffix(d, "…") || !strings.HasPrefix(long, strings.TrimSuffix(d, "…")) {
				t.Errorf("description %q is not a marked start of the original", d)
			}
		})
	}
}

// findDescription finds the first description value in a decoded answer,
// as a plain string or inside a {value, display_value} pair.
func findDescription(v any) string {
	switch x := v.(type) {
	case map[string]any:
		if d, ok := x["description"]; ok {
			switch dv := d.(type) {
			case string:
				return dv
			case map[string]any:
				if s, ok := dv["value"].(string); ok {
					return s
				}
			}
		}
		for _, k := range sortedKeys(x) {
			if d := findDescription(x[k]); d != "" {
				return d
			}
		}
	case []any:
		for _, e := range x {
			if d := findDescription(e); d != "" {
				return d
			}
		}
	}
	return ""
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
