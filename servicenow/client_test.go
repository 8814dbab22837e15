package servicenow

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"servicenow-mcp/config"
	"servicenow-mcp/storage"
)

func TestValidatePath(t *testing.T) {
	tests := []struct {
		path string
		ok   bool
	}{
		{"/api/now/table/incident", true},
		{"/api/now/table/incident/0123456789abcdef0123456789abcdef", true},
		{"/api/sn_sc/servicecatalog/items", true},
		{"", false},
		{"api/now/table/incident", false},
		{"https://evil.example/api/now/table/incident", false},
		{"//evil.example/api/now", false},
		{"/api//now/table", false},
		{"/api/now/../../oauth_token.do", false},
		{"/api/./now", false},
		{"/api/now/table/incident?sysparm_limit=1", false},
		{"/api/now/table/incident#x", false},
		{"/api/now/%2e%2e/x", false},
		{"/api/now\\..\\x", false},
		{"/api/now/table/inc\nident", false},
		{"/login.do", false},
		{"/oauth_token.do", false},
		{"/apix/now", false},
	}
	for _, tt := range tests {
		err := ValidatePath(tt.path)
		if (err == nil) != tt.ok {
			t.Errorf("ValidatePath(%q) = %v, want ok=%v", tt.path, err, tt.ok)
		}
		var ie *InputError
		if err != nil && !errors.As(err, &ie) {
			t.Errorf("ValidatePath(%q) error is %T, want *InputError", tt.path, err)
		}
	}
}

// fakeTokens hands out numbered tokens and counts refreshes.
type fakeTokens struct {
	refreshes atomic.Int32
	expired   atomic.Int32
}

func (f *fakeTokens) Token(context.Context, storage.AccountKey) (string, error) { return "tok-0", nil }
func (f *fakeTokens) ForceRefresh(context.Context, storage.AccountKey, string) (string, error) {
	n := f.refreshes.Add(1)
	return "tok-" + string(rune('0'+n)), nil
}
func (f *fakeTokens) Expire(context.Context, storage.AccountKey, string) error {
	f.expired.Add(1)
	return nil
}

func newTestClient(t *testing.T, h http.HandlerFunc) (*Client, *fakeTokens) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	ft := &fakeTokens{}
	c, err := NewClient(ft, []config.Connection{{Name: "x", InstanceURL: srv.URL}}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.sleep = func(ctx context.Context, d time.Duration) error { return ctx.Err() }
	return c, ft
}

var key = storage.AccountKey{Connection: "x", User: "alice"}

func TestDoClassifiesAnswers(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		handler    func(calls int32, w http.ResponseWriter, r *http.Request)
		wantErr    any
		wantCalls  int32
		wantStatus int
	}{
		{"json ok", "GET", func(_ int32, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json;charset=UTF-8")
			_, _ = w.Write([]byte(`{"result":[]}`))
		}, nil, 1, 200},
		{"hibernating 200 html", "GET", func(_ int32, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte(`<html><title>Instance Hibernating page</title>This instance is hibernating</html>`))
		}, &UnavailableError{}, 1, 0},
		{"503 html retried then unavailable", "GET", func(_ int32, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(503)
		}, &UnavailableError{}, 3, 0},
		// A write is sent once: a PUT that writes a journal field adds an
		// entry each time, and a repeated DELETE answers 404.
		{"500 json not retried for PUT", "PUT", func(_ int32, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(500)
			_, _ = w.Write([]byte(`{"error":{"message":"boom","detail":null},"status":"failure"}`))
		}, &APIError{}, 1, 0},
		{"502 html after a DELETE: outcome unknown, not resent", "DELETE", func(_ int32, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(502)
			_, _ = w.Write([]byte(`<html><body>Bad Gateway</body></html>`))
		}, &OutcomeUnknownError{}, 1, 0},
		{"503 html after a PUT: outcome unknown, not resent", "PUT", func(_ int32, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(503)
		}, &OutcomeUnknownError{}, 1, 0},
		{"500 json not retried for POST", "POST", func(_ int32, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(500)
			_, _ = w.Write([]byte(`{"error":{"message":"boom","detail":null},"status":"failure"}`))
		}, &APIError{}, 1, 0},
		{"403 envelope", "GET", func(_ int32, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(403)
			_, _ = w.Write([]byte(`{"error":{"message":"Operation Failed","detail":"ACL Exception Insert Failed due to security constraints"},"status":"failure"}`))
		}, &APIError{}, 1, 0},
		{"401 then ok after one refresh", "GET", func(n int32, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			if r.Header.Get("Authorization") == "Bearer tok-0" {
				w.WriteHeader(401)
				_, _ = w.Write([]byte(`{"error":{"message":"User Not Authenticated","detail":"Required to provide Auth information"},"status":"failure"}`))
				return
			}
			_, _ = w.Write([]byte(`{"result":[]}`))
		}, nil, 2, 200},
		{"401 twice needs link", "GET", func(_ int32, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(401)
			_, _ = w.Write([]byte(`{"error":{"message":"User Not Authenticated"},"status":"failure"}`))
		}, &NeedsLinkError{}, 2, 0},
		{"429 too long answers at once", "GET", func(_ int32, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(429)
			_, _ = w.Write([]byte(`{"error":{"message":"Rate limit exceeded","detail":"Rate limit of 100 requests per hour for Table API exceeded"},"status":"failure"}`))
		}, &RateLimitedError{}, 1, 0},
		{"json cut short", "GET", func(_ int32, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"result":[{"a":"1"},{"a":`))
		}, &UnavailableError{}, 1, 0},
		{"redirect not followed", "GET", func(_ int32, w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://signon.example.com/login", http.StatusFound)
		}, &UnavailableError{}, 1, 0},
		{"200 with the error envelope is an API error", "GET", func(_ int32, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"status":"failure","error":{"detail":null,"message":"Exception while executing request: null"}}`))
		}, &APIError{}, 1, 0},
		{"200 with an error beside the result is data", "GET", func(_ int32, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"result":[{"error":"x"}],"error":{"message":"partial"}}`))
		}, nil, 1, 200},
		{"431 html from a proxy is a refused request", "GET", func(_ int32, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(431)
			_, _ = w.Write([]byte(`<html><body>Request Header Fields Too Large</body></html>`))
		}, &RefusedError{}, 1, 0},
		{"414 untyped from a proxy is a refused request", "GET", func(_ int32, w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(414)
		}, &RefusedError{}, 1, 0},
		{"400 html from a proxy is a refused request", "POST", func(_ int32, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(400)
			_, _ = w.Write([]byte(`<html><body>Bad Request</body></html>`))
		}, &RefusedError{}, 1, 0},
		{"408 html is the instance being unavailable", "GET", func(_ int32, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(408)
		}, &UnavailableError{}, 1, 0},
		{"404 hibernation page is the instance being unavailable", "GET", func(_ int32, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`<html><title>Instance Hibernating page</title></html>`))
		}, &UnavailableError{}, 1, 0},
	}
	// Asking for a compact body must not change how an answer is judged.
	for _, tt := range tests {
		for _, compact := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/compact=%v", tt.name, compact), func(t *testing.T) {
				var calls atomic.Int32
				c, ft := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
					if r.Header.Get("Cookie") != "" {
						t.Errorf("cookie forwarded")
					}
					tt.handler(calls.Add(1), w, r)
				})
				resp, err := c.Do(context.Background(), key, Request{Method: tt.method, Path: "/api/now/table/incident", Compact: compact})
				if tt.wantErr == nil {
					if err != nil {
						t.Fatalf("Do: %v", err)
					}
					if resp.Status != tt.wantStatus {
						t.Errorf("status %d, want %d", resp.Status, tt.wantStatus)
					}
				} else if err == nil || !sameType(err, tt.wantErr) {
					t.Fatalf("Do error = %T %v, want %T", err, err, tt.wantErr)
				}
				if got := calls.Load(); got != tt.wantCalls {
					t.Errorf("instance saw %d requests, want %d", got, tt.wantCalls)
				}
				if tt.name == "429 too long answers at once" && ft.refreshes.Load() != 0 {
					t.Errorf("429 caused a refresh")
				}
			})
		}
	}
}

// TestDoCompacts: with Compact, a JSON answer comes back compacted (and
// says so); without, it comes back as the instance sent it.
func TestDoCompacts(t *testing.T) {
	pretty := "{\n  \"result\" : [ { \"a\" : \"x  y\" } ]\n}\n"
	c, _ := newTestClient(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(pretty))
	})
	tests := []struct {
		compact bool
		want    string
	}{
		{false, pretty},
		{true, `{"result":[{"a":"x  y"}]}`},
	}
	for _, tt := range tests {
		resp, err := c.Do(context.Background(), key, Request{Method: "GET", Path: "/api/now/table/incident", Compact: tt.compact})
		if err != nil {
			t.Fatal(err)
		}
		if string(resp.Body) != tt.want || resp.Compacted != tt.compact {
			t.Errorf("Compact=%v: body %q (compacted %v), want %q", tt.compact, resp.Body, resp.Compacted, tt.want)
		}
	}
}

func sameType(err error, want any) bool {
	switch want.(type) {
	case *UnavailableError:
		var e *UnavailableError
		return errors.As(err, &e)
	case *APIError:
		var e *APIError
		return errors.As(err, &e)
	case *NeedsLinkError:
		var e *NeedsLinkError
		return errors.As(err, &e)
	case *RateLimitedError:
		var e *RateLimitedError
		return errors.As(err, &e)
	case *OutcomeUnknownError:
		var e *OutcomeUnknownError
		return errors.As(err, &e)
	case *RefusedError:
		var e *RefusedError
		return errors.As(err, &e)
	}
	return false
}

func TestDoStripsCallerCredentials(t *testing.T) {
	c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("Authorization"); got != "Bearer tok-0" {
			t.Errorf("Authorization = %q", got)
		}
		if r.Header.Get("Cookie") != "" || r.Header.Get("X-Evil") != "" {
			t.Errorf("caller header forwarded: %v", r.Header)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Set-Cookie", "JSESSIONID=abc")
		_, _ = w.Write([]byte(`{"result":{}}`))
	})
	resp, err := c.Do(context.Background(), key, Request{Method: "GET", Path: "/api/now/table/incident",
		Headers: http.Header{"Authorization": {"Bearer stolen"}, "Cookie": {"a=b"}, "X-Evil": {"1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("Set-Cookie") != "" {
		t.Error("Set-Cookie passed back")
	}
}

func TestDoCapsBody(t *testing.T) {
	big := `{"result":[` + strings.Repeat(`{"a":"xxxxxxxxxx"},`, 10000) + `{"a":"end"}]}`
	c, _ := newTestClient(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(big))
	})
	resp, err := c.Do(context.Background(), key, Request{Method: "GET", Path: "/api/now/table/incident", MaxBody: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Truncated || len(resp.Body) != 4096 {
		t.Fatalf("Truncated=%v len=%d, want cut at 4096", resp.Truncated, len(resp.Body))
	}
}

func TestRawDownloads(t *testing.T) {
	tests := []struct {
		name    string
		ct      string
		body    string
		wantErr bool
	}{
		{"json file that is not valid JSON", "application/json", `{"half":`, false},
		{"html attachment", "text/html", `<html><body>minutes</body></html>`, false},
		{"hibernation page instead of the file", "text/html", `<html><title>Instance Hibernating page</title></html>`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newTestClient(t, func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", tt.ct)
				_, _ = w.Write([]byte(tt.body))
			})
			resp, err := c.Do(context.Background(), key, Request{Method: "GET", Path: "/api/now/attachment/x/file", Accept: "*/*"})
			if tt.wantErr {
				var ue *UnavailableError
				if !errors.As(err, &ue) {
					t.Fatalf("err = %v, want UnavailableError", err)
				}
				return
			}
			if err != nil || string(resp.Body) != tt.body {
				t.Fatalf("Do = %v, %v", resp, err)
			}
		})
	}
}

func TestReadLimited(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 10_000) // 100,000 bytes
	boom := errors.New("connection reset")
	cases := []struct {
		name     string
		r        io.Reader
		declared int64
		limit    int64
		want     int
		wantErr  error
	}{
		{"declared, under the limit", bytes.NewReader(body), int64(len(body)), 200_000, len(body), nil},
		{"undeclared, under the limit", bytes.NewReader(body), -1, 200_000, len(body), nil},
		{"undeclared, over the limit", bytes.NewReader(body), -1, 40_001, 40_001, nil},
		{"declared, over the limit", bytes.NewReader(body), int64(len(body)), 40_001, 40_001, nil},
		{"limit of one byte", bytes.NewReader(body), -1, 1, 1, nil},
		{"empty", bytes.NewReader(nil), 0, 100, 0, nil},
		{"one byte at a time", iotest.OneByteReader(bytes.NewReader(body[:5000])), -1, 100_000, 5000, nil},
		{"error part way", io.MultiReader(bytes.NewReader(body[:3000]), iotest.ErrReader(boom)), -1, 100_000, 3000, boom},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := readLimited(c.r, c.declared, c.limit)
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("error %v, want %v", err, c.wantErr)
			}
			if len(got) != c.want || !bytes.Equal(got, body[:c.want]) {
				t.Fatalf("read %d bytes, want the first %d", len(got), c.want)
			}
			if int64(cap(got)) > max(c.limit, int64(16<<10)) {
				t.Fatalf("buffer capacity %d is past the limit %d", cap(got), c.limit)
			}
		})
	}
}

// A write that may have reached the instance but got no whole answer is
// sent once and reported as having an unknown outcome; a read in the same
// trouble is retried, and a failure before anything was sent is plain.
func TestDoWriteWithoutAnswerHasUnknownOutcome(t *testing.T) {
	slow := func(w http.ResponseWriter, r *http.Request) {
		// With the body read, the server notices the client hanging up.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
	}
	cut := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"result":{"sys_id":`))
	}
	gatewayTimeout := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusGatewayTimeout)
	}
	tests := []struct {
		name      string
		method    string
		handler   http.HandlerFunc
		callLimit time.Duration // the caller's own deadline
		cancel    time.Duration // the caller cancels after this long
		unknown   bool
		wantCalls int32
		reason    string
	}{
		{"POST past the request bound", "POST", slow, 5 * time.Second, 0, true, 1, "per-request time limit"},
		{"PUT past the request bound", "PUT", slow, 5 * time.Second, 0, true, 1, "per-request time limit"},
		{"PATCH past the request bound", "PATCH", slow, 5 * time.Second, 0, true, 1, "per-request time limit"},
		{"DELETE past the request bound", "DELETE", slow, 5 * time.Second, 0, true, 1, "per-request time limit"},
		{"GET past the request bound is retried", "GET", slow, 5 * time.Second, 0, false, 3, "per-request time limit"},
		{"POST past the call's deadline", "POST", slow, 150 * time.Millisecond, 0, true, 1, "call's time limit"},
		{"POST cancelled by the caller", "POST", slow, 5 * time.Second, 100 * time.Millisecond, true, 1, "cancelled"},
		{"POST answer cut short", "POST", cut, 5 * time.Second, 0, true, 1, "HTTP 201"},
		{"GET answer cut short", "GET", cut, 5 * time.Second, 0, false, 1, "cut short"},
		{"POST answered 504 by a gateway", "POST", gatewayTimeout, 5 * time.Second, 0, true, 1, "504"},
		{"GET answered 504 by a gateway is retried", "GET", gatewayTimeout, 5 * time.Second, 0, false, 3, "504"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int32
			c := newBoundedClient(t, 300*time.Millisecond, func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				tt.handler(w, r)
			})
			ctx, cancel := context.WithTimeout(context.Background(), tt.callLimit)
			defer cancel()
			if tt.cancel > 0 {
				time.AfterFunc(tt.cancel, cancel)
			}
			_, err := c.Do(ctx, key, Request{Method: tt.method, Path: "/api/now/table/incident", Body: []byte(`{}`)})

			var unknown *OutcomeUnknownError
			if got := errors.As(err, &unknown); got != tt.unknown {
				t.Fatalf("Do error = %T %v; outcome unknown %v, want %v", err, err, got, tt.unknown)
			}
			if unknown != nil && unknown.Method != tt.method {
				t.Errorf("the error names %s, want %s", unknown.Method, tt.method)
			}
			if err == nil || !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("Do error %v does not say %q", err, tt.reason)
			}
			if got := calls.Load(); got != tt.wantCalls {
				t.Errorf("instance saw %d requests, want %d", got, tt.wantCalls)
			}
		})
	}
}

// A write that never reached the instance (nothing listens) did not
// happen: its failure is a plain one.
func TestDoWriteRefusedConnectionIsNotUnknown(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close()
	c, err := NewClient(&fakeTokens{}, []config.Connection{{Name: "x", InstanceURL: addr}}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.sleep = func(ctx context.Context, d time.Duration) error { return ctx.Err() }
	for _, method := range []string{"POST", "DELETE"} {
		_, err := c.Do(context.Background(), key, Request{Method: method, Path: "/api/now/table/incident", Body: []byte(`{}`)})
		var unknown *OutcomeUnknownError
		var ue *UnavailableError
		if errors.As(err, &unknown) || !errors.As(err, &ue) {
			t.Errorf("%s to a closed port: %T %v, want a plain UnavailableError", method, err, err)
		}
	}
}

func newBoundedClient(t *testing.T, budget time.Duration, h http.HandlerFunc) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := NewClient(&fakeTokens{}, []config.Connection{{Name: "x", InstanceURL: srv.URL}}, budget)
	if err != nil {
		t.Fatal(err)
	}
	c.sleep = func(ctx context.Context, d time.Duration) error { return ctx.Err() }
	return c
}

// Requests that cannot be sent as asked are refused before anything
// reaches the instance, as the caller's problem, never as the instance
// being unavailable.
func TestDoRefusesBeforeSending(t *testing.T) {
	long := strings.Repeat("x", MaxURLLength)
	tests := []struct {
		name    string
		query   url.Values
		headers http.Header
		wantErr any
		want    string
	}{
		{"line break in a header value", nil, http.Header{"Accept-Language": {"fr\r\nX-Injected: 1"}},
			&InputError{}, "Accept-Language"},
		{"control character in a header name", nil, http.Header{"Accept-Language\n": {"fr"}},
			&InputError{}, "control character"},
		{"URL past the limit", url.Values{"sysparm_query": {long}, "sysparm_limit": {"1"}}, nil,
			&URLTooLongError{}, "sysparm_query"},
		{"URL past the limit once escaped", url.Values{"sysparm_query": {strings.Repeat("^", MaxURLLength/2)}}, nil,
			&URLTooLongError{}, "sysparm_query"},
		{"URL within the limit", url.Values{"sysparm_query": {long[:MaxURLLength/2]}}, http.Header{"Accept-Language": {"fr"}},
			nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			c, _ := newTestClient(t, func(w http.ResponseWriter, _ *http.Request) {
				calls.Add(1)
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"result":[]}`))
			})
			_, err := c.Do(context.Background(), key, Request{Method: "GET", Path: "/api/now/table/incident", Query: tt.query, Headers: tt.headers})
			if tt.wantErr == nil {
				if err != nil || calls.Load() != 1 {
					t.Fatalf("Do = %v after %d requests, want one answered request", err, calls.Load())
				}
				return
			}
			var input *InputError
			var long *URLTooLongError
			matched := errors.As(err, &input)
			if _, wantLong := tt.wantErr.(*URLTooLongError); wantLong {
				matched = errors.As(err, &long)
			}
			if !matched || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Do error = %T %v, want %T naming %q", err, err, tt.wantErr, tt.want)
			}
			if n := calls.Load(); n != 0 {
				t.Errorf("%d requests reached the instance, want none", n)
			}
		})
	}
}
