package tools

import (
	"fmt"
	"strings"
	"testing"
)

func TestFitRecord(t *testing.T) {
	many := map[string]any{"sys_id": strings.Repeat("a", 32), "number": "INC0010001"}
	for i := range 60 {
		many[fmt.Sprintf("f%02d", i)] = map[string]any{"value": "12345678", "display": "short"}
	}
	tests := []struct {
		name   string
		rec    map[string]any
		budget int
		// cut and left are the fields named in _cut_fields and
		// _left_out_fields.
		cut, left string
	}{
		{"fits", map[string]any{"a": "x"}, 100, "", ""},
		{"escaped text", map[string]any{"sys_id": "1", "description": strings.Repeat("\"\n", 2000)}, 1000, "[description]", ""},
		{"display in a pair", map[string]any{"caller_id": map[string]any{"value": "1", "display": strings.Repeat("é", 3000)}}, 500, "[caller_id]", ""},
		{"two long fields", map[string]any{"a": strings.Repeat("x", 3000), "b": strings.Repeat("y", 2000)}, 1000, "[a b]", ""},
		{"nothing long enough to cut", many, 600, "", "f"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			changed := fitRecord(tt.rec, tt.budget)
			b, _ := marshal(tt.rec)
			if len(b) > tt.budget {
				t.Fatalf("%d bytes over a budget of %d: %s", len(b), tt.budget, b)
			}
			if changed != (tt.cut != "" || tt.left != "") {
				t.Errorf("changed = %v", changed)
			}
			if got := fmt.Sprint(tt.rec["_cut_fields"]); tt.cut != "" && got != tt.cut {
				t.Errorf("_cut_fields = %s, want %s", got, tt.cut)
			}
			if left, _ := tt.rec["_left_out_fields"].([]string); tt.left != "" && (len(left) == 0 || !strings.HasPrefix(left[0], tt.left)) {
				t.Errorf("_left_out_fields = %v", left)
			}
			if tt.rec["sys_id"] != nil && len(fmt.Sprint(tt.rec["sys_id"])) == 0 {
				t.Error("sys_id was cut")
			}
		})
	}
	if many["sys_id"] == nil || many["number"] == nil {
		t.Error("sys_id or number was left out")
	}
}
