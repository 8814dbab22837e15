package tools_test

import (
	"encoding/json"
	"slices"
	"testing"

	"servicenow-mcp/config"
	"servicenow-mcp/internal/testenv"
)

// In read-only mode servicenow_request stays registered for GET and
// refuses every method that writes before anything reaches the instance.
func TestRequestReadOnly(t *testing.T) {
	env := testenv.New(t, testenv.Options{Link: []string{"alice"}, Tools: config.Tools{ReadOnly: true}})
	var names []string
	for _, tool := range env.ListTools(t) {
		names = append(names, tool.Name)
		if tool.Name != "servicenow_request" {
			continue
		}
		// It is advertised as what it is in this mode: a read.
		b, _ := json.Marshal(tool)
		var listed struct {
			Annotations map[string]any `json:"annotations"`
			InputSchema struct {
				Properties map[string]struct {
					Enum []string `json:"enum"`
				} `json:"properties"`
			} `json:"inputSchema"`
		}
		if err := json.Unmarshal(b, &listed); err != nil {
			t.Fatal(err)
		}
		a := listed.Annotations
		if a["readOnlyHint"] != true || a["destructiveHint"] != false || a["idempotentHint"] != true {
			t.Errorf("servicenow_request in read-only mode is listed with hints %v", a)
		}
		if m := listed.InputSchema.Properties["method"].Enum; !slices.Equal(m, []string{"GET"}) {
			t.Errorf("servicenow_request in read-only mode offers methods %v, want GET alone", m)
		}
	}
	if !slices.Contains(names, "servicenow_request") {
		t.Fatalf("servicenow_request is not registered in read-only mode: %v", names)
	}
	id := value(records(t, ok(t, env.Call(t, "alice", "servicenow_query_records", map[string]any{
		"table": "incident", "filters": map[string]any{"number": "INC0010001"}, "fields": []string{"number"}})))[0]["sys_id"])
	body := map[string]any{"short_description": "changed in read-only mode"}

	tests := []struct {
		method string
		path   string
		body   map[string]any
		allow  bool
	}{
		{"GET", "/api/now/table/incident/" + id, nil, true},
		{"POST", "/api/now/table/incident", body, false},
		{"PUT", "/api/now/table/incident/" + id, body, false},
		{"PATCH", "/api/now/table/incident/" + id, body, false},
		{"DELETE", "/api/now/table/incident/" + id, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			args := map[string]any{"method": tt.method, "path": tt.path}
			if tt.body != nil {
				args["body"] = tt.body
			}
			before := env.APIRequests()
			res := env.Call(t, "alice", "servicenow_request", args)
			sent := env.APIRequests() - before
			if tt.allow {
				if m := ok(t, res); m["status"] != 200.0 || sent != 1 {
					t.Fatalf("status %v after %d requests", m["status"], sent)
				}
				return
			}
			failsWith(t, res, "read-only", tt.method)
			if sent != 0 {
				t.Fatalf("a refused %s still sent %d requests to the instance", tt.method, sent)
			}
		})
	}
	got := ok(t, env.Call(t, "alice", "servicenow_get_record", map[string]any{"table": "incident", "record": id, "fields": []string{"short_description"}}))
	if got["short_description"] == body["short_description"] {
		t.Fatal("the incident was changed in read-only mode")
	}
}
