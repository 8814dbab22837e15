package bench

import (
	"encoding/json"
	"testing"

	"servicenow-mcp/config"
	"servicenow-mcp/internal/testenv"
)

// roundTrip is one read tool call and the ServiceNow requests it may
// cost in steady state: one, unless the answer is made of several
// records that the instance serves from separate APIs.
type roundTrip struct {
	tool string
	args map[string]any
	want int64
	why  string // when want is not 1
}

var roundTrips = []roundTrip{
	{tool: "servicenow_request", args: requestArgs, want: 1},
	{tool: "servicenow_query_records", args: map[string]any{"table": "incident", "limit": 5,
		"filters": map[string]any{"assigned_to": "alice", "state": "New"}}, want: 1},
	{tool: "servicenow_get_record", args: map[string]any{"table": "incident", "record": "INC0010001"}, want: 1},
	{tool: "servicenow_aggregate_records", args: map[string]any{"table": "incident", "group_by": []string{"state"}}, want: 1},
	{tool: "servicenow_describe_table", args: map[string]any{"table": "incident"}, want: 0,
		why: "answered from the dictionary cache"},
	{tool: "servicenow_connection_status", args: map[string]any{}, want: 0,
		why: "answered from the store and the token cache"},
	{tool: "servicenow_list_incidents", args: map[string]any{"assigned_to": "alice", "limit": 5}, want: 1},
	{tool: "servicenow_get_incident", args: map[string]any{"incident": "INC0010001"}, want: 2,
		why: "the incident, then its journal entries (sys_journal_field)"},
	{tool: "servicenow_list_change_requests", args: map[string]any{"limit": 5}, want: 1},
	{tool: "servicenow_get_change_request", args: map[string]any{"change": "CHG0010001"}, want: 3,
		why: "the change, its change tasks and its journal entries"},
	{tool: "servicenow_find_users", args: map[string]any{"query": "alice"}, want: 1},
	{tool: "servicenow_find_groups", args: map[string]any{"query": "Service Desk"}, want: 1},
	{tool: "servicenow_list_group_members", args: map[string]any{"group": "Service Desk"}, want: 1},
	{tool: "servicenow_search_knowledge", args: map[string]any{"query": "password"}, want: 1},
	{tool: "servicenow_get_knowledge_article", args: map[string]any{"article": "KB0010001"}, want: 1},
	{tool: "servicenow_search_catalog_items", args: map[string]any{"query": "laptop"}, want: 1},
	{tool: "servicenow_list_attachments", args: map[string]any{"table": "incident", "record": "INC0010001"}, want: 1},
}

// BenchmarkRoundTrips (figure 2) counts, with the sandbox's own request
// counter, the ServiceNow requests each read tool sends once its caches
// are warm. It is a count, not a timing: a tool over its expected count
// fails the benchmark.
func BenchmarkRoundTrips(b *testing.B) {
	env := testenv.New(b, testenv.Options{Link: []string{"alice"}, Budget: config.DefaultAnswerBudget})
	calls := append([]roundTrip(nil), roundTrips...)
	if id := firstAttachment(b, env); id != "" {
		calls = append(calls, roundTrip{tool: "servicenow_download_attachment", args: map[string]any{"sys_id": id}, want: 2,
			why: "the attachment's metadata, then its bytes"})
	}
	for _, c := range calls {
		b.Run(c.tool, func(b *testing.B) {
			for range 2 { // the first call fills the caches
				if res := env.Call(b, "alice", c.tool, c.args); res.IsError {
					b.Fatalf("%s: %s", c.tool, testenv.Text(res))
				}
			}
			before := env.APIRequests()
			for range b.N {
				env.Call(b, "alice", c.tool, c.args)
			}
			per := float64(env.APIRequests()-before) / float64(b.N)
			b.ReportMetric(per, "sn-requests/call")
			if per > float64(c.want) {
				b.Errorf("%s costs %.1f ServiceNow requests per call in steady state, want %d", c.tool, per, c.want)
			}
		})
	}
}

func firstAttachment(b *testing.B, env *testenv.Env) string {
	res := env.Call(b, "alice", "servicenow_request", map[string]any{"method": "GET", "path": "/api/now/attachment",
		"query": map[string]any{"sysparm_limit": "1"}})
	var out struct {
		Body struct {
			Result []struct {
				SysID string `json:"sys_id"`
			} `json:"result"`
		} `json:"body"`
	}
	if json.Unmarshal([]byte(testenv.Text(res)), &out) != nil || len(out.Body.Result) == 0 {
		return ""
	}
	return out.Body.Result[0].SysID
}
