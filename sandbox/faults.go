package sandbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration that reads and writes as a Go duration string
// ("250ms", "25m") in JSON; a bare number is taken as seconds.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) {
	if d == 0 {
		return []byte(`""`), nil
	}
	return json.Marshal(time.Duration(d).String())
}

func (d *Duration) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case nil:
		*d = 0
	case float64:
		*d = Duration(x * float64(time.Second))
	case string:
		if x == "" {
			*d = 0
			return nil
		}
		p, err := time.ParseDuration(x)
		if err != nil {
			return err
		}
		*d = Duration(p)
	default:
		return fmt.Errorf("duration: want a string like \"2s\"")
	}
	return nil
}

// Faults are the failure switches. Request faults (Hibernate, Status, Delay,
// Hang, Truncate, TokenEndpoint) hit requests selected by Scope and User,
// and, when Count > 0, only the next Count such requests, after which they
// switch themselves off. RotateRefresh, TokenSkew and ClockOffset are
// standing settings.
type Faults struct {
	// Hibernate answers every matching path with HTTP 200 text/html
	// "Instance Hibernating page".
	Hibernate bool `json:"hibernate"`
	// Status injects an error answer: 429 (rate limit JSON + headers),
	// 502 and 503 (HTML proxy/maintenance pages), any other 4xx/5xx the
	// ServiceNow error envelope with the message ServiceNow gives for that
	// status (403 "Operation Failed" / ACL Exception, 404 "No Record found",
	// 400 "Invalid table", ...; see faultError). A 401 on the token
	// endpoint is OAuth's server_error/access_denied refusal.
	Status int `json:"status"`
	// RetryAfter is the Retry-After seconds sent with 429 (default 30).
	RetryAfter int `json:"retry_after"`
	// Delay slows matching answers down (the answer is still normal).
	Delay Duration `json:"delay"`
	// Hang never answers; the request ends when the client gives up or the
	// sandbox is closed.
	Hang bool `json:"hang"`
	// Truncate declares the full Content-Length of a JSON answer and then
	// cuts the connection halfway through the body.
	Truncate bool `json:"truncate"`
	// TokenEndpoint breaks /oauth_token.do only: "close" (connection
	// closed without an answer), "503", "hang", "html" (200 HTML login page).
	TokenEndpoint string `json:"token_endpoint"`
	// Scope selects requests: "" or "all" (every path but /sandbox/*), "api"
	// (/api/*), "token" (/oauth_token.do), "oauth" (all /oauth_*.do).
	Scope string `json:"scope"`
	// User limits the faults to requests made as this user_name (API calls
	// by token, token requests whose code or refresh token is theirs).
	User string `json:"user"`
	// Count > 0 limits the request faults to the next Count matching requests.
	Count int `json:"count"`
	// RotateRefresh turns on refresh-token rotation with reuse detection.
	RotateRefresh bool `json:"rotate_refresh"`
	// TokenSkew makes access tokens die this much earlier than expires_in said.
	TokenSkew Duration `json:"token_skew"`
	// ClockOffset shifts the instance's clock (negative: behind the host):
	// token expiry checks, sys_ timestamps, "today" in queries and the
	// Date header. Raised while tokens are out, it makes them die that
	// much earlier than the expires_in their client was given.
	ClockOffset Duration `json:"clock_offset"`
}

func (f Faults) normalized() Faults {
	if f.Scope == "all" {
		f.Scope = ""
	}
	return f
}

func (f Faults) requestFaults() bool {
	return f.Hibernate || f.Status != 0 || f.Delay > 0 || f.Hang || f.Truncate || f.TokenEndpoint != ""
}

// SetFaults replaces the fault switches.
func (s *Server) SetFaults(f Faults) {
	s.fmu.Lock()
	s.faults = f.normalized()
	s.fmu.Unlock()
}

// Faults returns the current switches.
func (s *Server) Faults() Faults {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return s.faults
}

const (
	scopeAPI   = "api"
	scopeToken = "token"
	scopeOther = "other" // /oauth_auth.do, revoke, pages
)

func scopeMatches(want, got string, path string) bool {
	switch want {
	case "":
		return true
	case "api":
		return got == scopeAPI
	case "token":
		return got == scopeToken
	case "oauth":
		return strings.HasPrefix(path, "/oauth_")
	}
	return false
}

// takeFault decides whether the request faults hit this request and, if so,
// consumes one unit of Count. kind selects which faults are of interest.
func (s *Server) takeFault(scope, path, user string, pick func(Faults) bool) (Faults, bool) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	f := s.faults
	if !f.requestFaults() || !pick(f) || !scopeMatches(f.Scope, scope, path) {
		return f, false
	}
	if f.User != "" && f.User != user {
		return f, false
	}
	if f.Count > 0 {
		s.faults.Count--
		if s.faults.Count == 0 {
			s.faults.Hibernate, s.faults.Status, s.faults.Delay = false, 0, 0
			s.faults.Hang, s.faults.Truncate, s.faults.TokenEndpoint = false, false, ""
		}
	}
	return f, true
}

// applyFaults applies the blocking/answering faults. It returns true when
// the request was answered (or abandoned) by a fault.
func (s *Server) applyFaults(w http.ResponseWriter, r *http.Request, scope, user string) bool {
	f, hit := s.takeFault(scope, r.URL.Path, user, func(f Faults) bool {
		return f.Hibernate || f.Status != 0 || f.Delay > 0 || f.Hang ||
			(scope == scopeToken && f.TokenEndpoint != "")
	})
	if !hit {
		return false
	}
	if f.Delay > 0 {
		if s.onDelay != nil {
			s.onDelay()
		}
		t := time.NewTimer(time.Duration(f.Delay))
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return true
		case <-s.done:
			// The instance stops before it answered: the connection drops,
			// as a real server's would, rather than an empty 200.
			t.Stop()
			panic(http.ErrAbortHandler)
		}
	}
	if scope == scopeToken && f.TokenEndpoint != "" {
		s.countToken(r.FormValue("grant_type"), "fault", "")
		switch f.TokenEndpoint {
		case "close":
			panic(http.ErrAbortHandler)
		case "hang":
			s.hang(r)
		case "html":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write([]byte(loginPageHTML))
		default:
			writeHTML(w, http.StatusServiceUnavailable, maintenanceHTML)
		}
		return true
	}
	if f.Hang {
		if scope == scopeToken {
			s.countToken(r.FormValue("grant_type"), "fault", "")
		}
		s.hang(r)
		return true
	}
	if f.Hibernate {
		if scope == scopeToken {
			s.countToken(r.FormValue("grant_type"), "fault", "")
		}
		writeHTML(w, http.StatusOK, hibernateHTML)
		return true
	}
	if f.Status != 0 {
		if scope == scopeToken {
			s.countToken(r.FormValue("grant_type"), "fault", "")
		}
		switch f.Status {
		case http.StatusTooManyRequests:
			ra := f.RetryAfter
			if ra <= 0 {
				ra = 30
			}
			h := w.Header()
			h.Set("Retry-After", strconv.Itoa(ra))
			h.Set("X-RateLimit-Limit", "100")
			h.Set("X-RateLimit-Reset", strconv.FormatInt(s.now().Add(time.Duration(ra)*time.Second).Unix(), 10))
			h.Set("X-RateLimit-Rule", seedID("rate-limit-rule"))
			writeErr(w, http.StatusTooManyRequests, "Rate limit exceeded", "Rate limit of 100 requests per hour for Table API exceeded")
		case http.StatusBadGateway:
			writeHTML(w, http.StatusBadGateway, badGatewayHTML)
		case http.StatusServiceUnavailable:
			writeHTML(w, http.StatusServiceUnavailable, maintenanceHTML)
		default:
			if scope == scopeToken && f.Status == http.StatusUnauthorized {
				// the token endpoint refuses in OAuth's shape, not the REST one
				writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "server_error", "error_description": "access_denied"})
				break
			}
			msg, detail := faultError(f.Status, r)
			writeErr(w, f.Status, msg, detail)
		}
		return true
	}
	return false // only a delay: go on normally
}

// faultError picks the message and detail ServiceNow's REST APIs answer
// with for an HTTP status (reference B.8), so an injected status reads like
// a real one. Statuses with no observed message get the status text and a
// null detail; 5xx stay a generic server error.
func faultError(status int, r *http.Request) (string, any) {
	switch status {
	case http.StatusBadRequest:
		if table := tableInPath(r.URL.Path); table != "" {
			return "Invalid table " + table, nil
		}
		return "Requested URI does not represent any resource", nil
	case http.StatusUnauthorized:
		return "User Not Authenticated", "Required to provide Auth information"
	case http.StatusForbidden:
		switch r.Method {
		case http.MethodPost:
			return "Operation Failed", "ACL Exception Insert Failed due to security constraints"
		case http.MethodPut, http.MethodPatch:
			return "Operation Failed", "ACL Exception Update Failed due to security constraints"
		case http.MethodDelete:
			return "Operation Failed", "ACL Exception Delete Failed due to security constraints"
		}
		return "Insufficient rights to query records", "Field(s) present in the query do not have permission to be read"
	case http.StatusNotFound:
		return "No Record found", "Record doesn't exist or ACL restricts the record retrieval"
	case http.StatusMethodNotAllowed:
		return "Method not Supported", "Method " + r.Method + " not supported for API"
	}
	if status >= 500 {
		return "Internal server error", "The sandbox injected this failure"
	}
	return http.StatusText(status), nil
}

// tableInPath is the table of a Table API path (/api/now[/v1|/v2]/table/NAME[/...]), or "".
func tableInPath(p string) string {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	if len(parts) < 3 || parts[0] != "api" || parts[1] != "now" {
		return ""
	}
	rest := parts[2:]
	if rest[0] == "v1" || rest[0] == "v2" {
		rest = rest[1:]
	}
	if len(rest) >= 2 && rest[0] == "table" {
		return rest[1]
	}
	return ""
}

// truncateFault reports (and consumes) a truncation fault for this request.
func (s *Server) truncateFault(scope, path, user string) bool {
	_, hit := s.takeFault(scope, path, user, func(f Faults) bool { return f.Truncate })
	return hit
}

func (s *Server) hang(r *http.Request) {
	if s.onHang != nil {
		s.onHang()
	}
	select {
	case <-r.Context().Done():
	case <-s.done:
	}
	panic(http.ErrAbortHandler)
}

func writeHTML(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

const hibernateHTML = `<!DOCTYPE html>
<html><head><title>Instance Hibernating page</title></head>
<body><h1>Your instance is hibernating</h1>
<p>This instance is hibernating. Sign in to the developer site to wake it up.</p></body></html>`

const badGatewayHTML = `<!DOCTYPE html>
<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1>
<p>The proxy server received an invalid response from an upstream server.</p></body></html>`

const maintenanceHTML = `<!DOCTYPE html>
<html><head><title>Service Unavailable</title></head><body><h1>Service Unavailable</h1>
<p>The instance is temporarily unavailable (maintenance or restart). Try again later.</p></body></html>`

const loginPageHTML = `<!DOCTYPE html>
<html><head><title>Log in | ServiceNow</title></head><body>
<form method="post" action="/login.do"><input name="user_name"><input type="password" name="user_password"></form></body></html>`

// bufferWriter collects a full answer so that it can be cut short.
type bufferWriter struct {
	header http.Header
	status int
	body   []byte
}

func (b *bufferWriter) Header() http.Header { return b.header }
func (b *bufferWriter) WriteHeader(c int) {
	if b.status == 0 {
		b.status = c
	}
}
func (b *bufferWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = 200
	}
	b.body = append(b.body, p...)
	return len(p), nil
}

func writeTruncated(w http.ResponseWriter, b *bufferWriter) {
	for k, v := range b.header {
		w.Header()[k] = v
	}
	if b.status == 0 {
		b.status = 200
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b.body)))
	w.WriteHeader(b.status)
	_, _ = w.Write(b.body[:len(b.body)/2])
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	panic(http.ErrAbortHandler)
}

// ---------- stats ----------

// Stats are request counters, served read-only at GET /sandbox/stats.
type Stats struct {
	// TokenRequests counts /oauth_token.do by grant_type, then outcome
	// ("ok", "refused", "fault").
	TokenRequests map[string]map[string]int64 `json:"token_requests"`
	// APIRequests counts /api/* requests; APIByStatus by HTTP status.
	APIRequests int64            `json:"api_requests"`
	APIByStatus map[string]int64 `json:"api_by_status"`
	// APIByUser counts authenticated /api/* requests per user_name.
	APIByUser map[string]int64 `json:"api_by_user"`
	// RefreshesByUser counts successful refresh grants per user_name.
	RefreshesByUser map[string]int64 `json:"refreshes_by_user"`
	// Authorizations counts sign-in form outcomes ("allow", "deny", "bad_password").
	Authorizations map[string]int64 `json:"authorizations"`
}

func (st *Stats) reset() {
	*st = Stats{TokenRequests: map[string]map[string]int64{}, APIByStatus: map[string]int64{},
		APIByUser: map[string]int64{}, RefreshesByUser: map[string]int64{}, Authorizations: map[string]int64{}}
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.smu.Lock()
	defer s.smu.Unlock()
	var out Stats
	out.reset()
	for g, m := range s.stats.TokenRequests {
		out.TokenRequests[g] = map[string]int64{}
		for k, v := range m {
			out.TokenRequests[g][k] = v
		}
	}
	out.APIRequests = s.stats.APIRequests
	for k, v := range s.stats.APIByStatus {
		out.APIByStatus[k] = v
	}
	for k, v := range s.stats.APIByUser {
		out.APIByUser[k] = v
	}
	for k, v := range s.stats.RefreshesByUser {
		out.RefreshesByUser[k] = v
	}
	for k, v := range s.stats.Authorizations {
		out.Authorizations[k] = v
	}
	return out
}

func (s *Server) countAPI(status int, user string) {
	s.smu.Lock()
	s.stats.APIRequests++
	s.stats.APIByStatus[strconv.Itoa(status)]++
	if user != "" {
		s.stats.APIByUser[user]++
	}
	s.smu.Unlock()
}

func (s *Server) countToken(grant, outcome, refreshUser string) {
	if grant == "" {
		grant = "none"
	}
	s.smu.Lock()
	m := s.stats.TokenRequests[grant]
	if m == nil {
		m = map[string]int64{}
		s.stats.TokenRequests[grant] = m
	}
	m[outcome]++
	if refreshUser != "" {
		s.stats.RefreshesByUser[refreshUser]++
	}
	s.smu.Unlock()
}

func (s *Server) countAuthz(outcome string) {
	s.smu.Lock()
	s.stats.Authorizations[outcome]++
	s.smu.Unlock()
}

// ---------- admin endpoints ----------

func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == "/sandbox/stats" && r.Method == http.MethodGet {
		writeJSON(w, http.StatusOK, s.Stats())
		return
	}
	if p == "/sandbox/users" && r.Method == http.MethodGet {
		writeJSON(w, http.StatusOK, s.Users())
		return
	}
	if p == "/sandbox/instance" && r.Method == http.MethodGet {
		// Which state file this instance keeps (a hash, not the path):
		// lets another process decide whether to share this instance.
		writeJSON(w, http.StatusOK, map[string]string{"state_id": StateID(s.opts.StateFile)})
		return
	}
	if !isLoopback(r) {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "admin endpoints answer loopback clients only"})
		return
	}
	switch {
	case p == "/sandbox/stats/reset" && r.Method == http.MethodPost:
		s.smu.Lock()
		s.stats.reset()
		s.smu.Unlock()
		writeJSON(w, http.StatusOK, s.Stats())
	case p == "/sandbox/faults" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.Faults())
	case p == "/sandbox/faults" && (r.Method == http.MethodPut || r.Method == http.MethodPost):
		var body struct {
			Faults
			RevokeAll bool `json:"revoke_all"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad faults JSON: " + err.Error()})
			return
		}
		switch body.TokenEndpoint {
		case "", "close", "503", "hang", "html":
		default:
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "token_endpoint must be close, 503, hang or html"})
			return
		}
		switch body.Scope {
		case "", "all", "api", "token", "oauth":
		default:
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "scope must be all, api, token or oauth"})
			return
		}
		s.SetFaults(body.Faults)
		if body.RevokeAll {
			s.RevokeUser("")
		}
		writeJSON(w, http.StatusOK, s.Faults())
	case p == "/sandbox/revoke" && r.Method == http.MethodPost:
		n := s.RevokeUser(r.URL.Query().Get("user"))
		writeJSON(w, http.StatusOK, map[string]int{"revoked": n})
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown sandbox endpoint"})
	}
}
