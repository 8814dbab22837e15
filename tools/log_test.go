package tools_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"servicenow-mcp/internal/testenv"
	"servicenow-mcp/storage"
)

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Every tool call logs one line naming the tool, the connection, the end
// user, the outcome and the duration, and never an argument's value, a
// token or the authorization link.
func TestToolCallLogLine(t *testing.T) {
	var out lockedBuffer
	logger := zerolog.New(&out)
	env := testenv.New(t, testenv.Options{Link: []string{"alice"}, Logger: &logger})
	const secret = "s3cret-argument-value"
	tests := []struct {
		name    string
		user    string
		tool    string
		args    map[string]any
		outcome string
		level   string
	}{
		{"ok", "alice", "servicenow_list_incidents", map[string]any{"text": secret + " printer", "limit": 1}, "ok", "info"},
		{"bad argument", "alice", "servicenow_list_incidents", map[string]any{"colour": secret}, "bad_arguments", "warn"},
		{"needs authorization", "dave", "servicenow_get_incident", map[string]any{"incident": secret}, "needs_authorization", "info"},
	}
	var answers []string
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(out.String())
			res := env.Call(t, tt.user, tt.tool, tt.args)
			answers = append(answers, testenv.Text(res))

			var lines []map[string]any
			for _, l := range strings.Split(strings.TrimSpace(out.String()[before:]), "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil && m["message"] == "tool call" {
					lines = append(lines, m)
				}
			}
			if len(lines) != 1 {
				t.Fatalf("%d tool call log lines, want 1:\n%s", len(lines), out.String()[before:])
			}
			line := lines[0]
			want := map[string]any{"tool": tt.tool, "connection": testenv.Connection, "user": tt.user, "outcome": tt.outcome, "level": tt.level}
			for k, v := range want {
				if line[k] != v {
					t.Errorf("%s = %v, want %v (line %v)", k, line[k], v, line)
				}
			}
			if d, ok := line["duration"].(float64); !ok || d < 0 {
				t.Errorf("duration = %v, want a non-negative number (line %v)", line["duration"], line)
			}
		})
	}

	logs := out.String()
	acct, err := env.Store.GetAccount(context.Background(), storage.AccountKey{Connection: testenv.Connection, User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	forbidden := map[string]string{secret: "an argument value", acct.AccessToken: "alice's access token", acct.RefreshToken: "alice's refresh token"}
	var link struct {
		URL string `json:"authorization_url"`
	}
	if len(answers) == len(tests) && json.Unmarshal([]byte(answers[2]), &link) == nil && link.URL != "" {
		forbidden[link.URL] = "dave's authorization link"
	}
	for value, what := range forbidden {
		if value != "" && strings.Contains(logs, value) {
			t.Errorf("the log holds %s", what)
		}
	}
}
