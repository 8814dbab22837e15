package tools

import (
	"context"
	"errors"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"servicenow-mcp/storage"
)

func init() {
	register(
		Def{
			Name:    "authorize_servicenow",
			Toolset: "account",
			Title:   "Link ServiceNow account",
			Description: "Get the link the user opens to connect their ServiceNow account, or learn that it is already linked and as whom. " +
				"Use it when the user asks to connect or reconnect ServiceNow. Returns authorization_url and expires_at, or status linked.",
			ReadOnly: false, Destructive: false, Idempotent: true, OpenWorld: true,
			Handler: authorize,
		},
		Def{
			Name:    "servicenow_connection_status",
			Toolset: "account",
			Title:   "ServiceNow account status",
			Description: "Show whether the user's ServiceNow account is linked: instance, status (ACTIVE, EXPIRED, PENDING_AUTH, NOT_LINKED, or UNREADABLE when the server cannot decrypt its stored tokens), " +
				"the ServiceNow user, and when the current access token expires. " +
				"For PENDING_AUTH, a link was handed out and is still open: returns it as authorization_url with its expires_at. Never returns a token.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: false,
			Handler: connectionStatus,
		},
		Def{
			Name:    "disconnect_servicenow",
			Toolset: "account",
			Title:   "Unlink ServiceNow account",
			Description: "Revoke the user's ServiceNow tokens at the instance and forget them here. " +
				"Use only when the user asks to disconnect; afterwards every tool answers with a new authorization link.",
			ReadOnly: false, Destructive: true, Idempotent: true, OpenWorld: true,
			Handler: disconnect,
		},
	)
}

func authorize(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	acct, err := d.Tokens.Account(ctx, c.Key)
	if err == nil && acct.Status == storage.StatusActive {
		return jsonResult(map[string]any{
			"status":          "linked",
			"connection":      c.Key.Connection,
			"instance":        acct.InstanceURL,
			"servicenow_user": acct.SNUserName,
			"servicenow_name": acct.SNDisplayName,
			"linked_at":       acct.LinkedAt.UTC(),
			"message":         "Already linked. Use disconnect_servicenow first to link a different ServiceNow user.",
		})
	}
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return failure(ctx, d, c, err)
	}
	link, err := d.Tokens.Link(ctx, c.Key)
	if err != nil {
		return failure(ctx, d, c, err)
	}
	return jsonResult(authorizationRequired{
		Status:           "authorization_required",
		Connection:       link.Connection,
		AuthorizationURL: link.URL,
		ExpiresAt:        link.ExpiresAt.UTC(),
		Message:          "Ask the user to open authorization_url, sign in to ServiceNow and choose Allow before expires_at.",
		Warning:          link.Warning,
	})
}

func connectionStatus(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	conn, _ := d.Config.Connection(c.Key.Connection)
	out := map[string]any{"connection": c.Key.Connection, "user": c.Key.User}
	if conn != nil {
		out["instance"] = conn.InstanceURL
	}
	acct, err := d.Tokens.Account(ctx, c.Key)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		if pendingStatus(ctx, d, c, out) {
			return jsonResult(out)
		}
		out["status"] = "NOT_LINKED"
		out["hint"] = "Call authorize_servicenow to get a link for the user."
		return jsonResult(out)
	case errors.Is(err, storage.ErrWrongKey):
		out["status"] = "UNREADABLE"
		out["error"] = "the stored account cannot be opened with the server's encryption key; the operator must configure the right key"
		return jsonError(out)
	case errors.Is(err, storage.ErrCorrupt):
		out["status"] = "UNREADABLE"
		out["error"] = "the stored account record is damaged; disconnect_servicenow and link again"
		return jsonError(out)
	case err != nil:
		return failure(ctx, d, c, err)
	}
	out["status"] = string(acct.Status)
	out["servicenow_user"] = acct.SNUserName
	out["servicenow_name"] = acct.SNDisplayName
	out["linked_at"] = acct.LinkedAt.UTC()
	if acct.Status == storage.StatusActive {
		out["token_expires_at"] = acct.Expiry.UTC()
		out["token_expires_in_seconds"] = int(time.Until(acct.Expiry).Seconds())
	}
	if acct.LastError != "" {
		out["last_error"] = acct.LastError
	}
	if acct.Status == storage.StatusExpired {
		if pendingStatus(ctx, d, c, out) {
			out["previous_status"] = string(storage.StatusExpired)
			return jsonResult(out)
		}
		out["hint"] = "ServiceNow no longer accepts this account's refresh token; call authorize_servicenow for a new link."
	}
	return jsonResult(out)
}

// pendingStatus reports, into out, a link handed out to the user that is
// still open: status PENDING_AUTH, the link and when it expires. It reads
// the link and never makes one, so that a status check hands out nothing.
func pendingStatus(ctx context.Context, d *Deps, c *Call, out map[string]any) bool {
	p, err := d.Tokens.Store().PendingFor(ctx, c.Key)
	if err != nil {
		return false
	}
	out["status"] = string(storage.StatusPendingAuth)
	out["authorization_url"] = p.AuthURL
	out["expires_at"] = p.ExpiresAt.UTC()
	out["hint"] = "The user has been given authorization_url and has not finished signing in: ask them to open it, sign in to ServiceNow " +
		"and choose Allow before expires_at; once it has expired, call authorize_servicenow for a new one."
	return true
}

func disconnect(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	found, revoked, err := d.Tokens.Disconnect(ctx, c.Key)
	if err != nil {
		return failure(ctx, d, c, err)
	}
	if !found {
		return jsonResult(map[string]any{"status": "NOT_LINKED", "connection": c.Key.Connection, "message": "Nothing to disconnect."})
	}
	out := map[string]any{"status": "DISCONNECTED", "connection": c.Key.Connection, "revoked_at_servicenow": revoked}
	if !revoked {
		out["message"] = "The tokens were forgotten here, but ServiceNow could not confirm their revocation; they expire on their own."
	}
	return jsonResult(out)
}
