package tools_test

import (
	"testing"

	"servicenow-mcp/internal/testenv"
	"servicenow-mcp/sandbox"
)

func TestKnowledge(t *testing.T) {
	// The same expectations hold with and without the Knowledge API: the
	// fallback reads kb_knowledge and still shows published articles only.
	for _, mode := range []struct {
		name   string
		opts   sandbox.Options
		source string
	}{
		{"knowledge api", sandbox.Options{}, `"source":"knowledge_api"`},
		{"table fallback", sandbox.Options{NoKnowledgeAPI: true}, `"source":"kb_knowledge_table"`},
	} {
		t.Run(mode.name, func(t *testing.T) {
			env := testenv.New(t, testenv.Options{Sandbox: mode.opts})
			runChecks(t, env, []check{
				{name: "search finds the published article only", tool: "servicenow_search_knowledge",
					args:   map[string]any{"query": "vpn"},
					want:   []string{"KB0010001", "How to connect to the VPN", mode.source},
					absent: []string{"Draft: new VPN client rollout", "KB0010007"}},
				{name: "retired articles are not found", tool: "servicenow_search_knowledge",
					args: map[string]any{"query": "dial-up"}, want: []string{`"articles":[]`, `"total":0`}},
				{name: "search within a knowledge base by title", tool: "servicenow_search_knowledge",
					args: map[string]any{"knowledge_base": "HR"}, want: []string{"Holiday policy"}, absent: []string{"VPN", "expenses"}},
				{name: "unknown knowledge base is named", tool: "servicenow_search_knowledge", wantErr: true,
					args: map[string]any{"query": "vpn", "knowledge_base": "Nope"}, want: []string{"Nope"}},
				{name: "paging", tool: "servicenow_search_knowledge",
					args: map[string]any{"limit": 2}, want: []string{`"next_offset":2`, `"total":6`}},
				{name: "read one article as plain text", tool: "servicenow_get_knowledge_article",
					args: map[string]any{"article": "KB0010002"},
					want: []string{"Resetting your password", "Use the self-service password reset page.", mode.source}, absent: []string{"<p>"}},
				{name: "a draft is not shown even to itil", tool: "servicenow_get_knowledge_article", wantErr: true,
					args: map[string]any{"article": "KB0010007"}, absent: []string{"Work in progress"}},
				{name: "a draft is not shown to a plain user", user: "carol", tool: "servicenow_get_knowledge_article", wantErr: true,
					args: map[string]any{"article": "KB0010007"}, absent: []string{"Work in progress"}},
				{name: "unknown article", tool: "servicenow_get_knowledge_article", wantErr: true,
					args: map[string]any{"article": "KB0099999"}, want: []string{"KB0099999"}},
				{name: "a key that is neither number nor sys_id", tool: "servicenow_get_knowledge_article", wantErr: true,
					args: map[string]any{"article": "../../now/table/sys_user"}, want: []string{"neither"}},
			})
		})
	}
}
