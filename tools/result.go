package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"servicenow-mcp/oauth"
	"servicenow-mcp/servicenow"
	"servicenow-mcp/storage"
)

func errorResult(format string, a ...any) *mcp.CallToolResult {
	return mcp.NewToolResultError(fmt.Sprintf(format, a...))
}

// jsonResult renders v as compact JSON text.
func jsonResult(v any) *mcp.CallToolResult {
	b, err := marshal(v)
	if err != nil {
		return errorResult("internal error: cannot encode the answer")
	}
	return mcp.NewToolResultText(string(b))
}

func jsonError(v any) *mcp.CallToolResult {
	r := jsonResult(v)
	r.IsError = true
	return r
}

// marshal encodes compactly without escaping <, > and & (models read it).
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// authorizationRequired is what every tool answers for an account that
// has no usable tokens: data the model can relay to the user.
type authorizationRequired struct {
	Status           string    `json:"status"`
	Connection       string    `json:"connection"`
	AuthorizationURL string    `json:"authorization_url"`
	ExpiresAt        time.Time `json:"expires_at"`
	Message          string    `json:"message"`
	Reason           string    `json:"reason,omitempty"`
	// Warning says when the link may fail for the operator's reasons.
	Warning string `json:"warning,omitempty"`
}

// failure turns an error from the token manager or the instance client
// into a result the model can act on.
func failure(ctx context.Context, d *Deps, c *Call, err error) *mcp.CallToolResult {
	var (
		needsLink *servicenow.NeedsLinkError
		unknown   *servicenow.OutcomeUnknownError
		tooLong   *servicenow.URLTooLongError
		refused   *servicenow.RefusedError
		input     *servicenow.InputError
		api       *servicenow.APIError
		unavail   *servicenow.UnavailableError
		limited   *servicenow.RateLimitedError
		tokenDown *oauth.UnavailableError
		client    *oauth.ClientRejectedError
		blocked   *oauth.LinksUnavailableError
	)
	var partial *partialReadError
	if errors.As(err, &partial) {
		return withPartialRead(failure(ctx, d, c, partial.Err), partial.Summary())
	}
	switch {
	case errors.Is(err, oauth.ErrNeedsAuthorization) || errors.As(err, &needsLink):
		// An account on record was linked once: its link stopped working.
		reason, wasLinked := "", needsLink != nil
		if needsLink != nil {
			reason = needsLink.Reason
		}
		a, aerr := d.Tokens.Account(ctx, c.Key)
		switch {
		case aerr == nil:
			wasLinked = true
			if reason == "" {
				reason = a.LastError
			}
		case errors.Is(aerr, storage.ErrCorrupt):
			wasLinked = true
			reason = "the stored account record is damaged"
		}
		return linkResult(ctx, d, c, reason, wasLinked)
	case errors.As(err, &unknown):
		return outcomeUnknown(ctx, c, unknown)
	case errors.As(err, &input):
		c.outcome = "bad_arguments"
		return errorResult("%s", input.Msg)
	case errors.As(err, &tooLong):
		c.outcome = "bad_arguments"
		msg := fmt.Sprintf("the request was not sent: its URL would be at least %d bytes, past this server's limit of %d KiB "+
			"(instances and the proxies in front of them refuse longer ones)", tooLong.Length, servicenow.MaxURLLength>>10)
		if name, size := largestArgument(c.Args); name != "" {
			msg += fmt.Sprintf("; shorten argument %q (%d bytes)", name, size)
		}
		return errorResult("%s", msg)
	case errors.As(err, &refused):
		c.outcome = "request_refused"
		return jsonError(map[string]any{"status": refused.Status, "error": refused.Error(), "hint": refused.Hint()})
	case errors.As(err, &api):
		c.outcome = "servicenow_error"
		out := map[string]any{"status": api.Status, "error": api.Message}
		if api.Detail != "" {
			out["detail"] = api.Detail
		}
		if h := api.Hint(); h != "" {
			out["hint"] = h
		}
		return jsonError(out)
	case errors.As(err, &limited):
		c.outcome = "rate_limited"
		out := map[string]any{
			"status":              429,
			"error":               "ServiceNow rate limit reached",
			"retry_after_seconds": int(limited.RetryAfter.Round(time.Second).Seconds()),
			"retry_at":            limited.At.Format(time.RFC3339),
			"hint":                "Wait until retry_at before calling again; retrying sooner is refused by ServiceNow.",
		}
		if limited.Detail != "" {
			out["detail"] = limited.Detail
		}
		return jsonError(out)
	case errors.As(err, &unavail):
		c.outcome = "instance_unavailable"
		out := map[string]any{"error": unavail.Error(), "hint": "The linked account is fine; retry later."}
		if unavail.Hibernating {
			out["hibernating"] = true
		}
		if unavail.Partial {
			out["hint"] = "No data from this answer was used; retry the call."
		}
		return jsonError(out)
	case errors.As(err, &tokenDown):
		c.outcome = "instance_unavailable"
		out := map[string]any{"error": tokenDown.Error(), "hint": "The linked account is kept; retry later."}
		if !tokenDown.RetryAfter.IsZero() {
			out["retry_at"] = tokenDown.RetryAfter.UTC().Format(time.RFC3339)
		}
		return jsonError(out)
	case errors.As(err, &client):
		c.outcome = "configuration_error"
		return jsonError(map[string]any{
			"error": client.Error(),
			"hint":  "This is a server configuration problem, not the user's: tell the operator of this MCP server.",
		})
	case errors.As(err, &blocked):
		c.outcome = "configuration_error"
		return jsonError(map[string]any{
			"error": "no authorization link can be handed out now, because it could not be completed: " + blocked.Reason,
			"hint":  "This is a server configuration problem, not the user's: tell the operator of this MCP server.",
		})
	case errors.Is(err, storage.ErrWrongKey):
		c.outcome = "configuration_error"
		return jsonError(map[string]any{
			"error": "the server cannot decrypt this account's stored tokens: its encryption key is not the one they were sealed with",
			"hint":  "This is a server configuration problem, not the user's: tell the operator of this MCP server to restore the previous encryption key (see SECURITY.md).",
		})
	case errors.Is(err, oauth.ErrUnknownConnection):
		c.outcome = "bad_arguments"
		return errorResult("%s", err.Error())
	case errors.Is(context.Cause(ctx), ErrShuttingDown):
		c.outcome = "shutting_down"
		return errorResult("the server is shutting down and stopped this call before ServiceNow answered; call again in a moment. A change this call asked for may or may not have been made: check before repeating it.")
	case errors.Is(err, context.DeadlineExceeded):
		c.outcome = "timeout"
		return errorResult("the call did not finish within the server's time limit; ServiceNow may be slow, retry with a smaller request")
	case errors.Is(err, context.Canceled):
		c.outcome = "cancelled"
		return errorResult("the call was cancelled")
	}
	c.outcome = "internal_error"
	d.Log.Error().Str("tool", c.Tool).Str("error", err.Error()).Msg("tool failed")
	return errorResult("internal error; the server log has details")
}

// withPartialRead adds to a failure what a read of several pages had
// read before it failed: as "partial_read" in a JSON answer, else as a
// sentence after the text.
func withPartialRead(res *mcp.CallToolResult, summary string) *mcp.CallToolResult {
	for i, content := range res.Content {
		tc, ok := content.(mcp.TextContent)
		if !ok {
			continue
		}
		var obj map[string]any
		if json.Unmarshal([]byte(tc.Text), &obj) == nil && obj != nil {
			obj["partial_read"] = summary
			if b, err := marshal(obj); err == nil {
				tc.Text = string(b)
			}
		} else {
			tc.Text = strings.TrimRight(tc.Text, ". ") + ". " + strings.ToUpper(summary[:1]) + summary[1:] + "."
		}
		res.Content[i] = tc
		break
	}
	return res
}

// largestArgument names the argument that takes the most bytes, the one
// to shorten when a request grows too large.
func largestArgument(args Args) (string, int) {
	name, size := "", 0
	for k, v := range args {
		n := 0
		if s, ok := v.(string); ok {
			n = len(s)
		} else if b, err := marshal(v); err == nil {
			n = len(b)
		}
		if n > size || (n == size && k < name) {
			name, size = k, n
		}
	}
	return name, size
}

// outcomeUnknown answers a write that may have reached ServiceNow
// without a whole answer coming back. Saying "retry" here would have a
// model repeat a change that may already be made.
func outcomeUnknown(ctx context.Context, c *Call, e *servicenow.OutcomeUnknownError) *mcp.CallToolResult {
	c.outcome = "outcome_unknown"
	why := e.Reason
	if errors.Is(context.Cause(ctx), ErrShuttingDown) {
		c.outcome = "shutting_down"
		why = "the server is shutting down and stopped the call before ServiceNow answered"
	}
	return jsonError(map[string]any{
		"outcome": "unknown",
		"error":   fmt.Sprintf("the outcome of this %s is unknown: it was sent to ServiceNow, but %s", e.Method, why),
		"hint": "The change may or may not have been made. Check first, for example by querying for the record this call " +
			"was to create or change, and repeat the call only if the change is not there.",
	})
}

// linkResult answers with a link for the user to open. wasLinked says
// the account was linked before, so that the message says its link no
// longer works rather than that it was never made.
func linkResult(ctx context.Context, d *Deps, c *Call, reason string, wasLinked bool) *mcp.CallToolResult {
	c.outcome = "needs_authorization"
	link, err := d.Tokens.Link(ctx, c.Key)
	var blocked *oauth.LinksUnavailableError
	if errors.As(err, &blocked) {
		return failure(ctx, d, c, err)
	}
	if err != nil {
		d.Log.Error().Str("error", err.Error()).Msg("create authorization link")
		return errorResult("the ServiceNow account is not linked, and no authorization link could be created; the server log has details")
	}
	message := "The user has not linked their ServiceNow account for this connection. Ask them to open authorization_url, " +
		"sign in to ServiceNow and choose Allow; then call this tool again."
	if wasLinked {
		why := ""
		if reason != "" {
			why = " (reason says why)"
		}
		message = "The user's ServiceNow account was linked for this connection, but that link no longer works" + why + ". " +
			"Ask them to open authorization_url, sign in to ServiceNow again and choose Allow; then call this tool again."
	}
	r := jsonResult(authorizationRequired{
		Status:           "authorization_required",
		Connection:       link.Connection,
		AuthorizationURL: link.URL,
		ExpiresAt:        link.ExpiresAt.UTC(),
		Message:          message,
		Reason:           reason,
		Warning:          link.Warning,
	})
	r.IsError = true
	return r
}
