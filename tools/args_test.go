package tools

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestNormalise(t *testing.T) {
	ps := []Param{
		{Name: "limit", Type: "integer", Min: ptr(1), Max: ptr(100)},
		{Name: "offset", Type: "integer", Min: ptr(0)},
		{Name: "name", Type: "string", Required: true},
		{Name: "flag", Type: "boolean"},
		{Name: "query", Type: "object", Values: "string"},
		{Name: "fields", Type: "array", Items: &Param{Type: "string"}},
	}
	tests := []struct {
		name    string
		raw     string
		want    map[string]any
		wantErr string
	}{
		{"plain", `{"name":"x","limit":10}`, map[string]any{"name": "x", "limit": int64(10)}, ""},
		{"number as string", `{"name":"x","limit":"10"}`, map[string]any{"limit": int64(10)}, ""},
		{"float that is whole", `{"name":"x","limit":10.0}`, map[string]any{"limit": int64(10)}, ""},
		{"string float that is whole", `{"name":"x","limit":"10.0"}`, map[string]any{"limit": int64(10)}, ""},
		{"null is omitted", `{"name":"x","limit":null}`, map[string]any{"name": "x"}, ""},
		{"fraction refused", `{"name":"x","limit":10.5}`, nil, `argument "limit": must be a whole number`},
		{"units refused", `{"name":"x","limit":"10px"}`, nil, `argument "limit": must be a number`},
		{"negative refused", `{"name":"x","limit":-1}`, nil, `argument "limit": must be at least 1`},
		{"large number written plainly", `{"name":"x","limit":1e6}`, nil, `argument "limit": must be at most 100, not 1000000`},
		{"offset past 2^63 refused", `{"name":"x","offset":9223372036854775807}`, nil, `argument "offset": is too large`},
		{"offset as huge string refused", `{"name":"x","offset":"1e300"}`, nil, `argument "offset": is too large`},
		{"offset past 2^53 refused", `{"name":"x","offset":9007199254740993}`, nil, `argument "offset": is too large`},
		{"offset at 2^53-1", `{"name":"x","offset":9007199254740991}`, map[string]any{"offset": int64(9007199254740991)}, ""},
		{"unknown key refused", `{"name":"x","lmit":5}`, nil, `unknown argument "lmit"`},
		{"missing required", `{}`, nil, `argument "name" is required`},
		{"empty required", `{"name":""}`, nil, `argument "name" is required and cannot be empty`},
		{"blank required", `{"name":"  "}`, nil, `argument "name" is required and cannot be empty`},
		{"object as JSON string", `{"name":"x","query":"{\"a\":\"1\"}"}`, map[string]any{"query": map[string]any{"a": "1"}}, ""},
		{"object value number becomes string", `{"name":"x","query":{"sysparm_limit":5}}`, map[string]any{"query": map[string]any{"sysparm_limit": "5"}}, ""},
		{"bad object string", `{"name":"x","query":"{oops"}`, nil, `argument "query": must be an object`},
		{"bool as string", `{"name":"x","flag":"true"}`, map[string]any{"flag": true}, ""},
		{"bool nonsense", `{"name":"x","flag":"yes"}`, nil, `argument "flag": must be true or false`},
		{"array as JSON string", `{"name":"x","fields":"[\"a\",\"b\"]"}`, map[string]any{"fields": []any{"a", "b"}}, ""},
		{"single string for array", `{"name":"x","fields":"a"}`, map[string]any{"fields": []any{"a"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := normalise(ps, json.RawMessage(tt.raw))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.want {
				gb, _ := json.Marshal(got[k])
				wb, _ := json.Marshal(v)
				if string(gb) != string(wb) {
					t.Errorf("%s = %s, want %s", k, gb, wb)
				}
				if _, isInt := v.(int64); isInt {
					if _, ok := got[k].(int64); !ok {
						t.Errorf("%s has type %T, want int64", k, got[k])
					}
				}
			}
		})
	}
}

func TestShapeBodyCutsWholeRecords(t *testing.T) {
	var recs []string
	for i := 0; i < 50; i++ {
		recs = append(recs, `{"number":"INC00000`+string(rune('a'+i%26))+`","short_description":"`+strings.Repeat("x", 40)+`"}`)
	}
	body := []byte(`{"result":[` + strings.Join(recs, ",") + `]}`)
	shaped, note := shapeBody(body, false, false, 1000)
	if len(shaped) > 1000 {
		t.Fatalf("shaped %d bytes, budget 1000", len(shaped))
	}
	var v struct{ Result []map[string]string }
	if err := json.Unmarshal(shaped, &v); err != nil {
		t.Fatalf("shaped body is not JSON: %v", err)
	}
	if len(v.Result) == 0 || len(v.Result) >= 50 || note == "" || !strings.Contains(note, "sysparm_offset") {
		t.Fatalf("kept %d records, note %q", len(v.Result), note)
	}
	small, note := shapeBody([]byte(`{ "result" : [ ] }`), false, false, 1000)
	if string(small) != `{"result":[]}` || note != "" {
		t.Fatalf("small body = %s, note %q", small, note)
	}
}
