package tools

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"servicenow-mcp/config"
)

var update = flag.Bool("update", false, "rewrite tools/testdata/schemas and the README tool table")

// TestSchemaSnapshots fails when a tool's definition drifts from its
// committed snapshot; go test ./tools -run Snapshots -update rewrites them.
// A tool that read-only mode changes has a second snapshot, of the tool
// as read-only mode registers it, under read_only/.
func TestSchemaSnapshots(t *testing.T) {
	readOnly, err := Select(config.Tools{ReadOnly: true, Toolsets: []string{"all"}})
	if err != nil {
		t.Fatal(err)
	}
	var changed []Def
	for _, def := range readOnly {
		normal, _ := json.Marshal(byName(t, def.Name).Tool(false))
		if got, _ := json.Marshal(def.Tool(false)); !bytes.Equal(got, normal) {
			changed = append(changed, def)
		}
	}
	if len(changed) == 0 {
		t.Error("read-only mode changes no tool's definition, but servicenow_request is registered for GET alone")
	}
	checkSnapshots(t, filepath.Join("testdata", "schemas"), All())
	checkSnapshots(t, filepath.Join("testdata", "schemas", "read_only"), changed)
}

func byName(t *testing.T, name string) Def {
	for _, d := range All() {
		if d.Name == name {
			return d
		}
	}
	t.Fatalf("no tool %s", name)
	return Def{}
}

func checkSnapshots(t *testing.T, dir string, defs []Def) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for _, def := range defs {
		seen[def.Name+".json"] = true
		got, err := json.MarshalIndent(def.Tool(false), "", "  ")
		if err != nil {
			t.Fatalf("%s: %v", def.Name, err)
		}
		got = append(got, '\n')
		path := filepath.Join(dir, def.Name+".json")
		if *update {
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s has no snapshot (%v); run go test ./tools -run Snapshots -update and review the diff", def.Name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s drifted from %s; run go test ./tools -run Snapshots -update and review the diff\ngot:\n%s", def.Name, path, got)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !e.IsDir() && !seen[e.Name()] {
			if *update {
				_ = os.Remove(filepath.Join(dir, e.Name()))
				continue
			}
			t.Errorf("snapshot %s belongs to no registered tool", filepath.Join(dir, e.Name()))
		}
	}
}

// TestSchemasStrict checks every tool against what strict MCP clients
// accept, with and without the optional user argument, and checks that
// every annotation hint is set and safe, in both modes: in read-only mode
// every tool but the account ones says it only reads, and offers no
// argument value that writes.
func TestSchemasStrict(t *testing.T) {
	readOnly, err := Select(config.Tools{ReadOnly: true, Toolsets: []string{"all"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, def := range readOnly {
		if def.Toolset == "account" {
			continue
		}
		a := def.Tool(false).Annotations
		if a.ReadOnlyHint == nil || !*a.ReadOnlyHint || a.DestructiveHint == nil || *a.DestructiveHint ||
			a.IdempotentHint == nil || !*a.IdempotentHint {
			t.Errorf("%s in read-only mode: hints readOnly %v, destructive %v, idempotent %v; want true, false, true",
				def.Name, deref(a.ReadOnlyHint), deref(a.DestructiveHint), deref(a.IdempotentHint))
		}
		for _, p := range def.params(false) {
			for _, v := range p.Enum {
				if slices.Contains([]string{"POST", "PUT", "PATCH", "DELETE"}, v) {
					t.Errorf("%s in read-only mode: argument %s still offers %s", def.Name, p.Name, v)
				}
			}
		}
	}

	for _, def := range append(All(), readOnly...) {
		for _, userArg := range []bool{false, true} {
			tool := def.Tool(userArg)
			var schema map[string]any
			if err := json.Unmarshal(tool.RawInputSchema, &schema); err != nil {
				t.Fatalf("%s: schema is not JSON: %v", def.Name, err)
			}
			for _, k := range []string{"anyOf", "oneOf", "allOf", "not"} {
				if _, ok := schema[k]; ok {
					t.Errorf("%s: top-level %s", def.Name, k)
				}
			}
			if schema["type"] != "object" {
				t.Errorf("%s: top-level type is %v, want object", def.Name, schema["type"])
			}
			checkSchema(t, def.Name, schema, true)
		}

		if !strings.HasPrefix(def.Name, "servicenow_") && !strings.HasSuffix(def.Name, "_servicenow") {
			t.Errorf("%s: tool names are servicenow_<verb>_<noun>", def.Name)
		}
		if len(def.Description) < 60 || !saysWhatItReturns(def.Description) {
			t.Errorf("%s: the description must say when to use the tool and what it returns", def.Name)
		}
		if def.Title == "" || def.Toolset == "" || def.Handler == nil {
			t.Errorf("%s: title, toolset and handler are required", def.Name)
		}
		a := def.Tool(false).Annotations
		if a.ReadOnlyHint == nil || a.DestructiveHint == nil || a.IdempotentHint == nil || a.OpenWorldHint == nil {
			t.Errorf("%s: every annotation hint must be set", def.Name)
			continue
		}
		if *a.ReadOnlyHint && *a.DestructiveHint {
			t.Errorf("%s: a read-only tool cannot be destructive", def.Name)
		}
		if *a.ReadOnlyHint && !*a.IdempotentHint {
			t.Errorf("%s: a read-only tool is idempotent", def.Name)
		}
		readVerb := false
		for _, v := range []string{"_get_", "_list_", "_query_", "_search_", "_describe_", "_aggregate_", "_status"} {
			readVerb = readVerb || strings.Contains(def.Name, v)
		}
		if readVerb && !*a.ReadOnlyHint {
			t.Errorf("%s: looks like a read tool but is not read-only", def.Name)
		}
		if strings.Contains(def.Name, "_delete_") && !*a.DestructiveHint {
			t.Errorf("%s: a delete tool must be destructive", def.Name)
		}
	}
}

func deref(b *bool) any {
	if b == nil {
		return nil
	}
	return *b
}

func checkSchema(t *testing.T, where string, s map[string]any, top bool) {
	t.Helper()
	typ, ok := s["type"].(string)
	if !ok {
		t.Errorf("%s: type must be one string, got %v", where, s["type"])
		return
	}
	if !top {
		if d, _ := s["description"].(string); d == "" && !strings.HasSuffix(where, "[]") {
			t.Errorf("%s: no description", where)
		}
	}
	switch typ {
	case "object":
		props, ok := s["properties"].(map[string]any)
		if !ok {
			t.Errorf("%s: object without properties", where)
			return
		}
		for name, p := range props {
			ps, ok := p.(map[string]any)
			if !ok {
				t.Errorf("%s.%s: property schema is not an object", where, name)
				continue
			}
			checkSchema(t, where+"."+name, ps, false)
		}
	case "array":
		items, ok := s["items"].(map[string]any)
		if !ok {
			t.Errorf("%s: array without items", where)
			return
		}
		checkSchema(t, where+"[]", items, false)
	case "string", "integer", "number", "boolean":
	default:
		t.Errorf("%s: unknown type %q", where, typ)
	}
}

func saysWhatItReturns(desc string) bool {
	d := strings.ToLower(desc)
	for _, w := range []string{"return", "come back", "answers", "shows", "lists"} {
		if strings.Contains(d, w) {
			return true
		}
	}
	return false
}
