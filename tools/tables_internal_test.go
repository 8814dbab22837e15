package tools

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"

	"servicenow-mcp/config"
	"servicenow-mcp/servicenow"
)

func names(defs []Def) []string {
	var out []string
	for _, d := range defs {
		out = append(out, d.Name)
	}
	return out
}

func TestSelect(t *testing.T) {
	tests := []struct {
		name      string
		sel       config.Tools
		has, lack []string
		err       string
	}{
		{"defaults", config.Tools{}, []string{"servicenow_query_records", "servicenow_request", "authorize_servicenow"}, nil, ""},
		{"one toolset keeps account tools", config.Tools{Toolsets: []string{"tables"}},
			[]string{"servicenow_query_records", "servicenow_describe_table", "authorize_servicenow"}, []string{"servicenow_request"}, ""},
		{"explicit tool", config.Tools{Toolsets: []string{"request"}, Enable: []string{"servicenow_get_record"}},
			[]string{"servicenow_get_record", "servicenow_request"}, []string{"servicenow_query_records"}, ""},
		{"explicit tool adds to the default toolsets", config.Tools{Enable: []string{"servicenow_find_users"}},
			[]string{"servicenow_find_users", "servicenow_request", "servicenow_query_records", "servicenow_list_incidents"}, []string{"servicenow_find_groups"}, ""},
		{"read-only with a writing tool named", config.Tools{ReadOnly: true, Enable: []string{"servicenow_create_incident"}}, nil, nil, "read-only mode is on"},
		{"read-only with a reading tool named", config.Tools{ReadOnly: true, Enable: []string{"servicenow_find_users"}},
			[]string{"servicenow_find_users", "servicenow_query_records"}, []string{"servicenow_create_incident"}, ""},
		{"exclude", config.Tools{Exclude: []string{"servicenow_delete_record"}},
			[]string{"servicenow_update_record"}, []string{"servicenow_delete_record"}, ""},
		{"read-only", config.Tools{ReadOnly: true},
			[]string{"servicenow_query_records", "servicenow_get_record", "servicenow_aggregate_records", "servicenow_describe_table"},
			[]string{"servicenow_create_record", "servicenow_update_record", "servicenow_delete_record"}, ""},
		{"unknown toolset", config.Tools{Toolsets: []string{"nope"}}, nil, nil, "unknown toolset"},
		{"unknown tool", config.Tools{Enable: []string{"servicenow_nope"}}, nil, nil, "unknown tool"},
		{"unknown exclusion", config.Tools{Exclude: []string{"servicenow_nope"}}, nil, nil, "unknown tool"},
		{"account tools stay", config.Tools{Exclude: []string{"authorize_servicenow"}}, nil, nil, "cannot be excluded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defs, err := Select(tt.sel)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Select() error = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := names(defs)
			for _, n := range tt.has {
				if !slices.Contains(got, n) {
					t.Errorf("%s missing from %v", n, got)
				}
			}
			for _, n := range tt.lack {
				if slices.Contains(got, n) {
					t.Errorf("%s should not be selected", n)
				}
			}
			if tt.sel.ReadOnly {
				for _, d := range defs {
					if !d.ReadOnly && d.Toolset != "account" {
						t.Errorf("read-only mode selected %s", d.Name)
					}
				}
			}
		})
	}
}

func TestNormaliseLimit(t *testing.T) {
	ps := []Param{limitParam}
	for _, tt := range []struct {
		in   string
		want int64
		err  string
	}{
		{`{"limit":10}`, 10, ""}, {`{"limit":"10"}`, 10, ""}, {`{"limit":10.0}`, 10, ""}, {`{"limit":null}`, -1, ""},
		{`{"limit":10.5}`, 0, `"limit"`}, {`{"limit":"10px"}`, 0, `"limit"`}, {`{"limit":-1}`, 0, `"limit"`},
		{`{"limit":101}`, 0, `"limit"`}, {`{"limit":true}`, 0, `"limit"`}, {`{"lmit":5}`, 0, `unknown argument "lmit"`},
	} {
		args, err := normalise(ps, json.RawMessage(tt.in))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("normalise(%s) error = %v, want one naming %s", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || args.Int("limit", -1) != tt.want {
			t.Errorf("normalise(%s) = %v, %v; want limit %d", tt.in, args, err, tt.want)
		}
	}
}

// FuzzNormaliseArgs checks that any arguments either are refused or come
// out with exactly the declared keys and types, integers whole and in range.
func FuzzNormaliseArgs(f *testing.F) {
	for _, seed := range []string{
		`{"table":"incident","limit":"10","offset":10.0,"fields":"number"}`,
		`{"table":"incident","filters":"{\"state\":\"New\"}","conditions":[{"field":"a","op":"=","value":"x"}]}`,
		`{"table":"incident","limit":10.5}`, `{"limit":"1e2"}`, `{"offset":-0}`, `null`, `[]`, `{"x":1}`,
		`{"table":"t","conditions":"[{\"field\":\"a\",\"op\":\"IN\",\"values\":[\"1\",2]}]"}`,
	} {
		f.Add([]byte(seed))
	}
	var def Def
	for _, d := range All() {
		if d.Name == "servicenow_query_records" {
			def = d
		}
	}
	ps := def.params(true)
	f.Fuzz(func(t *testing.T, raw []byte) {
		args, err := normalise(ps, json.RawMessage(raw))
		if err != nil {
			return
		}
		for k, v := range args {
			var p *Param
			for i := range ps {
				if ps[i].Name == k {
					p = &ps[i]
				}
			}
			if p == nil {
				t.Fatalf("unknown key %q accepted", k)
			}
			switch p.Type {
			case "string":
				if _, ok := v.(string); !ok {
					t.Fatalf("%s: %T, want string", k, v)
				}
			case "integer":
				n, ok := v.(int64)
				if !ok {
					t.Fatalf("%s: %T, want int64", k, v)
				}
				if p.Min != nil && float64(n) < *p.Min || p.Max != nil && float64(n) > *p.Max {
					t.Fatalf("%s: %d out of range", k, n)
				}
			case "array":
				list, ok := v.([]any)
				if !ok {
					t.Fatalf("%s: %T, want a list", k, v)
				}
				if p.Items != nil && p.Items.Type == "string" {
					for _, e := range list {
						if _, ok := e.(string); !ok {
							t.Fatalf("%s item: %T, want string", k, e)
						}
					}
				}
			case "object":
				switch v.(type) {
				case map[string]any, Args:
				default:
					t.Fatalf("%s: %T, want an object", k, v)
				}
			case "number":
				if f, ok := v.(float64); !ok || math.IsNaN(f) {
					t.Fatalf("%s: %v", k, v)
				}
			}
		}
	})
}

// TestAggregateAnswerGroups: each group field is {value, display}; a field
// without display_value (as ServiceNow answers without
// sysparm_display_value) shows its value as the display.
func TestAggregateAnswerGroups(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{"value and display", `{"result":[{"stats":{"count":"3"},"groupby_fields":[{"field":"priority","value":"3","display_value":"3 - Moderate"}]}]}`,
			`{"group":{"priority":{"display":"3 - Moderate","value":"3"}},"stats":{"count":"3"}}`},
		{"no display_value", `{"result":[{"stats":{"count":"3"},"groupby_fields":[{"field":"priority","value":"3"}]}]}`,
			`{"group":{"priority":{"display":"3","value":"3"}},"stats":{"count":"3"}}`},
		{"empty group", `{"result":[{"stats":{"count":"2"},"groupby_fields":[{"field":"assignment_group","value":"","display_value":""}]}]}`,
			`{"group":{"assignment_group":{"display":"","value":""}},"stats":{"count":"2"}}`},
		{"same value and display", `{"result":[{"stats":{"count":"1"},"groupby_fields":[{"field":"short_description","value":"VPN","display_value":"VPN"}]}]}`,
			`{"group":{"short_description":{"display":"VPN","value":"VPN"}},"stats":{"count":"1"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := aggregateAnswer("incident", &servicenow.Response{Status: 200, Body: []byte(tt.body)}, 10000)
			var got struct {
				Groups []json.RawMessage `json:"groups"`
			}
			text := res.Content[0].(mcp.TextContent).Text
			if err := json.Unmarshal([]byte(text), &got); err != nil || len(got.Groups) != 1 {
				t.Fatalf("answer %s", text)
			}
			if string(got.Groups[0]) != tt.want {
				t.Fatalf("group %s\nwant  %s", got.Groups[0], tt.want)
			}
		})
	}
}
