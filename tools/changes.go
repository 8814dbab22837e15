package tools

import (
	"context"
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
			Name:    "servicenow_list_change_requests",
			Toolset: "changes",
			Title:   "List change requests",
			Description: "List change requests the user can see, filtered by state, type, risk, assignee, assignment group, words in the description, " +
				"and planned start window; soonest planned start first. Filters take choice labels or values (Scheduled or -2) and people or groups by name or sys_id. " +
				"Returns number, short_description, type, state, risk, planned start and end, assignee and group, with total and next_offset.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: []Param{
				{Name: "state", Type: "string", Description: "State label or value, e.g. New, Assess, Authorize, Scheduled, Implement, Review, Closed; several separated by commas."},
				{Name: "type", Type: "string", Description: "normal, standard or emergency."},
				{Name: "risk", Type: "string", Description: "Risk label or value: High, Moderate, Low."},
				{Name: "assigned_to", Type: "string", Description: "Assignee: user name, email, name, sys_id, or \"me\"."},
				{Name: "assignment_group", Type: "string", Description: "Assignment group name or sys_id."},
				{Name: "text", Type: "string", Description: "Words that must appear in the short description or description."},
				{Name: "starts_after", Type: "string", Description: "Only changes planned to start at or after this time: a date, a UTC date-time, or a span back from now such as 7d."},
				{Name: "starts_before", Type: "string", Description: "Only changes planned to start before this time: a date or a UTC date-time."},
				{Name: "active", Type: "boolean", Description: "true for open changes only, false for closed or canceled only; leave out for both."},
				fieldsParam, limitParam, offsetParam,
			},
			Handler: listChanges,
		},
		Def{
			Name:    "servicenow_get_change_request",
			Toolset: "changes",
			Title:   "Read a change request",
			Description: "Read one change request by number (CHG0010001) or sys_id, with its change tasks and latest comments and work notes. " +
				"Returns the change's fields (plans, schedule, risk, labels beside values), a tasks list and a journal list.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: []Param{
				{Name: "change", Type: "string", Required: true, Description: "The change's number (e.g. CHG0010001) or sys_id."},
				{Name: "journal_entries", Type: "integer", Min: ptr(0), Max: ptr(50), Description: "How many of the latest comments and work notes to include (default 5, 0 for none)."},
				fieldsParam,
			},
			Handler: getChange,
		},
		Def{
			Name:    "servicenow_create_change_request",
			Toolset: "changes",
			Title:   "Create a change request",
			Description: "Create a change request as the user (normally the itil role). Only short_description is needed; type defaults to normal. " +
				"Choice fields take labels or values; people and groups take names or sys_ids; dates are UTC (2025-02-01 22:00:00). " +
				"Returns the new change's number, sys_id and main fields.",
			ReadOnly: false, Destructive: false, Idempotent: false, OpenWorld: true,
			Params: append([]Param{
				{Name: "short_description", Type: "string", Required: true, Description: "One-line summary of the change."},
				{Name: "type", Type: "string", Description: "normal (default), standard or emergency."},
			}, append(changeWriteParams, extraFieldsParam)...),
			Handler: createChange,
		},
		Def{
			Name:    "servicenow_update_change_request",
			Toolset: "changes",
			Title:   "Update a change request",
			Description: "Change fields of one change request, by number or sys_id: state, schedule, plans, risk, assignment, or any other field through other_fields. " +
				"Returns the change's main fields after the change.",
			ReadOnly: false, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: append([]Param{
				{Name: "change", Type: "string", Required: true, Description: "The change's number (e.g. CHG0010001) or sys_id."},
				{Name: "short_description", Type: "string", Description: "New one-line summary."},
				{Name: "state", Type: "string", Description: "New state label or value, e.g. Assess, Scheduled, Implement, Review."},
				{Name: "work_note", Type: "string", Description: "A work note to add with the change (internal; needs itil)."},
			}, append(changeWriteParams, extraFieldsParam)...),
			Handler: updateChange,
		},
		Def{
			Name:    "servicenow_add_change_task",
			Toolset: "changes",
			Title:   "Add a change task",
			Description: "Add a task to one change request, e.g. a pre-implementation check or a verification step. " +
				"Returns the new task's number, sys_id and fields.",
			ReadOnly: false, Destructive: false, Idempotent: false, OpenWorld: true,
			Params: []Param{
				{Name: "change", Type: "string", Required: true, Description: "The change's number (e.g. CHG0010001) or sys_id."},
				{Name: "short_description", Type: "string", Required: true, Description: "One-line summary of the task."},
				{Name: "description", Type: "string", Description: "Longer description."},
				{Name: "assignment_group", Type: "string", Description: "Assignment group name or sys_id."},
				{Name: "assigned_to", Type: "string", Description: "Assignee: user name, email, name, sys_id, or \"me\"."},
				{Name: "planned_start_date", Type: "string", Description: "Planned start, UTC: 2025-02-01 22:00:00 or 2025-02-01T22:00:00Z."},
				{Name: "planned_end_date", Type: "string", Description: "Planned end, UTC."},
				extraFieldsParam,
			},
			Handler: addChangeTask,
		},
	)
}

var changeWriteParams = []Param{
	{Name: "description", Type: "string", Description: "Longer description."},
	{Name: "risk", Type: "string", Description: "Risk label or value: High, Moderate, Low."},
	{Name: "impact", Type: "string", Description: "Impact label or value: 1 - High, 2 - Medium, 3 - Low."},
	{Name: "assignment_group", Type: "string", Description: "Assignment group name or sys_id."},
	{Name: "assigned_to", Type: "string", Description: "Assignee: user name, email, name, sys_id, or \"me\"."},
	{Name: "start_date", Type: "string", Description: "Planned start, UTC: 2025-02-01 22:00:00 or 2025-02-01T22:00:00Z."},
	{Name: "end_date", Type: "string", Description: "Planned end, UTC."},
	{Name: "justification", Type: "string", Description: "Why the change is needed."},
	{Name: "implementation_plan", Type: "string", Description: "How the change will be carried out."},
	{Name: "backout_plan", Type: "string", Description: "How to undo it if it fails."},
}

var changeListFields = []string{"number", "short_description", "type", "state", "risk", "start_date", "end_date", "assigned_to", "assignment_group"}

var changeFields = []string{
	"number", "short_description", "description", "type", "state", "risk", "impact", "priority",
	"start_date", "end_date", "assignment_group", "assigned_to", "requested_by", "active",
	"justification", "implementation_plan", "backout_plan", "sys_updated_on",
}

var changeTaskFields = []string{"number", "short_description", "state", "assigned_to", "assignment_group", "planned_start_date", "planned_end_date"}

func listChanges(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	spec := ListSpec{
		Table: "change_request", Filters: map[string]any{},
		Fields: c.Args.Strings("fields"), DefaultFields: changeListFields,
		DefaultOrder: []servicenow.Order{{Field: "start_date"}},
	}
	spec.Limit, spec.Offset = pageArgs(c)
	for _, arg := range []string{"state", "type", "risk"} {
		if v := listFilter(c.Args.String(arg)); v != nil {
			spec.Filters[arg] = v
		}
	}
	for _, arg := range []string{"assigned_to", "assignment_group"} {
		if v := strings.TrimSpace(c.Args.String(arg)); v != "" {
			spec.Filters[arg] = v
		}
	}
	if c.Args.Has("active") {
		spec.Filters["active"] = strconv.FormatBool(c.Args.Bool("active", true))
	}
	for arg, op := range map[string]string{"starts_after": ">=", "starts_before": "<"} {
		if v := c.Args.String(arg); v != "" {
			at, err := parseSince(v, time.Now())
			if err != nil {
				return errorResult("argument %q: %s", arg, err)
			}
			spec.Conditions = append(spec.Conditions, servicenow.Condition{Field: "start_date", Op: op, Values: []string{at}})
		}
	}
	encoded, err := textQuery(c.Args.String("text"), "short_description", "description")
	if err != nil {
		return failure(ctx, d, c, err)
	}
	spec.Encoded = encoded
	return listRecords(ctx, d, c, spec)
}

func getChange(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	fields := c.Args.Strings("fields")
	if len(fields) == 0 {
		fields = changeFields
	}
	rec, res := getRecord(ctx, d, c, "change_request", strings.TrimSpace(c.Args.String("change")), withSysID(fields))
	if res != nil {
		return res
	}
	id := plainString(rec["sys_id"])
	out := map[string]any{"change_request": rec}

	tasks, total, err := tableRows(ctx, d, c, "change_task", servicenow.Query{
		All:   []servicenow.Condition{{Field: "change_request", Op: "=", Values: []string{id}}},
		Order: []servicenow.Order{{Field: "number"}},
	}, withSysID(changeTaskFields), 50)
	if err != nil {
		return recordFailure(ctx, d, c, "change_task", "read", err)
	}
	shaped := make([]map[string]any, 0, len(tasks))
	for _, t := range tasks {
		shaped = append(shaped, shapeRow(t))
	}
	out["tasks"] = shaped
	if total > int64(len(tasks)) {
		out["tasks_note"] = "showing the first 50 of " + strconv.FormatInt(total, 10) + " tasks"
	}

	if n := c.Args.Int("journal_entries", 5); n > 0 {
		journal, note, res := latestJournal(ctx, d, c, "change_request", id, n)
		if res != nil {
			return res
		}
		out["journal"] = journal
		if note != "" {
			out["journal_note"] = note
		}
	}
	fitRecordAnswer(out, "change_request", d.budget(), "journal", "tasks")
	return jsonResult(out)
}

func createChange(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	values := writeValues(c, map[string]string{"short_description": "short_description", "type": "type"}, changeWriteParams)
	if _, ok := values["type"]; !ok {
		values["type"] = "normal"
	}
	return writeRecord(ctx, d, c, http.MethodPost, "change_request", "", values, changeFields)
}

func updateChange(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	values := writeValues(c, map[string]string{"short_description": "short_description", "state": "state", "work_note": "work_notes"}, changeWriteParams)
	if len(values) == 0 {
		return errorResult("nothing to change: give at least one field to set")
	}
	return updateByKey(ctx, d, c, "change_request", c.Args.String("change"), values, changeFields)
}

func addChangeTask(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	if d.ReadOnly {
		return errorResult("the server runs in read-only mode; adding change tasks is refused")
	}
	values := writeValues(c, map[string]string{
		"short_description": "short_description", "description": "description",
		"assignment_group": "assignment_group", "assigned_to": "assigned_to",
		"planned_start_date": "planned_start_date", "planned_end_date": "planned_end_date",
	}, nil)
	key := strings.TrimSpace(c.Args.String("change"))
	id, err := resolveReference(ctx, d, c, "change_request", key)
	if err != nil {
		return referenceFailure(ctx, d, c, "change", err)
	}
	values["change_request"] = id
	return writeRecord(ctx, d, c, http.MethodPost, "change_task", "", values, append([]string{"change_request"}, changeTaskFields...))
}
