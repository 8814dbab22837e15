package tools

import (
	"context"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/rs/zerolog"

	"servicenow-mcp/servicenow"
)

// failure words a write of unknown outcome from what cut it off, the
// server's shutdown included, and never as a plain failure to retry.
func TestFailureOfUnknownOutcome(t *testing.T) {
	stopping, stop := context.WithCancelCause(context.Background())
	stop(ErrShuttingDown)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		err     error
		outcome string
		want    []string
	}{
		{"request bound", context.Background(),
			&servicenow.OutcomeUnknownError{Method: "POST", Reason: "it did not answer within the per-request time limit (timeouts.request)"},
			"outcome_unknown", []string{"POST", "per-request time limit"}},
		{"cancelled", cancelled,
			&servicenow.OutcomeUnknownError{Method: "DELETE", Reason: "the call was cancelled before the answer arrived", Err: context.Canceled},
			"outcome_unknown", []string{"DELETE", "cancelled"}},
		{"shutdown", stopping,
			&servicenow.OutcomeUnknownError{Method: "PATCH", Reason: "the call was cancelled before the answer arrived", Err: context.Canceled},
			"shutting_down", []string{"PATCH", "shutting down"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Call{Tool: "servicenow_request"}
			res := failure(tt.ctx, &Deps{Log: zerolog.Nop()}, c, tt.err)
			text := res.Content[0].(mcp.TextContent).Text
			if !res.IsError || c.outcome != tt.outcome {
				t.Fatalf("isError %v, outcome %q, want an error with outcome %q: %s", res.IsError, c.outcome, tt.outcome, text)
			}
			for _, w := range append(tt.want, `"outcome":"unknown"`, "may or may not have been made") {
				if !strings.Contains(text, w) {
					t.Errorf("answer lacks %q: %s", w, text)
				}
			}
			if strings.Contains(text, "retry") {
				t.Errorf("answer tells the model to retry: %s", text)
			}
		})
	}
}
