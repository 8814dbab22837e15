package tools

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"servicenow-mcp/servicenow"
)

func init() {
	register(
		Def{
			Name:    "servicenow_list_incidents",
			Toolset: "incidents",
			Title:   "List incidents",
			Description: "List incidents the user can see, filtered by state, priority, assignee, assignment group, caller, words in the description, " +
				"opening time and active flag; newest first. Use it to find incidents or to review a queue. " +
				"Filters take choice labels or values (\"In Progress\" or 2) and people or groups by name, user name, email or sys_id (\"me\" for the user). " +
				"Returns number, short_description, state, priority, assignee, group, caller and opened_at per incident, with total and next_offset.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: []Param{
				{Name: "state", Type: "string", Description: "State label or value, e.g. New, In Progress, On Hold, Resolved; several separated by commas."},
				{Name: "priority", Type: "string", Description: "Priority label or value, e.g. \"1 - Critical\" or 1; several separated by commas."},
				{Name: "assigned_to", Type: "string", Description: "Assignee: user name, email, name, sys_id, or \"me\"."},
				{Name: "assignment_group", Type: "string", Description: "Assignment group name or sys_id."},
				{Name: "caller", Type: "string", Description: "Caller: user name, email, name, sys_id, or \"me\"."},
				{Name: "text", Type: "string", Description: "Words that must appear in the short description or description."},
				{Name: "opened_since", Type: "string", Description: "Only incidents opened at or after this time: a date (2025-01-31), a UTC date-time, or a span back from now such as 24h or 7d."},
				{Name: "active", Type: "boolean", Description: "true for open incidents only, false for closed or canceled only; leave out for both."},
				fieldsParam, limitParam, offsetParam,
			},
			Handler: listIncidents,
		},
		Def{
			Name:    "servicenow_get_incident",
			Toolset: "incidents",
			Title:   "Read an incident",
			Description: "Read one incident by number (INC0010001) or sys_id, with its latest comments and work notes, newest first. " +
				"Returns the incident's main fields (choice labels and reference names beside their values) and a journal list of entries.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: []Param{
				{Name: "incident", Type: "string", Required: true, Description: "The incident's number (e.g. INC0010001) or sys_id."},
				{Name: "journal_entries", Type: "integer", Min: ptr(0), Max: ptr(50), Description: "How many of the latest comments and work notes to include (default 10, 0 for none)."},
				fieldsParam,
			},
			Handler: getIncident,
		},
		Def{
			Name:    "servicenow_create_incident",
			Toolset: "incidents",
			Title:   "Create an incident",
			Description: "Open a new incident as the user. Only short_description is needed; the caller defaults to the user. " +
				"Choice fields take labels or values; people and groups take names, user names, emails or sys_ids. " +
				"Returns the new incident's number, sys_id and main fields.",
			ReadOnly: false, Destructive: false, Idempotent: false, OpenWorld: true,
			Params: append([]Param{
				{Name: "short_description", Type: "string", Required: true, Description: "One-line summary of the problem."},
				{Name: "caller", Type: "string", Description: "Who reports it: user name, email, name or sys_id; default the user (\"me\")."},
			}, append(incidentWriteParams, extraFieldsParam)...),
			Handler: createIncident,
		},
		Def{
			Name:    "servicenow_update_incident",
			Toolset: "incidents",
			Title:   "Update an incident",
			Description: "Change fields of one incident, by number or sys_id: state, priority inputs, assignment, category, description or any other field through other_fields. " +
				"To add a comment or work note use servicenow_add_incident_comment; to resolve use servicenow_resolve_incident. " +
				"Returns the incident's main fields after the change.",
			ReadOnly: false, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: append([]Param{
				{Name: "incident", Type: "string", Required: true, Description: "The incident's number (e.g. INC0010001) or sys_id."},
				{Name: "short_description", Type: "string", Description: "New one-line summary."},
				{Name: "state", Type: "string", Description: "New state label or value, e.g. In Progress or On Hold."},
				{Name: "caller", Type: "string", Description: "New caller: user name, email, name or sys_id."},
			}, append(incidentWriteParams, extraFieldsParam)...),
			Handler: updateIncident,
		},
		Def{
			Name:    "servicenow_add_incident_comment",
			Toolset: "incidents",
			Title:   "Comment on an incident",
			Description: "Add a comment (visible to the caller) or a work note (internal; needs the itil role) to one incident. " +
				"Returns the incident's number and its latest journal entries.",
			ReadOnly: false, Destructive: false, Idempotent: false, OpenWorld: true,
			Params: []Param{
				{Name: "incident", Type: "string", Required: true, Description: "The incident's number (e.g. INC0010001) or sys_id."},
				{Name: "text", Type: "string", Required: true, Description: "The text of the entry."},
				{Name: "type", Type: "string", Enum: []string{"comment", "work_note"}, Description: "comment (default, visible to the caller) or work_note (internal)."},
			},
			Handler: addIncidentComment,
		},
		Def{
			Name:    "servicenow_resolve_incident",
			Toolset: "incidents",
			Title:   "Resolve an incident",
			Description: "Mark one incident Resolved with a resolution code and notes. Use it when the user says the issue is fixed. " +
				"close_code takes a label or value such as \"Solved (Permanently)\". Returns the incident's state, close code and notes afterwards.",
			ReadOnly: false, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: []Param{
				{Name: "incident", Type: "string", Required: true, Description: "The incident's number (e.g. INC0010001) or sys_id."},
				{Name: "close_code", Type: "string", Required: true, Description: "Resolution code label or value, e.g. Solved (Permanently), Solved (Work Around)."},
				{Name: "close_notes", Type: "string", Required: true, Description: "What was done to resolve it."},
			},
			Handler: resolveIncident,
		},
	)
}

var (
	extraFieldsParam = Param{Name: "other_fields", Type: "object",
		Description: "Other fields to set, by ServiceNow field name, e.g. {\"u_custom\":\"x\"}; labels and reference keys are resolved like the named arguments."}

	incidentWriteParams = []Param{
		{Name: "description", Type: "string", Description: "Longer description."},
		{Name: "category", Type: "string", Description: "Category label or value, e.g. Network, Software, Hardware."},
		{Name: "impact", Type: "string", Description: "Impact label or value: 1 - High, 2 - Medium, 3 - Low."},
		{Name: "urgency", Type: "string", Description: "Urgency label or value: 1 - High, 2 - Medium, 3 - Low (priority follows impact and urgency)."},
		{Name: "assignment_group", Type: "string", Description: "Assignment group name or sys_id."},
		{Name: "assigned_to", Type: "string", Description: "Assignee: user name, email, name, sys_id, or \"me\"."},
	}
)

var incidentListFields = []string{"number", "short_description", "state", "priority", "assigned_to", "assignment_group", "caller_id", "opened_at"}

var incidentFields = []string{
	"number", "short_description", "description", "state", "priority", "impact", "urgency", "category",
	"caller_id", "assigned_to", "assignment_group", "opened_at", "opened_by", "resolved_at", "resolved_by",
	"close_code", "close_notes", "active", "sys_updated_on",
}

func listIncidents(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	spec := ListSpec{
		Table: "incident", Filters: map[string]any{},
		Fields: c.Args.Strings("fields"), DefaultFields: incidentListFields,
		DefaultOrder: []servicenow.Order{{Field: "opened_at", Desc: true}},
	}
	spec.Limit, spec.Offset = pageArgs(c)
	for arg, field := range map[string]string{"state": "state", "priority": "priority"} {
		if v := listFilter(c.Args.String(arg)); v != nil {
			spec.Filters[field] = v
		}
	}
	for arg, field := range map[string]string{"assigned_to": "assigned_to", "assignment_group": "assignment_group", "caller": "caller_id"} {
		if v := strings.TrimSpace(c.Args.String(arg)); v != "" {
			spec.Filters[field] = v
		}
	}
	if c.Args.Has("active") {
		spec.Filters["active"] = strconv.FormatBool(c.Args.Bool("active", true))
	}
	if since := c.Args.String("opened_since"); since != "" {
		at, err := parseSince(since, time.Now())
		if err != nil {
			return errorResult("argument \"opened_since\": %s", err)
		}
		spec.Conditions = append(spec.Conditions, servicenow.Condition{Field: "opened_at", Op: ">=", Values: []string{at}})
	}
	encoded, err := textQuery(c.Args.String("text"), "short_description", "description")
	if err != nil {
		return failure(ctx, d, c, err)
	}
	spec.Encoded = encoded
	return listRecords(ctx, d, c, spec)
}

func getIncident(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	return recordWithJournal(ctx, d, c, "incident", c.Args.String("incident"), incidentFields, c.Args.Int("journal_entries", 10))
}

// recordWithJournal reads one record and its latest journal entries.
func recordWithJournal(ctx context.Context, d *Deps, c *Call, table, key string, defaults []string, entries int64) *mcp.CallToolResult {
	fields := c.Args.Strings("fields")
	if len(fields) == 0 {
		fields = defaults
	}
	rec, res := getRecord(ctx, d, c, table, strings.TrimSpace(key), withSysID(fields))
	if res != nil {
		return res
	}
	out := map[string]any{table: rec}
	if entries > 0 {
		journal, note, res := latestJournal(ctx, d, c, table, plainString(rec["sys_id"]), entries)
		if res != nil {
			return res
		}
		out["journal"] = journal
		if note != "" {
			out["journal_note"] = note
		}
	}
	fitRecordAnswer(out, table, d.budget(), "journal")
	return jsonResult(out)
}

// journalEntry is one comment or work note.
type journalEntry struct {
	Type      string `json:"type"`
	CreatedOn string `json:"created_on"`
	CreatedBy string `json:"created_by"`
	Text      string `json:"text"`
}

// latestJournal reads a record's newest comments and work notes from
// sys_journal_field. Work notes the user may not read are simply absent,
// so an empty or comment-only answer says that entries may be hidden.
func latestJournal(ctx context.Context, d *Deps, c *Call, table, sysID string, n int64) ([]journalEntry, string, *mcp.CallToolResult) {
	if !isSysID(sysID) {
		return nil, "", nil
	}
	rows, total, err := tableRows(ctx, d, c, "sys_journal_field", servicenow.Query{
		All: []servicenow.Condition{
			{Field: "name", Op: "=", Values: []string{table}},
			{Field: "element_id", Op: "=", Values: []string{sysID}},
			{Field: "element", Op: "IN", Values: []string{"comments", "work_notes"}},
		},
		Order: []servicenow.Order{{Field: "sys_created_on", Desc: true}},
	}, []string{"element", "value", "sys_created_on", "sys_created_by"}, int(n))
	var api *servicenow.APIError
	if errors.As(err, &api) && api.Status == http.StatusForbidden {
		return nil, "The comments and work notes could not be read: access rules on sys_journal_field refuse it for this user.", nil
	}
	if err != nil {
		return nil, "", failure(ctx, d, c, err)
	}
	out := make([]journalEntry, 0, len(rows))
	notes := 0
	for _, r := range rows {
		typ := "comment"
		if plainString(r["element"]) == "work_notes" {
			typ = "work_note"
			notes++
		}
		out = append(out, journalEntry{
			Type: typ, CreatedOn: isoUTC(plainString(r["sys_created_on"])),
			CreatedBy: plainString(r["sys_created_by"]), Text: plainString(r["value"]),
		})
	}
	note := ""
	switch {
	case len(out) == 0:
		note = "No comments or work notes are visible. There may be none, or access rules may hide them (work notes need the itil role)."
	case notes == 0:
		note = "Only comments are shown; work notes, if any, may be hidden by access rules (they need the itil role)."
	case total > int64(len(out)):
		note = fmt.Sprintf("the latest %d of %d entries; ask for more with journal_entries", len(out), total)
	}
	return out, note, nil
}

func createIncident(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	values := writeValues(c, map[string]string{"short_description": "short_description", "caller": "caller_id"}, incidentWriteParams)
	if _, ok := values["caller_id"]; !ok {
		values["caller_id"] = "me"
	}
	return writeRecord(ctx, d, c, http.MethodPost, "incident", "", values, incidentFields)
}

func updateIncident(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	values := writeValues(c, map[string]string{"short_description": "short_description", "state": "state", "caller": "caller_id"}, incidentWriteParams)
	if len(values) == 0 {
		return errorResult("nothing to change: give at least one field to set")
	}
	return updateByKey(ctx, d, c, "incident", c.Args.String("incident"), values, incidentFields)
}

func addIncidentComment(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	text := c.Args.String("text")
	if strings.TrimSpace(text) == "" {
		return errorResult("argument \"text\" is empty")
	}
	field := "comments"
	if c.Args.String("type") == "work_note" {
		field = "work_notes"
	}
	return updateByKey(ctx, d, c, "incident", c.Args.String("incident"), map[string]any{field: text},
		[]string{"number", "state", "sys_updated_on"})
}

func resolveIncident(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	notes := strings.TrimSpace(c.Args.String("close_notes"))
	if notes == "" {
		return errorResult("argument \"close_notes\" is empty: say what was done to resolve the incident")
	}
	values := map[string]any{
		"state":       "6",
		"close_code":  strings.TrimSpace(c.Args.String("close_code")),
		"close_notes": notes,
	}
	return updateByKey(ctx, d, c, "incident", c.Args.String("incident"), values,
		[]string{"number", "state", "close_code", "close_notes", "resolved_at", "resolved_by"})
}

// updateByKey resolves a number or sys_id and patches the record.
func updateByKey(ctx context.Context, d *Deps, c *Call, table, key string, values map[string]any, fields []string) *mcp.CallToolResult {
	if d.ReadOnly {
		return errorResult("the server runs in read-only mode; changing %s records is refused", table)
	}
	key = strings.TrimSpace(key)
	id := key
	if !isSysID(key) {
		var err error
		if id, err = resolveReference(ctx, d, c, table, key); err != nil {
			return referenceFailure(ctx, d, c, table, err)
		}
	}
	return writeRecord(ctx, d, c, http.MethodPatch, table, id, values, fields)
}

// writeValues gathers named arguments (argument → field) and the common
// write parameters, then the free-form other_fields object. A named
// argument wins over the same field in other_fields.
func writeValues(c *Call, named map[string]string, common []Param) map[string]any {
	values := map[string]any{}
	for k, v := range c.Args.Object("other_fields") {
		values[k] = v
	}
	for _, p := range common {
		named[p.Name] = p.Name
	}
	for arg, field := range named {
		if c.Args.Has(arg) {
			values[field] = c.Args.String(arg)
		}
	}
	return values
}

// listFilter reads a filter argument that may name several values
// separated by commas; nil when empty.
func listFilter(s string) any {
	var vals []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			vals = append(vals, v)
		}
	}
	switch len(vals) {
	case 0:
		return nil
	case 1:
		return vals[0]
	}
	list := make([]any, len(vals))
	for i, v := range vals {
		list[i] = v
	}
	return list
}

// textQuery builds "every word is in one of these fields" as an encoded query.
// A text that alone is longer than a URL may be is refused before the
// query, which repeats each word once per field, is built.
func textQuery(text string, fields ...string) (string, error) {
	if len(text) > servicenow.MaxURLLength {
		return "", &servicenow.URLTooLongError{Length: len(text), Param: "sysparm_query"}
	}
	var q servicenow.Query
	for _, word := range strings.Fields(text) {
		var group []servicenow.Condition
		for _, f := range fields {
			group = append(group, servicenow.Condition{Field: f, Op: "LIKE", Values: []string{word}})
		}
		q.Any = append(q.Any, group)
	}
	return q.Encode()
}

func withSysID(fields []string) []string {
	for _, f := range fields {
		if f == "sys_id" {
			return fields
		}
	}
	return append([]string{"sys_id"}, fields...)
}
