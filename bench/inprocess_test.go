package bench

import (
	"context"
	"encoding/json"
	"testing"

	"servicenow-mcp/config"
	"servicenow-mcp/internal/testenv"
	"servicenow-mcp/tools"
)

// BenchmarkToolCallInProcess runs one tool call through the MCP server's
// message handler, with the sandbox in the same process and no transport:
// the allocations and CPU of our own code per call, and the place to
// take a profile (-cpuprofile, -memprofile) of it.
func BenchmarkToolCallInProcess(b *testing.B) {
	env := testenv.New(b, testenv.Options{Link: []string{"alice"}, Budget: config.DefaultAnswerBudget})
	for _, c := range []struct {
		name, tool string
		args       map[string]any
	}{
		{"request", "servicenow_request", requestArgs},
		{"query", "servicenow_query_records", queryArgs},
	} {
		b.Run(c.name, func(b *testing.B) {
			msg, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call",
				"params": callParams(c.tool, c.args)})
			ctx := tools.WithCaller(context.Background(), tools.Caller{User: "alice"})
			env.Call(b, "alice", c.tool, c.args) // warm the caches
			b.ReportAllocs()
			for b.Loop() {
				reply, _ := json.Marshal(env.App.MCP.HandleMessage(ctx, msg))
				if len(reply) == 0 {
					b.Fatal("no reply")
				}
			}
		})
	}
}
