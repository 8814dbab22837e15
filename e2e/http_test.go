package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestHTTPTransports links and uses an account over streamable HTTP, then
// reads it over legacy SSE, each caller identified by its API key; a caller
// without a key is refused.
func TestHTTPTransports(t *testing.T) {
	t.Parallel()
	requireClients(t)
	const bobKey = "e2e-key-for-bob-0123456789abcdef"
	cfg := newServerConfig(t)
	cfg.APIKeys = map[string]string{bobKey: "bob-local"}
	sb := startSandbox(t, cfg.redirectURI())
	cfg.write(t, sb.URL)
	srv := startHTTPServer(t, cfg)
	bob := sb.user(t, "bob")
	auth := "Authorization: Bearer " + bobKey

	// Streamable HTTP: link as bob through the consent page, then call.
	s := startClient(t, "--header", auth, "http", srv.URL+"/mcp")
	listed := s.step(map[string]any{"op": "list_tools"})
	if !listed.OK {
		t.Fatalf("tools/list over streamable HTTP: %s", listed.Error)
	}
	checkToolList(t, listed.Result)
	status := s.mustCall("servicenow_connection_status", nil)
	if status.Parsed["status"] != "NOT_LINKED" || status.Parsed["user"] != "bob-local" {
		t.Errorf("status before linking: want NOT_LINKED for the key's user bob-local, got %s", status.text())
	}
	mine := map[string]any{
		"method": "GET",
		"path":   "/api/now/table/incident",
		"query":  map[string]any{"sysparm_query": "caller_id=" + bob.SysID, "sysparm_limit": "5"},
	}
	link := checkAuthorizationRequired(t, s.call("servicenow_request", mine), sb.URL, cfg.redirectURI())
	consent := s.step(map[string]any{"op": "consent", "url": link, "user": "bob", "password": "sandbox"})
	if !consent.OK || !strings.Contains(string(consent.Result), "bob") {
		t.Fatalf("consent as bob: %s %s", consent.Error, consent.Result)
	}
	before := sb.stats(t).APIByUser["bob"]
	checkIncidentsOf(t, s.mustCall("servicenow_request", mine), bob.SysID)
	if n := sb.stats(t).APIByUser["bob"]; n != before+1 {
		t.Errorf("sandbox counted %d API requests as bob, want %d", n, before+1)
	}
	s.close()

	// Legacy SSE, same key: the account linked above is there.
	sse := startClient(t, "--header", auth, "sse", srv.URL+"/sse")
	status = sse.mustCall("servicenow_connection_status", nil)
	if status.Parsed["status"] != "ACTIVE" || status.Parsed["servicenow_user"] != "bob" {
		t.Errorf("status over SSE: want ACTIVE as bob, got %s", status.text())
	}
	checkIncidentsOf(t, sse.mustCall("servicenow_request", mine), bob.SysID)
	sse.close()

	// No key, or a wrong one: the connection is refused.
	for name, args := range map[string][]string{
		"no key":     {"http", srv.URL + "/mcp"},
		"wrong key":  {"--header", "Authorization: Bearer not-a-key", "http", srv.URL + "/mcp"},
		"SSE no key": {"sse", srv.URL + "/sse"},
	} {
		out, code := runClient(t, []map[string]any{{"op": "list_tools"}}, args...)
		if code != 1 || len(out) == 0 || out[0].OK {
			t.Errorf("%s: want the connection refused (exit 1), got exit %d: %+v", name, code, out)
		}
	}
}

// timestampSuffix ends the name of a conformance result directory.
var timestampSuffix = regexp.MustCompile(`-\d{4}-\d{2}-\d{2}T[\dZ-]+$`)

type conformanceCheck struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	ErrorMessage string `json:"errorMessage"`
}

// readConformance reads <out>/server-<scenario>-<timestamp>/checks.json.
func readConformance(t *testing.T, outDir string) map[string][]conformanceCheck {
	t.Helper()
	dirs, err := os.ReadDir(outDir)
	if err != nil {
		t.Fatal(err)
	}
	results := map[string][]conformanceCheck{}
	for _, d := range dirs {
		name, ok := strings.CutPrefix(d.Name(), "server-")
		if !ok || !d.IsDir() {
			continue
		}
		if m := timestampSuffix.FindStringIndex(name); m != nil {
			name = name[:m[0]]
		}
		b, err := os.ReadFile(filepath.Join(outDir, d.Name(), "checks.json"))
		if err != nil {
			t.Fatal(err)
		}
		var checks []conformanceCheck
		if err := json.Unmarshal(b, &checks); err != nil {
			t.Fatalf("%s: %v", d.Name(), err)
		}
		results[name] = checks
	}
	return results
}
