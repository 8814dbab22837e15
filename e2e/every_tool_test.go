package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestEveryToolOverStdio calls every tool the server lists with all
// toolsets on, through the official SDK client over stdio, on one MCP
// session: alice links her account, works through incidents, changes,
// knowledge, the catalog, users and attachments, and disconnects; the
// admin then links on the link the next call hands out, deletes a record
// (only admins may) and disconnects too. The list of tools comes from
// tools/list, so a new tool that no step calls fails the test.
func TestEveryToolOverStdio(t *testing.T) {
	t.Parallel()
	requireClients(t)
	cfg := newServerConfig(t)
	sb := startSandbox(t, cfg.redirectURI())
	cfg.write(t, sb.URL)
	s := startSession(t, cfg, "--toolsets", "all")
	cfg.waitHealthy(t)

	w := &everyTool{
		t: t, s: s, sb: sb, cfg: cfg,
		alice: sb.user(t, "alice"), bob: sb.user(t, "bob"),
		called: map[string]int{},
	}
	w.listTools()
	w.link("alice", "Alice Archer")

	w.request()
	w.users()
	w.describeTable()
	w.incidents()
	w.records()
	w.aggregate()
	w.changes()
	w.knowledge()
	w.catalog()
	w.attachments()

	link := w.disconnect()
	w.deleteAsAdmin(link)
	w.disconnect()

	w.checkEveryToolCalled()
}

// everyTool is the state of TestEveryToolOverStdio: the session, the
// schemas tools/list gave, what was called, and records made on the way.
type everyTool struct {
	t          *testing.T
	s          *session
	sb         *sandboxProc
	cfg        serverConfig
	alice, bob sandboxUser

	schemas map[string]toolSchema
	called  map[string]int

	incident      string // number of the incident made with servicenow_create_incident
	incidentSysID string
	record        string // number of the incident made with servicenow_create_record
}

// toolSchema is the part of a tool's input schema the calls are checked
// against.
type toolSchema struct {
	Properties map[string]json.RawMessage `json:"properties"`
	Required   []string                   `json:"required"`
}

// toolAnswer is a tools/call result with every content item, resources
// included.
type toolAnswer struct {
	IsError bool `json:"isError"`
	Content []struct {
		Type     string `json:"type"`
		Text     string `json:"text"`
		Resource *struct {
			URI      string `json:"uri"`
			MIMEType string `json:"mimeType"`
			Blob     string `json:"blob"`
			Text     string `json:"text"`
		} `json:"resource"`
	} `json:"content"`
}

func (a toolAnswer) text() string {
	for _, c := range a.Content {
		if c.Type == "text" {
			return c.Text
		}
	}
	return ""
}

// shaped is one record as the table tools return it: plain values, and
// {value, display} for references and choices.
type shaped map[string]any

// value reads a field's stored value.
func (r shaped) value(field string) string {
	switch v := r[field].(type) {
	case string:
		return v
	case map[string]any:
		s, _ := v["value"].(string)
		return s
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

// display reads a field's display value, or its value when it has none.
func (r shaped) display(field string) string {
	if m, ok := r[field].(map[string]any); ok {
		if s, _ := m["display"].(string); s != "" {
			return s
		}
	}
	return r.value(field)
}

// recordList is the answer of the list and query tools.
type recordList struct {
	Total    *int64   `json:"total"`
	Returned int      `json:"returned"`
	Records  []shaped `json:"records"`
}

func (l recordList) find(field, value string) shaped {
	for _, r := range l.Records {
		if r.value(field) == value {
			return r
		}
	}
	return nil
}

// written is the answer of a tool that creates or updates a record.
type written struct {
	Table  string `json:"table"`
	Action string `json:"action"`
	Record shaped `json:"record"`
}

// journal is the comments and work notes a get tool returns.
type journal []struct {
	Type      string `json:"type"`
	CreatedBy string `json:"created_by"`
	Text      string `json:"text"`
}

func (j journal) has(typ, text string) bool {
	for _, e := range j {
		if e.Type == typ && e.Text == text {
			return true
		}
	}
	return false
}

var (
	incidentNumber = regexp.MustCompile(`^INC\d{7,}$`)
	changeNumber   = regexp.MustCompile(`^CHG\d{7,}$`)
	taskNumber     = regexp.MustCompile(`^CTASK\d{7,}$`)
	requestNumber  = regexp.MustCompile(`^REQ\d{7,}$`)
	itemNumber     = regexp.MustCompile(`^RITM\d{7,}$`)
)

// ---------- calling ----------

// call runs one tool after checking its arguments against the tool's
// listed input schema; a protocol error fails the test.
func (w *everyTool) call(tool string, args map[string]any) toolAnswer {
	w.t.Helper()
	schema, ok := w.schemas[tool]
	if !ok {
		w.t.Fatalf("the test calls %s, which tools/list does not list", tool)
	}
	for name := range args {
		if _, ok := schema.Properties[name]; !ok {
			w.t.Fatalf("the test calls %s with argument %q, which its input schema does not have", tool, name)
		}
	}
	for _, name := range schema.Required {
		if _, ok := args[name]; !ok {
			w.t.Fatalf("the test calls %s without its required argument %q", tool, name)
		}
	}
	w.called[tool]++

	if args == nil {
		args = map[string]any{}
	}
	r := w.s.step(map[string]any{"op": "call", "tool": tool, "args": args})
	if !r.OK {
		w.t.Fatalf("%s %v: protocol error: %s", tool, args, r.Error)
	}
	var a toolAnswer
	if err := json.Unmarshal(r.Result, &a); err != nil {
		w.t.Fatalf("%s: %v", tool, err)
	}
	return a
}

// ok runs a tool, fails the test when it answers isError, and decodes its
// first text content into into (when not nil).
func (w *everyTool) ok(tool string, args map[string]any, into any) toolAnswer {
	w.t.Helper()
	a := w.call(tool, args)
	if a.IsError {
		w.t.Fatalf("%s %v answered isError: %s", tool, args, a.text())
	}
	if into != nil {
		if err := json.Unmarshal([]byte(a.text()), into); err != nil {
			w.t.Fatalf("%s answered text that is not the expected JSON: %v\n%s", tool, err, a.text())
		}
	}
	return a
}

// listTools reads every tool's input schema from tools/list.
func (w *everyTool) listTools() {
	w.t.Helper()
	listed := w.s.step(map[string]any{"op": "list_tools"})
	if !listed.OK {
		w.t.Fatalf("tools/list: %s", listed.Error)
	}
	var list struct {
		Tools []struct {
			Name        string     `json:"name"`
			InputSchema toolSchema `json:"inputSchema"`
		} `json:"tools"`
	}
	if err := json.Unmarshal(listed.Result, &list); err != nil {
		w.t.Fatal(err)
	}
	w.schemas = map[string]toolSchema{}
	for _, tool := range list.Tools {
		w.schemas[tool.Name] = tool.InputSchema
	}
	for _, name := range wantTools {
		if _, ok := w.schemas[name]; !ok {
			w.t.Fatalf("tools/list with --toolsets all lacks %s", name)
		}
	}
	w.t.Logf("tools/list with --toolsets all lists %d tools", len(w.schemas))
}

// checkEveryToolCalled fails for each listed tool no step called.
func (w *everyTool) checkEveryToolCalled() {
	w.t.Helper()
	var missing []string
	for name := range w.schemas {
		if w.called[name] == 0 {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	for _, name := range missing {
		w.t.Errorf("tools/list lists %s, but TestEveryToolOverStdio never calls it: add a step for it", name)
	}
}

// ---------- account ----------

// link gets a link from authorize_servicenow, signs in on it as user and
// checks both account tools name that user.
func (w *everyTool) link(user, name string) {
	w.t.Helper()
	var status map[string]any
	w.ok("servicenow_connection_status", nil, &status)
	// NOT_LINKED at first; PENDING_AUTH once a call has handed out a link.
	if status["status"] != "NOT_LINKED" && status["status"] != "PENDING_AUTH" {
		w.t.Fatalf("connection status before linking: %v", status)
	}

	var auth map[string]any
	w.ok("authorize_servicenow", nil, &auth)
	link, _ := auth["authorization_url"].(string)
	if auth["status"] != "authorization_required" || !strings.HasPrefix(link, w.sb.URL+"/oauth_auth.do?") {
		w.t.Fatalf("authorize_servicenow for an unlinked user: %v", auth)
	}
	w.consent(link, user)

	w.ok("authorize_servicenow", nil, &auth)
	if auth["status"] != "linked" || auth["servicenow_user"] != user {
		w.t.Errorf("authorize_servicenow after linking: want status linked as %s, got %v", user, auth)
	}
	w.ok("servicenow_connection_status", nil, &status)
	if status["status"] != "ACTIVE" || status["servicenow_user"] != user || status["servicenow_name"] != name {
		w.t.Errorf("connection status after linking: want ACTIVE as %s (%s), got %v", user, name, status)
	}
}

// consent signs in on the instance's consent page as user and allows.
func (w *everyTool) consent(link, user string) {
	w.t.Helper()
	r := w.s.step(map[string]any{"op": "consent", "url": link, "user": user, "password": "sandbox"})
	if !r.OK {
		w.t.Fatalf("consent as %s: %s", user, r.Error)
	}
	var page struct {
		CallbackStatus int    `json:"callback_status"`
		Page           string `json:"page"`
	}
	if err := json.Unmarshal(r.Result, &page); err != nil {
		w.t.Fatal(err)
	}
	if page.CallbackStatus != 200 || !strings.Contains(page.Page, user) {
		w.t.Fatalf("callback page (%d) does not name %s:\n%s", page.CallbackStatus, user, page.Page)
	}
}

// disconnect unlinks the account and checks that the next call answers
// with a new authorization link, which it returns.
func (w *everyTool) disconnect() string {
	w.t.Helper()
	var out map[string]any
	w.ok("disconnect_servicenow", nil, &out)
	if out["status"] != "DISCONNECTED" || out["revoked_at_servicenow"] != true {
		w.t.Errorf("disconnect_servicenow: want DISCONNECTED and revoked at ServiceNow, got %v", out)
	}

	next := w.call("servicenow_get_incident", map[string]any{"incident": w.incident})
	link := checkAuthorizationRequired(w.t, callResultOf(w.t, next), w.sb.URL, w.cfg.redirectURI())

	// The call above handed out a link, which is now pending.
	var status map[string]any
	w.ok("servicenow_connection_status", nil, &status)
	if status["status"] != "PENDING_AUTH" || status["authorization_url"] != link {
		w.t.Errorf("connection status after disconnecting and being given a link: want PENDING_AUTH with that link, got %v", status)
	}
	return link
}

// callResultOf turns an answer into the harness's callResult, whose
// Parsed is the first text content as JSON.
func callResultOf(t *testing.T, a toolAnswer) callResult {
	t.Helper()
	c := callResult{IsError: a.IsError}
	for _, item := range a.Content {
		c.Content = append(c.Content, struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}{item.Type, item.Text})
	}
	_ = json.Unmarshal([]byte(a.text()), &c.Parsed)
	return c
}

// ---------- request and users ----------

func (w *everyTool) request() {
	w.t.Helper()
	var out struct {
		Status int `json:"status"`
		Body   struct {
			Result []map[string]any `json:"result"`
		} `json:"body"`
	}
	w.ok("servicenow_request", map[string]any{
		"method": "GET", "path": "/api/now/table/sys_user",
		"query": map[string]any{"sysparm_query": "user_name=alice", "sysparm_fields": "user_name,sys_id"},
	}, &out)
	if out.Status != 200 || len(out.Body.Result) != 1 || out.Body.Result[0]["sys_id"] != w.alice.SysID {
		w.t.Errorf("servicenow_request GET sys_user?user_name=alice: want alice's record, got %+v", out)
	}
}

func (w *everyTool) users() {
	w.t.Helper()
	var found recordList
	w.ok("servicenow_find_users", map[string]any{"query": "alice"}, &found)
	if u := found.find("user_name", "alice"); u == nil || u.value("email") != "alice@example.com" {
		w.t.Errorf("servicenow_find_users alice: want alice with her email, got %+v", found.Records)
	}

	var groups recordList
	w.ok("servicenow_find_groups", map[string]any{"query": "desk"}, &groups)
	if groups.find("name", "Service Desk") == nil {
		w.t.Errorf("servicenow_find_groups desk: want Service Desk, got %+v", groups.Records)
	}

	var members recordList
	w.ok("servicenow_list_group_members", map[string]any{"group": "Service Desk"}, &members)
	var names []string
	for _, m := range members.Records {
		names = append(names, m.value("user.user_name"))
	}
	sort.Strings(names)
	if !slices.Equal(names, []string{"alice", "bob"}) || members.find("user", w.alice.SysID) == nil {
		w.t.Errorf("servicenow_list_group_members Service Desk: want alice and bob, got %+v", members.Records)
	}
}

// ---------- tables ----------

func (w *everyTool) describeTable() {
	w.t.Helper()
	var out struct {
		Table  string `json:"table"`
		Fields []struct {
			Name      string `json:"name"`
			Label     string `json:"label"`
			Reference string `json:"reference"`
			Choices   []struct {
				Value string `json:"value"`
				Label string `json:"label"`
			} `json:"choices"`
		} `json:"fields"`
	}
	w.ok("servicenow_describe_table", map[string]any{"table": "incident", "fields": []string{"state", "caller_id"}}, &out)
	if out.Table != "incident" || len(out.Fields) != 2 {
		w.t.Fatalf("servicenow_describe_table incident [state caller_id]: %+v", out)
	}
	for _, f := range out.Fields {
		switch f.Name {
		case "state":
			labels := map[string]string{}
			for _, ch := range f.Choices {
				labels[ch.Value] = ch.Label
			}
			if labels["2"] != "In Progress" || labels["6"] != "Resolved" {
				w.t.Errorf("describe_table: incident.state choices lack 2=In Progress and 6=Resolved: %+v", f.Choices)
			}
		case "caller_id":
			if f.Reference != "sys_user" || f.Label == "" {
				w.t.Errorf("describe_table: incident.caller_id is not a labelled reference to sys_user: %+v", f)
			}
		default:
			w.t.Errorf("describe_table: field %s was not asked for", f.Name)
		}
	}
}

const (
	incidentShort = "Zebracorn badge reader rejects every card at door 4"
	workNote      = "Reader firmware checked; the card format setting was reset by the last update."
	comment       = "We are on it; please use door 3 meanwhile."
	closeNotes    = "Restored the card format setting and tested five badges."
)

func (w *everyTool) incidents() {
	w.t.Helper()
	var created written
	w.ok("servicenow_create_incident", map[string]any{
		"short_description": incidentShort,
		"description":       "Since this morning the reader at door 4 blinks red for every badge.",
		"urgency":           "2 - Medium",
		"category":          "Hardware",
		"assignment_group":  "Hardware",
	}, &created)
	rec := created.Record
	w.incident, w.incidentSysID = rec.value("number"), rec.value("sys_id")
	if created.Action != "created" || !incidentNumber.MatchString(w.incident) || !isSysIDString(w.incidentSysID) {
		w.t.Fatalf("servicenow_create_incident: want a created incident with a number and sys_id, got %+v", created)
	}
	if rec.value("caller_id") != w.alice.SysID || rec.value("urgency") != "2" ||
		rec.value("category") != "hardware" || rec.display("assignment_group") != "Hardware" {
		w.t.Errorf("servicenow_create_incident: want caller alice (me), urgency 2, category hardware, group Hardware; got %+v", rec)
	}

	var updated written
	w.ok("servicenow_update_incident", map[string]any{"incident": w.incident, "state": "In Progress"}, &updated)
	if updated.Record.value("number") != w.incident || updated.Record.value("state") != "2" {
		w.t.Errorf("servicenow_update_incident state In Progress: want %s in state 2, got %+v", w.incident, updated.Record)
	}

	var noted written
	w.ok("servicenow_add_incident_comment", map[string]any{"incident": w.incident, "text": workNote, "type": "work_note"}, &noted)
	w.ok("servicenow_add_incident_comment", map[string]any{"incident": w.incident, "text": comment}, nil)
	if noted.Record.value("number") != w.incident {
		w.t.Errorf("servicenow_add_incident_comment: want the answer to name %s, got %+v", w.incident, noted)
	}

	var got struct {
		Incident shaped  `json:"incident"`
		Journal  journal `json:"journal"`
	}
	w.ok("servicenow_get_incident", map[string]any{"incident": w.incident}, &got)
	if got.Incident.value("sys_id") != w.incidentSysID || got.Incident.value("short_description") != incidentShort ||
		got.Incident.display("state") != "In Progress" {
		w.t.Errorf("servicenow_get_incident %s: want the created incident, In Progress; got %+v", w.incident, got.Incident)
	}
	if !got.Journal.has("work_note", workNote) || !got.Journal.has("comment", comment) {
		w.t.Errorf("servicenow_get_incident %s: journal lacks the work note and the comment just added: %+v", w.incident, got.Journal)
	}

	var listed recordList
	w.ok("servicenow_list_incidents", map[string]any{"text": "zebracorn badge", "caller": "me", "active": true}, &listed)
	if listed.Returned != 1 || listed.find("number", w.incident) == nil {
		w.t.Errorf("servicenow_list_incidents text zebracorn: want only %s, got %+v", w.incident, listed.Records)
	}

	var resolved written
	w.ok("servicenow_resolve_incident", map[string]any{
		"incident": w.incident, "close_code": "Solved (Permanently)", "close_notes": closeNotes,
	}, &resolved)
	r := resolved.Record
	if r.value("number") != w.incident || r.value("state") != "6" || r.value("close_code") != "Solved (Permanently)" ||
		r.value("close_notes") != closeNotes || r.value("resolved_at") == "" {
		w.t.Errorf("servicenow_resolve_incident: want %s resolved (6) with its code, notes and resolved_at, got %+v", w.incident, r)
	}
}

func (w *everyTool) records() {
	w.t.Helper()
	var created written
	w.ok("servicenow_create_record", map[string]any{"table": "incident", "values": map[string]any{
		"short_description": "Zebracorn kiosk screen stays black",
		"caller_id":         "Bob Baker",
		"urgency":           "3 - Low",
		"impact":            "3 - Low",
	}}, &created)
	w.record = created.Record.value("number")
	if created.Action != "created" || !incidentNumber.MatchString(w.record) ||
		created.Record.value("caller_id") != w.bob.SysID || created.Record.value("urgency") != "3" ||
		created.Record.value("impact") != "3" {
		w.t.Fatalf("servicenow_create_record incident: want a new incident called in by bob, urgency and impact 3, got %+v", created)
	}

	var got shaped
	w.ok("servicenow_get_record", map[string]any{"table": "incident", "record": w.record,
		"fields": []string{"number", "short_description", "caller_id"}}, &got)
	if got.value("number") != w.record || got.value("short_description") != "Zebracorn kiosk screen stays black" ||
		got.display("caller_id") != "Bob Baker" {
		w.t.Errorf("servicenow_get_record %s: want the record just created, got %+v", w.record, got)
	}

	var updated written
	w.ok("servicenow_update_record", map[string]any{"table": "incident", "record": w.record,
		"values": map[string]any{"urgency": "1 - High", "short_description": "Zebracorn kiosk screen stays black after reboot"}}, &updated)
	if updated.Action != "updated" || updated.Record.value("urgency") != "1" ||
		updated.Record.value("short_description") != "Zebracorn kiosk screen stays black after reboot" {
		w.t.Errorf("servicenow_update_record %s: want urgency 1 and the new summary, got %+v", w.record, updated)
	}

	var queried recordList
	w.ok("servicenow_query_records", map[string]any{"table": "incident",
		"filters":  map[string]any{"caller_id": "bob", "urgency": "1 - High"},
		"query":    "short_descriptionLIKEkiosk",
		"fields":   []string{"number", "urgency", "caller_id"},
		"order_by": []string{"-number"}}, &queried)
	if queried.Returned != 1 || queried.find("number", w.record) == nil {
		w.t.Errorf("servicenow_query_records bob's urgent kiosk incidents: want only %s, got %+v", w.record, queried.Records)
	}
}

// aggregate counts alice's incidents two ways and wants the same numbers
// as the records themselves.
func (w *everyTool) aggregate() {
	w.t.Helper()
	var listed recordList
	w.ok("servicenow_query_records", map[string]any{"table": "incident",
		"filters": map[string]any{"caller_id": "alice"}, "fields": []string{"state"}, "limit": 100}, &listed)
	if listed.Total == nil || int(*listed.Total) != len(listed.Records) || len(listed.Records) == 0 {
		w.t.Fatalf("query_records: want all of alice's incidents with a total, got total %v and %d records",
			listed.Total, len(listed.Records))
	}
	byState := map[string]int{}
	for _, r := range listed.Records {
		byState[r.value("state")]++
	}

	var count struct {
		Stats struct {
			Count string `json:"count"`
		} `json:"stats"`
	}
	w.ok("servicenow_aggregate_records", map[string]any{"table": "incident", "filters": map[string]any{"caller_id": "alice"}}, &count)
	if count.Stats.Count != fmt.Sprint(*listed.Total) {
		w.t.Errorf("servicenow_aggregate_records count of alice's incidents: %q, want %d", count.Stats.Count, *listed.Total)
	}

	var grouped struct {
		Groups []struct {
			Group shaped `json:"group"`
			Stats struct {
				Count string `json:"count"`
			} `json:"stats"`
		} `json:"groups"`
	}
	w.ok("servicenow_aggregate_records", map[string]any{"table": "incident",
		"filters": map[string]any{"caller_id": "alice"}, "group_by": []string{"state"}}, &grouped)
	got := map[string]int{}
	resolvedLabel := ""
	for _, g := range grouped.Groups {
		n, err := strconv.Atoi(g.Stats.Count)
		if err != nil {
			w.t.Errorf("servicenow_aggregate_records: group %v has count %q, not a number", g.Group, g.Stats.Count)
		}
		got[g.Group.value("state")] += n
		if g.Group.value("state") == "6" {
			resolvedLabel = g.Group.display("state")
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(byState) || resolvedLabel != "Resolved" {
		w.t.Errorf("servicenow_aggregate_records by state: want counts %v with state 6 shown as Resolved, got %+v",
			byState, grouped.Groups)
	}
}

// ---------- changes ----------

func (w *everyTool) changes() {
	w.t.Helper()
	var created written
	w.ok("servicenow_create_change_request", map[string]any{
		"short_description":   "Zebracorn: replace the badge reader controller at door 4",
		"type":                "normal",
		"risk":                "Low",
		"assignment_group":    "Hardware",
		"start_date":          "2030-03-01T22:00:00Z",
		"end_date":            "2030-03-01 23:30:00",
		"implementation_plan": "Swap the controller, restore the configuration, test five badges.",
		"backout_plan":        "Put the old controller back.",
	}, &created)
	chg := created.Record
	number, sysID := chg.value("number"), chg.value("sys_id")
	if !changeNumber.MatchString(number) || chg.value("type") != "normal" || chg.display("risk") != "Low" {
		w.t.Fatalf("servicenow_create_change_request: want a normal low-risk change with a number, got %+v", created)
	}
	checkInstant(w.t, "change start_date", chg.value("start_date"), "2030-03-01T22:00:00Z")
	checkInstant(w.t, "change end_date", chg.value("end_date"), "2030-03-01T23:30:00Z")

	const note = "CAB asked for a photo of the wiring before the swap."
	var updated written
	w.ok("servicenow_update_change_request", map[string]any{"change": number, "state": "Assess", "work_note": note}, &updated)
	if updated.Record.value("state") != "-4" || updated.Record.display("state") != "Assess" {
		w.t.Errorf("servicenow_update_change_request state Assess: want -4 (Assess), got %+v", updated.Record)
	}

	var task written
	w.ok("servicenow_add_change_task", map[string]any{
		"change": number, "short_description": "Photograph the wiring at door 4",
		"assigned_to": "bob", "planned_start_date": "2030-03-01T21:00:00Z", "planned_end_date": "2030-03-01T21:30:00Z",
	}, &task)
	ctask := task.Record.value("number")
	if !taskNumber.MatchString(ctask) || task.Record.value("change_request") != sysID ||
		task.Record.value("assigned_to") != w.bob.SysID {
		w.t.Errorf("servicenow_add_change_task: want a CTASK on %s assigned to bob, got %+v", number, task.Record)
	}
	checkInstant(w.t, "change task planned_start_date", task.Record.value("planned_start_date"), "2030-03-01T21:00:00Z")

	var got struct {
		Change  shaped   `json:"change_request"`
		Tasks   []shaped `json:"tasks"`
		Journal journal  `json:"journal"`
	}
	w.ok("servicenow_get_change_request", map[string]any{"change": number}, &got)
	if got.Change.value("number") != number || got.Change.display("state") != "Assess" ||
		len(got.Tasks) != 1 || got.Tasks[0].value("number") != ctask || !got.Journal.has("work_note", note) {
		w.t.Errorf("servicenow_get_change_request %s: want it in Assess with task %s and the work note, got %+v", number, ctask, got)
	}

	var listed recordList
	w.ok("servicenow_list_change_requests", map[string]any{"text": "zebracorn", "state": "Assess", "type": "normal"}, &listed)
	if listed.Returned != 1 || listed.find("number", number) == nil {
		w.t.Errorf("servicenow_list_change_requests zebracorn in Assess: want only %s, got %+v", number, listed.Records)
	}
}

// checkInstant wants got, a date-time a tool returned, to be the instant
// want (RFC 3339), in whichever of ServiceNow's or ISO 8601's forms.
func checkInstant(t *testing.T, what, got, want string) {
	t.Helper()
	w, err := time.Parse(time.RFC3339, want)
	if err != nil {
		t.Fatal(err)
	}
	for _, layout := range []string{time.RFC3339, time.DateTime} {
		if at, err := time.Parse(layout, got); err == nil {
			if !at.Equal(w) {
				t.Errorf("%s is %s, want %s", what, got, want)
			}
			return
		}
	}
	t.Errorf("%s is %q, not a date-time; want %s", what, got, want)
}

// ---------- knowledge and catalog ----------

func (w *everyTool) knowledge() {
	w.t.Helper()
	var found struct {
		Articles []struct {
			Number string `json:"number"`
			Title  string `json:"title"`
		} `json:"articles"`
	}
	w.ok("servicenow_search_knowledge", map[string]any{"query": "vpn", "knowledge_base": "IT"}, &found)
	number := ""
	for _, a := range found.Articles {
		switch {
		case a.Title == "How to connect to the VPN":
			number = a.Number
		case strings.HasPrefix(a.Title, "Draft:"), strings.HasPrefix(a.Title, "Legacy"):
			w.t.Errorf("servicenow_search_knowledge returned %q, which is not published", a.Title)
		}
	}
	if number == "" {
		w.t.Fatalf("servicenow_search_knowledge vpn: want the article How to connect to the VPN, got %+v", found.Articles)
	}

	var article struct {
		Number string `json:"number"`
		Title  string `json:"title"`
		Text   string `json:"text"`
	}
	w.ok("servicenow_get_knowledge_article", map[string]any{"article": number}, &article)
	if article.Number != number || !strings.Contains(article.Text, "Install the VPN client, then sign in with your network password.") {
		w.t.Errorf("servicenow_get_knowledge_article %s: want the VPN article's text, got %+v", number, article)
	}
}

func (w *everyTool) catalog() {
	w.t.Helper()
	var found struct {
		Items []struct {
			SysID string `json:"sys_id"`
			Name  string `json:"name"`
		} `json:"items"`
	}
	w.ok("servicenow_search_catalog_items", map[string]any{"query": "laptop", "category": "Hardware"}, &found)
	laptop := ""
	for _, it := range found.Items {
		if it.Name == "Standard Laptop" {
			laptop = it.SysID
		}
	}
	if !isSysIDString(laptop) {
		w.t.Fatalf("servicenow_search_catalog_items laptop: want Standard Laptop, got %+v", found.Items)
	}

	var item struct {
		Name      string `json:"name"`
		Variables []struct {
			Name      string `json:"name"`
			Mandatory bool   `json:"mandatory"`
			Choices   []struct {
				Value string `json:"value"`
			} `json:"choices"`
		} `json:"variables"`
	}
	w.ok("servicenow_get_catalog_item", map[string]any{"item": laptop}, &item)
	osChoices := []string(nil)
	for _, v := range item.Variables {
		if v.Name == "operating_system" && v.Mandatory {
			for _, ch := range v.Choices {
				osChoices = append(osChoices, ch.Value)
			}
		}
	}
	if item.Name != "Standard Laptop" || !slices.Contains(osChoices, "linux") {
		w.t.Errorf("servicenow_get_catalog_item: want Standard Laptop with a mandatory operating_system offering linux, got %+v", item)
	}

	var order struct {
		Status        string `json:"status"`
		RequestNumber string `json:"request_number"`
	}
	w.ok("servicenow_order_catalog_item", map[string]any{"item": "Standard Laptop", "quantity": 1,
		"variables": map[string]any{"operating_system": "linux", "justification": "New starter in the Zebracorn team."}}, &order)
	if order.Status != "ordered" || !requestNumber.MatchString(order.RequestNumber) {
		w.t.Fatalf("servicenow_order_catalog_item: want status ordered with a REQ number, got %+v", order)
	}

	type status struct {
		Request shaped   `json:"request"`
		Items   []shaped `json:"items"`
	}
	var byReq status
	w.ok("servicenow_get_request_status", map[string]any{"request": order.RequestNumber}, &byReq)
	if byReq.Request.value("number") != order.RequestNumber || len(byReq.Items) != 1 ||
		!itemNumber.MatchString(byReq.Items[0].value("number")) || byReq.Items[0].display("cat_item") != "Standard Laptop" {
		w.t.Fatalf("servicenow_get_request_status %s: want the request with one RITM for Standard Laptop, got %+v", order.RequestNumber, byReq)
	}
	ritm := byReq.Items[0].value("number")
	var byItem status
	w.ok("servicenow_get_request_status", map[string]any{"request": ritm}, &byItem)
	if byItem.Request.value("number") != order.RequestNumber {
		w.t.Errorf("servicenow_get_request_status %s: want its request %s, got %+v", ritm, order.RequestNumber, byItem.Request)
	}
}

// ---------- attachments ----------

// attachments uploads bytes that are not text, lists them and downloads
// them back as a blob of the same MIME type.
func (w *everyTool) attachments() {
	w.t.Helper()
	data := []byte("\x89PNG\r\n\x1a\n")
	for b := 0; b < 256; b++ {
		data = append(data, byte(b), byte(255-b))
	}

	var up struct {
		Status     string `json:"status"`
		Attachment struct {
			SysID       string `json:"sys_id"`
			FileName    string `json:"file_name"`
			ContentType string `json:"content_type"`
			SizeBytes   int    `json:"size_bytes"`
		} `json:"attachment"`
	}
	w.ok("servicenow_upload_attachment", map[string]any{"table": "incident", "record": w.incident,
		"file_name": "door4-reader.png", "content_base64": base64.StdEncoding.EncodeToString(data),
		"content_type": "image/png"}, &up)
	id := up.Attachment.SysID
	if up.Status != "attached" || !isSysIDString(id) || up.Attachment.SizeBytes != len(data) ||
		up.Attachment.ContentType != "image/png" {
		w.t.Fatalf("servicenow_upload_attachment: want %d bytes of image/png attached, got %+v", len(data), up)
	}

	var list struct {
		Record      string `json:"record_sys_id"`
		Attachments []struct {
			SysID     string `json:"sys_id"`
			FileName  string `json:"file_name"`
			SizeBytes int    `json:"size_bytes"`
			CreatedBy string `json:"created_by"`
		} `json:"attachments"`
	}
	w.ok("servicenow_list_attachments", map[string]any{"table": "incident", "record": w.incident}, &list)
	if list.Record != w.incidentSysID || len(list.Attachments) != 1 || list.Attachments[0].SysID != id ||
		list.Attachments[0].FileName != "door4-reader.png" || list.Attachments[0].SizeBytes != len(data) {
		w.t.Errorf("servicenow_list_attachments %s: want only door4-reader.png, got %+v", w.incident, list)
	}

	down := w.ok("servicenow_download_attachment", map[string]any{"sys_id": id}, nil)
	found := false
	for _, c := range down.Content {
		if c.Type != "resource" || c.Resource == nil {
			continue
		}
		found = true
		got, err := base64.StdEncoding.DecodeString(c.Resource.Blob)
		if err != nil || !bytes.Equal(got, data) || c.Resource.MIMEType != "image/png" {
			w.t.Errorf("servicenow_download_attachment: blob (%v) of type %q is not the %d bytes of image/png uploaded",
				err, c.Resource.MIMEType, len(data))
		}
	}
	if !found || !strings.Contains(down.text(), "door4-reader.png") {
		w.t.Errorf("servicenow_download_attachment: want a text naming the file and an embedded blob, got %+v", down)
	}
}

// ---------- deleting, as the admin ----------

// deleteAsAdmin links the admin on link and deletes the record alice made
// with servicenow_create_record: deleting incidents needs the admin role.
func (w *everyTool) deleteAsAdmin(link string) {
	w.t.Helper()
	w.consent(link, "admin")
	var status map[string]any
	w.ok("servicenow_connection_status", nil, &status)
	if status["status"] != "ACTIVE" || status["servicenow_user"] != "admin" {
		w.t.Fatalf("connection status after linking the admin: %v", status)
	}

	var out struct {
		Deleted bool   `json:"deleted"`
		SysID   string `json:"sys_id"`
	}
	w.ok("servicenow_delete_record", map[string]any{"table": "incident", "record": w.record}, &out)
	if !out.Deleted || !isSysIDString(out.SysID) {
		w.t.Errorf("servicenow_delete_record %s: want deleted true with its sys_id, got %+v", w.record, out)
	}
	gone := w.call("servicenow_get_record", map[string]any{"table": "incident", "record": out.SysID})
	if !gone.IsError || !strings.Contains(gone.text(), "404") {
		w.t.Errorf("servicenow_get_record of the deleted %s: want a not-found error, got %s", w.record, gone.text())
	}
}

func isSysIDString(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}
