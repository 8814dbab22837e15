package servicenow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// InputError is a request refused before anything was sent.
type InputError struct{ Msg string }

func (e *InputError) Error() string { return e.Msg }

// APIError is ServiceNow's own error envelope with the HTTP status.
type APIError struct {
	Status  int
	Message string
	Detail  string
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("ServiceNow answered HTTP %d", e.Status)
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

// Hint says what the model can do about an API error.
func (e *APIError) Hint() string {
	switch {
	case e.Status == 403 && strings.Contains(e.Detail+e.Message, "query"):
		return "The user may not read a field used in the query; remove that condition or ask an admin for read access to the field."
	case e.Status == 403:
		return "The signed-in ServiceNow user lacks a role or an ACL allows this operation for (for example itil for incidents); ask a ServiceNow admin, or try as a user who has it."
	case e.Status == 404:
		return "The record does not exist, or an ACL hides it from this user."
	case e.Status == 400 && strings.HasPrefix(e.Message, "Invalid table"):
		return "Check the table name (for example incident, sys_user, change_request)."
	case e.Status == 400:
		return "Check the request's fields and values."
	case e.Status < 300:
		return "ServiceNow reported this error in an answer whose HTTP status said success; go by the error, not the status."
	}
	return ""
}

// UnavailableError means the instance did not answer with data: down,
// hibernating, behind a proxy error page, or cut short. Tokens are fine.
type UnavailableError struct {
	Status      int
	Reason      string
	Hibernating bool
	Partial     bool
}

func (e *UnavailableError) Error() string {
	if e.Hibernating {
		return "the ServiceNow instance is hibernating (a developer instance sleeps when idle): wake it by signing in at developer.servicenow.com, then retry"
	}
	return "the ServiceNow instance is unavailable: " + e.Reason
}

// OutcomeUnknownError is a write (POST, PUT, PATCH or DELETE) that may
// have reached the instance but got no whole answer: cut off by a time
// limit, a cancellation or a broken connection, or its answer cut short.
// The change may or may not have been made, so it must be checked for
// before the write is repeated. Err, when set, is what cut the call off.
type OutcomeUnknownError struct {
	Method string
	Reason string
	Err    error
}

func (e *OutcomeUnknownError) Error() string {
	return fmt.Sprintf("the outcome of the %s is unknown: it was sent to the instance, but %s", e.Method, e.Reason)
}

func (e *OutcomeUnknownError) Unwrap() error { return e.Err }

// outcomeUnknown describes the transport failure err of a write that
// may have reached the instance.
func outcomeUnknown(method string, err error) *OutcomeUnknownError {
	e := &OutcomeUnknownError{Method: method, Err: err}
	var ue *UnavailableError
	switch {
	case errors.Is(err, context.Canceled):
		e.Reason = "the call was cancelled before the answer arrived"
	case errors.As(err, &ue):
		e.Reason = ue.Reason
		if ue.Status != 0 {
			// A 2xx cut short most likely means the change was made.
			e.Reason += fmt.Sprintf(" (the answer had begun with HTTP %d)", ue.Status)
		}
	default:
		e.Reason = plainNetError(err)
	}
	return e
}

// RefusedError is a 4xx answer without ServiceNow's JSON envelope: the
// instance's web tier or a proxy in front of it refused the request
// itself (414 URL too long, 431 headers too large, 413 body too large,
// 400 malformed, 403 from a firewall). Sending it again as it is fails
// the same way.
type RefusedError struct {
	Status int
	// Kind says what came instead of JSON ("an HTML page").
	Kind string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the request was refused with HTTP %d (%s) and %s instead of ServiceNow's JSON: the instance's web server or a proxy in front of it did not accept it",
		e.Status, http.StatusText(e.Status), e.Kind)
}

// Hint says what the model can change about a refused request.
func (e *RefusedError) Hint() string {
	switch e.Status {
	case http.StatusRequestURITooLong:
		return "The request's URL is too long: give shorter filters or text, or fewer fields."
	case http.StatusRequestHeaderFieldsTooLarge:
		return "The request's headers are too large: leave out or shorten the extra headers."
	case http.StatusRequestEntityTooLarge:
		return "The request's body is too large: send less in one call."
	case http.StatusNotFound:
		return "The path does not exist on this instance; check it (for example /api/now/table/incident)."
	case http.StatusForbidden:
		return "Something in front of ServiceNow blocked the request; change what it may object to, or ask the instance's admin."
	}
	return "Repeating the same request will fail the same way; change the request."
}

// RateLimitedError is a 429 whose Retry-After did not fit the call's time.
type RateLimitedError struct {
	RetryAfter time.Duration
	At         time.Time
	Limit      string
	Message    string
	Detail     string
}

func (e *RateLimitedError) Error() string {
	s := fmt.Sprintf("ServiceNow rate limit reached: retry after %s (at %s)", e.RetryAfter.Round(time.Second), e.At.Format(time.RFC3339))
	if e.Detail != "" {
		s += "; " + e.Detail
	}
	return s
}

type envelope struct {
	Message string
	Detail  string
}

// parseEnvelope reads {"error":{"message","detail"},"status":"failure"}.
func parseEnvelope(body []byte) *envelope {
	var v struct {
		Error *struct {
			Message json.RawMessage `json:"message"`
			Detail  json.RawMessage `json:"detail"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &v) != nil || v.Error == nil {
		return nil
	}
	return &envelope{Message: rawText(v.Error.Message), Detail: rawText(v.Error.Detail)}
}

// isErrorEnvelope reports whether a success answer's body is ServiceNow's
// error envelope rather than data: an "error" object with a message or
// detail, beside "status":"failure" or in place of a "result".
func isErrorEnvelope(body []byte) bool {
	// Outside a string value "error" is a key; a body without it is data,
	// and most are, so they are not decoded a second time.
	if !bytes.Contains(body, []byte(`"error"`)) {
		return false
	}
	var v struct {
		Error *struct {
			Message json.RawMessage `json:"message"`
			Detail  json.RawMessage `json:"detail"`
		} `json:"error"`
		Status string          `json:"status"`
		Result json.RawMessage `json:"result"`
	}
	if json.Unmarshal(body, &v) != nil || v.Error == nil {
		return false
	}
	if rawText(v.Error.Message) == "" && rawText(v.Error.Detail) == "" {
		return false
	}
	return v.Status == "failure" || v.Result == nil
}

func rawText(r json.RawMessage) string {
	var s string
	if json.Unmarshal(r, &s) == nil {
		return s
	}
	if len(r) == 0 || string(r) == "null" {
		return ""
	}
	return string(r)
}

func apiError(r *Response) *APIError {
	e := &APIError{Status: r.Status}
	if env := parseEnvelope(r.Body); env != nil {
		e.Message, e.Detail = env.Message, env.Detail
	}
	return e
}

func unavailable(r *Response) *UnavailableError {
	low := strings.ToLower(string(r.Body[:min(len(r.Body), 64<<10)]))
	e := &UnavailableError{Status: r.Status}
	switch {
	case strings.Contains(low, "hibernat"):
		e.Hibernating = true
		e.Reason = "the instance is hibernating"
	case r.Status >= 500:
		e.Reason = fmt.Sprintf("it answered HTTP %d with %s instead of JSON (maintenance, upgrade or a proxy error); retry later", r.Status, kind(r))
	default:
		e.Reason = fmt.Sprintf("it answered HTTP %d with %s instead of JSON", r.Status, kind(r))
	}
	return e
}

// refused classifies a 4xx answer that is not JSON. The instance's own
// pages (hibernating, a 408 while it is overloaded) are still its being
// unavailable; anything else refused the request itself.
func refused(r *Response) error {
	if e := unavailable(r); e.Hibernating || r.Status == http.StatusRequestTimeout {
		return e
	}
	return &RefusedError{Status: r.Status, Kind: kind(r)}
}

func kind(r *Response) string {
	ct := r.Header.Get("Content-Type")
	if strings.Contains(ct, "html") {
		return "an HTML page"
	}
	if ct == "" {
		return "an untyped body"
	}
	return "content of type " + ct
}

func classifyTransportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return ctx.Err()
		}
		return &UnavailableError{Reason: "it did not answer within the call's time limit"}
	}
	var classified *UnavailableError
	if errors.As(err, &classified) {
		return classified // already says what went wrong (a body cut short)
	}
	var late *attemptTimeout
	if errors.As(err, &late) {
		return &UnavailableError{Reason: late.Error()}
	}
	return &UnavailableError{Reason: plainNetError(err)}
}

// plainNetError describes a transport failure without echoing URLs,
// which may carry query values.
func plainNetError(err error) string {
	var ne net.Error
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "the connection timed out"
	case strings.Contains(err.Error(), "connection refused"):
		return "the connection was refused"
	case strings.Contains(err.Error(), "no such host"):
		return "the host name does not resolve"
	case strings.Contains(err.Error(), "EOF"), strings.Contains(err.Error(), "reset"):
		return "the connection was closed before a full answer arrived"
	case strings.Contains(err.Error(), "certificate"):
		return "the TLS certificate was not accepted"
	}
	return "a network error occurred"
}
