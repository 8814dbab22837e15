package servicenow

import (
	"net/http"
	"testing"
)

// TestUnavailableReason checks the whole sentence a model reads when the
// instance answers something other than JSON.
func TestUnavailableReason(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		contentType string
		body        string
		want        string
	}{
		{"proxy error page", 502, "text/html; charset=utf-8", "<html>Bad Gateway</html>",
			"the ServiceNow instance is unavailable: it answered HTTP 502 with an HTML page instead of JSON (maintenance, upgrade or a proxy error); retry later"},
		{"untyped 503", 503, "", "",
			"the ServiceNow instance is unavailable: it answered HTTP 503 with an untyped body instead of JSON (maintenance, upgrade or a proxy error); retry later"},
		{"plain text 500", 500, "text/plain", "oops",
			"the ServiceNow instance is unavailable: it answered HTTP 500 with content of type text/plain instead of JSON (maintenance, upgrade or a proxy error); retry later"},
		{"html 200", 200, "text/html", "<html>Sign in</html>",
			"the ServiceNow instance is unavailable: it answered HTTP 200 with an HTML page instead of JSON"},
		{"hibernating", 200, "text/html", "<title>Instance Hibernating page</title>",
			"the ServiceNow instance is hibernating (a developer instance sleeps when idle): wake it by signing in at developer.servicenow.com, then retry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.contentType != "" {
				h.Set("Content-Type", tt.contentType)
			}
			got := unavailable(&Response{Status: tt.status, Header: h, Body: []byte(tt.body)}).Error()
			if got != tt.want {
				t.Fatalf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}
