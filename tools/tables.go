package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/mark3labs/mcp-go/mcp"

	"servicenow-mcp/servicenow"
)

// Parameters shared by the table tools and by typed tools elsewhere.
var (
	tableParam = Param{Name: "table", Type: "string", Required: true,
		Description: "Internal table name, e.g. incident, change_request, sys_user, cmdb_ci_server."}
	filtersParam = Param{Name: "filters", Type: "object",
		Description: "Field equality filters, e.g. {\"state\":\"In Progress\",\"assigned_to\":\"me\",\"priority\":[\"1\",\"2\"]}. " +
			"A list means any of those values. Choice fields take the label or the value; reference fields take a sys_id or a human key " +
			"(user: user name, email, name or me; group: name; record: number)."}
	conditionsParam = Param{Name: "conditions", Type: "array",
		Description: "Conditions with other operators, all of which must hold, e.g. [{\"field\":\"opened_at\",\"op\":\">=\",\"value\":\"2024-01-01T00:00:00Z\"}]. " +
			"Date-times are UTC, in ISO 8601 or as 2024-01-01 00:00:00.",
		Items: &Param{Type: "object", Properties: []Param{
			{Name: "field", Type: "string", Required: true, Description: "Field name, dot-walk allowed (caller_id.department)."},
			{Name: "op", Type: "string", Required: true, Enum: servicenow.Operators, Description: "Operator."},
			{Name: "value", Type: "string", Description: "The value, for one-value operators."},
			{Name: "values", Type: "array", Items: &Param{Type: "string"}, Description: "Values for IN, NOT IN (any number) and BETWEEN (two)."},
		}}}
	encodedParam = Param{Name: "query", Type: "string",
		Description: "A ServiceNow encoded query, e.g. active=true^priority<=2^ORDERBYDESCopened_at, ANDed with filters and conditions, " +
			"so it may not start with OR or NQ, and ^NQ (an OR of whole queries) works only when it is the whole filter. " +
			"Every field in it is checked first, since ServiceNow silently ignores a condition it cannot read."}
	fieldsParam = Param{Name: "fields", Type: "array", Items: &Param{Type: "string"},
		Description: "Fields to return (dot-walk allowed). Leave out for a short default list; sys_id is always included."}
	orderParam = Param{Name: "order_by", Type: "array", Items: &Param{Type: "string"},
		Description: "Sort fields, most significant first; prefix with - for descending, e.g. [\"-opened_at\",\"number\"]. Default: newest first."}
	limitParam = Param{Name: "limit", Type: "integer", Min: ptr(1), Max: ptr(MaxLimit),
		Description: "Most records to return, 1 to 100; default 20."}
	offsetParam = Param{Name: "offset", Type: "integer", Min: ptr(0),
		Description: "Records to skip, for paging: pass the next_offset of the previous answer."}
	recordParam = Param{Name: "record", Type: "string", Required: true,
		Description: "The record's sys_id, or its number (INC0010001) on tables that have one."}
	valuesParam = Param{Name: "values", Type: "object", Required: true,
		Description: "Field values to set, e.g. {\"short_description\":\"Printer jammed\",\"urgency\":\"High\",\"caller_id\":\"me\"}. " +
			"Choice fields take the label or the value; reference fields take a sys_id or a human key; date-times take ISO 8601 or 2024-01-01 00:00:00 (UTC)."}
)

func init() {
	register(
		Def{
			Name: "servicenow_query_records", Toolset: "tables", Title: "Query records of a table",
			Description: "List records of any ServiceNow table that match filters, conditions or an encoded query, sorted and paged. " +
				"Use it to find records when no more specific tool fits. Returns total (when ServiceNow counts), returned, next_offset when there are more, " +
				"and records with plain values, {value, display} for references and choices, and UTC ISO 8601 date-times.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true,
			Params:  []Param{tableParam, filtersParam, conditionsParam, encodedParam, fieldsParam, orderParam, limitParam, offsetParam},
			Handler: queryRecords,
		},
		Def{
			Name: "servicenow_get_record", Toolset: "tables", Title: "Get one record",
			Description: "Read one record of any table by sys_id, or by number on tables that have one. " +
				"Returns the record with plain values, {value, display} for references and choices, and UTC ISO 8601 date-times.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true,
			Params:  []Param{tableParam, recordParam, fieldsParam},
			Handler: getRecordTool,
		},
		Def{
			Name: "servicenow_create_record", Toolset: "tables", Title: "Create a record",
			Description: "Create a record in any table as the user, after checking every field and resolving choice labels and reference keys. " +
				"Use a specific tool when one exists (incidents, changes). Returns the created record with its sys_id and number.",
			ReadOnly: false, Destructive: false, Idempotent: false, OpenWorld: true,
			Params:  []Param{tableParam, valuesParam, fieldsParam},
			Handler: createRecord,
		},
		Def{
			Name: "servicenow_update_record", Toolset: "tables", Title: "Update a record",
			Description: "Change fields of one record of any table, found by sys_id or number; fields not named are left as they are. " +
				"Returns the updated record.",
			ReadOnly: false, Destructive: true, Idempotent: true, OpenWorld: true,
			Params:  []Param{tableParam, recordParam, valuesParam, fieldsParam},
			Handler: updateRecord,
		},
		Def{
			Name: "servicenow_delete_record", Toolset: "tables", Title: "Delete a record",
			Description: "Delete one record of any table, found by sys_id or number. It cannot be undone: use only when the user asked to delete. " +
				"Returns deleted true with the sys_id.",
			ReadOnly: false, Destructive: true, Idempotent: true, OpenWorld: true,
			Params:  []Param{tableParam, recordParam},
			Handler: deleteRecord,
		},
		Def{
			Name: "servicenow_aggregate_records", Toolset: "tables", Title: "Count and aggregate records",
			Description: "Count records of a table and compute min, max, avg or sum of fields, optionally grouped, with the same filters as servicenow_query_records. " +
				"Use it for how-many and breakdown questions instead of listing records. Returns the statistics, per group when grouped, with each group's value and display value.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: []Param{tableParam, filtersParam, conditionsParam, encodedParam,
				{Name: "count", Type: "boolean", Description: "Count records; default true."},
				{Name: "group_by", Type: "array", Items: &Param{Type: "string"}, Description: "Fields to group by, e.g. [\"state\",\"assignment_group\"]."},
				{Name: "avg_fields", Type: "array", Items: &Param{Type: "string"}, Description: "Numeric fields to average."},
				{Name: "min_fields", Type: "array", Items: &Param{Type: "string"}, Description: "Fields to take the minimum of."},
				{Name: "max_fields", Type: "array", Items: &Param{Type: "string"}, Description: "Fields to take the maximum of."},
				{Name: "sum_fields", Type: "array", Items: &Param{Type: "string"}, Description: "Numeric fields to sum."},
			},
			Handler: aggregateRecords,
		},
		Def{
			Name: "servicenow_describe_table", Toolset: "tables", Title: "Describe a table",
			Description: "List a table's fields: name, label, type, reference target, mandatory, read-only, and the choice values with their labels. " +
				"Use it before querying or writing a table you do not know. Returns the table label, its parent tables and the fields.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: []Param{tableParam,
				{Name: "fields", Type: "array", Items: &Param{Type: "string"}, Description: "Only these fields; leave out for all."},
			},
			Handler: describeTable,
		},
	)
}

func queryRecords(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	spec, bad := filterSpec(c)
	if bad != nil {
		return bad
	}
	spec.Fields = c.Args.Strings("fields")
	spec.Order = orderArg(c.Args.Strings("order_by"))
	spec.Limit = c.Args.Int("limit", DefaultLimit)
	spec.Offset = c.Args.Int("offset", 0)
	return listRecords(ctx, d, c, spec)
}

// filterSpec reads the table and the filter arguments shared by the
// query and aggregate tools.
func filterSpec(c *Call) (ListSpec, *mcp.CallToolResult) {
	spec := ListSpec{Table: c.Args.String("table"), Filters: c.Args.Object("filters"), Encoded: c.Args.String("query"),
		ConditionsArg: "conditions", FiltersArg: "filters", EncodedArg: "query"}
	list, _ := c.Args["conditions"].([]any)
	for i, item := range list {
		m, _ := item.(Args)
		if m == nil {
			mm, _ := item.(map[string]any)
			m = mm
		}
		cond := servicenow.Condition{Field: m.String("field"), Op: m.String("op"), Values: m.Strings("values")}
		if m.Has("value") {
			if len(cond.Values) > 0 {
				return spec, errorResult("conditions[%d]: give value or values, not both", i)
			}
			cond.Values = []string{m.String("value")}
		}
		spec.Conditions = append(spec.Conditions, cond)
	}
	return spec, nil
}

func orderArg(list []string) []servicenow.Order {
	var out []servicenow.Order
	for _, s := range list {
		s = strings.TrimSpace(s)
		desc := strings.HasPrefix(s, "-")
		out = append(out, servicenow.Order{Field: strings.TrimLeft(s, "-+"), Desc: desc})
	}
	return out
}

func getRecordTool(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	rec, bad := getRecord(ctx, d, c, c.Args.String("table"), c.Args.String("record"), c.Args.Strings("fields"))
	if bad != nil {
		return bad
	}
	return jsonResult(rec)
}

func createRecord(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	return writeRecord(ctx, d, c, http.MethodPost, c.Args.String("table"), "", c.Args.Object("values"), c.Args.Strings("fields"))
}

func updateRecord(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	table := c.Args.String("table")
	id, err := resolveReference(ctx, d, c, table, c.Args.String("record"))
	if err != nil {
		return recordFailure(ctx, d, c, table, "update", err)
	}
	return writeRecord(ctx, d, c, http.MethodPatch, table, id, c.Args.Object("values"), c.Args.Strings("fields"))
}

func deleteRecord(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	table := c.Args.String("table")
	id, err := resolveReference(ctx, d, c, table, c.Args.String("record"))
	if err != nil {
		return recordFailure(ctx, d, c, table, "delete", err)
	}
	return writeRecord(ctx, d, c, http.MethodDelete, table, id, nil, nil)
}

func aggregateRecords(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	spec, bad := filterSpec(c)
	if bad != nil {
		return bad
	}
	meta, err := d.dictionary(ctx, c, spec.Table)
	if err != nil {
		return recordFailure(ctx, d, c, spec.Table, "read", err)
	}
	query, err := buildQuery(ctx, d, c, meta, spec, false)
	if err != nil {
		return recordFailure(ctx, d, c, spec.Table, "read", err)
	}

	q := url.Values{}
	if query != "" {
		q.Set("sysparm_query", query)
	}
	count := c.Args.Bool("count", true)
	if count {
		q.Set("sysparm_count", "true")
	}
	asked := count
	for _, kind := range []string{"avg", "min", "max", "sum"} {
		names := c.Args.Strings(kind + "_fields")
		for _, name := range names {
			if _, err := resolveField(ctx, d, c, meta, name); err != nil {
				return recordFailure(ctx, d, c, spec.Table, "read", err)
			}
		}
		if len(names) > 0 {
			q.Set("sysparm_"+kind+"_fields", strings.Join(names, ","))
			asked = true
		}
	}
	if !asked {
		return errorResult("nothing to compute: set count to true or name avg_fields, min_fields, max_fields or sum_fields")
	}
	groupBy := c.Args.Strings("group_by")
	for _, name := range groupBy {
		if _, err := resolveField(ctx, d, c, meta, name); err != nil {
			return recordFailure(ctx, d, c, spec.Table, "read", err)
		}
	}
	if len(groupBy) > 0 {
		q.Set("sysparm_group_by", strings.Join(groupBy, ","))
		// all: each group keeps its stored value (a sys_id for a
		// reference) beside its display value; true would send only the
		// display text.
		q.Set("sysparm_display_value", "all")
		if count {
			q.Set("sysparm_order_by", "COUNT^DESC")
		}
	}

	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{Method: http.MethodGet, Path: "/api/now/stats/" + meta.Name, Query: q, MaxBody: readCap(d.budget())})
	if err != nil {
		return recordFailure(ctx, d, c, spec.Table, "read", err)
	}
	return aggregateAnswer(meta.Name, resp, d.budget())
}

// aggregateAnswer shapes a stats answer: numbers stay strings as
// ServiceNow sends them; each group field is {value, display}, the
// display falling back to the value when ServiceNow sends none.
func aggregateAnswer(table string, resp *servicenow.Response, budget int) *mcp.CallToolResult {
	var body struct {
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(resp.Body, &body); err != nil {
		return errorResult("ServiceNow's aggregate answer could not be read")
	}
	var one struct {
		Stats map[string]any `json:"stats"`
	}
	if json.Unmarshal(body.Result, &one) == nil && one.Stats != nil {
		return jsonResult(map[string]any{"table": table, "stats": one.Stats})
	}
	var groups []struct {
		Stats   map[string]any `json:"stats"`
		GroupBy []struct {
			Field        string  `json:"field"`
			Value        string  `json:"value"`
			DisplayValue *string `json:"display_value"`
		} `json:"groupby_fields"`
	}
	if err := json.Unmarshal(body.Result, &groups); err != nil {
		return errorResult("ServiceNow's aggregate answer could not be read")
	}
	out := make([]map[string]any, 0, len(groups))
	size, cut := 128, false
	for _, g := range groups {
		by := map[string]any{}
		for _, f := range g.GroupBy {
			display := f.Value
			if f.DisplayValue != nil {
				display = *f.DisplayValue
			}
			by[f.Field] = map[string]any{"value": f.Value, "display": display}
		}
		item := map[string]any{"group": by, "stats": g.Stats}
		b, _ := marshal(item)
		if size+len(b) > budget {
			cut = true
			break
		}
		size += len(b) + 1
		out = append(out, item)
	}
	ans := map[string]any{"table": table, "group_count": len(groups), "groups": out}
	if cut {
		ans["truncated"] = true
		ans["note"] = fmt.Sprintf("Only the first %d of %d groups fit the size budget; filter to fewer groups.", len(out), len(groups))
	}
	return jsonResult(ans)
}

// fieldDescription is one field of describe_table.
type fieldDescription struct {
	Name      string   `json:"name"`
	Label     string   `json:"label"`
	Type      string   `json:"type"`
	Reference string   `json:"reference,omitempty"`
	Mandatory bool     `json:"mandatory,omitempty"`
	ReadOnly  bool     `json:"read_only,omitempty"`
	MaxLength int      `json:"max_length,omitempty"`
	Choices   []Choice `json:"choices,omitempty"`
}

func describeTable(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	table := c.Args.String("table")
	meta, err := d.dictionary(ctx, c, table)
	if err != nil {
		return recordFailure(ctx, d, c, table, "read", err)
	}
	names := c.Args.Strings("fields")
	if len(names) == 0 {
		names = append([]string(nil), meta.Order...)
		sort.Strings(names)
	}
	fields := make([]fieldDescription, 0, len(names))
	for _, name := range names {
		f := meta.Field(name)
		if f == nil {
			return recordFailure(ctx, d, c, table, "read", unknownField(meta, name))
		}
		fd := fieldDescription{Name: f.Name, Label: f.Label, Type: f.Type, Mandatory: f.Mandatory, ReadOnly: f.ReadOnly, MaxLength: f.MaxLength, Choices: f.Choices}
		if f.IsReference() {
			fd.Reference = f.Reference
		}
		fields = append(fields, fd)
	}
	out := map[string]any{"table": meta.Name, "label": meta.Label, "fields": fields}
	if len(meta.Parents) > 0 {
		out["extends"] = meta.Parents
	}
	if meta.Display != "" {
		out["display_field"] = meta.Display
	}
	b, _ := marshal(out)
	if len(b) > d.budget() {
		for i := range fields {
			fields[i].Choices = nil
		}
		out["note"] = "Choice values were left out to fit the size budget; ask for specific fields to see them."
	}
	return jsonResult(out)
}
