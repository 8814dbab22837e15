package sandbox

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"
)

// SeedPassword is the password of every seeded user.
const SeedPassword = "sandbox"

type seedUserDef struct {
	user, first, last, title, dept string
	roles                          []string
}

var seedUsers = []seedUserDef{
	{"admin", "System", "Administrator", "Administrator", "IT", []string{"admin"}},
	{"alice", "Alice", "Archer", "Service Desk Analyst", "IT", []string{"itil"}},
	{"bob", "Bob", "Baker", "Network Engineer", "IT", []string{"itil"}},
	{"carol", "Carol", "Chen", "Accountant", "Finance", nil},
	{"dave", "Dave", "Diaz", "Database Administrator", "IT", []string{"itil"}},
	{"erin", "Erin", "Evans", "Sales Manager", "Sales", nil},
}

var seedGroups = []struct {
	name    string
	members []string
}{
	{"Service Desk", []string{"alice", "bob"}},
	{"Network", []string{"bob"}},
	{"Database", []string{"dave", "alice"}},
	{"Hardware", []string{"alice"}},
	{"Software", []string{"dave"}},
	{"CAB Approval", []string{"admin", "bob"}},
}

var incidentTexts = []struct{ short, cat string }{
	{"Unable to connect to VPN from home", "network"},
	{"Email not syncing on mobile phone", "software"},
	{"Laptop battery drains quickly", "hardware"},
	{"Cannot print to 3rd floor printer", "hardware"},
	{"SAP login fails with password expired", "software"},
	{"Wi-Fi drops in building B", "network"},
	{"Database backup job failed overnight", "database"},
	{"Request for access to shared drive", "inquiry"},
	{"Outlook crashes when opening attachments", "software"},
	{"Monitor flickering", "hardware"},
	{"Slow response from payroll application", "database"},
	{"How do I reset my password?", "inquiry"},
	{"Network switch down in data center", "network"},
	{"Excel macro stopped working after update", "software"},
	{"Keyboard keys sticking", "hardware"},
}

var closeCodes = []string{"Solved (Permanently)", "Solved (Work Around)", "Solved Remotely (Work Around)", "Closed/Resolved by Caller"}

func (s *Server) seedInsert(table, key string, vals map[string]string, by string, at time.Time) string {
	td := s.schema[table]
	rec := emptyRecord(td)
	for k, v := range vals {
		rec[k] = v
	}
	id := seedID(table + ":" + key)
	rec["sys_id"] = id
	ts := fmtTime(at)
	rec["sys_created_on"], rec["sys_updated_on"] = ts, ts
	rec["sys_created_by"], rec["sys_updated_by"] = by, by
	rec["sys_mod_count"] = "0"
	if td.Prefix != "" && rec["number"] == "" {
		rec["number"] = s.nextNumber(td)
	}
	d := s.data[table]
	d.rows[id] = rec
	d.order = append(d.order, id)
	return id
}

func (s *Server) seedJournal(table, id, element, value, by string, at time.Time) {
	s.seedInsert("sys_journal_field", table+id+element+value, map[string]string{
		"element_id": id, "element": element, "name": table, "value": value}, by, at)
}

func (s *Server) seed() {
	now := s.now().UTC().Truncate(time.Second)
	base := now.AddDate(0, 0, -45)
	rng := rand.New(rand.NewPCG(7, 11))
	users := map[string]string{}
	for _, u := range seedUsers {
		full := u.first + " " + u.last
		id := s.seedInsert("sys_user", u.user, map[string]string{
			"user_name": u.user, "first_name": u.first, "last_name": u.last, "name": full,
			"email": u.user + "@example.com", "active": "true", "title": u.title, "department": u.dept,
			"roles": strings.Join(u.roles, ","), "time_zone": "UTC", "location": "London",
		}, "system", base)
		users[u.user] = id
		s.pwd[u.user] = SeedPassword
		s.users = append(s.users, SeedUser{UserName: u.user, Password: SeedPassword, Name: full, Roles: append([]string{}, u.roles...), SysID: id})
	}
	s.data["sys_user"].rows[users["alice"]]["manager"] = users["admin"]
	s.data["sys_user"].rows[users["bob"]]["manager"] = users["admin"]
	groups := map[string]string{}
	groupNames := []string{}
	for _, g := range seedGroups {
		id := s.seedInsert("sys_user_group", g.name, map[string]string{
			"name": g.name, "description": g.name + " team", "active": "true", "manager": users[g.members[0]],
			"email": strings.ToLower(strings.ReplaceAll(g.name, " ", ".")) + "@example.com",
		}, "system", base)
		groups[g.name] = id
		groupNames = append(groupNames, g.name)
		for _, m := range g.members {
			s.seedInsert("sys_user_grmember", g.name+"/"+m, map[string]string{"group": id, "user": users[m]}, "system", base)
		}
	}

	// ~30 incidents over the last 30 days, a few of them today.
	states := []string{"1", "1", "2", "2", "3", "6", "7", "8"}
	callers := []string{"carol", "erin", "alice", "bob", "carol", "erin", "dave"}
	assignees := []string{"", "alice", "bob", "dave", "alice"}
	for i := 0; i < 30; i++ {
		t := incidentTexts[i%len(incidentTexts)]
		opened := now.AddDate(0, 0, -(29 - i)).Add(-time.Duration(rng.IntN(8)+1) * time.Hour)
		if i >= 27 {
			opened = startOfDay(now).Add(time.Duration(i-26) * time.Minute)
			if opened.After(now) {
				opened = now
			}
		}
		st := states[rng.IntN(len(states))]
		imp, urg := strconv.Itoa(rng.IntN(3)+1), strconv.Itoa(rng.IntN(3)+1)
		assignee := assignees[rng.IntN(len(assignees))]
		g := ""
		switch t.cat {
		case "network":
			g = "Network"
		case "database":
			g = "Database"
		case "hardware":
			g = "Hardware"
		case "software":
			g = "Software"
		default:
			g = "Service Desk"
		}
		caller := callers[i%len(callers)]
		v := map[string]string{
			"short_description": t.short, "description": "Reported by the caller: " + strings.ToLower(t.short) + ".",
			"state": st, "impact": imp, "urgency": urg, "priority": priorityMatrix[imp+urg], "category": t.cat,
			"caller_id": users[caller], "assignment_group": groups[g], "opened_at": fmtTime(opened),
			"opened_by": users["alice"], "active": "true", "reassignment_count": "0",
		}
		if assignee != "" {
			v["assigned_to"] = users[assignee]
		}
		if st == "6" || st == "7" {
			v["resolved_at"] = fmtTime(opened.Add(5 * time.Hour))
			v["resolved_by"] = users["alice"]
			v["close_code"] = closeCodes[i%len(closeCodes)]
			v["close_notes"] = "Fixed after checking the configuration."
		}
		if st == "7" || st == "8" {
			v["active"] = "false"
			v["closed_at"] = fmtTime(opened.Add(48 * time.Hour))
		}
		id := s.seedInsert("incident", fmt.Sprint("inc", i), v, "alice", opened)
		if i%4 == 0 {
			s.seedJournal("incident", id, "comments", "Any update on this? It is blocking my work.", caller, opened.Add(time.Hour))
		}
		if i%3 == 0 {
			s.seedJournal("incident", id, "work_notes", "Checked logs; escalating to "+g+".", "alice", opened.Add(2*time.Hour))
		}
	}

	// changes and their tasks
	changes := []struct{ short, typ, state, risk, group string }{
		{"Upgrade core router firmware", "normal", "-2", "2", "Network"},
		{"Apply monthly OS patches to web servers", "standard", "-1", "4", "Software"},
		{"Emergency fix for database deadlock", "emergency", "0", "2", "Database"},
		{"Replace UPS batteries in server room", "normal", "-5", "3", "Hardware"},
		{"Migrate mail gateway to new cluster", "normal", "-4", "3", "Network"},
		{"Decommission legacy file server", "normal", "3", "4", "Hardware"},
	}
	for i, ch := range changes {
		start := now.AddDate(0, 0, i*3-6)
		active := "true"
		if ch.state == "3" {
			active = "false"
		}
		id := s.seedInsert("change_request", fmt.Sprint("chg", i), map[string]string{
			"short_description": ch.short, "description": ch.short + " as planned by the team.", "type": ch.typ,
			"state": ch.state, "risk": ch.risk, "impact": "2", "priority": "3", "start_date": fmtTime(start),
			"end_date": fmtTime(start.Add(4 * time.Hour)), "assignment_group": groups[ch.group],
			"assigned_to": users["bob"], "requested_by": users["alice"], "active": active,
			"implementation_plan": "1. Announce. 2. Implement. 3. Verify.", "backout_plan": "Restore from backup.",
			"justification": "Keeps the service supported.",
		}, "bob", start.AddDate(0, 0, -7))
		if i < 3 {
			for j, short := range []string{"Pre-implementation check", "Implement and verify"} {
				s.seedInsert("change_task", fmt.Sprint("ctask", i, j), map[string]string{
					"short_description": short + ": " + ch.short, "change_request": id, "state": "1",
					"assignment_group": groups[ch.group], "assigned_to": users["bob"], "active": "true",
					"planned_start_date": fmtTime(start), "planned_end_date": fmtTime(start.Add(2 * time.Hour)),
				}, "bob", start.AddDate(0, 0, -6))
			}
		}
	}

	// knowledge
	kbIT := s.seedInsert("kb_knowledge_base", "it", map[string]string{"title": "IT", "description": "IT self-help", "active": "true", "owner": users["admin"]}, "admin", base)
	kbHR := s.seedInsert("kb_knowledge_base", "hr", map[string]string{"title": "HR", "description": "People policies", "active": "true", "owner": users["admin"]}, "admin", base)
	articles := []struct{ short, text, state, kb string }{
		{"How to connect to the VPN", "<p>Install the VPN client, then sign in with your network password. If the connection drops, restart the client.</p>", "published", kbIT},
		{"Resetting your password", "<p>Use the self-service password reset page. Passwords expire every 90 days.</p>", "published", kbIT},
		{"Setting up email on a mobile phone", "<p>Add an Exchange account with your email address; the server is found automatically.</p>", "published", kbIT},
		{"Printer troubleshooting", "<p>Check the queue, power-cycle the printer, and reinstall the driver if jobs stay stuck.</p>", "published", kbIT},
		{"Requesting a new laptop", "<p>Order it from the service catalog; delivery takes five working days.</p>", "published", kbIT},
		{"Holiday policy", "<p>Employees have 25 days of paid holiday a year.</p>", "published", kbHR},
		{"Draft: new VPN client rollout", "<p>Work in progress: the new VPN client will replace the old one.</p>", "draft", kbIT},
		{"Draft: expenses policy 2027", "<p>Not final.</p>", "draft", kbHR},
		{"Legacy dial-up access", "<p>Dial-up access is no longer supported.</p>", "retired", kbIT},
	}
	for i, a := range articles {
		at := base.AddDate(0, 0, i)
		v := map[string]string{"short_description": a.short, "text": a.text, "workflow_state": a.state,
			"kb_knowledge_base": a.kb, "author": users["alice"], "active": "true", "valid_to": "2100-01-01",
			"kb_category": "General", "sys_view_count": strconv.Itoa(100 - i*7)}
		if a.state == "published" {
			v["published"] = fmtTime(at)
		}
		if a.state == "retired" {
			v["active"] = "false"
		}
		s.seedInsert("kb_knowledge", fmt.Sprint("kb", i), v, "alice", at)
	}

	// service catalog
	catHW := s.seedInsert("sc_category", "hardware", map[string]string{"title": "Hardware", "description": "Computers and phones", "active": "true"}, "admin", base)
	catSW := s.seedInsert("sc_category", "software", map[string]string{"title": "Software", "description": "Applications and licences", "active": "true"}, "admin", base)
	catAcc := s.seedInsert("sc_category", "access", map[string]string{"title": "Access", "description": "Accounts and permissions", "active": "true"}, "admin", base)
	type vdef struct {
		name, q, typ, mand, choices, def string
	}
	items := []struct {
		name, short, price, cat string
		vars                    []vdef
	}{
		{"Standard Laptop", "A 14-inch laptop for office work", "1100.00", catHW, []vdef{
			{"operating_system", "Operating system", "5", "true", "windows=Windows,macos=macOS,linux=Linux", "windows"},
			{"additional_memory", "Extra memory", "7", "false", "", "false"},
			{"justification", "Business justification", "2", "false", "", ""},
		}},
		{"Software License", "Request a licence for an approved application", "0.00", catSW, []vdef{
			{"software_name", "Which application?", "6", "true", "", ""},
			{"license_type", "Licence type", "5", "false", "named=Named user,concurrent=Concurrent", "named"},
		}},
		{"New Mobile Phone", "Company smartphone with a data plan", "650.00", catHW, []vdef{
			{"model", "Model", "5", "true", "iphone=iPhone,android=Android", ""},
			{"color", "Colour", "5", "false", "black=Black,white=White,blue=Blue", "black"},
		}},
		{"Shared Drive Access", "Access to a departmental shared drive", "0.00", catAcc, []vdef{
			{"drive_path", "Drive path", "6", "true", "", ""},
			{"access_level", "Access level", "5", "true", "read=Read only,write=Read and write", "read"},
			{"needed_by", "Needed by", "9", "false", "", ""},
		}},
	}
	var firstItem string
	for i, it := range items {
		id := s.seedInsert("sc_cat_item", fmt.Sprint("item", i), map[string]string{"name": it.name,
			"short_description": it.short, "description": "<p>" + it.short + ".</p>", "active": "true",
			"price": it.price, "category": it.cat}, "admin", base)
		if i == 0 {
			firstItem = id
		}
		for j, v := range it.vars {
			s.seedInsert("item_option_new", fmt.Sprint("var", i, j), map[string]string{"cat_item": id, "name": v.name,
				"question_text": v.q, "type": v.typ, "mandatory": v.mand, "order": strconv.Itoa((j + 1) * 100),
				"choices": v.choices, "default_value": v.def, "active": "true"}, "admin", base)
		}
	}
	req := s.seedInsert("sc_request", "req0", map[string]string{"short_description": "Standard Laptop",
		"requested_for": users["erin"], "opened_by": users["erin"], "opened_at": fmtTime(now.AddDate(0, 0, -3)),
		"state": "2", "request_state": "in_process", "approval": "approved", "price": "1100.00", "active": "true"}, "erin", now.AddDate(0, 0, -3))
	s.seedInsert("sc_req_item", "ritm0", map[string]string{"short_description": "Standard Laptop", "request": req,
		"cat_item": firstItem, "requested_for": users["erin"], "opened_by": users["erin"], "state": "2", "stage": "fulfillment",
		"quantity": "1", "price": "1100.00", "variables": `{"operating_system":"macos","additional_memory":"true"}`,
		"assignment_group": groups["Hardware"], "active": "true"}, "erin", now.AddDate(0, 0, -3))

	// one attachment on the first incident
	inc0 := seedID("incident:inc0")
	body := []byte("VPN client log\nerror: tunnel closed by peer\n")
	aid := s.seedInsert("sys_attachment", "att0", map[string]string{"file_name": "vpn.log", "content_type": "text/plain",
		"table_name": "incident", "table_sys_id": inc0, "size_bytes": strconv.Itoa(len(body)),
		"size_compressed": strconv.Itoa(len(body)), "compressed": "false", "hash": sha256Hex(body)}, "carol", base)
	s.files[aid] = body

	s.seedMeta(base)
}

// seedMeta generates sys_db_object, sys_dictionary and sys_choice from the schema.
func (s *Server) seedMeta(at time.Time) {
	names := make([]string, 0, len(s.schema))
	for n := range s.schema {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		td := s.schema[n]
		s.seedInsert("sys_db_object", n, map[string]string{"name": n, "label": td.Label, "number_ref": td.Prefix}, "system", at)
		for _, f := range td.Fields {
			internal := f.Type
			if f.Type == tChoice {
				internal = tString
			}
			s.seedInsert("sys_dictionary", n+"."+f.Name, map[string]string{"name": n, "element": f.Name,
				"column_label": f.Label, "internal_type": internal, "reference": f.Ref,
				"mandatory": strconv.FormatBool(f.Mandatory), "max_length": strconv.Itoa(f.MaxLen), "active": "true",
				"read_only": strconv.FormatBool(isSysField(f.Name)), "display": strconv.FormatBool(td.Display == f.Name),
				"default_value": f.Default}, "system", at)
			for i, ch := range f.Choices {
				s.seedInsert("sys_choice", n+"."+f.Name+"="+ch.Value, map[string]string{"name": n, "element": f.Name,
					"value": ch.Value, "label": ch.Label, "sequence": strconv.Itoa(i * 10),
					"inactive": strconv.FormatBool(ch.Inactive), "language": "en"}, "system", at)
			}
		}
	}
}
