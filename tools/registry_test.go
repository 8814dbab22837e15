package tools

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"servicenow-mcp/config"
)

// TestDescriptionsNameRealArguments: where a description sends the model
// "through" an argument, the tool has an argument of that name. A word
// that names no argument of any tool ("through the Service Catalog API")
// is prose and passes.
func TestDescriptionsNameRealArguments(t *testing.T) {
	argNames := map[string]bool{}
	for _, def := range All() {
		for _, p := range def.params(false) {
			argNames[p.Name] = true
		}
	}
	through := regexp.MustCompile(`through ([a-z_]+)`)
	for _, def := range All() {
		t.Run(def.Name, func(t *testing.T) {
			own := map[string]bool{}
			for _, p := range def.params(false) {
				own[p.Name] = true
			}
			for _, m := range through.FindAllStringSubmatch(def.Description, -1) {
				if argNames[m[1]] && !own[m[1]] {
					t.Errorf("the description says %q, but %s has no argument %q", m[0], def.Name, m[1])
				}
			}
		})
	}
}

// TestInstructionsListSelectedTools: the server instructions name every
// selected tool on a line of its own, and no other.
func TestInstructionsListSelectedTools(t *testing.T) {
	tests := []struct {
		name string
		sel  config.Tools
	}{
		{"defaults", config.Tools{}},
		{"all", config.Tools{Toolsets: []string{"all"}}},
		{"one toolset", config.Tools{Toolsets: []string{"changes"}}},
		{"a tool added", config.Tools{Toolsets: []string{"users"}, Enable: []string{"servicenow_get_record"}}},
		{"a tool excluded", config.Tools{Exclude: []string{"servicenow_query_records", "servicenow_request"}}},
		{"read-only", config.Tools{Toolsets: []string{"all"}, ReadOnly: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defs, err := Select(tt.sel)
			if err != nil {
				t.Fatal(err)
			}
			text := Instructions(defs)
			selected := map[string]bool{}
			for _, d := range defs {
				selected[d.Name] = true
			}
			lines := strings.Split(text, "\n")
			for _, d := range All() {
				listed := slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "- "+d.Name+": ") })
				if listed != selected[d.Name] {
					t.Errorf("%s: listed = %v, selected = %v", d.Name, listed, selected[d.Name])
				}
			}
			if n := strings.Count(text, "\n- "); n != len(defs) {
				t.Errorf("%d tool lines for %d selected tools:\n%s", n, len(defs), text)
			}
		})
	}
}
