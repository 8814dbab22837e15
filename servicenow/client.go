// Package servicenow is the instance client: it builds and validates
// request URLs, injects the user's token, retries what is safe to retry,
// and classifies every answer a ServiceNow instance can give.
package servicenow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"servicenow-mcp/config"
	"servicenow-mcp/storage"
)

// Tokens is what the client needs from the token manager.
type Tokens interface {
	Token(ctx context.Context, key storage.AccountKey) (string, error)
	ForceRefresh(ctx context.Context, key storage.AccountKey, stale string) (string, error)
	Expire(ctx context.Context, key storage.AccountKey, why string) error
}

// Request is one call to an instance API.
type Request struct {
	Method  string
	Path    string // relative, under /api/
	Query   url.Values
	Body    []byte // JSON, or raw bytes with ContentType
	Headers http.Header
	// ContentType of Body; application/json when empty and Body is set.
	ContentType string
	// Accept overrides the Accept header (binary downloads).
	Accept string
	// MaxBody caps how much of the answer is read; 0 means DefaultMaxBody.
	MaxBody int64
	// Compact asks for a JSON answer's body in compact form. The check
	// that the JSON is whole then compacts it in the same pass, so a
	// caller that shows the body as it is need not scan it again.
	Compact bool
}

// DefaultMaxBody is the most of one answer the client reads by default.
const DefaultMaxBody = 8 << 20

// Response is a classified answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	// Truncated is set when the body was longer than MaxBody and was cut.
	Truncated bool
	// Compacted is set when Body is compact JSON (see Request.Compact).
	Compacted bool
}

// IsJSON reports whether the response declares a JSON body.
func (r *Response) IsJSON() bool { return isJSON(r.Header.Get("Content-Type")) }

// Client calls ServiceNow instances as a given user.
type Client struct {
	tokens Tokens
	http   *http.Client
	conns  map[string]*config.Connection
	bases  map[string]*url.URL
	// budget bounds every outbound attempt on its own, and a whole call,
	// retries included, when the caller's context carries no deadline: a
	// hung answer then costs one attempt, not the caller's whole time.
	budget time.Duration
	sleep  func(ctx context.Context, d time.Duration) error
}

// NewClient builds a client for the given connections.
func NewClient(tokens Tokens, conns []config.Connection, budget time.Duration) (*Client, error) {
	c := &Client{
		tokens: tokens,
		conns:  map[string]*config.Connection{},
		bases:  map[string]*url.URL{},
		budget: budget,
		sleep:  sleepCtx,
	}
	for i := range conns {
		conn := conns[i]
		u, err := url.Parse(strings.TrimRight(conn.InstanceURL, "/"))
		if err != nil {
			return nil, fmt.Errorf("connection %q: instance_url: %w", conn.Name, err)
		}
		c.conns[conn.Name] = &conn
		c.bases[conn.Name] = u
	}
	c.http = &http.Client{
		Transport: newTransport(),
		// No cookie jar: ServiceNow binds sessions to cookies, and a jar
		// shared between users could carry one user's session to another.
		Jar: nil,
		// Never follow a redirect: the Authorization header must not travel
		// to another host, and an API redirect is an answer to report.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	t.ResponseHeaderTimeout = 0 // bounded by the call's context instead
	return t
}

// HTTPClient returns the client's underlying HTTP client (no jar, no redirects).
func (c *Client) HTTPClient() *http.Client { return c.http }

// Do sends req as the account's user. A 401 forces one refresh and one
// retry; a 429 waits only while Retry-After fits the call's deadline; a
// 5xx is retried with back-off only for idempotent methods. A request
// that failed in transit is resent only when it is a read or never
// reached the instance: a write that may have arrived fails with an
// *OutcomeUnknownError instead, since sending it again could repeat it.
func (c *Client) Do(ctx context.Context, key storage.AccountKey, req Request) (*Response, error) {
	base, ok := c.bases[key.Connection]
	if !ok {
		return nil, fmt.Errorf("unknown connection %q", key.Connection)
	}
	if err := ValidatePath(req.Path); err != nil {
		return nil, err
	}
	method := strings.ToUpper(req.Method)
	if !allowedMethods[method] {
		return nil, &InputError{Msg: fmt.Sprintf("method %q is not allowed: use GET, POST, PUT, PATCH or DELETE", req.Method)}
	}
	if err := checkHeaders(req.Headers); err != nil {
		return nil, err
	}
	if err := checkURLLength(base, req); err != nil {
		return nil, err
	}
	if _, has := ctx.Deadline(); !has && c.budget > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.budget)
		defer cancel()
	}

	token, err := c.tokens.Token(ctx, key)
	if err != nil {
		return nil, err
	}
	// Only reads are sent again after a failure the instance may have seen:
	// PUT and DELETE are idempotent in HTTP, but a PUT that writes a
	// journal field adds an entry each time, and a repeated DELETE answers
	// 404 for a delete that worked.
	write := method != http.MethodGet
	refreshed := false
	for attempt := 0; ; attempt++ {
		resp, reached, err := c.attempt(ctx, base, method, token, req)
		if err != nil {
			resend := !write || !reached
			if ctx.Err() == nil && resend && attempt < 2 && isTransient(err) {
				if c.backoff(ctx, attempt) == nil {
					continue
				}
			}
			err = classifyTransportError(ctx, err)
			if write && reached {
				return nil, outcomeUnknown(method, err)
			}
			return nil, err
		}

		switch {
		case resp.Status == http.StatusUnauthorized && !resp.IsJSON():
			return nil, unavailable(resp)
		case resp.Status == http.StatusUnauthorized:
			if refreshed {
				// A token that was refreshed a moment ago is still refused:
				// the grant no longer works, so the user must link again.
				if err := c.tokens.Expire(ctx, key, "the API refused a freshly refreshed token"); err != nil {
					return nil, err
				}
				return nil, errNeedsLinkAfter401
			}
			token, err = c.tokens.ForceRefresh(ctx, key, token)
			if err != nil {
				return nil, err
			}
			refreshed = true
			continue
		case resp.Status == http.StatusTooManyRequests:
			wait, limited := retryAfter(resp)
			if attempt < 2 && fits(ctx, wait) {
				if err := c.sleep(ctx, wait); err == nil {
					continue
				}
			}
			return nil, limited
		case resp.Status == http.StatusGatewayTimeout && !resp.IsJSON() && write:
			// A proxy gave up waiting for the instance, which may still
			// be making the change.
			return nil, &OutcomeUnknownError{Method: method, Reason: "a gateway in front of the instance answered HTTP 504: it gave up waiting for the instance's answer"}
		case resp.Status >= 500:
			if !write && attempt < 2 && c.backoff(ctx, attempt) == nil {
				continue
			}
			if !resp.IsJSON() {
				if write {
					// A page from a proxy or load balancer, not ServiceNow's
					// answer: the write may have reached the instance.
					return nil, &OutcomeUnknownError{Method: method, Reason: fmt.Sprintf(
						"the answer was HTTP %d with an HTML page (maintenance, an upgrade or a proxy error) instead of ServiceNow's own answer",
						resp.Status)}
				}
				return nil, unavailable(resp)
			}
			return nil, apiError(resp)
		case resp.Status >= 400:
			if !resp.IsJSON() {
				return nil, refused(resp)
			}
			return nil, apiError(resp)
		case resp.Status >= 300:
			return nil, &UnavailableError{Status: resp.Status, Reason: "the instance answered with a redirect (to " + redirectHost(resp) + "); it may be asleep or behind a sign-on page"}
		}

		// 2xx: anything but JSON (or an empty body) is not data. A raw
		// download may be any type, but the instance's own hibernation
		// page is still not the file that was asked for.
		if len(resp.Body) > 0 && req.Accept == "" && !resp.IsJSON() {
			return nil, unavailable(resp)
		}
		if req.Accept != "" && isInstancePage(resp) {
			return nil, unavailable(resp)
		}
		if req.Accept == "" && resp.IsJSON() && isErrorEnvelope(resp.Body) {
			// ServiceNow sometimes reports a failure with a success status.
			return nil, apiError(resp)
		}
		return resp, nil
	}
}

var errNeedsLinkAfter401 = &NeedsLinkError{Reason: "ServiceNow refused the account's freshly refreshed token"}

// NeedsLinkError means the account must be linked again.
type NeedsLinkError struct{ Reason string }

func (e *NeedsLinkError) Error() string { return e.Reason }

// attempt sends once, bounded by the per-request budget as well as by
// the call's own deadline. reached reports whether a connection to the
// instance was open, so that the request may have arrived there even
// when no answer came back.
func (c *Client) attempt(ctx context.Context, base *url.URL, method, token string, req Request) (resp *Response, reached bool, err error) {
	var connected atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { connected.Store(true) },
	})
	if c.budget <= 0 {
		resp, err = c.send(ctx, base, method, token, req)
		return resp, connected.Load(), err
	}
	actx, cancel := context.WithTimeout(ctx, c.budget)
	defer cancel()
	resp, err = c.send(actx, base, method, token, req)
	if err != nil && ctx.Err() == nil && actx.Err() != nil {
		return nil, connected.Load(), &attemptTimeout{}
	}
	return resp, connected.Load(), err
}

// attemptTimeout is one attempt cut off by the per-request budget while
// the call itself still had time: transient, so worth another try when
// sending again cannot repeat a change.
type attemptTimeout struct{}

func (e *attemptTimeout) Error() string {
	return "it did not answer within the per-request time limit (timeouts.request)"
}

func (c *Client) send(ctx context.Context, base *url.URL, method, token string, req Request) (*Response, error) {
	u := *base
	u.Path = strings.TrimRight(base.Path, "/") + req.Path
	u.RawPath = ""
	u.RawQuery = req.Query.Encode()
	u.Fragment = ""

	var body io.Reader
	if req.Body != nil {
		body = bytes.NewReader(req.Body)
	}
	hr, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, &InputError{Msg: "cannot build the request: " + err.Error()}
	}
	for name, values := range req.Headers {
		if allowedRequestHeaders[http.CanonicalHeaderKey(name)] {
			hr.Header[http.CanonicalHeaderKey(name)] = append([]string(nil), values...)
		}
	}
	hr.Header.Set("Accept", "application/json")
	if req.Accept != "" {
		hr.Header.Set("Accept", req.Accept)
	}
	if req.Body != nil {
		ct := req.ContentType
		if ct == "" {
			ct = "application/json"
		}
		hr.Header.Set("Content-Type", ct)
	}
	hr.Header.Set("Authorization", "Bearer "+token)

	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()

	limit := req.MaxBody
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	data, err := readLimited(resp.Body, resp.ContentLength, limit+1)
	if err != nil {
		return nil, &UnavailableError{Status: resp.StatusCode, Reason: "the answer was cut short while it was being read (" + plainNetError(err) + ")", Partial: true}
	}
	out := &Response{Status: resp.StatusCode, Header: cleanHeaders(resp.Header), Body: data}
	if int64(len(data)) > limit {
		out.Body = data[:limit]
		out.Truncated = true
		// Drain nothing more: closing the body abandons the rest.
	} else if resp.ContentLength > 0 && int64(len(data)) < resp.ContentLength {
		return nil, &UnavailableError{Status: resp.StatusCode, Reason: "the answer was cut short", Partial: true}
	}
	// Raw downloads (Accept set by the caller) are bytes, not API JSON.
	if req.Accept == "" && !out.Truncated && out.IsJSON() && len(bytes.TrimSpace(data)) > 0 {
		if !wholeJSON(out, req.Compact) {
			return nil, &UnavailableError{Status: resp.StatusCode, Reason: "the answer is incomplete or malformed JSON (cut short in transit?)", Partial: true}
		}
	}
	return out, nil
}

// wholeJSON reports whether r.Body is one whole JSON value, compacting it
// in the same scan when compact is set.
func wholeJSON(r *Response, compact bool) bool {
	if !compact {
		return json.Valid(r.Body)
	}
	var buf bytes.Buffer
	buf.Grow(len(r.Body))
	if json.Compact(&buf, r.Body) != nil {
		return false
	}
	r.Body, r.Compacted = buf.Bytes(), true
	return true
}

func (c *Client) backoff(ctx context.Context, attempt int) error {
	d := time.Duration(200*(1<<attempt)) * time.Millisecond
	d += time.Duration(rand.Int64N(int64(d / 2)))
	if !fits(ctx, d) {
		return context.DeadlineExceeded
	}
	return c.sleep(ctx, d)
}

// fits reports whether waiting d still leaves time for another attempt.
func fits(ctx context.Context, d time.Duration) bool {
	dl, ok := ctx.Deadline()
	if !ok {
		return d <= 5*time.Second
	}
	return time.Until(dl) > d+time.Second
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// MaxURLLength is the longest request URL the client sends. Instances
// and the proxies in front of them refuse far shorter URLs than Go
// builds (commonly 8 to 16 KiB, with HTTP 414 or 431), and a URL of
// megabytes costs memory several times its size on the way out.
const MaxURLLength = 16 << 10

// URLTooLongError is a request refused before it was sent because its
// URL would be longer than MaxURLLength.
type URLTooLongError struct {
	// Length is the URL's length in bytes, or a lower bound of it when
	// that alone is past the limit.
	Length int
	// Param is the query parameter that takes up most of it.
	Param string
}

func (e *URLTooLongError) Error() string {
	return fmt.Sprintf("the request was not sent: its URL would be at least %d bytes, past the limit of %d KiB, mostly for query parameter %s",
		e.Length, MaxURLLength>>10, e.Param)
}

// checkURLLength refuses a request whose URL would be past MaxURLLength.
// The raw lengths are summed first, so a huge value is refused without
// being escaped.
func checkURLLength(base *url.URL, req Request) error {
	fixed := len(base.String()) + len(req.Path) + 1
	raw, longest, longestLen := fixed, "", -1
	for k, vs := range req.Query {
		for _, v := range vs {
			raw += len(k) + len(v) + 2
			if len(v) > longestLen {
				longest, longestLen = k, len(v)
			}
		}
	}
	if raw > MaxURLLength {
		return &URLTooLongError{Length: raw, Param: longest}
	}
	if n := fixed + len(req.Query.Encode()); n > MaxURLLength {
		return &URLTooLongError{Length: n, Param: longest}
	}
	return nil
}

func checkHeaders(h http.Header) error {
	for name, values := range h {
		if err := CheckHeader(name, values...); err != nil {
			return err
		}
	}
	return nil
}

// CheckHeader refuses a caller header whose name or value holds a
// control character: Go would refuse to send it, and a CR or LF in it
// is an attempt to add headers of the caller's own. The error is an
// *InputError naming the header.
func CheckHeader(name string, values ...string) error {
	if strings.ContainsFunc(name, isControl) {
		return &InputError{Msg: fmt.Sprintf("header name %q holds a control character; send the plain name", name)}
	}
	for _, v := range values {
		if strings.ContainsFunc(v, isControl) {
			return &InputError{Msg: fmt.Sprintf("the value of header %s holds a control character (such as a line break); send it on one line", name)}
		}
	}
	return nil
}

// isControl reports an ASCII control character other than tab.
func isControl(r rune) bool { return (r < 0x20 && r != '\t') || r == 0x7f }

var allowedMethods = map[string]bool{
	http.MethodGet: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true,
}

// allowedRequestHeaders are the caller headers passed on; Authorization
// and cookies are ours alone.
var allowedRequestHeaders = map[string]bool{
	"X-No-Response-Body": true,
	"Accept-Language":    true,
}

// AllowedRequestHeaders lists, for messages, the caller headers passed on.
func AllowedRequestHeaders() []string {
	return []string{"X-No-Response-Body", "Accept-Language"}
}

// passedResponseHeaders are the answer headers worth showing a model.
var passedResponseHeaders = []string{
	"Content-Type", "X-Total-Count", "Link", "Location", "Retry-After",
	"X-Ratelimit-Limit", "X-Ratelimit-Reset", "X-Ratelimit-Rule", "X-Attachment-Metadata",
}

func cleanHeaders(h http.Header) http.Header {
	out := http.Header{}
	for _, k := range passedResponseHeaders {
		if v := h.Values(k); len(v) > 0 {
			out[k] = v
		}
	}
	return out
}

// isInstancePage spots the instance's hibernation page served in place of
// a download: HTML that names the hibernating instance.
func isInstancePage(r *Response) bool {
	if !strings.Contains(r.Header.Get("Content-Type"), "html") {
		return false
	}
	head := strings.ToLower(string(r.Body[:min(len(r.Body), 4096)]))
	return strings.Contains(head, "instance hibernating") || strings.Contains(head, "this instance is hibernating")
}

func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

func redirectHost(r *Response) string {
	if u, err := url.Parse(r.Header.Get("Location")); err == nil && u.Host != "" {
		return u.Host
	}
	return "another page"
}

func retryAfter(r *Response) (time.Duration, *RateLimitedError) {
	e := &RateLimitedError{Limit: r.Header.Get("X-Ratelimit-Limit")}
	if s := r.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil && n >= 0 {
			e.RetryAfter = time.Duration(n) * time.Second
		} else if t, err := http.ParseTime(s); err == nil {
			e.RetryAfter = time.Until(t)
		}
	}
	if e.RetryAfter <= 0 {
		if n, err := strconv.ParseInt(r.Header.Get("X-Ratelimit-Reset"), 10, 64); err == nil {
			e.RetryAfter = time.Until(time.Unix(n, 0))
		}
	}
	if e.RetryAfter <= 0 {
		e.RetryAfter = time.Second
	}
	e.At = time.Now().Add(e.RetryAfter).UTC()
	if env := parseEnvelope(r.Body); env != nil {
		e.Message, e.Detail = env.Message, env.Detail
	}
	return e.RetryAfter, e
}

func isTransient(err error) bool {
	var late *attemptTimeout
	if errors.As(err, &late) {
		return true
	}
	var ue *UnavailableError
	if errors.As(err, &ue) {
		return false
	}
	return !errors.Is(err, context.Canceled)
}

// readLimited reads at most limit bytes. The buffer starts at the declared
// length when there is one (one allocation) and otherwise grows by
// doubling, never past limit, so a long answer costs at most about twice
// the limit in garbage rather than the doubling of an unbounded read.
func readLimited(r io.Reader, declared, limit int64) ([]byte, error) {
	size := min(int64(16<<10), limit)
	if declared > 0 {
		size = min(declared+1, limit)
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) >= limit {
				return buf, nil
			}
			grown := make([]byte, len(buf), min(2*int64(cap(buf)), limit))
			copy(grown, buf)
			buf = grown
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
