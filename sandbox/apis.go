package sandbox

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

var tagRe = regexp.MustCompile(`<[^>]*>`)

func stripTags(h string) string { return strings.TrimSpace(tagRe.ReplaceAllString(h, "")) }

// ---------- Knowledge API (sn_km_api) ----------

func (s *Server) serveKnowledge(w http.ResponseWriter, r *http.Request, p *principal, rest []string) {
	if r.Method != http.MethodGet {
		writeErr(w, http.StatusMethodNotAllowed, "Method not Supported", "Method "+r.Method+" not supported for API")
		return
	}
	td := s.schema["kb_knowledge"]
	env := &evalEnv{s: s, user: p, now: s.now()}
	s.mu.RLock()
	defer s.mu.RUnlock()
	data := s.data["kb_knowledge"]
	if len(rest) == 1 {
		id := rest[0]
		rec := data.rows[id]
		if rec == nil {
			for _, x := range data.order {
				if data.rows[x]["number"] == id {
					rec = data.rows[x]
				}
			}
		}
		if rec == nil || !s.canReadRow(td, rec, p) {
			writeErr(w, http.StatusNotFound, "Article not found", "No article matches "+id)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"result": map[string]any{
			"content": rec["text"], "template": false, "sys_id": rec["sys_id"], "number": rec["number"],
			"short_description": rec["short_description"], "display_attachments": false,
			"attachments": []any{}, "embedded_content": []any{},
			"fields": s.kmFields(td, rec, []string{"number", "short_description", "workflow_state", "kb_knowledge_base", "sys_updated_on"}),
		}})
		return
	}
	if len(rest) > 1 {
		writeErr(w, http.StatusBadRequest, "Requested URI does not represent any resource", nil)
		return
	}
	q := r.URL.Query()
	limit := 30
	if v, err := strconv.Atoi(q.Get("limit")); err == nil && v > 0 {
		limit = v
	}
	offset := 0
	if v, err := strconv.Atoi(q.Get("offset")); err == nil && v > 0 {
		offset = v
	}
	cq, err := env.compile(td, parseQuery(q.Get("filter")))
	if err != nil {
		writeErr(w, http.StatusForbidden, "Insufficient rights to query records", nil)
		return
	}
	text := strings.ToLower(strings.TrimSpace(q.Get("query")))
	kbs := splitCSV(q.Get("kb"))
	fields := splitCSV(q.Get("fields"))
	type hit struct {
		rec   record
		score float64
	}
	var hits []hit
	for _, id := range env.selectRows("kb_knowledge", cq) {
		rec := data.rows[id]
		if rec["workflow_state"] != "published" || rec["active"] == "false" || !s.canReadRow(td, rec, p) {
			continue
		}
		if len(kbs) > 0 && !contains(kbs, rec["kb_knowledge_base"]) {
			continue
		}
		score := 1.0
		if text != "" {
			score = 0
			title, body := strings.ToLower(rec["short_description"]), strings.ToLower(stripTags(rec["text"]))
			for _, word := range strings.Fields(text) {
				if strings.Contains(title, word) {
					score += 2
				}
				if strings.Contains(body, word) {
					score++
				}
			}
			if score == 0 {
				continue
			}
		}
		hits = append(hits, hit{rec, score})
	}
	if text != "" {
		for i := 1; i < len(hits); i++ { // stable insertion sort by score desc
			for j := i; j > 0 && hits[j].score > hits[j-1].score; j-- {
				hits[j], hits[j-1] = hits[j-1], hits[j]
			}
		}
	}
	total := len(hits)
	page := hits[min(offset, total):min(offset+limit, total)]
	arts := make([]map[string]any, 0, len(page))
	for i, h := range page {
		snippet := stripTags(h.rec["text"])
		if len(snippet) > 160 {
			snippet = snippet[:160]
		}
		arts = append(arts, map[string]any{
			"link":    "?id=kb_article_view&sysparm_article=" + h.rec["number"],
			"rank":    offset + i + 1,
			"id":      "kb_knowledge:" + h.rec["sys_id"],
			"title":   h.rec["short_description"],
			"snippet": snippet,
			"score":   h.score,
			"number":  h.rec["number"],
			"fields":  s.kmFields(td, h.rec, fields),
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"result": map[string]any{
		"meta": map[string]any{"start": offset, "end": offset + len(arts), "fields": q.Get("fields"),
			"query": q.Get("query"), "filter": q.Get("filter"), "kb": q.Get("kb"), "language": "en",
			"count": total, "ts_query_id": "", "status": map[string]any{"code": 200}},
		"articles": arts,
	}})
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func (s *Server) kmFields(td *tableDef, rec record, names []string) map[string]any {
	out := map[string]any{}
	for _, n := range names {
		f := td.field(n)
		if f == nil {
			continue
		}
		out[n] = map[string]any{"display_value": s.displayOf(f, rec[n]), "name": n, "label": f.Label,
			"type": f.Type, "value": rec[n]}
	}
	return out
}

// ---------- Service Catalog API (sn_sc) ----------

var variableTypes = map[string]string{"2": "multi_line_text", "5": "select_box", "6": "single_line_text",
	"7": "boolean", "8": "reference", "9": "date"}

// serveCatalog handles items[/id[/order_now]]; false means "no such route".
func (s *Server) serveCatalog(w http.ResponseWriter, r *http.Request, p *principal, rest []string) bool {
	switch {
	case len(rest) == 0 && r.Method == http.MethodGet:
		s.catalogList(w, r, p)
	case len(rest) == 1 && r.Method == http.MethodGet:
		s.mu.RLock()
		item := s.data["sc_cat_item"].rows[rest[0]]
		if item == nil || item["active"] != "true" {
			s.mu.RUnlock()
			writeErr(w, http.StatusNotFound, "Item not found", "No catalog item with sys_id "+rest[0])
			return true
		}
		out := s.catalogItem(item, baseURL(r))
		out["variables"] = s.catalogVariables(item["sys_id"])
		s.mu.RUnlock()
		writeJSON(w, http.StatusOK, map[string]any{"result": out})
	case len(rest) == 2 && rest[1] == "order_now" && r.Method == http.MethodPost:
		s.orderNow(w, r, p, rest[0])
	default:
		return false
	}
	return true
}

func (s *Server) catalogItem(item record, base string) map[string]any {
	cat := item["category"]
	return map[string]any{
		"sys_id": item["sys_id"], "name": item["name"], "short_description": item["short_description"],
		"description": item["description"], "price": formatPrice(item["price"]), "type": "item",
		"sys_class_name": "sc_cat_item", "show_price": true, "order": 0, "picture": "", "icon": "",
		"category": map[string]any{"sys_id": cat, "title": s.refDisplay("sc_category", cat)},
		"url":      base + "/api/sn_sc/servicecatalog/items/" + item["sys_id"],
	}
}

func (s *Server) catalogVariables(itemID string) []map[string]any {
	d := s.data["item_option_new"]
	vars := []map[string]any{}
	for _, id := range d.order {
		v := d.rows[id]
		if v["cat_item"] != itemID || v["active"] == "false" {
			continue
		}
		choices := []map[string]any{}
		display := v["default_value"]
		for i, ch := range variableChoices(v["choices"]) {
			choices = append(choices, map[string]any{"value": ch.Value, "label": ch.Label, "index": i})
			if ch.Value == v["default_value"] {
				display = ch.Label
			}
		}
		typ, _ := strconv.Atoi(v["type"])
		vars = append(vars, map[string]any{"name": v["name"], "label": v["question_text"], "type": typ,
			"friendly_type": variableTypes[v["type"]], "mandatory": v["mandatory"] == "true",
			"choices": choices, "value": v["default_value"], "displayvalue": display,
			"id": v["sys_id"], "order": v["order"]})
	}
	return vars
}

// variableChoices reads item_option_new.choices: comma-separated
// value=Label pairs; a bare value is its own label.
func variableChoices(csv string) []choice {
	var out []choice
	for _, part := range splitCSV(csv) {
		v, l, ok := strings.Cut(part, "=")
		v, l = strings.TrimSpace(v), strings.TrimSpace(l)
		if !ok || l == "" {
			l = v
		}
		out = append(out, choice{Value: v, Label: l})
	}
	return out
}

// formatPrice renders a price as ServiceNow shows it to a US-English user:
// "$1,100.00".
func formatPrice(v string) string {
	x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil {
		return v
	}
	sign := ""
	if x < 0 {
		sign, x = "-", -x
	}
	whole, cents, _ := strings.Cut(strconv.FormatFloat(x, 'f', 2, 64), ".")
	var b strings.Builder
	for i, d := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(d)
	}
	return sign + "$" + b.String() + "." + cents
}

func (s *Server) catalogList(w http.ResponseWriter, r *http.Request, p *principal) {
	q := r.URL.Query()
	limit := 10000
	if v, err := strconv.Atoi(q.Get("sysparm_limit")); err == nil && v > 0 {
		limit = v
	}
	offset := 0
	if v, err := strconv.Atoi(q.Get("sysparm_offset")); err == nil && v > 0 {
		offset = v
	}
	text := strings.ToLower(q.Get("sysparm_text"))
	cat := q.Get("sysparm_category")
	s.mu.RLock()
	d := s.data["sc_cat_item"]
	var all []map[string]any
	for _, id := range d.order {
		it := d.rows[id]
		if it["active"] != "true" || cat != "" && it["category"] != cat {
			continue
		}
		if text != "" && !strings.Contains(strings.ToLower(it["name"]+" "+it["short_description"]+" "+it["description"]), text) {
			continue
		}
		all = append(all, s.catalogItem(it, baseURL(r)))
	}
	s.mu.RUnlock()
	total := len(all)
	page := all[min(offset, total):min(offset+limit, total)]
	if page == nil {
		page = []map[string]any{}
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	writeJSON(w, http.StatusOK, map[string]any{"result": page})
}

func (s *Server) orderNow(w http.ResponseWriter, r *http.Request, p *principal, itemID string) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	var body struct {
		Quantity     any            `json:"sysparm_quantity"`
		Variables    map[string]any `json:"variables"`
		RequestedFor string         `json:"sysparm_requested_for"`
	}
	if err != nil || json.Unmarshal(b, &body) != nil {
		writeErr(w, http.StatusBadRequest, "Exception while reading request", "The payload is not valid JSON.")
		return
	}
	qty := 1
	if body.Quantity != nil {
		n, err := strconv.Atoi(strings.TrimSpace(stringify(body.Quantity)))
		if err != nil || n < 1 || n > 1000 {
			writeErr(w, http.StatusBadRequest, "Invalid quantity", "sysparm_quantity must be a positive whole number")
			return
		}
		qty = n
	}
	s.mu.Lock()
	item := s.data["sc_cat_item"].rows[itemID]
	if item == nil || item["active"] != "true" {
		s.mu.Unlock()
		writeErr(w, http.StatusNotFound, "Item not found", "No catalog item with sys_id "+itemID)
		return
	}
	vals := map[string]string{}
	for _, v := range s.catalogVariables(itemID) {
		name := v["name"].(string)
		given, ok := body.Variables[name]
		val := strings.TrimSpace(stringify(given))
		if !ok || val == "" {
			val = v["value"].(string)
		}
		if v["mandatory"].(bool) && val == "" {
			s.mu.Unlock()
			writeErr(w, http.StatusBadRequest, "Mandatory Variables are required", "Missing mandatory variable: "+name)
			return
		}
		if ch := v["choices"].([]map[string]any); len(ch) > 0 && val != "" {
			okc := false
			for _, c := range ch {
				okc = okc || c["value"] == val
			}
			if !okc {
				s.mu.Unlock()
				writeErr(w, http.StatusBadRequest, "Invalid variable value", "Variable "+name+" does not accept "+val)
				return
			}
		}
		if val != "" {
			vals[name] = val
		}
	}
	forUser := p.SysID
	if body.RequestedFor != "" {
		// ServiceNow's docs do not show the answer to an unknown
		// sysparm_requested_for; this message is the sandbox's own, in
		// the documented 400 error envelope.
		u := s.data["sys_user"].rows[body.RequestedFor]
		if u == nil || u["active"] != "true" {
			s.mu.Unlock()
			writeErr(w, http.StatusBadRequest, "Invalid requested_for", "No active user with sys_id "+body.RequestedFor)
			return
		}
		forUser = body.RequestedFor
	}
	price, _ := strconv.ParseFloat(item["price"], 64)
	total := strconv.FormatFloat(price*float64(qty), 'f', 2, 64)
	req := emptyRecord(s.schema["sc_request"])
	req["short_description"], req["requested_for"], req["state"] = item["name"], forUser, "1"
	req["request_state"], req["approval"], req["price"] = "requested", "requested", total
	req = s.insertLocked(s.schema["sc_request"], req, nil, p)
	vj, _ := json.Marshal(vals)
	ritm := emptyRecord(s.schema["sc_req_item"])
	ritm["short_description"], ritm["request"], ritm["cat_item"] = item["name"], req["sys_id"], itemID
	ritm["requested_for"], ritm["state"], ritm["stage"] = forUser, "1", "request_approved"
	ritm["quantity"], ritm["price"], ritm["variables"] = strconv.Itoa(qty), item["price"], string(vj)
	s.insertLocked(s.schema["sc_req_item"], ritm, nil, p)
	s.mu.Unlock()
	s.markDirty()
	writeJSON(w, http.StatusOK, map[string]any{"result": map[string]any{
		"sys_id": req["sys_id"], "number": req["number"], "request_number": req["number"],
		"request_id": req["sys_id"], "table": "sc_request"}})
}
