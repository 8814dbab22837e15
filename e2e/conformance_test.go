package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// conformanceBaseline lists the scenarios expected to fail, each needing
// a fixture of the suite's reference server; see the file's comments.
const conformanceBaseline = "conformance-expected-failures.yml"

// TestConformanceBaseline runs the official MCP conformance suite (active
// suite) against streamable HTTP at /mcp with the committed baseline: it
// passes only when exactly the listed fixture scenarios fail. The suite
// cannot send an API key, so the server runs without keys, which it allows
// on a loopback address only. The suite's output, whose last line is a
// "Total:" count, is shown only when the test fails.
func TestConformanceBaseline(t *testing.T) {
	t.Parallel()
	requireClients(t)
	baseline := filepath.Join(e2eDir(t), conformanceBaseline)
	expected := readBaseline(t, baseline)

	cfg := newServerConfig(t)
	cfg.write(t, "http://127.0.0.1:9") // the suite calls no ServiceNow tool
	srv := startHTTPServer(t, cfg)

	outDir := t.TempDir()
	suite := filepath.Join(e2eDir(t), "node_modules", "@modelcontextprotocol", "conformance", "dist", "index.js")
	cmd := exec.Command("node", suite, "server", "--url", srv.URL+"/mcp",
		"--expected-failures", baseline, "-o", outDir)
	cmd.Dir = t.TempDir()
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := runBounded(t, cmd); err != nil {
		t.Fatalf("conformance suite: %v\n%s", err, log.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("conformance suite exited %d: a scenario outside %s failed, or a listed one now passes "+
			"(remove it from the list):\n%s", code, conformanceBaseline, log.String())
	}

	// The suite passing is only meaningful if the scenarios that apply to
	// every server ran: guard against a suite that silently ran nothing.
	results := readConformance(t, outDir)
	passed := 0
	for name, checks := range results {
		if expected[name] {
			continue
		}
		passed++
		for _, c := range checks {
			if c.Status == "FAILURE" || c.Status == "WARNING" {
				t.Errorf("conformance %s / %s: %s %s", name, c.ID, c.Status, c.ErrorMessage)
			}
		}
	}
	if passed < 6 {
		t.Errorf("only %d scenarios outside the baseline ran, want at least 6:\n%s", passed, log.String())
	}
	for name := range expected {
		if _, ok := results[name]; !ok {
			t.Errorf("%s lists %s, which the suite did not run; remove it", conformanceBaseline, name)
		}
	}
	t.Logf("conformance: %d scenarios passed, %d expected failures", passed, len(expected))
}

// readBaseline reads the server scenario names of an expected-failures file.
func readBaseline(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Server []string `yaml:"server"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	names := map[string]bool{}
	for _, n := range doc.Server {
		names[strings.TrimSpace(n)] = true
	}
	return names
}
