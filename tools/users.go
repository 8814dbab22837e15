package tools

import (
	"context"
	"strings"

	"github.com/mark3labs/mcp-go/mcp"

	"servicenow-mcp/servicenow"
)

func init() {
	register(
		Def{
			Name:    "servicenow_find_users",
			Toolset: "users",
			Title:   "Find users",
			Description: "Find ServiceNow users whose name, user name or email contains the given text, e.g. to learn whom to assign or who a caller is. " +
				"Returns sys_id, user_name, name, email, title and department of each, with total and next_offset; active users only unless asked.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: []Param{
				{Name: "query", Type: "string", Required: true, Description: "Text to look for in the name, user name or email, e.g. alice or archer@example.com."},
				{Name: "department", Type: "string", Description: "Only users of this department (exact name)."},
				{Name: "include_inactive", Type: "boolean", Description: "Also return deactivated users (default false)."},
				fieldsParam, limitParam, offsetParam,
			},
			Handler: findUsers,
		},
		Def{
			Name:    "servicenow_find_groups",
			Toolset: "users",
			Title:   "Find groups",
			Description: "Find ServiceNow groups (assignment groups, teams) whose name contains the given text, or list all active groups. " +
				"Returns sys_id, name, description, manager and email of each, with total and next_offset.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: []Param{
				{Name: "query", Type: "string", Description: "Text to look for in the group name, e.g. network. Leave out to list groups."},
				{Name: "include_inactive", Type: "boolean", Description: "Also return deactivated groups (default false)."},
				fieldsParam, limitParam, offsetParam,
			},
			Handler: findGroups,
		},
		Def{
			Name:    "servicenow_list_group_members",
			Toolset: "users",
			Title:   "List a group's members",
			Description: "List the members of one group, by group name or sys_id. " +
				"Returns each member's user (sys_id and name), user name and email, with total and next_offset.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: []Param{
				{Name: "group", Type: "string", Required: true, Description: "The group's exact name (e.g. Service Desk) or sys_id."},
				limitParam, offsetParam,
			},
			Handler: listGroupMembers,
		},
	)
}

var userFields = []string{"user_name", "name", "email", "title", "department", "active"}

var groupFields = []string{"name", "description", "manager", "email", "active"}

func findUsers(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	text := strings.TrimSpace(c.Args.String("query"))
	if text == "" {
		return errorResult("argument \"query\" is empty: give part of a name, user name or email")
	}
	spec := ListSpec{
		Table: "sys_user", Filters: map[string]any{},
		Fields: c.Args.Strings("fields"), DefaultFields: userFields,
		DefaultOrder: []servicenow.Order{{Field: "name"}},
	}
	spec.Limit, spec.Offset = pageArgs(c)
	if !c.Args.Bool("include_inactive", false) {
		spec.Filters["active"] = "true"
	}
	if dept := strings.TrimSpace(c.Args.String("department")); dept != "" {
		spec.Filters["department"] = dept
	}
	var group []servicenow.Condition
	for _, f := range []string{"name", "user_name", "email"} {
		group = append(group, servicenow.Condition{Field: f, Op: "LIKE", Values: []string{text}})
	}
	encoded, err := servicenow.Query{Any: [][]servicenow.Condition{group}}.Encode()
	if err != nil {
		return failure(ctx, d, c, err)
	}
	spec.Encoded = encoded
	return listRecords(ctx, d, c, spec)
}

func findGroups(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	spec := ListSpec{
		Table: "sys_user_group", Filters: map[string]any{},
		Fields: c.Args.Strings("fields"), DefaultFields: groupFields,
		DefaultOrder: []servicenow.Order{{Field: "name"}},
	}
	spec.Limit, spec.Offset = pageArgs(c)
	if !c.Args.Bool("include_inactive", false) {
		spec.Filters["active"] = "true"
	}
	if text := strings.TrimSpace(c.Args.String("query")); text != "" {
		spec.Conditions = append(spec.Conditions, servicenow.Condition{Field: "name", Op: "LIKE", Values: []string{text}})
	}
	return listRecords(ctx, d, c, spec)
}

func listGroupMembers(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	key := strings.TrimSpace(c.Args.String("group"))
	id, err := resolveReference(ctx, d, c, "sys_user_group", key)
	if err != nil {
		return referenceFailure(ctx, d, c, "group", err)
	}
	limit, offset := pageArgs(c)
	spec := ListSpec{
		Table:         "sys_user_grmember",
		Filters:       map[string]any{"group": id},
		DefaultFields: []string{"user", "user.user_name", "user.email"},
		DefaultOrder:  []servicenow.Order{{Field: "user.name"}},
		Limit:         limit, Offset: offset,
	}
	res := listRecords(ctx, d, c, spec)
	if !res.IsError && strings.Contains(resultText(res), `"returned":0`) && offset == 0 {
		return jsonResult(map[string]any{"group": key, "group_sys_id": id, "returned": 0, "records": []any{},
			"note": "The group has no members this user can see; membership may be hidden by access rules."})
	}
	return res
}

func resultText(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, ct := range r.Content {
		if t, ok := ct.(mcp.TextContent); ok {
			b.WriteString(t.Text)
		}
	}
	return b.String()
}
