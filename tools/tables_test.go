package tools_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"

	"servicenow-mcp/config"
	"servicenow-mcp/internal/testenv"
	"servicenow-mcp/tools"
)

func ok(t *testing.T, res *mcp.CallToolResult) map[string]any {
	t.Helper()
	if res.IsError {
		t.Fatalf("unexpected error result: %s", testenv.Text(res))
	}
	return testenv.JSON(t, res)
}

func failsWith(t *testing.T, res *mcp.CallToolResult, parts ...string) {
	t.Helper()
	if !res.IsError {
		t.Fatalf("want an error result, got: %s", testenv.Text(res))
	}
	for _, p := range parts {
		if !strings.Contains(testenv.Text(res), p) {
			t.Errorf("error %s does not mention %q", testenv.Text(res), p)
		}
	}
}

func records(t *testing.T, m map[string]any) []map[string]any {
	t.Helper()
	list, _ := m["records"].([]any)
	out := make([]map[string]any, len(list))
	for i, r := range list {
		out[i] = r.(map[string]any)
	}
	return out
}

// value reads a field's stored value from a shaped record.
func value(v any) string {
	if m, ok := v.(map[string]any); ok {
		return fmt.Sprint(m["value"])
	}
	return fmt.Sprint(v)
}

func TestQueryValuesRoundTrip(t *testing.T) {
	env := testenv.New(t, testenv.Options{Link: []string{"alice"}})
	for _, v := range []string{
		"amp & percent % plus + hash #", "Zoë écrit 東京 😀", "quote \" and backslash \\", "at @ comma , sign",
	} {
		t.Run(v, func(t *testing.T) {
			ok(t, env.Call(t, "alice", "servicenow_create_record", map[string]any{
				"table": "incident", "values": map[string]any{"short_description": v, "caller_id": "me"}}))
			for _, args := range []map[string]any{
				{"filters": map[string]any{"short_description": v}},
				{"conditions": []any{map[string]any{"field": "short_description", "op": "=", "value": v}}},
			} {
				args["table"] = "incident"
				args["fields"] = []string{"short_description"}
				got := records(t, ok(t, env.Call(t, "alice", "servicenow_query_records", args)))
				if len(got) != 1 || got[0]["short_description"] != v {
					t.Fatalf("query for %q returned %v", v, got)
				}
			}
		})
	}
	// A caret joins conditions and ServiceNow has no escape for it, so a
	// value holding one is refused rather than sent.
	for _, v := range []string{"caret ^ alone", "or ^ORactive=false", "new query ^NQactive=true", "double ^^ caret", "ends with caret^"} {
		failsWith(t, env.Call(t, "alice", "servicenow_query_records", map[string]any{
			"table": "incident", "filters": map[string]any{"short_description": v}}), "no way to escape")
	}
	failsWith(t, env.Call(t, "alice", "servicenow_query_records", map[string]any{
		"table": "incident", "filters": map[string]any{"caller_id": "javascript:gs.getUserID()"}}), "script")
	failsWith(t, env.Call(t, "alice", "servicenow_query_records", map[string]any{
		"table": "incident", "conditions": []any{map[string]any{"field": "short_description", "op": "IN", "values": []string{"a,b"}}}}), "comma")
	failsWith(t, env.Call(t, "alice", "servicenow_query_records", map[string]any{
		"table": "incident", "conditions": []any{map[string]any{"field": "priority", "op": "<", "value": "=2"}}}), "operator")
}

func TestQueryRecords(t *testing.T) {
	env := testenv.New(t, testenv.Options{Link: []string{"alice", "carol"}})
	tests := []struct {
		name  string
		args  map[string]any
		check func(t *testing.T, res *mcp.CallToolResult)
	}{
		{"totals and next_offset", map[string]any{"table": "incident", "limit": 5}, func(t *testing.T, res *mcp.CallToolResult) {
			m := ok(t, res)
			if m["total"] != 30.0 || m["returned"] != 5.0 || m["next_offset"] != 5.0 {
				t.Fatalf("total/returned/next_offset = %v/%v/%v", m["total"], m["returned"], m["next_offset"])
			}
		}},
		{"last page has no next_offset", map[string]any{"table": "incident", "limit": 5, "offset": 28}, func(t *testing.T, res *mcp.CallToolResult) {
			m := ok(t, res)
			if m["returned"] != 2.0 || m["next_offset"] != nil {
				t.Fatalf("returned %v next_offset %v", m["returned"], m["next_offset"])
			}
		}},
		{"order ascending", map[string]any{"table": "incident", "order_by": []string{"number"}, "limit": 10}, func(t *testing.T, res *mcp.CallToolResult) {
			var got []string
			for _, r := range records(t, ok(t, res)) {
				got = append(got, value(r["number"]))
			}
			if !slices.IsSorted(got) || got[0] != "INC0010001" {
				t.Fatalf("not ascending: %v", got)
			}
		}},
		{"order descending in raw query", map[string]any{"table": "incident", "query": "active=true^ORDERBYDESCnumber"}, func(t *testing.T, res *mcp.CallToolResult) {
			var got []string
			for _, r := range records(t, ok(t, res)) {
				got = append(got, value(r["number"]))
			}
			if len(got) < 2 || !slices.IsSortedFunc(got, func(a, b string) int { return strings.Compare(b, a) }) {
				t.Fatalf("not descending: %v", got)
			}
		}},
		{"choice label becomes value", map[string]any{"table": "incident", "filters": map[string]any{"state": "in progress"}}, func(t *testing.T, res *mcp.CallToolResult) {
			rs := records(t, ok(t, res))
			if len(rs) == 0 {
				t.Fatal("no records")
			}
			for _, r := range rs {
				st := r["state"].(map[string]any)
				if st["value"] != "2" || st["display"] != "In Progress" {
					t.Fatalf("state = %v", st)
				}
			}
		}},
		{"unknown choice named", map[string]any{"table": "incident", "filters": map[string]any{"state": "Bogus"}}, func(t *testing.T, res *mcp.CallToolResult) {
			failsWith(t, res, "Bogus", "incident.state", "In Progress")
		}},
		{"unknown field in raw query named", map[string]any{"table": "incident", "query": "active=true^nosuchfield=1"}, func(t *testing.T, res *mcp.CallToolResult) {
			failsWith(t, res, "nosuchfield")
		}},
		{"unreadable raw part named", map[string]any{"table": "incident", "query": "active=true^priority~1"}, func(t *testing.T, res *mcp.CallToolResult) {
			failsWith(t, res, "priority~1")
		}},
		{"unknown dot-walked field named", map[string]any{"table": "incident", "filters": map[string]any{"caller_id.shoe_size": "9"}}, func(t *testing.T, res *mcp.CallToolResult) {
			failsWith(t, res, "sys_user", "shoe_size")
		}},
		{"unknown filter field named", map[string]any{"table": "incident", "filters": map[string]any{"colour": "red"}}, func(t *testing.T, res *mcp.CallToolResult) {
			failsWith(t, res, "colour")
		}},
		{"invalid table named", map[string]any{"table": "no_such_table"}, func(t *testing.T, res *mcp.CallToolResult) {
			failsWith(t, res, "no_such_table")
		}},
		{"date-times in ISO 8601 UTC", map[string]any{"table": "incident", "fields": []string{"opened_at"}, "limit": 1}, func(t *testing.T, res *mcp.CallToolResult) {
			r := records(t, ok(t, res))[0]
			if s := r["opened_at"].(string); !strings.HasSuffix(s, "Z") || !strings.Contains(s, "T") {
				t.Fatalf("opened_at = %q", s)
			}
		}},
		{"limit as string", map[string]any{"table": "incident", "limit": "3"}, func(t *testing.T, res *mcp.CallToolResult) {
			if m := ok(t, res); m["returned"] != 3.0 {
				t.Fatalf("returned %v", m["returned"])
			}
		}},
		{"limit as 10.0", map[string]any{"table": "incident", "limit": 10.0}, func(t *testing.T, res *mcp.CallToolResult) {
			if m := ok(t, res); m["returned"] != 10.0 {
				t.Fatalf("returned %v", m["returned"])
			}
		}},
		{"limit 10.5 refused", map[string]any{"table": "incident", "limit": 10.5}, func(t *testing.T, res *mcp.CallToolResult) { failsWith(t, res, `"limit"`, "whole") }},
		{"limit 10px refused", map[string]any{"table": "incident", "limit": "10px"}, func(t *testing.T, res *mcp.CallToolResult) { failsWith(t, res, `"limit"`) }},
		{"limit -1 refused", map[string]any{"table": "incident", "limit": -1}, func(t *testing.T, res *mcp.CallToolResult) { failsWith(t, res, `"limit"`, "at least 1") }},
		{"unknown argument refused", map[string]any{"table": "incident", "sysparm_limit": 5}, func(t *testing.T, res *mcp.CallToolResult) { failsWith(t, res, "sysparm_limit") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.check(t, env.Call(t, "alice", "servicenow_query_records", tt.args)) })
	}
}

func TestReferenceKeys(t *testing.T) {
	env := testenv.New(t, testenv.Options{Link: []string{"alice", "admin"}})
	var aliceID string
	for _, u := range env.Sandbox.Server.Users() {
		if u.UserName == "alice" {
			aliceID = u.SysID
		}
	}
	email := ok(t, env.Call(t, "alice", "servicenow_get_record", map[string]any{
		"table": "sys_user", "record": aliceID, "fields": []string{"email"}}))["email"].(string)
	// ServiceNow compares = without regard to case, so a key in another
	// case names the same one record.
	for _, key := range []string{"alice", email, "Alice Archer", "me", aliceID,
		"ALICE", strings.ToUpper(email), "alice archer", "Me"} {
		t.Run(key, func(t *testing.T) {
			rs := records(t, ok(t, env.Call(t, "alice", "servicenow_query_records", map[string]any{
				"table": "incident", "filters": map[string]any{"assigned_to": key}, "fields": []string{"assigned_to"}})))
			if len(rs) == 0 {
				t.Fatal("no incidents")
			}
			for _, r := range rs {
				if value(r["assigned_to"]) != aliceID {
					t.Fatalf("assigned_to = %v, want %s", r["assigned_to"], aliceID)
				}
			}
		})
	}
	for _, name := range []string{"sam.one", "sam.two"} {
		ok(t, env.Call(t, "admin", "servicenow_create_record", map[string]any{"table": "sys_user",
			"values": map[string]any{"user_name": name, "name": "Sam Smith", "email": name + "@example.com"}}))
	}
	failsWith(t, env.Call(t, "alice", "servicenow_query_records", map[string]any{
		"table": "incident", "filters": map[string]any{"assigned_to": "Sam Smith"}}), "more than one", "sam.one", "sam.two")
	failsWith(t, env.Call(t, "alice", "servicenow_query_records", map[string]any{
		"table": "incident", "filters": map[string]any{"assigned_to": "Nobody Atall"}}), "no sys_user", "Nobody Atall")
	ok(t, env.Call(t, "alice", "servicenow_query_records", map[string]any{
		"table": "incident", "filters": map[string]any{"assigned_to": "sam.one"}}))
	failsWith(t, env.Call(t, "alice", "servicenow_query_records", map[string]any{
		"table": "incident", "filters": map[string]any{"assignment_group": "No Such Group"}}), "sys_user_group")

	// Two records come back for Pat.Lee: the user name, in another case,
	// beats a display name that is the key in capitals.
	for _, u := range []map[string]any{
		{"user_name": "pat.lee", "name": "Pat Lee", "email": "pat.lee@example.com"},
		{"user_name": "pat.other", "name": "PAT.LEE", "email": "pat.other@example.com"},
	} {
		ok(t, env.Call(t, "admin", "servicenow_create_record", map[string]any{"table": "sys_user", "values": u}))
	}
	for _, key := range []string{"Pat.Lee", "PAT.LEE", "pat.lee"} {
		t.Run("two rows for "+key, func(t *testing.T) {
			rec := ok(t, env.Call(t, "alice", "servicenow_create_record", map[string]any{"table": "incident", "values": map[string]any{
				"short_description": "Assigned by " + key, "caller_id": "me", "assigned_to": key}, "fields": []string{"assigned_to"}}))["record"]
			if d := rec.(map[string]any)["assigned_to"].(map[string]any)["display"]; d != "Pat Lee" {
				t.Errorf("assigned_to %q went to %v, want the user named pat.lee", key, d)
			}
		})
	}
}

func TestWritesAndErrors(t *testing.T) {
	env := testenv.New(t, testenv.Options{Link: []string{"alice", "carol", "admin"}})
	created := ok(t, env.Call(t, "alice", "servicenow_create_record", map[string]any{"table": "incident", "values": map[string]any{
		"short_description": "Printer jammed", "caller_id": "carol", "urgency": "1 - High", "assignment_group": "Hardware", "category": "Hardware"}}))
	rec := created["record"].(map[string]any)
	number := value(rec["number"])
	if u := rec["urgency"].(map[string]any); u["value"] != "1" {
		t.Fatalf("urgency = %v", u)
	}
	if g := rec["assignment_group"].(map[string]any); g["display"] != "Hardware" {
		t.Fatalf("assignment_group = %v", g)
	}

	updated := ok(t, env.Call(t, "alice", "servicenow_update_record", map[string]any{"table": "incident", "record": number,
		"values": map[string]any{"state": "In Progress"}, "fields": []string{"state", "number"}}))
	if st := updated["record"].(map[string]any)["state"].(map[string]any); st["value"] != "2" {
		t.Fatalf("state = %v", st)
	}
	failsWith(t, env.Call(t, "alice", "servicenow_update_record", map[string]any{"table": "incident", "record": number,
		"values": map[string]any{"state": "Finished"}}), "Finished", "choices")
	failsWith(t, env.Call(t, "alice", "servicenow_update_record", map[string]any{"table": "incident", "record": number,
		"values": map[string]any{"colour": "red"}}), "colour")
	failsWith(t, env.Call(t, "alice", "servicenow_update_record", map[string]any{"table": "incident", "record": number,
		"values": map[string]any{"description": "ctl\x00\x07\x1b[31mred"}}), "description", "control character", "U+0000")
	ok(t, env.Call(t, "alice", "servicenow_update_record", map[string]any{"table": "incident", "record": number,
		"values": map[string]any{"description": "line one\n\tline two\r\n"}}))
	failsWith(t, env.Call(t, "alice", "servicenow_update_record", map[string]any{"table": "incident", "record": "INC9999999",
		"values": map[string]any{"state": "New"}}), "INC9999999")

	denied := env.Call(t, "carol", "servicenow_create_record", map[string]any{"table": "incident",
		"values": map[string]any{"short_description": "x", "caller_id": "me"}})
	failsWith(t, denied, "403", "itil")

	journal := ok(t, env.Call(t, "carol", "servicenow_get_record", map[string]any{"table": "incident", "record": number,
		"fields": []string{"number", "work_notes"}}))
	if notes := fmt.Sprint(journal["_notes"]); !strings.Contains(notes, "access rules") {
		t.Fatalf("no note about a hidden journal: %v", journal)
	}

	failsWith(t, env.Call(t, "alice", "servicenow_delete_record", map[string]any{"table": "incident", "record": number}), "403")
	del := ok(t, env.Call(t, "admin", "servicenow_delete_record", map[string]any{"table": "incident", "record": number}))
	if del["deleted"] != true {
		t.Fatalf("delete answer %v", del)
	}
	failsWith(t, env.Call(t, "alice", "servicenow_get_record", map[string]any{"table": "incident", "record": number}), "404")
}

func TestBudgetCutsWholeRecords(t *testing.T) {
	env := testenv.New(t, testenv.Options{Link: []string{"alice"}, Budget: 2500})
	m := ok(t, env.Call(t, "alice", "servicenow_query_records", map[string]any{"table": "incident", "limit": 50}))
	rs := records(t, m)
	if m["truncated"] != true || len(rs) == 0 || len(rs) >= 30 {
		t.Fatalf("truncated=%v with %d records", m["truncated"], len(rs))
	}
	if m["next_offset"] != float64(len(rs)) {
		t.Fatalf("next_offset %v after %d records", m["next_offset"], len(rs))
	}
	for _, r := range rs {
		if r["sys_id"] == nil || r["number"] == nil {
			t.Fatalf("a cut record: %v", r)
		}
	}
	if len(testenv.Text(env.Call(t, "alice", "servicenow_query_records", map[string]any{"table": "incident", "limit": 50}))) > 2500 {
		t.Fatal("answer over budget")
	}
}

func TestSteadyStateOneRequest(t *testing.T) {
	env := testenv.New(t, testenv.Options{Link: []string{"alice"}})
	calls := []struct {
		tool string
		args map[string]any
	}{
		{"servicenow_query_records", map[string]any{"table": "incident", "filters": map[string]any{"assigned_to": "alice", "state": "New"}, "query": "active=true"}},
		{"servicenow_get_record", map[string]any{"table": "incident", "record": "INC0010001"}},
		{"servicenow_aggregate_records", map[string]any{"table": "incident", "group_by": []string{"state"}, "filters": map[string]any{"assignment_group": "Hardware"}}},
	}
	for _, c := range calls {
		ok(t, env.Call(t, "alice", c.tool, c.args)) // warm the caches
		before := env.APIRequests()
		ok(t, env.Call(t, "alice", c.tool, c.args))
		if n := env.APIRequests() - before; n != 1 {
			t.Errorf("%s cost %d ServiceNow requests in steady state, want 1", c.tool, n)
		}
	}
	before := env.APIRequests()
	ok(t, env.Call(t, "alice", "servicenow_describe_table", map[string]any{"table": "incident"}))
	if n := env.APIRequests() - before; n != 0 {
		t.Errorf("describe_table of a cached table cost %d requests", n)
	}
}

func TestAggregateAndDescribe(t *testing.T) {
	env := testenv.New(t, testenv.Options{Link: []string{"alice"}})
	m := ok(t, env.Call(t, "alice", "servicenow_aggregate_records", map[string]any{"table": "incident"}))
	if st := m["stats"].(map[string]any); st["count"] != "30" {
		t.Fatalf("count = %v", st)
	}
	m = ok(t, env.Call(t, "alice", "servicenow_aggregate_records", map[string]any{"table": "incident", "group_by": []string{"state"}}))
	total := 0
	for _, g := range m["groups"].([]any) {
		gm := g.(map[string]any)
		var n int
		fmt.Sscan(gm["stats"].(map[string]any)["count"].(string), &n)
		total += n
		if _, ok := gm["group"].(map[string]any)["state"]; !ok {
			t.Fatalf("group without state: %v", gm)
		}
	}
	if total != 30 {
		t.Fatalf("groups add up to %d", total)
	}
	failsWith(t, env.Call(t, "alice", "servicenow_aggregate_records", map[string]any{"table": "incident", "group_by": []string{"colour"}}), "colour")

	d := ok(t, env.Call(t, "alice", "servicenow_describe_table", map[string]any{"table": "incident"}))
	found := false
	for _, f := range d["fields"].([]any) {
		fm := f.(map[string]any)
		if fm["name"] == "caller_id" {
			found = fm["reference"] == "sys_user" && fm["mandatory"] == true
		}
	}
	if !found {
		t.Fatalf("caller_id not described as a mandatory reference to sys_user: %v", d)
	}
	failsWith(t, env.Call(t, "alice", "servicenow_describe_table", map[string]any{"table": "nope_table"}), "nope_table")
}

// ServiceNow drops the rows a user may not read after it has paged, so a
// page can be short or empty while more rows follow. Paging by
// next_offset must still reach every visible record, once, and end.
func TestPagingPastHiddenRows(t *testing.T) {
	env := testenv.New(t, testenv.Options{Link: []string{"carol", "alice"}})
	for _, c := range []struct {
		name, user string
		limit      int
		budget     bool
	}{
		{"rows hidden from a user without roles", "carol", 3, false},
		{"rows hidden, pages of one", "carol", 1, false},
		{"nothing hidden", "alice", 7, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			all := records(t, ok(t, env.Call(t, c.user, "servicenow_query_records",
				map[string]any{"table": "incident", "fields": []string{"number"}, "limit": 100})))
			want := map[string]bool{}
			for _, r := range all {
				want[value(r["number"])] = true
			}
			if len(want) == 0 {
				t.Fatal("the user sees no incidents; the test needs some")
			}
			seen := map[string]int{}
			var offset any = 0
			shortPage := false
			for pages := 0; offset != nil; pages++ {
				if pages > 200 {
					t.Fatalf("paging did not end; at offset %v", offset)
				}
				m := ok(t, env.Call(t, c.user, "servicenow_query_records",
					map[string]any{"table": "incident", "fields": []string{"number"}, "limit": c.limit, "offset": offset}))
				rs := records(t, m)
				if len(rs) < c.limit && m["next_offset"] != nil {
					shortPage = true
					if m["next_offset"] != m["offset"].(float64)+float64(c.limit) {
						t.Fatalf("a short page at offset %v goes on at %v, want offset+limit", m["offset"], m["next_offset"])
					}
				}
				for _, r := range rs {
					seen[value(r["number"])]++
				}
				offset = m["next_offset"]
			}
			for n := range want {
				if seen[n] != 1 {
					t.Errorf("%s came back %d times, want once", n, seen[n])
				}
			}
			if len(seen) != len(want) {
				t.Errorf("paging saw %d records, one query saw %d", len(seen), len(want))
			}
			if c.user == "carol" && !shortPage {
				t.Error("no page was short; the sandbox should hide rows from carol")
			}
		})
	}
}

// A raw encoded query is ANDed after the filters and conditions and may
// never widen them: an OR or NQ at its start, or an NQ anywhere when
// filters come before it, is refused naming the argument. Alone, a raw
// query keeps ServiceNow's own ^NQ meaning.
func TestRawQueryCannotWiden(t *testing.T) {
	env := testenv.New(t, testenv.Options{Link: []string{"alice"}})
	me := map[string]any{"caller_id": "me"}
	refused := []struct {
		name    string
		filters map[string]any
		query   string
		want    []string
	}{
		{"leading OR", me, "ORpriority=5", []string{`argument "query"`, "starts with OR", "priority=5"}},
		{"leading ^OR", me, "^ORpriority=5", []string{`argument "query"`, "starts with OR"}},
		{"OR after a sort", me, "ORDERBYnumber^ORpriority=5", []string{`argument "query"`, "starts with OR"}},
		{"leading NQ", me, "NQpriority=5", []string{`argument "query"`, "starts with NQ"}},
		{"leading ^NQ", me, "^NQpriority=5", []string{`argument "query"`, "starts with NQ"}},
		{"NQ after filters", me, "active=true^NQpriority=5", []string{`argument "query"`, "^NQ", "alone"}},
		{"leading OR alone", nil, "ORpriority=5", []string{`argument "query"`, "starts with OR"}},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			args := map[string]any{"table": "incident", "query": tt.query}
			if tt.filters != nil {
				args["filters"] = tt.filters
			}
			failsWith(t, env.Call(t, "alice", "servicenow_query_records", args), tt.want...)
			failsWith(t, env.Call(t, "alice", "servicenow_aggregate_records", args), tt.want...)
		})
	}

	total := func(args map[string]any) float64 {
		t.Helper()
		args["table"], args["limit"] = "incident", 100
		args["fields"] = []string{"caller_id", "priority"}
		return ok(t, env.Call(t, "alice", "servicenow_query_records", args))["total"].(float64)
	}
	mine := records(t, ok(t, env.Call(t, "alice", "servicenow_query_records", map[string]any{
		"table": "incident", "filters": me, "query": "priority=5^ORpriority=4^ORpriority=3", "fields": []string{"caller_id"}, "limit": 100})))
	if len(mine) == 0 {
		t.Fatal("alice called no incidents of priority 3 to 5; the test needs some")
	}
	for _, r := range mine {
		if d := r["caller_id"].(map[string]any)["display"]; d != "Alice Archer" {
			t.Fatalf("an OR inside the query widened the filters: caller %v", d)
		}
	}
	p1, p5 := total(map[string]any{"query": "priority=1"}), total(map[string]any{"query": "priority=5"})
	if both := total(map[string]any{"query": "priority=1^NQpriority=5"}); both != p1+p5 || p1 == 0 || p5 == 0 {
		t.Fatalf("priority=1^NQpriority=5 alone matched %v, want %v + %v", both, p1, p5)
	}
}

// sentRequest is one /api/ request as the instance received it.
type sentRequest struct {
	Method string
	URL    *url.URL
	Body   string
}

// watchedEnv is an Env whose instance traffic passes a proxy that keeps
// every /api/ request, to see what was sent; rewrite, when set, may
// change the instance's answers on their way back.
func watchedEnv(t *testing.T, opts testenv.Options, rewrite func(*http.Response) error) (*testenv.Env, func() []sentRequest) {
	t.Helper()
	var mu sync.Mutex
	var sent []sentRequest
	opts.Configure = func(cfg *config.Config) {
		target, err := url.Parse(cfg.Connections[0].InstanceURL)
		if err != nil {
			t.Fatal(err)
		}
		proxy := httputil.NewSingleHostReverseProxy(target)
		proxy.ModifyResponse = rewrite
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/api/") {
				body, _ := io.ReadAll(r.Body)
				r.Body = io.NopCloser(bytes.NewReader(body))
				u := *r.URL
				mu.Lock()
				sent = append(sent, sentRequest{Method: r.Method, URL: &u, Body: string(body)})
				mu.Unlock()
			}
			proxy.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		cfg.Connections[0].InstanceURL = srv.URL
	}
	env := testenv.New(t, opts)
	return env, func() []sentRequest {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(sent)
	}
}

// Grouped aggregates ask for display_value=all, so that each group field
// comes back as its stored value (a sys_id for a reference) and its
// display value.
func TestAggregateGroupValues(t *testing.T) {
	env, sent := watchedEnv(t, testenv.Options{Link: []string{"alice"}}, nil)
	groups := map[string]string{}
	for _, r := range records(t, ok(t, env.Call(t, "alice", "servicenow_query_records", map[string]any{
		"table": "sys_user_group", "fields": []string{"name"}, "limit": 100}))) {
		groups[value(r["sys_id"])] = value(r["name"])
	}
	tests := []struct {
		name  string
		field string
		check func(t *testing.T, value, display string)
	}{
		{"choice", "priority", func(t *testing.T, v, d string) {
			if want := map[string]string{"1": "1 - Critical", "2": "2 - High", "3": "3 - Moderate", "4": "4 - Low", "5": "5 - Planning"}[v]; want == "" || d != want {
				t.Errorf("priority group value %q display %q", v, d)
			}
		}},
		{"reference", "assignment_group", func(t *testing.T, v, d string) {
			if v == "" && d == "" {
				return // the incidents with no group
			}
			if groups[v] == "" || groups[v] != d {
				t.Errorf("assignment_group group value %q display %q; want a group sys_id and its name", v, d)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(sent())
			m := ok(t, env.Call(t, "alice", "servicenow_aggregate_records", map[string]any{"table": "incident", "group_by": []string{tt.field}}))
			var stats []string
			for _, r := range sent()[before:] {
				if strings.HasPrefix(r.URL.Path, "/api/now/stats/") {
					stats = append(stats, r.URL.Query().Get("sysparm_display_value"))
				}
			}
			if len(stats) != 1 || stats[0] != "all" {
				t.Fatalf("sysparm_display_value of the stats requests: %q, want [all]", stats)
			}
			list, _ := m["groups"].([]any)
			if len(list) < 2 {
				t.Fatalf("want several groups: %v", m)
			}
			for _, g := range list {
				f, ok := g.(map[string]any)["group"].(map[string]any)[tt.field].(map[string]any)
				if !ok {
					t.Fatalf("group field %s is not {value, display}: %v", tt.field, g)
				}
				v, _ := f["value"].(string)
				d, _ := f["display"].(string)
				tt.check(t, v, d)
			}
		})
	}
}

// Date-times go to ServiceNow as "YYYY-MM-DD HH:MM:SS" UTC, and dates as
// "YYYY-MM-DD", whatever ISO 8601 form a model writes them in: in
// filters, conditions and written values. What cannot be read is refused
// naming the argument and the accepted forms.
func TestDateTimesSentAsServiceNowUTC(t *testing.T) {
	env, sent := watchedEnv(t, testenv.Options{Link: []string{"alice"}}, nil)
	tests := []struct {
		name    string
		tool    string
		args    map[string]any
		wantErr bool
		// sent are substrings of what went to the instance (the
		// sysparm_query of each request, then its body); want of the answer.
		sent, want []string
	}{
		{"create with an offset", "servicenow_create_record", map[string]any{"table": "change_request",
			"values": map[string]any{"short_description": "Date test", "start_date": "2031-05-06T07:08:09+02:00"}, "fields": []string{"short_description", "start_date"}},
			false, []string{`"start_date":"2031-05-06 05:08:09"`}, []string{`"start_date":"2031-05-06T05:08:09Z"`}},
		{"filter in Z", "servicenow_query_records", map[string]any{"table": "change_request",
			"filters": map[string]any{"start_date": "2031-05-06T05:08:09Z"}, "fields": []string{"short_description"}},
			false, []string{"start_date=2031-05-06 05:08:09"}, []string{"Date test"}},
		{"filter list with fractions", "servicenow_query_records", map[string]any{"table": "change_request",
			"filters": map[string]any{"start_date": []any{"2031-05-06T05:08:09.000Z"}}, "fields": []string{"short_description"}},
			false, []string{"start_dateIN2031-05-06 05:08:09"}, []string{"Date test"}},
		{"condition in lower case", "servicenow_query_records", map[string]any{"table": "change_request",
			"conditions": []any{map[string]any{"field": "start_date", "op": ">=", "value": "2031-05-06t05:00:00z"}}, "fields": []string{"short_description"}},
			false, []string{"start_date>=2031-05-06 05:00:00"}, []string{"Date test"}},
		{"between a date-time and a date", "servicenow_aggregate_records", map[string]any{"table": "change_request",
			"conditions": []any{map[string]any{"field": "start_date", "op": "BETWEEN", "values": []string{"2031-05-06T00:00:00+01:00", "2031-05-07"}}}},
			false, []string{"start_dateBETWEEN2031-05-05 23:00:00@2031-05-07 00:00:00"}, []string{`"count":"1"`}},
		{"dot-walked date-time", "servicenow_query_records", map[string]any{"table": "change_task",
			"filters": map[string]any{"change_request.start_date": "2031-05-06T05:08:09Z"}},
			false, []string{"change_request.start_date=2031-05-06 05:08:09"}, nil},
		{"a date field", "servicenow_query_records", map[string]any{"table": "kb_knowledge",
			"filters": map[string]any{"valid_to": "2100-01-01T10:00:00Z"}, "fields": []string{"valid_to"}},
			false, []string{"valid_to=2100-01-01^"}, []string{`"valid_to":"2100-01-01"`}},
		{"ServiceNow's own form passes", "servicenow_query_records", map[string]any{"table": "change_request",
			"query": "start_date>2031-05-06 00:00:00", "fields": []string{"short_description"}},
			false, []string{"start_date>2031-05-06 00:00:00"}, []string{"Date test"}},
		{"typed tool", "servicenow_create_change_request", map[string]any{"short_description": "Typed date", "start_date": "2031-07-01T22:00:00Z"},
			false, []string{`"start_date":"2031-07-01 22:00:00"`}, []string{`"start_date":"2031-07-01T22:00:00Z"`}},
		{"unreadable filter", "servicenow_query_records", map[string]any{"table": "change_request",
			"filters": map[string]any{"start_date": "next friday"}},
			true, nil, []string{`argument "filters"`, "start_date", "next friday", "2025-01-31 09:00:00", "2025-01-31T09:00:00Z"}},
		{"unreadable condition", "servicenow_query_records", map[string]any{"table": "change_request",
			"conditions": []any{map[string]any{"field": "start_date", "op": "<", "value": "2031-13-45"}}},
			true, nil, []string{`argument "conditions"`, "start_date", "2031-13-45", "2025-01-31T11:00:00+02:00"}},
		{"unreadable value", "servicenow_create_record", map[string]any{"table": "change_request",
			"values": map[string]any{"short_description": "x", "end_date": "soon"}},
			true, nil, []string{"end_date", "soon", "2025-01-31 09:00:00"}},
		{"a span is not a date", "servicenow_create_change_request", map[string]any{"short_description": "x", "start_date": "7d"},
			true, nil, []string{"start_date", "7d"}},
		{"an unreadable date", "servicenow_query_records", map[string]any{"table": "kb_knowledge",
			"filters": map[string]any{"valid_to": "someday"}},
			true, nil, []string{`argument "filters"`, "valid_to", "as a date"}},
		{"ISO in an encoded query", "servicenow_query_records", map[string]any{"table": "change_request",
			"query": "start_date>2031-05-06T02:00:00+02:00"},
			true, nil, []string{`argument "query"`, "start_date", "2031-05-06 00:00:00"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(sent())
			res := env.Call(t, "alice", tt.tool, tt.args)
			text := testenv.Text(res)
			if res.IsError != tt.wantErr {
				t.Fatalf("isError = %v, want %v: %s", res.IsError, tt.wantErr, text)
			}
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("answer lacks %q: %s", w, text)
				}
			}
			var wire strings.Builder
			for _, r := range sent()[before:] {
				fmt.Fprintf(&wire, "%s %s %s\n", r.Method, r.URL.Query().Get("sysparm_query"), r.Body)
			}
			for _, w := range tt.sent {
				if !strings.Contains(wire.String(), w) {
					t.Errorf("the instance was not sent %q:\n%s", w, wire.String())
				}
			}
		})
	}
}

// min, max, sum and avg come back right through the tool, whole and per
// group, checked against the records themselves.
func TestAggregateStatistics(t *testing.T) {
	env := testenv.New(t, testenv.Options{Link: []string{"alice"}})
	filters := map[string]any{"active": "true"}
	rs := records(t, ok(t, env.Call(t, "alice", "servicenow_query_records", map[string]any{"table": "incident", "filters": filters,
		"fields": []string{"priority", "impact", "urgency", "assignment_group"}, "limit": 100})))
	if len(rs) < 5 {
		t.Fatalf("only %d active incidents; the test needs more", len(rs))
	}
	type agg struct{ min, max, sum, n, impact float64 }
	whole := agg{min: 99}
	byGroup := map[string]*agg{}
	for _, r := range rs {
		var p, i, u float64
		fmt.Sscan(value(r["priority"]), &p)
		fmt.Sscan(value(r["impact"]), &i)
		fmt.Sscan(value(r["urgency"]), &u)
		g := value(r["assignment_group"])
		if byGroup[g] == nil {
			byGroup[g] = &agg{min: 99}
		}
		for _, a := range []*agg{&whole, byGroup[g]} {
			a.min, a.max, a.sum, a.n, a.impact = min(a.min, p), max(a.max, p), a.sum+u, a.n+1, a.impact+i
		}
	}
	args := func(extra map[string]any) map[string]any {
		m := map[string]any{"table": "incident", "filters": filters,
			"min_fields": []string{"priority"}, "max_fields": []string{"priority"},
			"sum_fields": []string{"urgency"}, "avg_fields": []string{"impact"}}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	check := func(t *testing.T, stats map[string]any, want agg) {
		t.Helper()
		num := func(kind, field string) float64 {
			var x float64
			m, _ := stats[kind].(map[string]any)
			if _, err := fmt.Sscan(fmt.Sprint(m[field]), &x); err != nil {
				t.Fatalf("%s of %s is %v: %v", kind, field, m[field], err)
			}
			return x
		}
		if got := num("min", "priority"); got != want.min {
			t.Errorf("min priority %v, want %v", got, want.min)
		}
		if got := num("max", "priority"); got != want.max {
			t.Errorf("max priority %v, want %v", got, want.max)
		}
		if got := num("sum", "urgency"); got != want.sum {
			t.Errorf("sum of urgency %v, want %v", got, want.sum)
		}
		if got, avg := num("avg", "impact"), want.impact/want.n; got < avg-0.001 || got > avg+0.001 {
			t.Errorf("avg impact %v, want %v", got, avg)
		}
		if stats["count"] != fmt.Sprint(want.n) {
			t.Errorf("count %v, want %v", stats["count"], want.n)
		}
	}

	t.Run("whole", func(t *testing.T) {
		m := ok(t, env.Call(t, "alice", "servicenow_aggregate_records", args(nil)))
		check(t, m["stats"].(map[string]any), whole)
	})
	t.Run("per group", func(t *testing.T) {
		m := ok(t, env.Call(t, "alice", "servicenow_aggregate_records", args(map[string]any{"group_by": []string{"assignment_group"}})))
		groups, _ := m["groups"].([]any)
		if len(groups) != len(byGroup) || len(groups) < 2 {
			t.Fatalf("%d groups, want %d", len(groups), len(byGroup))
		}
		for _, g := range groups {
			gm := g.(map[string]any)
			key := value(gm["group"].(map[string]any)["assignment_group"])
			want, found := byGroup[key]
			if !found {
				t.Fatalf("unexpected group %q", key)
			}
			check(t, gm["stats"].(map[string]any), *want)
		}
	})
	t.Run("unknown field named", func(t *testing.T) {
		failsWith(t, env.Call(t, "alice", "servicenow_aggregate_records", map[string]any{"table": "incident", "sum_fields": []string{"cost"}}), "cost")
	})
}

// Choice labels may leave out their "N - " numbering, in filters and in
// writes alike: "Low" is impact 3 - Low on the instance.
func TestChoiceLabelsWithoutNumbering(t *testing.T) {
	env := testenv.New(t, testenv.Options{Link: []string{"alice"}})
	created := ok(t, env.Call(t, "alice", "servicenow_create_record", map[string]any{"table": "incident", "values": map[string]any{
		"short_description": "Label test", "impact": "Low", "urgency": "High"}, "fields": []string{"number", "impact", "urgency"}}))
	rec := created["record"].(map[string]any)
	if value(rec["impact"]) != "3" || value(rec["urgency"]) != "1" {
		t.Fatalf("impact %v, urgency %v; want 3 and 1", rec["impact"], rec["urgency"])
	}

	tests := []struct {
		tool  string
		args  map[string]any
		field string
		want  string
	}{
		{"servicenow_query_records", map[string]any{"table": "incident", "filters": map[string]any{"impact": "low"}, "fields": []string{"impact"}, "limit": 100}, "impact", "3"},
		{"servicenow_list_incidents", map[string]any{"priority": "Critical", "fields": []string{"priority"}, "limit": 100}, "priority", "1"},
		{"servicenow_list_incidents", map[string]any{"priority": "Critical,Planning", "fields": []string{"priority"}, "limit": 100}, "priority", "1,5"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.args), func(t *testing.T) {
			rs := records(t, ok(t, env.Call(t, "alice", tt.tool, tt.args)))
			if len(rs) == 0 {
				t.Fatal("no records")
			}
			for _, r := range rs {
				if !slices.Contains(strings.Split(tt.want, ","), value(r[tt.field])) {
					t.Fatalf("%s %v among the records, want %s", tt.field, r[tt.field], tt.want)
				}
			}
		})
	}
}

// A table's dictionary and choices are read page after page until the
// instance's X-Total-Count is reached, so a large choice list is whole;
// when a later page fails the answer says how much was read and that the
// rest failed, and nothing read part way is used or kept.
func TestMetadataPaging(t *testing.T) {
	var failChoicePage atomic.Bool
	env, sent := watchedEnv(t, testenv.Options{Link: []string{"alice"}}, func(r *http.Response) error {
		if failChoicePage.Load() && strings.HasSuffix(r.Request.URL.Path, "/sys_choice") && r.Request.URL.Query().Get("sysparm_offset") != "" {
			r.Body.Close()
			r.StatusCode = http.StatusBadGateway
			r.Header = http.Header{"Content-Type": {"text/html"}}
			r.Body = io.NopCloser(strings.NewReader("<html>Bad Gateway</html>"))
			r.ContentLength = -1
		}
		return nil
	})
	describe := func() *mcp.CallToolResult {
		return env.Call(t, "alice", "servicenow_describe_table", map[string]any{"table": "change_request"})
	}
	whole := ok(t, describe()) // read in one page each, and cached

	restore := tools.SetMetaPageRows(7)
	defer restore()
	tests := []struct {
		name string
		fail bool
	}{
		{"every page answers", false},
		{"a later page of choices fails", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tools.ForgetMetadata()
			failChoicePage.Store(tt.fail)
			defer failChoicePage.Store(false)
			before := len(sent())

			res := describe()
			offsets := map[string]bool{} // a failed read is retried at the same offset
			for _, r := range sent()[before:] {
				if strings.HasSuffix(r.URL.Path, "/sys_choice") {
					offsets[r.URL.Query().Get("sysparm_offset")] = true
				}
			}
			pages := len(offsets)
			if !tt.fail {
				if got := ok(t, res); fmt.Sprint(got["fields"]) != fmt.Sprint(whole["fields"]) {
					t.Fatalf("paged by 7 rows, the table reads differently:\n%v\nwant:\n%v", got["fields"], whole["fields"])
				}
				if pages < 2 {
					t.Fatalf("choices were read in %d pages of 7 rows", pages)
				}
				return
			}
			failsWith(t, res, "7 of", "rows of sys_choice were read, then reading the rest failed", "502")
			if pages != 2 {
				t.Errorf("%d pages of choices asked for, want 2: the first and the one that failed", pages)
			}
			failChoicePage.Store(false)
			if got := ok(t, describe()); fmt.Sprint(got["fields"]) != fmt.Sprint(whole["fields"]) {
				t.Fatalf("after a failed page the table reads differently: the part read was kept")
			}
		})
	}
}
