package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/rs/zerolog"

	"servicenow-mcp/config"
	"servicenow-mcp/tools"
)

// principal is the authenticated caller of one HTTP request: the API key
// that signed it and the end user the request acts for.
type principal struct {
	// Key is the configured name of the API key; empty in the open
	// loopback mode, where no keys are configured.
	Key string
	// User is the end user: the key's bound user, the user a gateway key
	// named in the user header, or the configured user in the open mode.
	User string
	// Gateway reports a gateway key, trusted to name end users.
	Gateway bool
}

// owner identifies the principal that owns a session. A gateway's
// session belongs to the end user it named when it opened the session.
func (p principal) owner() string { return p.Key + "\x00" + p.User }

// caller is what the tools learn of the principal.
func (p principal) caller() tools.Caller {
	return tools.Caller{User: p.User, MayNameUser: p.Gateway}
}

type principalKey struct{}

func withPrincipal(ctx context.Context, p principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// principalFrom returns the principal the authenticator put in ctx.
func principalFrom(ctx context.Context) (principal, bool) {
	p, ok := ctx.Value(principalKey{}).(principal)
	return p, ok
}

// authenticator checks the API key of every MCP request and names the
// end user the request acts for.
type authenticator struct {
	server   *config.Server
	openUser string // end user of the open loopback mode (no keys)
	log      zerolog.Logger
}

// checkExposure refuses an HTTP listener that anyone could reach without a
// key: with no keys, every caller would act as the configured user.
func checkExposure(s *config.Server, user string) error {
	if len(s.APIKeys) > 0 || s.LoopbackOnly() {
		return nil
	}
	return fmt.Errorf("refusing to serve MCP on %s without API keys: anyone who can reach that address "+
		"would act on ServiceNow as %q. Add server.api_keys (make a key with: servicenow-mcp keys generate), "+
		"or listen on a loopback address such as %s", s.Listen, user, config.DefaultListen)
}

// wrap admits a request only with a valid API key, and passes it on with
// its principal in the context.
func (a *authenticator) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, status, problem := a.authenticate(r)
		if status != 0 {
			a.refuse(w, r, status, problem)
			return
		}
		next.ServeHTTP(w, r.WithContext(withPrincipal(r.Context(), p)))
	})
}

// authenticate returns the request's principal, or an HTTP status and a
// message that says what the caller must change.
func (a *authenticator) authenticate(r *http.Request) (principal, int, string) {
	if len(a.server.APIKeys) == 0 {
		return principal{User: a.openUser}, 0, ""
	}

	if n := len(r.Header.Values("Authorization")); n > 1 {
		return principal{}, http.StatusBadRequest, fmt.Sprintf("the Authorization header was sent %d times; send one API key", n)
	}
	token, ok := bearerToken(r.Header.Get("Authorization"))
	if !ok {
		return principal{}, http.StatusUnauthorized,
			"this server needs an API key: send Authorization: Bearer <key>"
	}
	key, ok := a.server.APIKeyFor(token)
	if !ok {
		return principal{}, http.StatusUnauthorized, "the API key is not valid"
	}

	named, present := r.Header[http.CanonicalHeaderKey(a.server.UserHeader)]
	user := ""
	if present {
		// Several values (repeated, or joined with commas by a proxy that
		// appends rather than replaces) would let a client add a user of
		// its choosing in front of the gateway's: refuse, never pick one.
		if len(named) > 1 || strings.Contains(named[0], ",") {
			return principal{}, http.StatusBadRequest, fmt.Sprintf(
				"header %s names more than one user; send it once, with one user (a proxy in front must replace it, not append to it)",
				a.server.UserHeader)
		}
		user = strings.TrimSpace(named[0])
		if !key.Gateway && user == "" {
			return principal{}, http.StatusBadRequest, fmt.Sprintf(
				"header %s is empty; API key %q is bound to user %q and needs no user header: drop it",
				a.server.UserHeader, key.Name, key.User)
		}
		if problem := config.CheckUserName(user); problem != "" {
			return principal{}, http.StatusBadRequest, fmt.Sprintf("header %s %s", a.server.UserHeader, problem)
		}
	}

	if !key.Gateway {
		if present && user != key.User {
			return principal{}, http.StatusForbidden, fmt.Sprintf(
				"API key %q is bound to one user and cannot act for another; drop header %s "+
					"or use a gateway key", key.Name, a.server.UserHeader)
		}
		return principal{Key: key.Name, User: key.User}, 0, ""
	}
	if user == "" {
		return principal{}, http.StatusBadRequest, fmt.Sprintf(
			"API key %q is a gateway key: name the end user of every request in header %s",
			key.Name, a.server.UserHeader)
	}
	return principal{Key: key.Name, User: user, Gateway: true}, 0, ""
}

// refuse answers a refused request. A 401 carries the challenge the
// HTTP authentication scheme requires; the body is a JSON-RPC error so
// that MCP clients show the message.
func (a *authenticator) refuse(w http.ResponseWriter, r *http.Request, status int, problem string) {
	if status == http.StatusUnauthorized {
		challenge := `Bearer realm="servicenow-mcp"`
		if _, isBearer := bearerToken(r.Header.Get("Authorization")); isBearer {
			challenge += `, error="invalid_token", error_description="unknown API key"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
	}
	a.log.Warn().Str("remote", r.RemoteAddr).Str("path", r.URL.Path).Int("status", status).
		Str("reason", problem).Msg("refused an MCP request")
	writeJSONRPCError(w, status, -32001, problem)
}

// bearerToken reads "Bearer <token>"; the scheme is case-insensitive.
func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// writeJSONRPCError answers with an HTTP status and a JSON-RPC error
// body without an id, which MCP clients report with its message.
func writeJSONRPCError(w http.ResponseWriter, status, code int, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"jsonrpc": "2.0",
		"id":      nil,
		"error":   map[string]any{"code": code, "message": message},
	})
}
