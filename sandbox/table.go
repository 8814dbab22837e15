package sandbox

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// ---------- display values and rendering (s.mu held) ----------

func (s *Server) refDisplay(table, id string) string {
	td, def := s.data[table], s.schema[table]
	if td == nil || def == nil {
		return ""
	}
	rec := td.rows[id]
	if rec == nil {
		return ""
	}
	return rec[def.Display]
}

func (s *Server) displayOf(f *field, v string) string {
	switch {
	case f.Type == tReference:
		if v == "" {
			return ""
		}
		return s.refDisplay(f.Ref, v)
	case len(f.Choices) > 0:
		if l, ok := f.choiceLabel(v); ok {
			return l
		}
	case f.Type == tBoolean:
		return normBool(v)
	case f.Type == tPrice && v != "":
		return formatPrice(v)
	}
	return v
}

type renderOpts struct {
	fields     []string // nil: all readable fields
	dv         string   // "false", "true", "all"
	excludeRef bool
	base       string
}

func readOpts(r *http.Request) renderOpts {
	q := r.URL.Query()
	o := renderOpts{dv: strings.ToLower(q.Get("sysparm_display_value")), base: baseURL(r)}
	if o.dv != "true" && o.dv != "all" {
		o.dv = "false"
	}
	o.excludeRef = strings.EqualFold(q.Get("sysparm_exclude_reference_link"), "true")
	if fs := q.Get("sysparm_fields"); fs != "" {
		for _, f := range strings.Split(fs, ",") {
			if f = strings.TrimSpace(f); f != "" {
				o.fields = append(o.fields, f)
			}
		}
	}
	return o
}

// journalText renders a record's journal like ServiceNow's display value.
func (s *Server) journalText(table, id, element string) string {
	var b strings.Builder
	jt := s.data["sys_journal_field"]
	for i := len(jt.order) - 1; i >= 0; i-- {
		j := jt.rows[jt.order[i]]
		if j["element_id"] != id || j["element"] != element || j["name"] != table {
			continue
		}
		who := j["sys_created_by"]
		if uid := s.userIDByNameLocked(who); uid != "" {
			who = s.data["sys_user"].rows[uid]["name"]
		}
		label := "Additional comments"
		if element == "work_notes" {
			label = "Work notes"
		}
		fmt.Fprintf(&b, "%s - %s (%s)\n%s\n\n", j["sys_created_on"], who, label, j["value"])
	}
	return b.String()
}

func (s *Server) renderValue(td *tableDef, path []*field, rec record, o renderOpts) any {
	f := path[len(path)-1]
	// find the record that holds the last field
	cur, curTable := rec, td.Name
	for _, pf := range path[:len(path)-1] {
		curTable = pf.Ref
		cur = s.data[pf.Ref].rows[cur[pf.Name]]
		if cur == nil {
			cur = record{}
			break
		}
	}
	v := cur[f.Name]
	if f.Type == tBoolean && v != "" {
		v = normBool(v)
	}
	if f.Type == tJournal {
		v = ""
		if o.dv == "false" {
			return ""
		}
		d := ""
		if cur["sys_id"] != "" {
			d = s.journalText(curTable, cur["sys_id"], f.Name)
		}
		if o.dv == "true" {
			return d
		}
		return map[string]any{"display_value": d, "value": ""}
	}
	link := ""
	if f.Type == tReference && v != "" && !o.excludeRef {
		link = o.base + "/api/now/table/" + f.Ref + "/" + v
	}
	switch o.dv {
	case "true":
		d := s.displayOf(f, v)
		if link != "" {
			return map[string]any{"display_value": d, "link": link}
		}
		return d
	case "all":
		m := map[string]any{"display_value": s.displayOf(f, v), "value": v}
		if link != "" {
			m["link"] = link
		}
		return m
	}
	if link != "" {
		return map[string]any{"link": link, "value": v}
	}
	return v
}

func (s *Server) render(td *tableDef, rec record, o renderOpts, p *principal) map[string]any {
	out := make(map[string]any, len(td.Fields))
	if o.fields == nil {
		for _, f := range td.Fields {
			if len(f.Roles) > 0 && !p.has(f.Roles) {
				continue
			}
			out[f.Name] = s.renderValue(td, []*field{f}, rec, o)
		}
		return out
	}
	for _, name := range o.fields {
		path := resolvePath(s.schema, td, name)
		if path == nil {
			continue // unknown fields are ignored
		}
		readable := true
		for _, f := range path {
			if len(f.Roles) > 0 && !p.has(f.Roles) {
				readable = false
			}
		}
		if readable {
			out[name] = s.renderValue(td, path, rec, o)
		}
	}
	return out
}

// canReadRow is the row-level read ACL, applied after paging like
// ServiceNow applies ACLs after sysparm_limit.
func (s *Server) canReadRow(td *tableDef, rec record, p *principal) bool {
	if !p.has(td.Read) {
		return false
	}
	switch td.Name {
	case "sys_journal_field":
		if rec["element"] == "work_notes" {
			return p.has(itil)
		}
		if def := s.schema[rec["name"]]; def != nil {
			if target := s.data[rec["name"]].rows[rec["element_id"]]; target != nil {
				return s.canReadRow(def, target, p)
			}
		}
	case "incident":
		// like ServiceNow's default ACLs: users without itil read only
		// the incidents they called in or opened
		if !p.has(itil) {
			return rec["caller_id"] == p.SysID || rec["opened_by"] == p.SysID
		}
	case "kb_knowledge":
		if rec["workflow_state"] != "published" {
			return p.has(itil) || rec["author"] == p.SysID
		}
	case "sc_request", "sc_req_item":
		if !p.has(itil) {
			return rec["requested_for"] == p.SysID || rec["opened_by"] == p.SysID
		}
	case "sys_attachment":
		if def := s.schema[rec["table_name"]]; def != nil {
			if target := s.data[rec["table_name"]].rows[rec["table_sys_id"]]; target != nil {
				return s.canReadRow(def, target, p)
			}
		}
	}
	return true
}

// ---------- Table API ----------

func (s *Server) serveTable(w http.ResponseWriter, r *http.Request, p *principal, table, id, version string) {
	td := s.schema[table]
	if td == nil {
		writeErr(w, http.StatusBadRequest, "Invalid table "+table, nil)
		return
	}
	switch {
	case id == "" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		s.tableList(w, r, p, td, version)
	case id == "" && r.Method == http.MethodPost:
		s.tableInsert(w, r, p, td)
	case id != "" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		s.tableGet(w, r, p, td, id)
	case id != "" && (r.Method == http.MethodPut || r.Method == http.MethodPatch):
		s.tableUpdate(w, r, p, td, id)
	case id != "" && r.Method == http.MethodDelete:
		s.tableDelete(w, r, p, td, id)
	default:
		writeErr(w, http.StatusMethodNotAllowed, "Method not Supported", "Method "+r.Method+" not supported for API")
	}
}

func notFound(w http.ResponseWriter) {
	writeErr(w, http.StatusNotFound, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
}

func aclDenied(w http.ResponseWriter, op string) {
	writeErr(w, http.StatusForbidden, "Operation Failed", "ACL Exception "+op+" Failed due to security constraints")
}

// listQuery builds the encoded query of a list request: sysparm_query plus
// name=value pairs for known fields.
func listQuery(r *http.Request, td *tableDef) string {
	q := r.URL.Query()
	parts := []string{}
	if v := q.Get("sysparm_query"); v != "" {
		parts = append(parts, v)
	}
	for k, vs := range q {
		if strings.HasPrefix(k, "sysparm_") || td.field(k) == nil || len(vs) == 0 {
			continue
		}
		parts = append(parts, k+"="+strings.ReplaceAll(vs[0], "^", "^^"))
	}
	sort.Strings(parts[min(1, len(parts)):])
	return strings.Join(parts, "^")
}

func (s *Server) tableList(w http.ResponseWriter, r *http.Request, p *principal, td *tableDef, version string) {
	q := r.URL.Query()
	limit := 10000
	if v, err := strconv.Atoi(q.Get("sysparm_limit")); err == nil && v > 0 {
		limit = v
	}
	offset := 0
	if v, err := strconv.Atoi(q.Get("sysparm_offset")); err == nil && v > 0 {
		offset = v
	}
	o := readOpts(r)
	env := &evalEnv{s: s, user: p, now: s.now()}
	s.mu.RLock()
	cq, err := env.compile(td, parseQuery(listQuery(r, td)))
	if err != nil {
		s.mu.RUnlock()
		writeErr(w, http.StatusForbidden, "Insufficient rights to query records", "Field(s) present in the query do not have permission to be read")
		return
	}
	ids := env.selectRows(td.Name, cq)
	total := len(ids)
	page := ids[min(offset, total):min(offset+limit, total)]
	result := make([]map[string]any, 0, len(page))
	data := s.data[td.Name]
	for _, id := range page {
		rec := data.rows[id]
		if !s.canReadRow(td, rec, p) {
			continue
		}
		result = append(result, s.render(td, rec, o, p))
	}
	s.mu.RUnlock()
	if version == "v1" && len(result) == 0 {
		writeErr(w, http.StatusNotFound, "No Record found", "Records matching query not found. Check query parameter or offset parameter")
		return
	}
	setPagingHeaders(w.Header(), o.base+r.URL.Path, q, offset, limit, total, len(page))
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"result": result})
}

// setPagingHeaders sets X-Total-Count (unless sysparm_no_count=true) and
// Link (unless sysparm_suppress_pagination_header=true) for a list page of
// pageLen rows, counted before row ACLs as ServiceNow counts them.
func setPagingHeaders(h http.Header, base string, q url.Values, offset, limit, total, pageLen int) {
	noCount := strings.EqualFold(q.Get("sysparm_no_count"), "true")
	if !noCount {
		h.Set("X-Total-Count", strconv.Itoa(total))
	}
	if strings.EqualFold(q.Get("sysparm_suppress_pagination_header"), "true") {
		return
	}
	if link := linkHeader(base, q, offset, limit, total, pageLen, noCount); link != "" {
		h.Set("Link", link)
	}
}

// linkHeader builds first/prev/next/last links echoing the sysparm params.
func linkHeader(base string, q url.Values, offset, limit, total, pageLen int, noCount bool) string {
	if !noCount && offset == 0 && total <= limit {
		return ""
	}
	if noCount && offset == 0 && pageLen < limit {
		return ""
	}
	mk := func(off int, rel string) string {
		v := url.Values{}
		for k, vs := range q {
			if strings.HasPrefix(k, "sysparm_") {
				v[k] = vs
			}
		}
		v.Set("sysparm_limit", strconv.Itoa(limit))
		v.Set("sysparm_offset", strconv.Itoa(off))
		return "<" + base + "?" + v.Encode() + ">;rel=\"" + rel + "\""
	}
	links := []string{mk(0, "first")}
	if offset > 0 {
		links = append(links, mk(max(0, offset-limit), "prev"))
	}
	if noCount {
		if pageLen >= limit {
			links = append(links, mk(offset+limit, "next"))
		}
		return strings.Join(links, ",")
	}
	if offset+limit < total {
		links = append(links, mk(offset+limit, "next"))
	}
	last := 0
	if total > 0 {
		last = (total - 1) / limit * limit
	}
	links = append(links, mk(last, "last"))
	return strings.Join(links, ",")
}

func (s *Server) tableGet(w http.ResponseWriter, r *http.Request, p *principal, td *tableDef, id string) {
	o := readOpts(r)
	s.mu.RLock()
	rec := s.data[td.Name].rows[id]
	if rec == nil || !s.canReadRow(td, rec, p) {
		s.mu.RUnlock()
		notFound(w)
		return
	}
	out := s.render(td, rec, o, p)
	s.mu.RUnlock()
	writeJSON(w, http.StatusOK, map[string]any{"result": out})
}

func readBody(w http.ResponseWriter, r *http.Request) (map[string]any, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 8<<20))
	if err != nil {
		writeErr(w, http.StatusBadRequest, "Exception while reading request", "Request body too large or unreadable")
		return nil, false
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		writeErr(w, http.StatusBadRequest, "Exception while reading request", "The payload is not valid JSON.")
		return nil, false
	}
	switch x := v.(type) {
	case map[string]any:
		return x, true
	case []any: // only the first record is processed
		if len(x) > 0 {
			if m, ok := x[0].(map[string]any); ok {
				return m, true
			}
		}
	}
	writeErr(w, http.StatusBadRequest, "Exception while reading request", "The payload must be a JSON object.")
	return nil, false
}

func stringify(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case map[string]any:
		// {"value": ...} as sent back by some clients
		if v, ok := x["value"]; ok {
			return stringify(v)
		}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

type journalEntry struct{ element, value string }

// applyFields writes client values into rec (s.mu held for writing) and
// returns journal entries to append.
func (s *Server) applyFields(td *tableDef, rec record, body map[string]any, p *principal, inputDV, insert bool) []journalEntry {
	var journals []journalEntry
	for k, raw := range body {
		f := td.field(k)
		if f == nil {
			continue // unknown fields are ignored
		}
		if isSysField(k) && !(insert && k == "sys_id") {
			continue
		}
		if len(f.Roles) > 0 && !p.has(f.Roles) {
			continue // field write ACL: silently skipped
		}
		v := stringify(raw)
		switch f.Type {
		case tJournal:
			if strings.TrimSpace(v) != "" {
				journals = append(journals, journalEntry{k, v})
			}
			continue
		case tGUID:
			if !isSysID(v) {
				continue
			}
		case tBoolean:
			v = normBool(v)
		case tInteger, tPrice:
			if inputDV && len(f.Choices) > 0 {
				for _, c := range f.Choices {
					if strings.EqualFold(c.Label, v) {
						v = c.Value
					}
				}
			}
			if v != "" {
				if _, err := strconv.ParseFloat(v, 64); err != nil {
					continue
				}
			}
		case tChoice:
			if inputDV {
				for _, c := range f.Choices {
					if strings.EqualFold(c.Label, v) {
						v = c.Value
					}
				}
			}
		case tDateTime:
			if v != "" {
				t, ok := parseTime(v)
				if !ok {
					continue
				}
				v = fmtTime(t)
			}
		case tDate:
			if v != "" {
				t, ok := parseTime(v)
				if !ok {
					continue
				}
				v = t.Format("2006-01-02")
			}
		case tReference:
			v = s.resolveRef(f.Ref, v)
		}
		if f.MaxLen > 0 && len(v) > f.MaxLen && f.Type != tReference {
			rs := []rune(v)
			if len(rs) > f.MaxLen {
				v = string(rs[:f.MaxLen])
			}
		}
		rec[k] = v
	}
	return journals
}

// resolveRef accepts a sys_id or a display value of the target table.
func (s *Server) resolveRef(table, v string) string {
	v = strings.TrimSpace(v)
	td, def := s.data[table], s.schema[table]
	if v == "" || td == nil {
		return v
	}
	if td.rows[v] != nil {
		return v
	}
	for _, id := range td.order {
		if strings.EqualFold(td.rows[id][def.Display], v) {
			return id
		}
	}
	if table == "sys_user" {
		for _, id := range td.order {
			if td.rows[id]["user_name"] == v {
				return id
			}
		}
	}
	return v // kept as sent, like an invalid reference
}

func (s *Server) nextNumber(td *tableDef) string {
	s.counters[td.Prefix]++
	return fmt.Sprintf("%s%07d", td.Prefix, 10000+s.counters[td.Prefix])
}

var priorityMatrix = map[string]string{"11": "1", "12": "2", "21": "2", "13": "3", "22": "3", "31": "3", "23": "4", "32": "4", "33": "5"}

// businessRules fills defaults and derived fields (s.mu held).
func (s *Server) businessRules(td *tableDef, rec, before record, p *principal) {
	now := fmtTime(s.now())
	insert := before == nil
	if insert {
		if td.Prefix != "" && rec["number"] == "" {
			rec["number"] = s.nextNumber(td)
		}
		// an empty value does not clear a choice field: it keeps its default
		for _, f := range td.Fields {
			if f.Default != "" && len(f.Choices) > 0 && rec[f.Name] == "" {
				rec[f.Name] = f.Default
			}
		}
		if td.field("opened_by") != nil && rec["opened_by"] == "" {
			rec["opened_by"] = p.SysID
		}
		if td.field("opened_at") != nil && rec["opened_at"] == "" {
			rec["opened_at"] = now
		}
	}
	switch td.Name {
	case "incident":
		// priority is computed from impact and urgency, never set directly
		if insert || rec["impact"] != before["impact"] || rec["urgency"] != before["urgency"] {
			if pr, ok := priorityMatrix[rec["impact"]+rec["urgency"]]; ok {
				rec["priority"] = pr
			}
		}
		if insert || rec["state"] != before["state"] {
			switch rec["state"] {
			case "6":
				if rec["resolved_at"] == "" {
					rec["resolved_at"] = now
				}
				if rec["resolved_by"] == "" {
					rec["resolved_by"] = p.SysID
				}
				rec["active"] = "true"
			case "7", "8":
				if rec["closed_at"] == "" {
					rec["closed_at"] = now
				}
				rec["active"] = "false"
			default:
				rec["active"] = "true"
			}
		}
		if !insert && rec["assigned_to"] != before["assigned_to"] && before["assigned_to"] != "" {
			n, _ := strconv.Atoi(rec["reassignment_count"])
			rec["reassignment_count"] = strconv.Itoa(n + 1)
		}
	case "change_request":
		if insert && rec["requested_by"] == "" {
			rec["requested_by"] = p.SysID
		}
		// priority follows the same matrix as incident, but a change's
		// priority may also be set by hand: an explicit one is kept
		recompute := rec["impact"] != before["impact"] || rec["urgency"] != before["urgency"]
		if insert && rec["priority"] == "" || !insert && recompute && rec["priority"] == before["priority"] {
			if pr, ok := priorityMatrix[rec["impact"]+rec["urgency"]]; ok {
				rec["priority"] = pr
			}
		}
		if rec["state"] == "3" || rec["state"] == "4" {
			rec["active"] = "false"
		}
	case "kb_knowledge":
		if insert && rec["author"] == "" {
			rec["author"] = p.SysID
		}
		if rec["workflow_state"] == "published" && rec["published"] == "" {
			rec["published"] = now
		}
	}
}

// stamp maintains the system fields (s.mu held).
func (s *Server) stamp(rec record, p *principal, insert bool) {
	now := fmtTime(s.now())
	if insert {
		if !isSysID(rec["sys_id"]) {
			rec["sys_id"] = newSysID()
		}
		rec["sys_created_on"], rec["sys_created_by"] = now, p.UserName
		rec["sys_mod_count"] = "0"
	} else {
		n, _ := strconv.Atoi(rec["sys_mod_count"])
		rec["sys_mod_count"] = strconv.Itoa(n + 1)
	}
	rec["sys_updated_on"], rec["sys_updated_by"] = now, p.UserName
}

// emptyRecord gives every field its dictionary default, or else its
// type's empty value.
func emptyRecord(td *tableDef) record {
	rec := make(record, len(td.Fields))
	for _, f := range td.Fields {
		switch {
		case f.Type == tJournal:
			continue
		case f.Default != "":
			rec[f.Name] = f.Default
		case f.Type == tBoolean:
			rec[f.Name] = "false"
		default:
			rec[f.Name] = ""
		}
	}
	return rec
}

// insertLocked stores a new record (s.mu held for writing).
func (s *Server) insertLocked(td *tableDef, rec record, journals []journalEntry, p *principal) record {
	s.businessRules(td, rec, nil, p)
	s.stamp(rec, p, true)
	d := s.data[td.Name]
	d.rows[rec["sys_id"]] = rec
	d.order = append(d.order, rec["sys_id"])
	s.addJournals(td.Name, rec["sys_id"], journals, p)
	return rec
}

func (s *Server) addJournals(table, id string, js []journalEntry, p *principal) {
	jt := s.schema["sys_journal_field"]
	for _, j := range js {
		e := emptyRecord(jt)
		e["element_id"], e["element"], e["name"], e["value"] = id, j.element, table, j.value
		s.stamp(e, p, true)
		d := s.data["sys_journal_field"]
		d.rows[e["sys_id"]] = e
		d.order = append(d.order, e["sys_id"])
	}
}

func (s *Server) tableInsert(w http.ResponseWriter, r *http.Request, p *principal, td *tableDef) {
	if !p.has(td.Create) {
		aclDenied(w, "Insert")
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	inputDV := strings.EqualFold(r.URL.Query().Get("sysparm_input_display_value"), "true")
	o := readOpts(r)
	s.mu.Lock()
	rec := emptyRecord(td)
	js := s.applyFields(td, rec, body, p, inputDV, true)
	if id := rec["sys_id"]; id != "" && s.data[td.Name].rows[id] != nil {
		s.mu.Unlock()
		writeErr(w, http.StatusForbidden, "Operation Failed", "Error during insert of "+td.Name+" ("+id+")")
		return
	}
	rec = s.insertLocked(td, rec, js, p)
	out := s.render(td, rec, o, p)
	s.mu.Unlock()
	s.markDirty()
	w.Header().Set("Location", o.base+"/api/now/table/"+td.Name+"/"+rec["sys_id"])
	if strings.EqualFold(r.Header.Get("X-no-response-body"), "true") {
		w.WriteHeader(http.StatusCreated)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"result": out})
}

func (s *Server) tableUpdate(w http.ResponseWriter, r *http.Request, p *principal, td *tableDef, id string) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	inputDV := strings.EqualFold(r.URL.Query().Get("sysparm_input_display_value"), "true")
	o := readOpts(r)
	s.mu.Lock()
	rec := s.data[td.Name].rows[id]
	if rec == nil || !s.canReadRow(td, rec, p) {
		s.mu.Unlock()
		notFound(w)
		return
	}
	if !p.has(td.Write) {
		s.mu.Unlock()
		aclDenied(w, "Update")
		return
	}
	before := make(record, len(rec))
	for k, v := range rec {
		before[k] = v
	}
	js := s.applyFields(td, rec, body, p, inputDV, false)
	s.businessRules(td, rec, before, p)
	if !strings.EqualFold(r.URL.Query().Get("sysparm_suppress_auto_sys_field"), "true") {
		s.stamp(rec, p, false)
	}
	s.addJournals(td.Name, id, js, p)
	out := s.render(td, rec, o, p)
	s.mu.Unlock()
	s.markDirty()
	if strings.EqualFold(r.Header.Get("X-no-response-body"), "true") {
		w.WriteHeader(http.StatusOK)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"result": out})
}

func (s *Server) tableDelete(w http.ResponseWriter, r *http.Request, p *principal, td *tableDef, id string) {
	s.mu.Lock()
	d := s.data[td.Name]
	rec := d.rows[id]
	if rec == nil || !s.canReadRow(td, rec, p) {
		s.mu.Unlock()
		notFound(w)
		return
	}
	if !p.has(td.Delete) {
		s.mu.Unlock()
		aclDenied(w, "Delete")
		return
	}
	s.deleteLocked(td.Name, id)
	s.mu.Unlock()
	s.markDirty()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) deleteLocked(table, id string) {
	d := s.data[table]
	delete(d.rows, id)
	for i, x := range d.order {
		if x == id {
			d.order = append(d.order[:i:i], d.order[i+1:]...)
			break
		}
	}
	if table == "sys_attachment" {
		delete(s.files, id)
	}
}
