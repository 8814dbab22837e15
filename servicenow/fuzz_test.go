package servicenow

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"servicenow-mcp/config"
)

// recorder answers every request itself and remembers where it was sent.
type recorder struct{ reqs []*http.Request }

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.reqs = append(r.reqs, req)
	return &http.Response{
		StatusCode: 302,
		Header: http.Header{
			"Location":     {"https://evil.example.net/steal"},
			"Content-Type": {"application/json"},
			"Set-Cookie":   {"JSESSIONID=x"},
		},
		Body:    io.NopCloser(strings.NewReader(`{}`)),
		Request: req,
	}, nil
}

// FuzzRequestStaysOnInstance: whatever path, query and headers a caller
// sends, no request leaves for another host, the caller's credentials
// never travel, and a redirect is never followed with our token.
func FuzzRequestStaysOnInstance(f *testing.F) {
	seeds := [][4]string{
		{"/api/now/table/incident", "sysparm_query", "active=true", "Accept-Language"},
		{"//evil.example.net/api", "a", "b", "Authorization"},
		{"/api/../oauth_token.do", "x", "y", "Cookie"},
		{"/api/now/table/x@evil.example.net", "url", "http://evil.example.net", "Host"},
		{"/api/now/table/%2e%2e/", "a&b", "c#d", "X-Forwarded-Host"},
		{"/api/now\\..\\..", "", "", "X-No-Response-Body"},
		{"http://evil.example.net/api/now", "k", "v", "Proxy-Authorization"},
		{"/api/now/table/incident\r\nHost: evil", "k\r\n", "v", "Cookie2"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, path, qk, qv, header string) {
		rec := &recorder{}
		c, err := NewClient(&fakeTokens{}, []config.Connection{{Name: "x", InstanceURL: "https://dev1.service-now.com"}}, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.http.Transport = rec
		c.sleep = func(ctx context.Context, d time.Duration) error { return nil }
		h := http.Header{}
		if header != "" {
			h[header] = []string{"caller-secret"}
		}
		_, _ = c.Do(context.Background(), key, Request{Method: "GET", Path: path, Query: url.Values{qk: {qv}}, Headers: h})
		for _, r := range rec.reqs {
			if r.URL.Host != "dev1.service-now.com" || r.URL.Scheme != "https" || r.Host != "" && r.Host != "dev1.service-now.com" {
				t.Fatalf("request went to %s://%s (Host %q) for path %q", r.URL.Scheme, r.URL.Host, r.Host, path)
			}
			if !strings.HasPrefix(r.URL.Path, "/api/") {
				t.Fatalf("request left /api/: %q", r.URL.Path)
			}
			if got := r.Header.Get("Authorization"); got != "Bearer tok-0" {
				t.Fatalf("Authorization = %q", got)
			}
			for name, vals := range r.Header {
				for _, v := range vals {
					if strings.Contains(v, "caller-secret") && name != "Accept-Language" && name != "X-No-Response-Body" {
						t.Fatalf("caller header %s forwarded", name)
					}
				}
			}
		}
		if len(rec.reqs) > 3 {
			t.Fatalf("%d requests for one call: a redirect was followed", len(rec.reqs))
		}
	})
}
