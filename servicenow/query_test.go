package servicenow

import (
	"errors"
	"strings"
	"testing"
)

func TestEncode(t *testing.T) {
	tests := []struct {
		name    string
		q       Query
		want    string
		wantErr string
	}{
		{"equality", Query{All: []Condition{{"active", "=", []string{"true"}}}}, "active=true", ""},
		{"and", Query{All: []Condition{{"active", "=", []string{"true"}}, {"priority", "<=", []string{"2"}}}}, "active=true^priority<=2", ""},
		{"or group", Query{All: []Condition{{"active", "=", []string{"true"}}},
			Any: [][]Condition{{{"user_name", "=", []string{"a"}}, {"email", "=", []string{"a"}}}}}, "active=true^user_name=a^ORemail=a", ""},
		{"new-query marker in value refused", Query{All: []Condition{{"short_description", "=", []string{"a^NQactive=false"}}}}, "", "no way to escape"},
		{"OR marker in value refused", Query{All: []Condition{{"name", "LIKE", []string{"x^ORsys_id!=0"}}}}, "", "no way to escape"},
		{"trailing caret refused", Query{All: []Condition{{"name", "=", []string{"x^"}}, {"active", "=", []string{"true"}}}}, "", "no way to escape"},
		{"url specials kept for url encoding", Query{All: []Condition{{"name", "=", []string{"a&b%20c=d"}}}}, "name=a&b%20c=d", ""},
		{"non-ascii", Query{All: []Condition{{"name", "=", []string{"Zoë 東京"}}}}, "name=Zoë 東京", ""},
		{"in", Query{All: []Condition{{"state", "IN", []string{"1", "2"}}}}, "stateIN1,2", ""},
		{"between", Query{All: []Condition{{"priority", "BETWEEN", []string{"1", "3"}}}}, "priorityBETWEEN1@3", ""},
		{"isempty", Query{All: []Condition{{"assigned_to", "ISEMPTY", nil}}}, "assigned_toISEMPTY", ""},
		{"dot-walk", Query{All: []Condition{{"caller_id.email", "=", []string{"a@b"}}}}, "caller_id.email=a@b", ""},
		{"order", Query{All: []Condition{{"active", "=", []string{"true"}}}, Order: []Order{{"opened_at", true}, {"sys_id", false}}},
			"active=true^ORDERBYDESCopened_at^ORDERBYsys_id", ""},
		{"raw and structured", Query{All: []Condition{{"active", "=", []string{"true"}}}, Raw: "priority=1"}, "active=true^priority=1", ""},
		{"raw alone keeps its NQ", Query{Raw: "priority=1^NQstate=2", Order: []Order{{"number", false}}},
			"priority=1^NQstate=2^ORDERBYnumber", ""},
		{"raw leading caret dropped", Query{All: []Condition{{"active", "=", []string{"true"}}}, Raw: "^priority=1"}, "active=true^priority=1", ""},
		{"raw trailing caret dropped", Query{Raw: "priority=1^", Order: []Order{{"number", false}}}, "priority=1^ORDERBYnumber", ""},
		{"raw sort alone", Query{All: []Condition{{"active", "=", []string{"true"}}}, Raw: "ORDERBYDESCnumber"}, "active=true^ORDERBYDESCnumber", ""},
		{"raw OR inside kept", Query{All: []Condition{{"active", "=", []string{"true"}}}, Raw: "priority=1^ORpriority=2"},
			"active=true^priority=1^ORpriority=2", ""},
		{"raw NQ with structured refused", Query{All: []Condition{{"active", "=", []string{"true"}}}, Raw: "priority=1^NQstate=2"}, "", "(A and B) or C"},
		{"raw NQ with an OR group refused", Query{Any: [][]Condition{{{"a", "=", []string{"1"}}, {"b", "=", []string{"1"}}}}, Raw: "priority=1^NQstate=2"}, "", "^NQ"},
		{"raw leading OR refused", Query{All: []Condition{{"caller_id", "=", []string{"x"}}}, Raw: "ORpriority=5"}, "", "starts with OR"},
		{"raw leading ^OR refused", Query{All: []Condition{{"caller_id", "=", []string{"x"}}}, Raw: "^ORpriority=5"}, "", "starts with OR"},
		{"raw OR after a sort refused", Query{All: []Condition{{"caller_id", "=", []string{"x"}}}, Raw: "ORDERBYnumber^ORpriority=5"}, "", "starts with OR"},
		{"raw leading NQ refused", Query{All: []Condition{{"caller_id", "=", []string{"x"}}}, Raw: "NQpriority=5"}, "", "starts with NQ"},
		{"raw leading ^NQ refused", Query{All: []Condition{{"caller_id", "=", []string{"x"}}}, Raw: "^NQpriority=5"}, "", "starts with NQ"},
		{"raw leading OR refused alone", Query{Raw: "ORpriority=5"}, "", "starts with OR"},
		{"raw leading NQ refused alone", Query{Raw: " ^NQpriority=5"}, "", "starts with NQ"},
		{"comma in IN refused", Query{All: []Condition{{"state", "IN", []string{"1,2"}}}}, "", "comma"},
		{"at in BETWEEN refused", Query{All: []Condition{{"opened_at", "BETWEEN", []string{"a@b", "c"}}}}, "", "@"},
		{"javascript refused", Query{All: []Condition{{"caller_id", "=", []string{"javascript:gs.getUserID()"}}}}, "", "script"},
		{"control char refused", Query{All: []Condition{{"name", "=", []string{"a\nb"}}}}, "", "control"},
		{"bad field", Query{All: []Condition{{"name^ORx", "=", []string{"a"}}}}, "", "not a field name"},
		{"bad op", Query{All: []Condition{{"name", "SAMEAS", []string{"a"}}}}, "", "not supported"},
		{"op value count", Query{All: []Condition{{"name", "=", nil}}}, "", "takes 1"},
		{"bad order", Query{Order: []Order{{"x^y", false}}}, "", "cannot order"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.q.Encode()
			if tt.wantErr != "" {
				var in *InputError
				if err == nil || !errors.As(err, &in) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Encode() = %q, %v; want InputError containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Encode() = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestParseEncoded(t *testing.T) {
	parts, err := ParseEncoded("active=true^priority<=2^ORstate=1^NQshort_descriptionLIKEa^^b^ORDERBYDESCopened_at")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range parts {
		got = append(got, p.Kind+":"+p.Join+p.Field+p.Op+p.Value)
	}
	want := "condition:active=true condition:^priority<=2 condition:^ORstate=1 condition:^NQshort_descriptionLIKEa^b order:opened_at"
	if strings.Join(got, " ") != want {
		t.Fatalf("got  %s\nwant %s", strings.Join(got, " "), want)
	}
	for _, bad := range []string{"active", "Active=true", "priority~1", "=x"} {
		if _, err := ParseEncoded(bad); err == nil {
			t.Errorf("ParseEncoded(%q) accepted an unreadable condition", bad)
		}
	}
}

// FuzzEncodeQuery checks that a built query holds exactly the conditions
// given, each with its own value: no value adds, widens or ends one.
func FuzzEncodeQuery(f *testing.F) {
	f.Add("short_description", "=", "a^NQactive=false", "b", true)
	f.Add("name", "LIKE", "x^ORsys_id!=0", "", false)
	f.Add("state", "IN", "1", "2^ORDERBYx", false)
	f.Add("opened_at", "BETWEEN", "2024-01-01", "2024-02-01", false)
	f.Add("caller_id.email", "!=", "a&b%c=d", "", true)
	f.Add("name", "=", "Zoë^^", "^", true)
	f.Fuzz(func(t *testing.T, field, op, v1, v2 string, two bool) {
		values := []string{v1}
		if two {
			values = append(values, v2)
		}
		conds := []Condition{{field, op, values}, {"active", "=", []string{v2}}}
		enc, err := Query{All: conds}.Encode()
		if err != nil {
			return
		}
		parts, err := ParseEncoded(enc)
		if err != nil {
			t.Fatalf("Encode built %q, which does not parse: %v", enc, err)
		}
		if len(parts) != len(conds) {
			t.Fatalf("%d conditions given, %d in %q", len(conds), len(parts), enc)
		}
		for i, p := range parts {
			if p.Kind != "condition" || p.Field != conds[i].Field || p.Op != conds[i].Op || (i > 0 && p.Join != "^") {
				t.Fatalf("part %d of %q is %+v, want %+v", i, enc, p, conds[i])
			}
		}
		var sep string
		switch op {
		case "IN", "NOT IN":
			sep = ","
		case "BETWEEN":
			sep = "@"
		}
		if op != "ISEMPTY" && op != "ISNOTEMPTY" && parts[0].Value != strings.Join(values, sep) {
			t.Fatalf("value %q came back as %q in %q", strings.Join(values, sep), parts[0].Value, enc)
		}
		if parts[1].Value != v2 {
			t.Fatalf("second value %q came back as %q in %q", v2, parts[1].Value, enc)
		}
	})
}
