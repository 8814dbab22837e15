package sandbox

import (
	"net/url"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// qtData creates five incidents QT-1..QT-5 as admin and returns their sys_ids.
func qtData(t *testing.T, e *env, adminTok string) map[string]string {
	t.Helper()
	users := map[string]string{}
	for _, u := range e.sb.Users() {
		users[u.UserName] = u.SysID
	}
	rows := []map[string]any{
		{"short_description": "QT-1", "impact": "1", "urgency": "1", "reassignment_count": "2", "opened_at": "2026-01-05 10:00:00", "caller_id": users["carol"], "category": "network", "description": "Alpha"},
		{"short_description": "QT-2", "impact": 2, "urgency": 2, "reassignment_count": 10, "opened_at": "2026-01-15 10:00:00", "caller_id": users["erin"], "category": "software", "description": ""},
		{"short_description": "QT-3", "impact": "3", "urgency": "3", "reassignment_count": "9", "opened_at": "2026-02-01 00:00:00", "caller_id": users["carol"], "category": "hardware", "description": "beta Gamma"},
		{"short_description": "QT-4", "impact": "1", "urgency": "3", "opened_at": "2026-02-20 08:00:00", "caller_id": users["alice"], "category": "inquiry", "description": "gamma"},
		{"short_description": "QT-5", "impact": "3", "urgency": "2", "reassignment_count": "1", "state": "7", "opened_at": "2026-03-10 11:00:00", "caller_id": users["bob"], "category": "network", "description": "delta"},
	}
	ids := map[string]string{}
	for _, row := range rows {
		r := e.api("POST", "/api/now/table/incident", adminTok, row)
		if r.status != 201 {
			t.Fatalf("insert: %d %s", r.status, r.body)
		}
		rec := r.one(t)
		ids[row["short_description"].(string)] = rec["sys_id"].(string)
	}
	return ids
}

func names(t *testing.T, rows []map[string]any) []string {
	out := []string{}
	for _, r := range rows {
		out = append(out, strings.TrimPrefix(r["short_description"].(string), "QT-"))
	}
	return out
}

func TestQueryOperators(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.userTokens("admin", "alice")
	qtData(t, e, tok["admin"])
	const pre = "short_descriptionSTARTSWITHQT-^"
	cases := []struct {
		q    string
		want string // sorted QT numbers
	}{
		{"priority=3", "2,4"},
		{"priority!=3", "1,3,5"},
		{"descriptionLIKEgamma", "3,4"},
		{"descriptionNOT LIKEgamma", "1,5"},
		{"descriptionSTARTSWITHbeta", "3"},
		{"descriptionENDSWITHa", "1,3,4,5"},
		{"categoryINnetwork,hardware", "1,3,5"},
		{"categoryNOT INnetwork,hardware", "2,4"},
		{"descriptionISEMPTY", "2"},
		{"descriptionISNOTEMPTY", "1,3,4,5"},
		{"reassignment_count>5", "2,3"},
		{"reassignment_count<9", "1,5"},
		{"reassignment_count<=9", "1,3,5"},
		{"reassignment_count>=10", "2"},
		{"reassignment_countBETWEEN2@9", "1,3"},
		{"opened_at>2026-02-01 00:00:00", "4,5"},
		{"opened_at>=2026-02-01", "3,4,5"},
		{"opened_at<2026-01-15 10:00:00", "1"},
		{"opened_atBETWEEN2026-01-10 00:00:00@2026-02-10 00:00:00", "2,3"},
		{"opened_at>=javascript:gs.daysAgoStart(0)", "5"},
		{"opened_at>=javascript:gs.beginningOfToday()", "5"},
		{"opened_atONToday@javascript:gs.beginningOfToday()@javascript:gs.endOfToday()", "5"},
		{"active=true", "1,2,3,4"},
		{"active=false", "5"},
		{"priority=1^ORpriority=5", "1,3"},
		{"priority=1^NQshort_descriptionSTARTSWITHQT-^category=software", "1,2"},
		{"caller_id.user_name=carol", "1,3"},
		{"caller_id.nameLIKEchen", "1,3"},
		{"caller_idLIKEchen", "1,3"},
		{"caller_id=javascript:gs.getUserID()", "4"},
		{"caller_id.user_name=javascript:gs.getUserName()", "4"},
		{"no_such_field=1", "1,2,3,4,5"},
		{"caller_id.no_such=1^priority=1", "1"},
		{"priorityBOGUS3", "1,2,3,4,5"},
		{"no_such_field=1^ORpriority=5", "3"},
		{"description=ALPHA", "1"},
	}
	for _, tc := range cases {
		t.Run(tc.q, func(t *testing.T) {
			r := e.api("GET", "/api/now/table/incident?sysparm_query="+url.QueryEscape(pre+tc.q), tok["alice"], nil)
			if r.status != 200 {
				t.Fatalf("%d %s", r.status, r.body)
			}
			got := names(t, r.list(t))
			sort.Strings(got)
			if strings.Join(got, ",") != tc.want {
				t.Fatalf("got %v want %s", got, tc.want)
			}
		})
	}
	orders := []struct{ q, want string }{
		{"ORDERBYreassignment_count", "4,5,1,3,2"},
		{"ORDERBYDESCreassignment_count", "2,3,1,5,4"},
		{"ORDERBYcategory^ORDERBYDESCopened_at", "3,4,5,1,2"},
		{"ORDERBYcaller_id.user_name^ORDERBYshort_description", "4,5,1,3,2"},
		{"ORDERBYno_such^ORDERBYDESCshort_description", "5,4,3,2,1"},
	}
	for _, tc := range orders {
		t.Run(tc.q, func(t *testing.T) {
			r := e.api("GET", "/api/now/table/incident?sysparm_query="+url.QueryEscape(pre+tc.q), tok["alice"], nil)
			if got := strings.Join(names(t, r.list(t)), ","); got != tc.want {
				t.Fatalf("got %s want %s", got, tc.want)
			}
		})
	}
	t.Run("name-value pairs", func(t *testing.T) {
		r := e.api("GET", "/api/now/table/incident?category=network&sysparm_query="+url.QueryEscape("short_descriptionSTARTSWITHQT-"), tok["alice"], nil)
		if got := strings.Join(names(t, r.list(t)), ","); got != "1,5" {
			t.Fatalf("got %s", got)
		}
	})
}

func TestPagingHeaders(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.userTokens("alice")["alice"]
	r := e.api("GET", "/api/now/table/sys_user?sysparm_limit=2&sysparm_query=ORDERBYuser_name&sysparm_fields=user_name", tok, nil)
	if r.header.Get("X-Total-Count") != "6" || len(r.list(t)) != 2 {
		t.Fatalf("count %q rows %d", r.header.Get("X-Total-Count"), len(r.list(t)))
	}
	link := r.header.Get("Link")
	rels := parseLink(t, link)
	if rels["first"].Get("sysparm_offset") != "0" || rels["next"].Get("sysparm_offset") != "2" || rels["last"].Get("sysparm_offset") != "4" || rels["prev"] != nil {
		t.Fatalf("Link %q", link)
	}
	if rels["next"].Get("sysparm_fields") != "user_name" || rels["next"].Get("sysparm_query") != "ORDERBYuser_name" || rels["next"].Get("sysparm_limit") != "2" {
		t.Fatalf("Link must echo sysparm params: %q", link)
	}
	if !strings.HasPrefix(link, "<"+e.srv.URL+"/api/now/table/sys_user?") {
		t.Fatalf("Link %q", link)
	}
	r = e.api("GET", "/api/now/table/sys_user?sysparm_limit=2&sysparm_offset=2&sysparm_query=ORDERBYuser_name&sysparm_fields=user_name", tok, nil)
	if rows := r.list(t); rows[0]["user_name"] != "bob" || parseLink(t, r.header.Get("Link"))["prev"].Get("sysparm_offset") != "0" {
		t.Fatalf("page 2: %v %q", rows, r.header.Get("Link"))
	}
	r = e.api("GET", "/api/now/table/sys_user?sysparm_limit=10", tok, nil)
	if r.header.Get("Link") != "" || r.header.Get("X-Total-Count") != "6" {
		t.Fatal("one page: no Link header")
	}
	r = e.api("GET", "/api/now/table/sys_user?sysparm_limit=2&sysparm_no_count=true&sysparm_suppress_pagination_header=true", tok, nil)
	if r.header.Get("Link") != "" || r.header.Get("X-Total-Count") != "" {
		t.Fatal("no_count / suppress_pagination_header ignored")
	}
	// default limit is 10000: all 30+ incidents
	if n := len(e.api("GET", "/api/now/table/incident", tok, nil).list(t)); n < 30 {
		t.Fatalf("default limit: %d rows", n)
	}
	// versions: v1 empty list is 404, v2 is []
	empty := "?sysparm_query=user_name=nobody"
	assertEnvelope(t, e.api("GET", "/api/now/v1/table/sys_user"+empty, tok, nil), 404, "No Record found", "*")
	if r := e.api("GET", "/api/now/v2/table/sys_user"+empty, tok, nil); r.status != 200 || len(r.list(t)) != 0 || !strings.Contains(string(r.body), `"result":[]`) {
		t.Fatalf("v2 empty: %d %s", r.status, r.body)
	}
	if r := e.api("GET", "/api/now/v1/table/sys_user?sysparm_query=user_name=bob", tok, nil); len(r.list(t)) != 1 {
		t.Fatal("v1 list")
	}
}

func TestDisplayValueShapes(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.userTokens("admin")["admin"]
	ids := qtData(t, e, tok)
	var carol string
	for _, u := range e.sb.Users() {
		if u.UserName == "carol" {
			carol = u.SysID
		}
	}
	link := e.srv.URL + "/api/now/table/sys_user/" + carol
	path := "/api/now/table/incident/" + ids["QT-1"] + "?sysparm_fields=caller_id,state,caller_id.name,assigned_to,active,nonexistent,priority"
	cases := []struct {
		params string
		want   map[string]any
	}{
		{"", map[string]any{"caller_id": map[string]any{"link": link, "value": carol}, "state": "1", "caller_id.name": "Carol Chen", "assigned_to": "", "active": "true", "priority": "1"}},
		{"&sysparm_exclude_reference_link=true", map[string]any{"caller_id": carol, "state": "1", "caller_id.name": "Carol Chen", "assigned_to": "", "active": "true", "priority": "1"}},
		{"&sysparm_display_value=true", map[string]any{"caller_id": map[string]any{"display_value": "Carol Chen", "link": link}, "state": "New", "caller_id.name": "Carol Chen", "assigned_to": "", "active": "true", "priority": "1 - Critical"}},
		{"&sysparm_display_value=true&sysparm_exclude_reference_link=true", map[string]any{"caller_id": "Carol Chen", "state": "New", "caller_id.name": "Carol Chen", "assigned_to": "", "active": "true", "priority": "1 - Critical"}},
		{"&sysparm_display_value=all", map[string]any{
			"caller_id": map[string]any{"display_value": "Carol Chen", "value": carol, "link": link}, "state": map[string]any{"display_value": "New", "value": "1"},
			"caller_id.name": map[string]any{"display_value": "Carol Chen", "value": "Carol Chen"}, "assigned_to": map[string]any{"display_value": "", "value": ""},
			"active": map[string]any{"display_value": "true", "value": "true"}, "priority": map[string]any{"display_value": "1 - Critical", "value": "1"}}},
	}
	for _, tc := range cases {
		t.Run(tc.params, func(t *testing.T) {
			got := e.api("GET", path+tc.params, tok, nil).one(t)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
	// full records: every value a string (or a reference object), sys fields present
	rec := e.api("GET", "/api/now/table/incident/"+ids["QT-1"], tok, nil).one(t)
	for k, v := range rec {
		switch v.(type) {
		case string:
		case map[string]any:
			if k != "caller_id" && k != "opened_by" && k != "assignment_group" {
				t.Fatalf("%s is an object: %v", k, v)
			}
		default:
			t.Fatalf("%s is not a string: %#v", k, v)
		}
	}
	if !isSysID(rec["sys_id"].(string)) || rec["sys_created_by"] != "admin" || rec["sys_mod_count"] != "0" || rec["number"] == "" || !strings.HasPrefix(rec["number"].(string), "INC00100") {
		t.Fatalf("system fields: %v", rec)
	}
	if _, ok := parseTime(rec["sys_created_on"].(string)); !ok || len(rec["sys_created_on"].(string)) != 19 {
		t.Fatalf("date format %q", rec["sys_created_on"])
	}
}

func TestTableCRUDAndACL(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.userTokens("admin", "alice", "carol")
	r := e.api("POST", "/api/now/table/incident?sysparm_input_display_value=true", tok["alice"], map[string]any{
		"short_description": "Printer on fire", "assignment_group": "Hardware", "state": "In Progress", "urgency": "1", "bogus": "x", "caller_id": "carol",
	})
	if r.status != 201 {
		t.Fatalf("insert %d %s", r.status, r.body)
	}
	rec := r.one(t)
	id := rec["sys_id"].(string)
	if r.header.Get("Location") != e.srv.URL+"/api/now/table/incident/"+id {
		t.Fatalf("Location %q", r.header.Get("Location"))
	}
	if rec["state"] != "2" || rec["priority"] != "3" || rec["sys_created_by"] != "alice" || rec["opened_at"] == "" {
		t.Fatalf("inserted %v", rec)
	}
	if g, _ := rec["assignment_group"].(map[string]any); g == nil || g["value"] != seedID("sys_user_group:Hardware") {
		t.Fatalf("input display value reference: %v", rec["assignment_group"])
	}
	if _, ok := rec["bogus"]; ok {
		t.Fatal("unknown field stored")
	}
	r = e.api("PATCH", "/api/now/table/incident/"+id, tok["alice"], map[string]any{"description": "smoke"})
	rec = r.one(t)
	if rec["description"] != "smoke" || rec["short_description"] != "Printer on fire" || rec["sys_mod_count"] != "1" {
		t.Fatalf("patch %v", rec)
	}
	r = e.api("PUT", "/api/now/table/incident/"+id+"?sysparm_fields=state,active", tok["admin"], map[string]any{"state": "7"})
	if rec = r.one(t); rec["state"] != "7" || rec["active"] != "false" || len(rec) != 2 {
		t.Fatalf("put %v", rec)
	}
	if rec := e.api("GET", "/api/now/table/incident/"+id, tok["carol"], nil).one(t); rec["sys_updated_by"] != "admin" || rec["sys_mod_count"] != "2" {
		t.Fatalf("after put %v", rec)
	}
	r = e.api("PATCH", "/api/now/table/incident/"+id+"?sysparm_suppress_auto_sys_field=true", tok["alice"], map[string]any{"close_notes": "quiet"})
	if rec = r.one(t); rec["close_notes"] != "quiet" || rec["sys_mod_count"] != "2" || rec["sys_updated_by"] != "admin" {
		t.Fatalf("suppress_auto_sys_field: %v", rec)
	}
	// ACLs
	assertEnvelope(t, e.api("POST", "/api/now/table/incident", tok["carol"], map[string]any{"short_description": "x"}), 403, "Operation Failed", "ACL Exception Insert Failed due to security constraints")
	assertEnvelope(t, e.api("PATCH", "/api/now/table/incident/"+id, tok["carol"], map[string]any{"short_description": "x"}), 403, "Operation Failed", "ACL Exception Update Failed due to security constraints")
	assertEnvelope(t, e.api("DELETE", "/api/now/table/incident/"+id, tok["alice"], nil), 403, "Operation Failed", "ACL Exception Delete Failed due to security constraints")
	assertEnvelope(t, e.api("GET", "/api/now/table/incident?sysparm_query=work_notesLIKEx", tok["carol"], nil), 403, "Insufficient rights to query records", "*")
	if r := e.api("GET", "/api/now/table/incident?sysparm_query=work_notesLIKEx", tok["alice"], nil); r.status != 200 {
		t.Fatalf("itil may query work_notes: %d", r.status)
	}
	if rec := e.api("GET", "/api/now/table/incident/"+id, tok["carol"], nil).one(t); rec["number"] == nil || rec["work_notes"] != nil || rec["comments"] != "" {
		t.Fatalf("carol must not see work_notes: %v", rec)
	}
	// row ACLs apply after sysparm_limit: X-Total-Count counts what carol cannot see
	mine := e.api("GET", "/api/now/table/incident?sysparm_fields=caller_id.user_name,opened_by.user_name", tok["carol"], nil)
	all := e.api("GET", "/api/now/table/incident", tok["alice"], nil)
	if mine.header.Get("X-Total-Count") != all.header.Get("X-Total-Count") || len(mine.list(t)) >= len(all.list(t)) || len(mine.list(t)) == 0 {
		t.Fatalf("carol: %s of %s rows", mine.header.Get("X-Total-Count"), all.header.Get("X-Total-Count"))
	}
	for _, row := range mine.list(t) {
		if row["caller_id.user_name"] != "carol" && row["opened_by.user_name"] != "carol" {
			t.Fatalf("carol sees someone else's incident: %v", row)
		}
	}
	if r := e.api("GET", "/api/now/table/change_request", tok["carol"], nil); r.status != 200 || len(r.list(t)) != 0 {
		t.Fatalf("changes are for itil: %d %s", r.status, r.body)
	}
	assertEnvelope(t, e.api("GET", "/api/now/table/no_table", tok["alice"], nil), 400, "Invalid table no_table", nil)
	assertEnvelope(t, e.api("GET", "/api/now/table/incident/"+strings.Repeat("0", 32), tok["alice"], nil), 404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
	assertEnvelope(t, e.api("POST", "/api/now/table/incident", tok["alice"], "not json{"), 400, "Exception while reading request", "*")
	if r := e.api("DELETE", "/api/now/table/incident/"+id, tok["admin"], nil); r.status != 204 || len(r.body) != 0 {
		t.Fatalf("delete %d %s", r.status, r.body)
	}
	assertEnvelope(t, e.api("GET", "/api/now/table/incident/"+id, tok["admin"], nil), 404, "No Record found", "*")
	assertEnvelope(t, e.api("DELETE", "/api/now/table/incident/"+id, tok["admin"], nil), 404, "No Record found", "*")
	assertEnvelope(t, e.api("GET", "/api/now/nothing", tok["admin"], nil), 400, "Requested URI does not represent any resource", nil)
}

func TestJournals(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.userTokens("alice", "carol")
	id := e.api("POST", "/api/now/table/incident", tok["alice"], map[string]any{"short_description": "journal test", "comments": "first comment"}).one(t)["sys_id"].(string)
	r := e.api("PATCH", "/api/now/table/incident/"+id, tok["alice"], map[string]any{"comments": "second comment", "work_notes": "secret note"})
	if rec := r.one(t); rec["comments"] != "" || rec["work_notes"] != "" {
		t.Fatalf("journal values must read empty: %v", rec)
	}
	q := "/api/now/table/sys_journal_field?sysparm_query=" + url.QueryEscape("element_id="+id+"^ORDERBYsys_created_on") + "&sysparm_fields=element,value,sys_created_by,name"
	all := e.api("GET", q, tok["alice"], nil).list(t)
	if len(all) != 3 || all[0]["value"] != "first comment" || all[0]["name"] != "incident" || all[0]["sys_created_by"] != "alice" {
		t.Fatalf("journal rows %v", all)
	}
	for _, row := range e.api("GET", q, tok["carol"], nil).list(t) {
		if row["element"] == "work_notes" {
			t.Fatal("carol read a work note")
		}
	}
	rec := e.api("GET", "/api/now/table/incident/"+id+"?sysparm_display_value=true&sysparm_fields=comments,work_notes", tok["alice"], nil).one(t)
	c := rec["comments"].(string)
	if !strings.Contains(c, "second comment") || !strings.Contains(c, "Alice Archer (Additional comments)") || strings.Index(c, "second") > strings.Index(c, "first") {
		t.Fatalf("comments display %q", c)
	}
	if !strings.Contains(rec["work_notes"].(string), "secret note") {
		t.Fatalf("work notes display %q", rec["work_notes"])
	}
}

func TestMetaTables(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.userTokens("carol")["carol"]
	rows := e.api("GET", "/api/now/table/sys_dictionary?sysparm_query="+url.QueryEscape("name=incident^element=caller_id"), tok, nil).list(t)
	if len(rows) != 1 || rows[0]["internal_type"] != "reference" || rows[0]["reference"] != "sys_user" || rows[0]["mandatory"] != "true" || rows[0]["column_label"] != "Caller" {
		t.Fatalf("dictionary %v", rows)
	}
	ch := e.api("GET", "/api/now/table/sys_choice?sysparm_query="+url.QueryEscape("name=incident^element=state^ORDERBYsequence"), tok, nil).list(t)
	if len(ch) != 6 || ch[0]["value"] != "1" || ch[0]["label"] != "New" || ch[5]["label"] != "Canceled" || ch[0]["inactive"] != "false" {
		t.Fatalf("choices %v", ch)
	}
	if n := len(e.api("GET", "/api/now/table/sys_db_object?sysparm_query=name=kb_knowledge", tok, nil).list(t)); n != 1 {
		t.Fatalf("sys_db_object %d", n)
	}
}

// parseLink maps rel to the query of its URL.
func parseLink(t *testing.T, h string) map[string]url.Values {
	t.Helper()
	out := map[string]url.Values{}
	for _, part := range strings.Split(h, ",") {
		u, rel, ok := strings.Cut(part, ";rel=")
		if !ok {
			t.Fatalf("bad Link part %q", part)
		}
		pu, err := url.Parse(strings.Trim(u, "<> "))
		if err != nil {
			t.Fatal(err)
		}
		out[strings.Trim(rel, `"`)] = pu.Query()
	}
	return out
}

// TestInsertDictionaryDefaults checks that a new record starts from the
// dictionary defaults (active=true on every table that has it, task
// impact/urgency 3 with the priority that follows) and that what the client
// sends wins over them.
func TestInsertDictionaryDefaults(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.userTokens("admin", "alice")
	cases := []struct {
		name, user, table string
		body              map[string]any
		want              map[string]string
	}{
		{"incident", "alice", "incident", map[string]any{"short_description": "d1"},
			map[string]string{"active": "true", "state": "1", "impact": "3", "urgency": "3", "priority": "5"}},
		{"change_request", "alice", "change_request", map[string]any{"short_description": "d2"},
			map[string]string{"active": "true", "state": "-5", "type": "normal", "risk": "3", "impact": "3", "urgency": "3", "priority": "5"}},
		{"change_request impact and urgency", "alice", "change_request", map[string]any{"short_description": "d3", "impact": "1", "urgency": "2"},
			map[string]string{"impact": "1", "urgency": "2", "priority": "2"}},
		{"change_request explicit priority", "alice", "change_request", map[string]any{"short_description": "d4", "priority": "1"},
			map[string]string{"impact": "3", "urgency": "3", "priority": "1"}},
		{"change_request empty impact keeps its default", "alice", "change_request", map[string]any{"short_description": "d5", "impact": ""},
			map[string]string{"impact": "3", "priority": "5"}},
		{"change_task", "alice", "change_task", map[string]any{"short_description": "d6", "change_request": seedID("change_request:chg0")},
			map[string]string{"active": "true", "state": "1"}},
		{"kb_knowledge", "alice", "kb_knowledge", map[string]any{"short_description": "d7", "kb_knowledge_base": seedID("kb_knowledge_base:it")},
			map[string]string{"active": "true", "workflow_state": "draft"}},
		{"kb_knowledge explicit inactive", "alice", "kb_knowledge", map[string]any{"short_description": "d8", "kb_knowledge_base": seedID("kb_knowledge_base:it"), "active": false},
			map[string]string{"active": "false"}},
		{"kb_knowledge_base", "admin", "kb_knowledge_base", map[string]any{"title": "d9"}, map[string]string{"active": "true"}},
		{"sys_user", "admin", "sys_user", map[string]any{"user_name": "d10"}, map[string]string{"active": "true"}},
		{"sys_user_group", "admin", "sys_user_group", map[string]any{"name": "d11"}, map[string]string{"active": "true"}},
		{"sc_category", "admin", "sc_category", map[string]any{"title": "d12"}, map[string]string{"active": "true"}},
		{"sc_cat_item", "admin", "sc_cat_item", map[string]any{"name": "d13"}, map[string]string{"active": "true"}},
		{"item_option_new", "admin", "item_option_new", map[string]any{"name": "d14", "cat_item": seedID("sc_cat_item:item0")},
			map[string]string{"active": "true", "mandatory": "false"}},
		{"sc_request", "alice", "sc_request", map[string]any{"short_description": "d15"}, map[string]string{"active": "true"}},
		{"sc_req_item", "alice", "sc_req_item", map[string]any{"short_description": "d16"}, map[string]string{"active": "true"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.api("POST", "/api/now/table/"+tc.table, tok[tc.user], tc.body)
			if r.status != 201 {
				t.Fatalf("insert: %d %s", r.status, r.body)
			}
			rec := r.one(t)
			for k, v := range tc.want {
				if rec[k] != v {
					t.Errorf("%s = %v, want %q", k, rec[k], v)
				}
			}
		})
	}

	t.Run("change priority follows impact and urgency on update", func(t *testing.T) {
		id := e.api("POST", "/api/now/table/change_request", tok["alice"], map[string]any{"short_description": "u1"}).one(t)["sys_id"].(string)
		rec := e.api("PATCH", "/api/now/table/change_request/"+id, tok["alice"], map[string]any{"impact": "1", "urgency": "1"}).one(t)
		if rec["priority"] != "1" {
			t.Fatalf("priority after impact 1 urgency 1: %v", rec["priority"])
		}
		rec = e.api("PATCH", "/api/now/table/change_request/"+id, tok["alice"], map[string]any{"impact": "3", "priority": "2"}).one(t)
		if rec["priority"] != "2" {
			t.Fatalf("a priority set with the impact must be kept: %v", rec["priority"])
		}
	})

	t.Run("order_now creates an active request and item", func(t *testing.T) {
		item := seedID("sc_cat_item:item0")
		r := e.api("POST", "/api/sn_sc/servicecatalog/items/"+item+"/order_now", tok["alice"], map[string]any{"sysparm_quantity": 1})
		if r.status != 200 {
			t.Fatalf("order: %d %s", r.status, r.body)
		}
		req := r.one(t)["sys_id"].(string)
		if rec := e.api("GET", "/api/now/table/sc_request/"+req, tok["alice"], nil).one(t); rec["active"] != "true" {
			t.Errorf("sc_request active = %v", rec["active"])
		}
		ritms := e.api("GET", "/api/now/table/sc_req_item?sysparm_query=request="+req, tok["alice"], nil).list(t)
		if len(ritms) != 1 || ritms[0]["active"] != "true" {
			t.Errorf("sc_req_item: %v", ritms)
		}
	})

	t.Run("sys_dictionary reports the default", func(t *testing.T) {
		q := url.QueryEscape("name=change_request^element=active")
		rows := e.api("GET", "/api/now/table/sys_dictionary?sysparm_query="+q, tok["admin"], nil).list(t)
		if len(rows) != 1 || rows[0]["default_value"] != "true" {
			t.Fatalf("sys_dictionary change_request.active: %v", rows)
		}
	})
}
