package sandbox

import (
	"strings"
)

// Field types, named like ServiceNow's internal types.
const (
	tString    = "string"
	tInteger   = "integer"
	tBoolean   = "boolean"
	tDateTime  = "glide_date_time"
	tDate      = "glide_date"
	tReference = "reference"
	tChoice    = "choice"
	tJournal   = "journal_input"
	tHTML      = "html"
	tGUID      = "GUID"
	tPrice     = "price"
)

type choice struct {
	Value, Label string
	Inactive     bool
}

type field struct {
	Name      string
	Label     string
	Type      string
	Ref       string // target table of a reference
	Choices   []choice
	Mandatory bool
	MaxLen    int
	// Default is the dictionary default a new record starts with; empty
	// means the type's empty value ("" or "false").
	Default string
	// Roles needed to read and write the field (any one of them); empty
	// means every signed-in user. admin always passes.
	Roles []string
}

func (f *field) choiceLabel(v string) (string, bool) {
	for _, c := range f.Choices {
		if c.Value == v {
			return c.Label, true
		}
	}
	return "", false
}

func (f *field) numeric() bool { return f.Type == tInteger || f.Type == tPrice }

type tableDef struct {
	Name    string
	Label   string
	Display string // display field, used for reference display values
	Prefix  string // number prefix (INC, CHG, ...)
	Fields  []*field
	byName  map[string]*field
	// Roles per operation (any one of them); nil means every signed-in user.
	Read, Create, Write, Delete []string
}

func (t *tableDef) field(name string) *field { return t.byName[name] }

var sysFields = []*field{
	{Name: "sys_id", Label: "Sys ID", Type: tGUID, MaxLen: 32},
	{Name: "sys_created_on", Label: "Created", Type: tDateTime},
	{Name: "sys_created_by", Label: "Created by", Type: tString, MaxLen: 40},
	{Name: "sys_updated_on", Label: "Updated", Type: tDateTime},
	{Name: "sys_updated_by", Label: "Updated by", Type: tString, MaxLen: 40},
	{Name: "sys_mod_count", Label: "Updates", Type: tInteger},
}

func isSysField(n string) bool {
	switch n {
	case "sys_id", "sys_created_on", "sys_created_by", "sys_updated_on", "sys_updated_by", "sys_mod_count":
		return true
	}
	return false
}

// helpers to keep the schema below readable
func s(name, label string, max int) *field {
	return &field{Name: name, Label: label, Type: tString, MaxLen: max}
}
func ref(name, label, target string) *field {
	return &field{Name: name, Label: label, Type: tReference, Ref: target, MaxLen: 32}
}
func intf(name, label string, ch ...choice) *field {
	return &field{Name: name, Label: label, Type: tInteger, Choices: ch}
}
func boolf(name, label string) *field { return &field{Name: name, Label: label, Type: tBoolean} }
func dt(name, label string) *field    { return &field{Name: name, Label: label, Type: tDateTime} }
func chf(name, label string, ch ...choice) *field {
	return &field{Name: name, Label: label, Type: tChoice, Choices: ch, MaxLen: 40}
}
func journal(name, label string, roles ...string) *field {
	return &field{Name: name, Label: label, Type: tJournal, MaxLen: 4000, Roles: roles}
}
func htmlf(name, label string) *field {
	return &field{Name: name, Label: label, Type: tHTML, MaxLen: 65000}
}
func mand(f *field) *field { f.Mandatory = true; return f }

// deflt sets a field's dictionary default.
func deflt(f *field, v string) *field { f.Default = v; return f }

// activef is the "active" flag, true by default on every table here as in
// ServiceNow's dictionary (task tables, users, groups, knowledge, catalog).
func activef() *field { return deflt(boolf("active", "Active"), "true") }

func c(v, l string) choice { return choice{Value: v, Label: l} }

var (
	itil  = []string{"itil"}
	admin = []string{"admin"}
)

var incidentStates = []choice{c("1", "New"), c("2", "In Progress"), c("3", "On Hold"), c("6", "Resolved"), c("7", "Closed"), c("8", "Canceled")}
var priorities = []choice{c("1", "1 - Critical"), c("2", "2 - High"), c("3", "3 - Moderate"), c("4", "4 - Low"), c("5", "5 - Planning")}
var impacts = []choice{c("1", "1 - High"), c("2", "2 - Medium"), c("3", "3 - Low")}
var changeStates = []choice{c("-5", "New"), c("-4", "Assess"), c("-3", "Authorize"), c("-2", "Scheduled"), c("-1", "Implement"), c("0", "Review"), c("3", "Closed"), c("4", "Canceled")}

func buildSchema() map[string]*tableDef {
	tables := []*tableDef{
		{Name: "sys_user", Label: "User", Display: "name", Write: admin, Create: admin, Delete: admin, Fields: []*field{
			mand(s("user_name", "User ID", 40)), s("first_name", "First name", 50), s("last_name", "Last name", 50),
			s("name", "Name", 151), s("email", "Email", 100), activef(), s("title", "Title", 60),
			s("department", "Department", 60), s("phone", "Business phone", 40), s("location", "Location", 60),
			ref("manager", "Manager", "sys_user"), s("roles", "Roles", 255), s("time_zone", "Time zone", 40),
		}},
		{Name: "sys_user_group", Label: "Group", Display: "name", Write: admin, Create: admin, Delete: admin, Fields: []*field{
			mand(s("name", "Name", 80)), s("description", "Description", 1000), ref("manager", "Manager", "sys_user"),
			s("email", "Group email", 100), activef(), s("type", "Type", 255),
		}},
		{Name: "sys_user_grmember", Label: "Group Member", Display: "sys_id", Write: admin, Create: admin, Delete: admin, Fields: []*field{
			mand(ref("group", "Group", "sys_user_group")), mand(ref("user", "User", "sys_user")),
		}},
		{Name: "incident", Label: "Incident", Display: "number", Prefix: "INC", Create: itil, Write: itil, Delete: admin, Fields: []*field{
			s("number", "Number", 40), mand(s("short_description", "Short description", 160)), s("description", "Description", 4000),
			deflt(intf("state", "State", incidentStates...), "1"), intf("priority", "Priority", priorities...),
			deflt(intf("impact", "Impact", impacts...), "3"), deflt(intf("urgency", "Urgency", impacts...), "3"),
			chf("category", "Category", c("inquiry", "Inquiry / Help"), c("software", "Software"), c("hardware", "Hardware"), c("network", "Network"), c("database", "Database")),
			mand(ref("caller_id", "Caller", "sys_user")), ref("assigned_to", "Assigned to", "sys_user"),
			ref("assignment_group", "Assignment group", "sys_user_group"), dt("opened_at", "Opened"),
			ref("opened_by", "Opened by", "sys_user"), activef(),
			chf("close_code", "Resolution code", c("Solved (Work Around)", "Solved (Work Around)"), c("Solved (Permanently)", "Solved (Permanently)"), c("Solved Remotely (Work Around)", "Solved Remotely (Work Around)"), c("Not Solved (Not Reproducible)", "Not Solved (Not Reproducible)"), c("Not Solved (Too Costly)", "Not Solved (Too Costly)"), c("Closed/Resolved by Caller", "Closed/Resolved by Caller")),
			s("close_notes", "Resolution notes", 4000), dt("resolved_at", "Resolved"), ref("resolved_by", "Resolved by", "sys_user"),
			dt("closed_at", "Closed"), intf("reassignment_count", "Reassignment count"),
			journal("comments", "Additional comments"), journal("work_notes", "Work notes", "itil"),
		}},
		{Name: "change_request", Label: "Change Request", Display: "number", Prefix: "CHG", Read: itil, Create: itil, Write: itil, Delete: admin, Fields: []*field{
			s("number", "Number", 40), mand(s("short_description", "Short description", 160)), s("description", "Description", 4000),
			deflt(chf("type", "Type", c("normal", "Normal"), c("standard", "Standard"), c("emergency", "Emergency")), "normal"),
			deflt(intf("state", "State", changeStates...), "-5"), deflt(intf("risk", "Risk", c("2", "High"), c("3", "Moderate"), c("4", "Low")), "3"),
			deflt(intf("impact", "Impact", impacts...), "3"), deflt(intf("urgency", "Urgency", impacts...), "3"),
			intf("priority", "Priority", priorities...),
			dt("start_date", "Planned start date"), dt("end_date", "Planned end date"),
			ref("assignment_group", "Assignment group", "sys_user_group"), ref("assigned_to", "Assigned to", "sys_user"),
			ref("requested_by", "Requested by", "sys_user"), activef(), s("justification", "Justification", 4000),
			s("implementation_plan", "Implementation plan", 4000), s("backout_plan", "Backout plan", 4000),
			journal("comments", "Additional comments"), journal("work_notes", "Work notes", "itil"),
		}},
		{Name: "change_task", Label: "Change Task", Display: "number", Prefix: "CTASK", Read: itil, Create: itil, Write: itil, Delete: admin, Fields: []*field{
			s("number", "Number", 40), mand(s("short_description", "Short description", 160)), s("description", "Description", 4000),
			mand(ref("change_request", "Change request", "change_request")),
			deflt(intf("state", "State", c("-5", "Pending"), c("1", "Open"), c("2", "In Progress"), c("3", "Closed"), c("4", "Canceled")), "1"),
			ref("assignment_group", "Assignment group", "sys_user_group"), ref("assigned_to", "Assigned to", "sys_user"),
			dt("planned_start_date", "Planned start date"), dt("planned_end_date", "Planned end date"), activef(),
			journal("work_notes", "Work notes", "itil"),
		}},
		{Name: "kb_knowledge_base", Label: "Knowledge Base", Display: "title", Create: admin, Write: admin, Delete: admin, Fields: []*field{
			mand(s("title", "Title", 100)), s("description", "Description", 1000), activef(), ref("owner", "Owner", "sys_user"),
		}},
		{Name: "kb_knowledge", Label: "Knowledge", Display: "number", Prefix: "KB", Create: itil, Write: itil, Delete: admin, Fields: []*field{
			s("number", "Number", 40), mand(s("short_description", "Short description", 160)), htmlf("text", "Article body"),
			deflt(chf("workflow_state", "Workflow", c("draft", "Draft"), c("review", "Review"), c("published", "Published"), c("pending_retirement", "Pending retirement"), c("retired", "Retired")), "draft"),
			mand(ref("kb_knowledge_base", "Knowledge base", "kb_knowledge_base")), &field{Name: "valid_to", Label: "Valid to", Type: tDate},
			ref("author", "Author", "sys_user"), s("kb_category", "Category", 100), dt("published", "Published"),
			intf("sys_view_count", "View count"), activef(), s("meta", "Meta", 4000),
		}},
		{Name: "sc_category", Label: "Category", Display: "title", Create: admin, Write: admin, Delete: admin, Fields: []*field{
			mand(s("title", "Title", 100)), s("description", "Description", 1000), activef(),
		}},
		{Name: "sc_cat_item", Label: "Catalog Item", Display: "name", Create: admin, Write: admin, Delete: admin, Fields: []*field{
			mand(s("name", "Name", 100)), s("short_description", "Short description", 1000), htmlf("description", "Description"),
			activef(), &field{Name: "price", Label: "Price", Type: tPrice}, ref("category", "Category", "sc_category"),
		}},
		{Name: "item_option_new", Label: "Variable", Display: "question_text", Create: admin, Write: admin, Delete: admin, Fields: []*field{
			mand(ref("cat_item", "Catalog item", "sc_cat_item")), mand(s("name", "Name", 100)), s("question_text", "Question", 255),
			intf("type", "Type", c("2", "Multi Line Text"), c("5", "Select Box"), c("6", "Single Line Text"), c("7", "CheckBox"), c("8", "Reference"), c("9", "Date")),
			boolf("mandatory", "Mandatory"), intf("order", "Order"), s("default_value", "Default value", 255),
			s("choices", "Choices (value=Label, comma separated)", 1000), activef(),
		}},
		{Name: "sc_request", Label: "Request", Display: "number", Prefix: "REQ", Create: itil, Write: itil, Delete: admin, Fields: []*field{
			s("number", "Number", 40), s("short_description", "Short description", 160), ref("requested_for", "Requested for", "sys_user"),
			ref("opened_by", "Opened by", "sys_user"), dt("opened_at", "Opened"), intf("state", "State", c("1", "Open"), c("2", "Work in Progress"), c("3", "Closed Complete"), c("4", "Closed Incomplete")),
			chf("request_state", "Request state", c("requested", "Requested"), c("in_process", "Approved"), c("closed_complete", "Closed Complete"), c("closed_incomplete", "Closed Incomplete")),
			chf("approval", "Approval", c("not requested", "Not Yet Requested"), c("requested", "Requested"), c("approved", "Approved"), c("rejected", "Rejected")),
			&field{Name: "price", Label: "Price", Type: tPrice}, activef(),
		}},
		{Name: "sc_req_item", Label: "Requested Item", Display: "number", Prefix: "RITM", Create: itil, Write: itil, Delete: admin, Fields: []*field{
			s("number", "Number", 40), s("short_description", "Short description", 160), ref("request", "Request", "sc_request"),
			ref("cat_item", "Item", "sc_cat_item"), ref("requested_for", "Requested for", "sys_user"), ref("opened_by", "Opened by", "sys_user"),
			intf("state", "State", c("-5", "Pending"), c("1", "Open"), c("2", "Work in Progress"), c("3", "Closed Complete"), c("4", "Closed Incomplete")),
			chf("stage", "Stage", c("request_approved", "Request Approved"), c("fulfillment", "Fulfillment"), c("delivery", "Delivery"), c("complete", "Completed")),
			intf("quantity", "Quantity"), &field{Name: "price", Label: "Price", Type: tPrice}, s("variables", "Variables (JSON)", 8000),
			ref("assignment_group", "Assignment group", "sys_user_group"), activef(),
			journal("comments", "Additional comments"), journal("work_notes", "Work notes", "itil"),
		}},
		{Name: "sys_journal_field", Label: "Journal Entry", Display: "sys_id", Create: admin, Write: admin, Delete: admin, Fields: []*field{
			s("element_id", "Element ID", 32), s("element", "Element", 40), s("name", "Name", 80), s("value", "Value", 4000),
		}},
		{Name: "sys_attachment", Label: "Attachment", Display: "file_name", Create: admin, Write: admin, Delete: admin, Fields: []*field{
			s("file_name", "File name", 100), s("content_type", "Content type", 100), s("table_name", "Table name", 80),
			s("table_sys_id", "Table sys ID", 32), s("size_bytes", "Size bytes", 40), s("size_compressed", "Compressed size", 40),
			boolf("compressed", "Compressed"), s("average_image_color", "Average image color", 40), s("image_width", "Image width", 40),
			s("image_height", "Image height", 40), s("sys_tags", "Tags", 255), s("hash", "Hash", 64),
		}},
		{Name: "sys_db_object", Label: "Table", Display: "name", Create: admin, Write: admin, Delete: admin, Fields: []*field{
			s("name", "Name", 80), s("label", "Label", 80), s("super_class", "Extends table", 80), s("number_ref", "Auto number", 40),
		}},
		{Name: "sys_dictionary", Label: "Dictionary Entry", Display: "column_label", Create: admin, Write: admin, Delete: admin, Fields: []*field{
			s("name", "Table", 80), s("element", "Column name", 80), s("column_label", "Column label", 80),
			s("internal_type", "Type", 40), s("reference", "Reference", 80), boolf("mandatory", "Mandatory"),
			intf("max_length", "Max length"), activef(), boolf("read_only", "Read only"), boolf("display", "Display"),
			s("default_value", "Default value", 255),
		}},
		{Name: "sys_choice", Label: "Choice", Display: "label", Create: admin, Write: admin, Delete: admin, Fields: []*field{
			s("name", "Table", 80), s("element", "Element", 80), s("value", "Value", 40), s("label", "Label", 100),
			intf("sequence", "Sequence"), boolf("inactive", "Inactive"), s("language", "Language", 40),
		}},
	}
	m := make(map[string]*tableDef, len(tables))
	for _, t := range tables {
		t.Fields = append(append([]*field{}, t.Fields...), sysFields...)
		t.byName = make(map[string]*field, len(t.Fields))
		for _, f := range t.Fields {
			t.byName[f.Name] = f
		}
		m[t.Name] = t
	}
	return m
}

// resolvePath checks a possibly dot-walked field path against the schema and
// returns the field definitions along the path (nil when any part is unknown).
func resolvePath(schema map[string]*tableDef, t *tableDef, path string) []*field {
	parts := strings.Split(path, ".")
	out := make([]*field, 0, len(parts))
	cur := t
	for i, p := range parts {
		if cur == nil {
			return nil
		}
		f := cur.field(p)
		if f == nil {
			return nil
		}
		out = append(out, f)
		if i < len(parts)-1 {
			if f.Type != tReference {
				return nil
			}
			cur = schema[f.Ref]
		}
	}
	return out
}
