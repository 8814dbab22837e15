package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"servicenow-mcp/servicenow"
)

// ListSpec describes one list of records for listRecords.
type ListSpec struct {
	Table string
	// Conditions are structured conditions; choice labels and reference
	// keys in the values of =, !=, IN and NOT IN are resolved first.
	Conditions []servicenow.Condition
	// Filters are field → value: a string (or number or boolean) means =,
	// a list means IN. Resolved like Conditions.
	Filters map[string]any
	// Encoded is a raw encoded query; every field it names is checked
	// against the dictionary before anything is sent.
	Encoded string
	// ConditionsArg, FiltersArg and EncodedArg name the arguments
	// Conditions, Filters and Encoded came from, for messages; a name is
	// empty when the tool built that part itself.
	ConditionsArg, FiltersArg, EncodedArg string

	Fields []string
	Order  []servicenow.Order
	// DefaultOrder applies when neither Order nor Encoded sorts; newest
	// first when empty. sys_id is always added last as a tie-break so that
	// paging is stable.
	DefaultOrder  []servicenow.Order
	Limit, Offset int64
	// DefaultFields apply when Fields is empty; when both are empty a
	// short generic list is used.
	DefaultFields []string
}

// Limits of one list.
const (
	DefaultLimit  = 20
	MaxLimit      = 100
	defaultBudget = 48 << 10
)

// recordList is the answer of a list tool.
type recordList struct {
	Table      string `json:"table"`
	Total      *int64 `json:"total,omitempty"`
	Returned   int    `json:"returned"`
	Offset     int64  `json:"offset"`
	NextOffset *int64 `json:"next_offset,omitempty"`
	// Records holds each shaped record encoded once: measuring a record
	// against the budget and writing the answer share one encoding.
	Records   []json.RawMessage `json:"records"`
	Truncated bool              `json:"truncated,omitempty"`
	Notes     []string          `json:"notes,omitempty"`
}

// listRecords runs one Table API list and shapes it for a model.
func listRecords(ctx context.Context, d *Deps, c *Call, spec ListSpec) *mcp.CallToolResult {
	meta, err := d.dictionary(ctx, c, spec.Table)
	if err != nil {
		return recordFailure(ctx, d, c, spec.Table, "read", err)
	}
	query, err := buildQuery(ctx, d, c, meta, spec, true)
	if err != nil {
		return recordFailure(ctx, d, c, spec.Table, "read", err)
	}
	fields, err := chooseFields(ctx, d, c, meta, spec.Fields, spec.DefaultFields)
	if err != nil {
		return recordFailure(ctx, d, c, spec.Table, "read", err)
	}
	limit := spec.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	limit = min(limit, MaxLimit)
	offset := max(spec.Offset, 0)

	q := readQuery(fields)
	q.Set("sysparm_query", query)
	q.Set("sysparm_limit", strconv.FormatInt(limit, 10))
	if offset > 0 {
		q.Set("sysparm_offset", strconv.FormatInt(offset, 10))
	}
	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{
		Method: http.MethodGet, Path: "/api/now/table/" + meta.Name, Query: q, MaxBody: readCap(d.budget()),
	})
	if err != nil {
		return recordFailure(ctx, d, c, spec.Table, "read", err)
	}
	raw, err := resultList(resp)
	if err != nil {
		return recordFailure(ctx, d, c, spec.Table, "read", err)
	}

	var total *int64
	if n, err := strconv.ParseInt(resp.Header.Get("X-Total-Count"), 10, 64); err == nil {
		total = &n
	}
	// ServiceNow pages over the rows the query matched and then drops the
	// rows this user may not read, so a page may hold fewer than limit
	// records (even none) while more follow. The next page therefore
	// starts limit rows on, not after the records that came back; only a
	// page cut to the budget continues after its last record kept.
	expected := limit
	if total != nil {
		expected = min(limit, max(*total-offset, 0))
	}
	hidden := int64(len(raw)) < expected

	shaper := newShaper(ctx, d, c, meta, fields)
	shaped := make([]map[string]any, 0, len(raw))
	encoded := make([]json.RawMessage, 0, len(raw))
	// page is the answer with the first n records; cut says the one
	// record kept had its long values cut.
	page := func(n int, cut bool) recordList {
		out := recordList{Table: meta.Name, Total: total, Offset: offset, Records: encoded[:n], Returned: n}
		next := offset + limit
		more := false
		switch {
		case n < len(raw) || resp.Truncated:
			out.Truncated = true
			next, more = offset+int64(n), true
			note := fmt.Sprintf("The answer was cut to fit the size budget: %d whole records kept of the %d fetched. Continue with offset=%d, or ask for fewer fields.", n, len(raw), next)
			if hidden {
				note += " Access rules hid some rows of this page, so the next page may repeat a record."
			}
			out.Notes = append(out.Notes, note)
		case total != nil:
			more = next < *total
		default:
			more = !hidden || hasNextLink(resp.Header.Get("Link"))
		}
		if more {
			out.NextOffset = &next
			if hidden && !out.Truncated {
				out.Notes = append(out.Notes, fmt.Sprintf("%d of the %d rows on this page came back: ServiceNow drops rows this user may not read after paging. More rows follow; continue with offset=%d.", len(raw), expected, next))
			}
		}
		if cut {
			out.Notes = append(out.Notes, "The first record is larger than the size budget on its own: its long values were cut, each ending in "+cutMark+
				" (its _cut_fields names them). Ask for fewer fields, or read it with servicenow_get_record and only the fields you need.")
		}
		out.Notes = append(out.Notes, shaper.journalNotes(shaped[:n])...)
		return out
	}

	empty, _ := marshal(page(0, false))
	size := len(empty) + 256 // and the notes a cut adds
	for _, r := range raw {
		rec := shaper.shape(r)
		b, err := marshal(rec)
		if err != nil {
			return errorResult("internal error: cannot encode a record")
		}
		if size+len(b)+1 > d.budget() && len(encoded) > 0 {
			break
		}
		size += len(b) + 1
		shaped, encoded = append(shaped, rec), append(encoded, b)
	}

	// The estimate above is checked against the whole answer: records
	// give way from the end, and a record too large on its own has its
	// long values cut.
	n := len(encoded)
	text, _ := marshal(page(n, false))
	for n > 1 && len(text) > d.budget() {
		n--
		text, _ = marshal(page(n, false))
	}
	if n == 1 && len(text) > d.budget() {
		withNote, _ := marshal(page(1, true))
		fitRecord(shaped[0], len(encoded[0])-(len(withNote)-d.budget()))
		encoded[0], _ = marshal(shaped[0])
		text, _ = marshal(page(1, true))
	}
	return mcp.NewToolResultText(string(text))
}

// hasNextLink reports whether a Link header has a rel="next" target.
func hasNextLink(link string) bool {
	for part := range strings.SplitSeq(link, ",") {
		if strings.Contains(strings.ReplaceAll(part, " ", ""), `rel="next"`) {
			return true
		}
	}
	return false
}

// getRecord reads one record by sys_id, or by number on tables that have
// one (or by the display value, e.g. a group's name). The result is nil
// on success.
func getRecord(ctx context.Context, d *Deps, c *Call, table, idOrNumber string, fields []string) (map[string]any, *mcp.CallToolResult) {
	meta, err := d.dictionary(ctx, c, table)
	if err != nil {
		return nil, recordFailure(ctx, d, c, table, "read", err)
	}
	// One record is read in full unless fields are named; fitRecord keeps
	// it within the budget.
	var chosen []string
	if len(fields) > 0 {
		if chosen, err = chooseFields(ctx, d, c, meta, fields, nil); err != nil {
			return nil, recordFailure(ctx, d, c, table, "read", err)
		}
	}
	key := strings.TrimSpace(idOrNumber)
	if key == "" {
		return nil, errorResult("give the record's sys_id or number")
	}

	q := readQuery(chosen)
	path := "/api/now/table/" + meta.Name
	if isSysID(key) {
		path += "/" + key
	} else {
		cond, err := keyCondition(meta, key)
		if err != nil {
			return nil, recordFailure(ctx, d, c, table, "read", err)
		}
		enc, err := servicenow.Query{All: []servicenow.Condition{cond}}.Encode()
		if err != nil {
			return nil, recordFailure(ctx, d, c, table, "read", err)
		}
		q.Set("sysparm_query", enc)
		q.Set("sysparm_limit", "2")
		q.Set("sysparm_no_count", "true")
	}
	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{Method: http.MethodGet, Path: path, Query: q, MaxBody: readCap(d.budget())})
	if err != nil {
		return nil, recordFailure(ctx, d, c, table, "read", err)
	}
	rows, err := resultList(resp)
	if err != nil {
		return nil, recordFailure(ctx, d, c, table, "read", err)
	}
	switch {
	case len(rows) == 0:
		return nil, jsonError(map[string]any{"status": 404, "error": fmt.Sprintf("no %s record matches %q", meta.Name, key),
			"hint": "Check the sys_id or number; an ACL may also hide the record from this user."})
	case len(rows) > 1:
		return nil, errorResult("%d %s records match %q; use the sys_id", len(rows), meta.Name, key)
	}
	shaper := newShaper(ctx, d, c, meta, chosen)
	rec := shaper.shape(rows[0])
	if notes := shaper.journalNotes([]map[string]any{rec}); len(notes) > 0 {
		rec["_notes"] = notes
	}
	fitRecord(rec, d.budget())
	return rec, nil
}

// keyCondition is how a non-sys_id key finds a record of t.
func keyCondition(t *TableMeta, key string) (servicenow.Condition, error) {
	switch {
	case t.HasNumber():
		return servicenow.Condition{Field: "number", Op: "=", Values: []string{key}}, nil
	case t.Name == "sys_user":
		return servicenow.Condition{Field: "user_name", Op: "=", Values: []string{key}}, nil
	case t.Display != "":
		return servicenow.Condition{Field: t.Display, Op: "=", Values: []string{key}}, nil
	}
	return servicenow.Condition{}, &servicenow.InputError{Msg: fmt.Sprintf("%q is not a sys_id, and table %s has no number or display field to look it up by; give the 32-character sys_id", key, t.Name)}
}

// writeRecord creates (POST), updates (PATCH or PUT) or deletes (DELETE)
// one record. Choice labels and reference keys in values are resolved,
// and unknown or read-only fields refused, before anything is sent.
func writeRecord(ctx context.Context, d *Deps, c *Call, method, table, sysID string, values map[string]any, fields []string) *mcp.CallToolResult {
	method = strings.ToUpper(method)
	op := map[string]string{http.MethodPost: "create", http.MethodPatch: "update", http.MethodPut: "update", http.MethodDelete: "delete"}[method]
	if op == "" {
		return errorResult("internal error: unsupported write method %s", method)
	}
	if d.ReadOnly {
		return errorResult("the server runs in read-only mode; records cannot be changed")
	}
	meta, err := d.dictionary(ctx, c, table)
	if err != nil {
		return recordFailure(ctx, d, c, table, op, err)
	}
	path := "/api/now/table/" + meta.Name
	if method != http.MethodPost {
		if !isSysID(sysID) {
			return errorResult("%q is not a sys_id (32 hexadecimal characters)", sysID)
		}
		path += "/" + sysID
	}
	if method == http.MethodDelete {
		if _, err := d.Client.Do(ctx, c.Key, servicenow.Request{Method: method, Path: path}); err != nil {
			return recordFailure(ctx, d, c, table, op, err)
		}
		return jsonResult(map[string]any{"table": meta.Name, "sys_id": sysID, "deleted": true})
	}

	if len(values) == 0 {
		return errorResult("argument \"values\" is empty: give the fields to set, e.g. {\"short_description\":\"Printer jammed\"}")
	}
	body, err := prepareValues(ctx, d, c, meta, values)
	if err != nil {
		return recordFailure(ctx, d, c, table, op, err)
	}
	if len(fields) == 0 {
		// Show the record's usual fields and every field just written.
		defaults, _ := chooseFields(ctx, d, c, meta, nil, nil)
		if len(defaults) > 0 {
			fields = append(defaults, sortedFieldNames(body)...)
		}
	}
	chosen, err := chooseFields(ctx, d, c, meta, fields, nil)
	if err != nil {
		return recordFailure(ctx, d, c, table, op, err)
	}
	data, err := marshal(body)
	if err != nil {
		return errorResult("internal error: cannot encode the values")
	}
	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{
		Method: method, Path: path, Query: readQuery(chosen), Body: data, MaxBody: readCap(d.budget()),
	})
	if err != nil {
		return recordFailure(ctx, d, c, table, op, err)
	}
	rows, err := resultList(resp)
	if err != nil || len(rows) == 0 {
		return jsonResult(map[string]any{"table": meta.Name, "status": resp.Status, "note": "ServiceNow accepted the change but returned no record."})
	}
	shaper := newShaper(ctx, d, c, meta, chosen)
	rec := shaper.shape(rows[0])
	action := "updated"
	if method == http.MethodPost {
		action = "created"
	}
	out := map[string]any{"table": meta.Name, "action": action}
	fitInto(out, "record", rec, d.budget())
	return jsonResult(out)
}

// prepareValues checks the fields of a write and turns each value into
// the string ServiceNow stores.
func prepareValues(ctx context.Context, d *Deps, c *Call, meta *TableMeta, values map[string]any) (map[string]string, error) {
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make(map[string]string, len(values))
	for _, name := range keys {
		f := meta.Field(name)
		if f == nil {
			return nil, unknownField(meta, name)
		}
		if f.ReadOnly || strings.HasPrefix(name, "sys_") {
			return nil, &servicenow.InputError{Msg: fmt.Sprintf("field %s of %s is set by ServiceNow and cannot be written", name, meta.Name)}
		}
		v, err := scalar(values[name])
		if err != nil {
			return nil, &servicenow.InputError{Msg: fmt.Sprintf("field %s: %v", name, err)}
		}
		if i := strings.IndexFunc(v, controlInText); i >= 0 {
			return nil, &servicenow.InputError{Msg: fmt.Sprintf("field %s: the value holds a control character (%U); text may hold tabs and line breaks, nothing else below a space", name, []rune(v[i:])[0])}
		}
		if v != "" {
			if v, err = storedValue(ctx, d, c, meta.Name, f, v); err != nil {
				return nil, err
			}
		}
		out[name] = v
	}
	return out, nil
}

// scalar renders a JSON value as a ServiceNow field value.
func scalar(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case json.Number:
		return x.String(), nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case int:
		return strconv.Itoa(x), nil
	}
	return "", errors.New("must be a string, number or boolean")
}

// storedValue maps a choice label to its value, a reference key to a
// sys_id, and a date or date-time to ServiceNow's UTC form; anything else
// is passed as given.
// controlInText reports a control character that has no place in a text
// value (tab, line feed and carriage return do).
func controlInText(r rune) bool {
	return r != '\t' && r != '\n' && r != '\r' && (r < 0x20 || r == 0x7f)
}

func storedValue(ctx context.Context, d *Deps, c *Call, table string, f *FieldMeta, v string) (string, error) {
	switch {
	case f.IsDateTime() || f.IsDate():
		return dateValue(f, v)
	case len(f.Choices) > 0:
		sv, ambiguous, ok := f.choiceValue(v)
		if len(ambiguous) > 0 {
			candidates := (&FieldMeta{Choices: ambiguous}).choiceList()
			return "", &servicenow.InputError{Msg: fmt.Sprintf("%q fits several choices of %s.%s: %s; give the value or the whole label", v, table, f.Name, candidates)}
		}
		if !ok {
			return "", &servicenow.InputError{Msg: fmt.Sprintf("%q is not a choice of %s.%s; choices (value (label)): %s", v, table, f.Name, f.choiceList())}
		}
		return sv, nil
	case f.IsReference():
		return resolveReference(ctx, d, c, f.Reference, v)
	}
	return v, nil
}

// resolveReference turns a human key into the sys_id of a record of
// table: for sys_user a user name, email, name or "me"; for
// sys_user_group a name; otherwise a number or the display value. A
// sys_id is returned as given. Answers are cached per user, since which
// records a user may see differs.
func resolveReference(ctx context.Context, d *Deps, c *Call, table, key string) (string, error) {
	key = strings.TrimSpace(key)
	if key == "" {
		return "", &servicenow.InputError{Msg: fmt.Sprintf("an empty value cannot name a %s record", table)}
	}
	if isSysID(key) {
		return key, nil
	}
	if table == "sys_user" && strings.EqualFold(key, "me") {
		acct, err := d.Tokens.Account(ctx, c.Key)
		if err != nil {
			return "", err
		}
		if acct.SNUserSysID != "" {
			return acct.SNUserSysID, nil
		}
		key = acct.SNUserName
	}
	cacheKey := strings.Join([]string{c.Key.Connection, c.Key.User, table, key}, "\x00")
	refs := d.caches().refs
	if id, ok := refs.get(cacheKey); ok {
		return id, nil
	}

	var group []servicenow.Condition
	var tried string
	switch table {
	case "sys_user":
		for _, f := range []string{"user_name", "email", "name"} {
			group = append(group, servicenow.Condition{Field: f, Op: "=", Values: []string{key}})
		}
		tried = "user name, email or name"
	case "sys_user_group":
		group = []servicenow.Condition{{Field: "name", Op: "=", Values: []string{key}}}
		tried = "name"
	default:
		meta, err := d.dictionary(ctx, c, table)
		if err != nil {
			return "", err
		}
		cond, err := keyCondition(meta, key)
		if err != nil {
			return "", err
		}
		group = []servicenow.Condition{cond}
		tried = cond.Field
	}
	enc, err := servicenow.Query{Any: [][]servicenow.Condition{group}}.Encode()
	if err != nil {
		return "", err
	}
	fields := []string{"sys_id"}
	for _, cond := range group {
		fields = append(fields, cond.Field)
	}
	q := url.Values{}
	q.Set("sysparm_query", enc)
	q.Set("sysparm_fields", strings.Join(fields, ","))
	q.Set("sysparm_limit", "6")
	q.Set("sysparm_no_count", "true")
	q.Set("sysparm_exclude_reference_link", "true")
	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{Method: http.MethodGet, Path: "/api/now/table/" + table, Query: q})
	if err != nil {
		return "", err
	}
	rows, err := resultList(resp)
	if err != nil {
		return "", err
	}
	id, err := pickMatch(table, key, tried, fields[1:], rows)
	if err != nil {
		return "", err
	}
	refs.put(cacheKey, id)
	return id, nil
}

// pickMatch chooses the one record a key names. When several match, one
// matching on an earlier (more specific) field wins: a user name beats
// an email, which beats a display name. Values are compared without
// regard to case, as ServiceNow compares =, and a single record that
// came back is the match whatever its case.
func pickMatch(table, key, tried string, fields []string, rows []map[string]any) (string, error) {
	if len(rows) == 0 {
		return "", &servicenow.InputError{Msg: fmt.Sprintf("no %s record has %s %q (or this user cannot see it); check the spelling or give the sys_id", table, tried, key)}
	}
	if len(rows) == 1 {
		return plainValue(rows[0]["sys_id"]), nil
	}
	for _, f := range fields {
		var hits []string
		for _, r := range rows {
			if strings.EqualFold(plainValue(r[f]), key) {
				hits = append(hits, plainValue(r["sys_id"]))
			}
		}
		if len(hits) == 1 {
			return hits[0], nil
		}
		if len(hits) > 1 {
			break
		}
	}
	var seen []string
	for _, r := range rows {
		desc := plainValue(r["sys_id"])
		for _, f := range fields {
			if v := plainValue(r[f]); v != "" && f != "sys_id" {
				desc += " " + f + "=" + v
			}
		}
		seen = append(seen, desc)
	}
	more := ""
	if len(rows) > 5 {
		more = " and more"
	}
	return "", &servicenow.InputError{Msg: fmt.Sprintf("%q matches more than one %s record (%s%s); give a more specific %s or the sys_id", key, table, strings.Join(seen[:min(len(seen), 5)], "; "), more, tried)}
}

// buildQuery turns a list spec into one encoded query, checking every
// field against the dictionary and resolving choice labels and reference
// keys. With sorted, the order (and its sys_id tie-break) is added.
func buildQuery(ctx context.Context, d *Deps, c *Call, meta *TableMeta, spec ListSpec, sorted bool) (string, error) {
	conds := append([]servicenow.Condition(nil), spec.Conditions...)
	names := make([]string, 0, len(spec.Filters))
	for k := range spec.Filters {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		cond, err := filterCondition(name, spec.Filters[name])
		if err != nil {
			return "", err
		}
		conds = append(conds, cond)
	}
	for i, cond := range conds {
		resolved, err := resolveCondition(ctx, d, c, meta, cond)
		if err != nil {
			arg := spec.FiltersArg
			if i < len(spec.Conditions) {
				arg = spec.ConditionsArg
			}
			return "", argumentError(arg, err)
		}
		conds[i] = resolved
	}

	callerSorted := false
	if spec.Encoded != "" {
		// The filters and conditions go before the encoded query, which
		// may not widen them.
		if err := servicenow.CheckRaw(spec.Encoded, len(conds) > 0); err != nil {
			return "", argumentError(spec.EncodedArg, err)
		}
		parts, err := servicenow.ParseEncoded(spec.Encoded)
		if err != nil {
			return "", argumentError(spec.EncodedArg, err)
		}
		for _, p := range parts {
			if p.Kind == "other" {
				continue
			}
			f, err := resolveField(ctx, d, c, meta, p.Field)
			if err != nil {
				return "", err
			}
			if p.Kind == "condition" {
				if err := rawDateError(f, p); err != nil {
					return "", argumentError(spec.EncodedArg, err)
				}
			}
			callerSorted = callerSorted || p.Kind == "order"
		}
	}
	if !sorted {
		return servicenow.Query{All: conds, Raw: spec.Encoded}.Encode()
	}

	order := spec.Order
	if len(order) == 0 && !callerSorted {
		order = spec.DefaultOrder
		if len(order) == 0 {
			order = []servicenow.Order{{Field: "sys_created_on", Desc: true}}
		}
	}
	tieBreak := true
	for _, o := range order {
		if _, err := resolveField(ctx, d, c, meta, o.Field); err != nil {
			return "", err
		}
		tieBreak = tieBreak && o.Field != "sys_id"
	}
	if tieBreak {
		order = append(append([]servicenow.Order(nil), order...), servicenow.Order{Field: "sys_id"})
	}
	return servicenow.Query{All: conds, Raw: spec.Encoded, Order: order}.Encode()
}

// argumentError names the argument an input error is about, when known.
func argumentError(arg string, err error) error {
	var input *servicenow.InputError
	if arg == "" || !errors.As(err, &input) {
		return err
	}
	return &servicenow.InputError{Msg: fmt.Sprintf("argument %q: %s", arg, input.Msg)}
}

// filterCondition reads one entry of a filters object.
func filterCondition(name string, v any) (servicenow.Condition, error) {
	if list, ok := v.([]any); ok {
		values := make([]string, 0, len(list))
		for _, e := range list {
			s, err := scalar(e)
			if err != nil {
				return servicenow.Condition{}, &servicenow.InputError{Msg: fmt.Sprintf("filter %s: each value %v", name, err)}
			}
			values = append(values, s)
		}
		if len(values) == 0 {
			return servicenow.Condition{}, &servicenow.InputError{Msg: fmt.Sprintf("filter %s: the list of values is empty", name)}
		}
		return servicenow.Condition{Field: name, Op: "IN", Values: values}, nil
	}
	s, err := scalar(v)
	if err != nil {
		return servicenow.Condition{}, &servicenow.InputError{Msg: fmt.Sprintf("filter %s: %v (or a list of values)", name, err)}
	}
	return servicenow.Condition{Field: name, Op: "=", Values: []string{s}}, nil
}

// resolveCondition checks the field of cond and, for equality tests on
// choice and reference fields, maps labels and keys to stored values.
func resolveCondition(ctx context.Context, d *Deps, c *Call, meta *TableMeta, cond servicenow.Condition) (servicenow.Condition, error) {
	if !servicenow.ValidField(cond.Field) {
		return cond, &servicenow.InputError{Msg: fmt.Sprintf("%q is not a field name: use lower-case letters, digits and _ (dot-walk references with ., e.g. caller_id.email)", cond.Field)}
	}
	f, err := resolveField(ctx, d, c, meta, cond.Field)
	if err != nil {
		return cond, err
	}
	switch cond.Op {
	case "=", "!=", "IN", "NOT IN":
	case "<", "<=", ">", ">=", "BETWEEN":
		if !f.IsDateTime() && !f.IsDate() {
			return cond, nil
		}
	default:
		return cond, nil
	}
	out := cond
	out.Values = make([]string, len(cond.Values))
	for i, v := range cond.Values {
		out.Values[i] = v
		if v == "" {
			continue
		}
		sv, err := storedValue(ctx, d, c, meta.Name, f, v)
		if err != nil {
			return cond, err
		}
		out.Values[i] = sv
	}
	return out, nil
}

// resolveField finds a possibly dot-walked field, reading the dictionary
// of each table the path walks through.
func resolveField(ctx context.Context, d *Deps, c *Call, meta *TableMeta, path string) (*FieldMeta, error) {
	if !servicenow.ValidField(path) {
		return nil, &servicenow.InputError{Msg: fmt.Sprintf("%q is not a field name: use lower-case letters, digits and _ (dot-walk references with ., e.g. caller_id.email)", path)}
	}
	parts := strings.Split(path, ".")
	cur := meta
	for i, name := range parts {
		f := cur.Field(name)
		if f == nil {
			if name == "sys_id" {
				f = &FieldMeta{Name: "sys_id", Label: "Sys ID", Type: "GUID"}
			} else {
				return nil, unknownField(cur, name)
			}
		}
		if i == len(parts)-1 {
			return f, nil
		}
		if !f.IsReference() {
			return nil, &servicenow.InputError{Msg: fmt.Sprintf("cannot dot-walk %q: %s.%s is not a reference field", path, cur.Name, name)}
		}
		next, err := d.dictionary(ctx, c, f.Reference)
		if err != nil {
			return nil, err
		}
		cur = next
	}
	return nil, unknownField(meta, path)
}

func unknownField(meta *TableMeta, name string) error {
	var near []string
	for _, f := range meta.Order {
		if strings.Contains(f, name) || strings.Contains(name, f) && len(f) > 3 {
			near = append(near, f)
		}
	}
	msg := fmt.Sprintf("table %s has no field %q; ServiceNow would silently ignore it, so nothing was sent", meta.Name, name)
	if len(near) > 0 {
		msg += "; did you mean " + strings.Join(near[:min(len(near), 5)], ", ") + "?"
	}
	return &servicenow.InputError{Msg: msg + " (servicenow_describe_table lists the fields)"}
}

// genericFields is the default field list of a table without its own.
var genericFields = []string{
	"number", "name", "short_description", "state", "priority", "assigned_to", "assignment_group", "active", "sys_updated_on",
}

// chooseFields checks the requested fields, or picks defaults. An empty
// result means all fields.
func chooseFields(ctx context.Context, d *Deps, c *Call, meta *TableMeta, fields, defaults []string) ([]string, error) {
	if len(fields) == 0 {
		fields = defaults
	}
	if len(fields) == 0 {
		picked := []string{"sys_id"}
		if meta.Display != "" && meta.Display != "sys_id" {
			picked = append(picked, meta.Display)
		}
		for _, f := range genericFields {
			if meta.Field(f) != nil && !contains(picked, f) {
				picked = append(picked, f)
			}
		}
		if len(picked) < 4 {
			return nil, nil
		}
		return picked, nil
	}
	out := []string{"sys_id"}
	for _, f := range fields {
		f = strings.TrimSpace(f)
		if f == "" || contains(out, f) {
			continue
		}
		if _, err := resolveField(ctx, d, c, meta, f); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// readQuery holds the parameters of every read: both value and display
// value, no reference links.
func readQuery(fields []string) url.Values {
	q := url.Values{}
	q.Set("sysparm_display_value", "all")
	q.Set("sysparm_exclude_reference_link", "true")
	if len(fields) > 0 {
		q.Set("sysparm_fields", strings.Join(fields, ","))
	}
	return q
}

// resultList reads the records of a Table API answer: a list, a single
// record, or the leading whole records of an answer that was cut.
func resultList(resp *servicenow.Response) ([]map[string]any, error) {
	if len(strings.TrimSpace(string(resp.Body))) == 0 {
		return nil, nil
	}
	if resp.Truncated {
		raws, _, ok := leadingRecords(resp.Body)
		if !ok {
			return nil, &servicenow.UnavailableError{Status: resp.Status, Reason: "the answer was too large to read", Partial: true}
		}
		out := make([]map[string]any, 0, len(raws))
		for _, r := range raws {
			var m map[string]any
			if json.Unmarshal(r, &m) == nil {
				out = append(out, m)
			}
		}
		return out, nil
	}
	// One pass over the body: the result is a list of records or a single
	// record, and anything else is not a Table API answer.
	var body struct {
		Result any `json:"result"`
	}
	if err := json.Unmarshal(resp.Body, &body); err != nil {
		return nil, fmt.Errorf("decode answer: %w", err)
	}
	switch r := body.Result.(type) {
	case map[string]any:
		return []map[string]any{r}, nil
	case []any:
		list := make([]map[string]any, 0, len(r))
		for _, v := range r {
			m, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("decode answer: a result entry is %T, not a record", v)
			}
			list = append(list, m)
		}
		return list, nil
	case nil:
		return nil, errors.New("decode answer: the answer has no result")
	}
	return nil, fmt.Errorf("decode answer: the result is %T, not records", body.Result)
}

// shaper renders records compactly: plain strings for plain fields,
// {value, display} for references and choices, ISO 8601 UTC date-times.
type shaper struct {
	meta      *TableMeta
	fields    map[string]*FieldMeta
	requested []string
}

func newShaper(ctx context.Context, d *Deps, c *Call, meta *TableMeta, requested []string) *shaper {
	s := &shaper{meta: meta, fields: map[string]*FieldMeta{}, requested: requested}
	for _, name := range requested {
		if f, err := resolveField(ctx, d, c, meta, name); err == nil {
			s.fields[name] = f
		}
	}
	return s
}

func (s *shaper) field(name string) *FieldMeta {
	if f, ok := s.fields[name]; ok {
		return f
	}
	return s.meta.Field(name)
}

func (s *shaper) shape(raw map[string]any) map[string]any {
	out := make(map[string]any, len(raw))
	for name, v := range raw {
		out[name] = s.value(s.field(name), v)
	}
	return out
}

func (s *shaper) value(f *FieldMeta, v any) any {
	pair, ok := v.(map[string]any)
	if !ok {
		str := plainValue(v)
		if f != nil && f.IsDateTime() {
			return isoUTC(str)
		}
		return str
	}
	value, display := plainValue(pair["value"]), plainValue(pair["display_value"])
	switch {
	case f == nil:
		if value == display || display == "" {
			return value
		}
		return map[string]any{"value": value, "display": display}
	case f.IsJournal():
		return display
	case f.IsDateTime():
		return isoUTC(value)
	case f.IsReference() || len(f.Choices) > 0:
		if value == "" {
			return ""
		}
		return map[string]any{"value": value, "display": display}
	case value == "" && display != "":
		return display
	}
	return value
}

// journalNotes says when a requested journal is empty in every record: an
// ACL may hide it rather than it being empty.
func (s *shaper) journalNotes(records []map[string]any) []string {
	if len(records) == 0 {
		return nil
	}
	var notes []string
	for _, name := range s.requested {
		f := s.fields[name]
		if f == nil || !f.IsJournal() {
			continue
		}
		empty := true
		for _, r := range records {
			if v, _ := r[name].(string); v != "" {
				empty = false
				break
			}
		}
		if empty {
			notes = append(notes, fmt.Sprintf("%s is empty in what came back; it may be hidden from this user by access rules (work notes usually need the itil role) rather than be empty.", name))
		}
	}
	return notes
}

// isoUTC turns ServiceNow's "2006-01-02 15:04:05" (UTC) into ISO 8601.
func isoUTC(v string) string {
	if t, err := time.Parse("2006-01-02 15:04:05", v); err == nil {
		return t.UTC().Format(time.RFC3339)
	}
	return v
}

// tableRoles names the role a user usually needs to change a table.
var tableRoles = map[string]string{
	"incident": "itil", "change_request": "itil", "change_task": "itil", "problem": "itil",
	"sc_request": "itil", "sc_req_item": "itil", "sc_task": "itil", "task": "itil",
	"kb_knowledge": "knowledge (or itil)",
}

// recordFailure is failure with a sharper 403 hint: which operation on
// which table was refused, and the role that usually grants it.
func recordFailure(ctx context.Context, d *Deps, c *Call, table, op string, err error) *mcp.CallToolResult {
	var api *servicenow.APIError
	if !errors.As(err, &api) || api.Status != http.StatusForbidden {
		return failure(ctx, d, c, err)
	}
	c.outcome = "servicenow_error"
	role := tableRoles[table]
	switch {
	case op == "delete" && role != "":
		// Out of the box only admins may delete task records.
		role = "admin"
	case role == "" && (strings.HasPrefix(table, "sys_") || strings.HasPrefix(table, "cmdb")):
		role = "admin (or a table-specific role such as user_admin)"
	case role == "":
		role = "a role granted by the table's ACLs"
	}
	hint := fmt.Sprintf("ServiceNow refused to %s %s records for the signed-in user. This usually needs the %s role, or an ACL on the table or on a field denies it; ask a ServiceNow admin.", op, table, role)
	if op == "read" && strings.Contains(api.Message+api.Detail, "query") {
		hint = "The user may not read a field used in the query (an ACL on that field); remove that condition or ask an admin for read access."
	}
	out := map[string]any{"status": api.Status, "error": api.Message, "hint": hint}
	if api.Detail != "" {
		out["detail"] = api.Detail
	}
	return jsonError(out)
}

// budget is the byte budget of one answer.
func (d *Deps) budget() int {
	if d.Budget > 0 {
		return d.Budget
	}
	return defaultBudget
}

func sortedFieldNames[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
