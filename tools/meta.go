package tools

import (
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"servicenow-mcp/servicenow"
)

// TableMeta is what the tools know of a table from its dictionary.
type TableMeta struct {
	Name    string
	Label   string
	Parents []string // super classes, nearest first
	// Display is the field shown for a record in references.
	Display string
	Fields  map[string]*FieldMeta
	// Order lists field names in dictionary order.
	Order []string
}

// FieldMeta is one column.
type FieldMeta struct {
	Name      string
	Label     string
	Type      string // internal type: string, integer, reference, glide_date_time, journal_input, ...
	Reference string // target table of a reference
	Mandatory bool
	ReadOnly  bool
	MaxLength int
	Choices   []Choice
}

// Choice is one value of a choice field.
type Choice struct {
	Value string `json:"value"`
	Label string `json:"label"`
}

// Field returns the named field, or nil.
func (t *TableMeta) Field(name string) *FieldMeta { return t.Fields[name] }

// HasNumber reports whether records of t carry a number (INC0010001).
func (t *TableMeta) HasNumber() bool { return t.Fields["number"] != nil }

// IsReference reports whether f points at another table.
func (f *FieldMeta) IsReference() bool { return f.Reference != "" && f.Type == "reference" }

// IsJournal reports whether f is a journal (comments, work notes).
func (f *FieldMeta) IsJournal() bool { return strings.HasPrefix(f.Type, "journal") }

// IsDateTime reports whether f holds a UTC date-time.
func (f *FieldMeta) IsDateTime() bool {
	switch f.Type {
	case "glide_date_time", "due_date", "date_time":
		return true
	}
	return false
}

// IsDate reports whether f holds a date without a time.
func (f *FieldMeta) IsDate() bool { return f.Type == "glide_date" }

// choiceValue maps a value or a label of f to the stored value. A label
// matches case-insensitively, whole or with its leading numbering left
// out ("Low" for "3 - Low", as instances label impact, urgency and
// priority). When a shortened label fits several choices, none is
// picked: ambiguous lists them.
func (f *FieldMeta) choiceValue(v string) (value string, ambiguous []Choice, ok bool) {
	for _, ch := range f.Choices {
		if ch.Value == v {
			return ch.Value, nil, true
		}
	}
	v = strings.TrimSpace(v)
	for _, match := range []func(Choice) bool{
		func(ch Choice) bool { return strings.EqualFold(strings.TrimSpace(ch.Label), v) },
		func(ch Choice) bool { return strings.EqualFold(unnumbered(ch.Label), v) },
	} {
		var found []Choice
		for _, ch := range f.Choices {
			if match(ch) && !slices.ContainsFunc(found, func(o Choice) bool { return o.Value == ch.Value }) {
				found = append(found, ch)
			}
		}
		switch {
		case len(found) == 1:
			return found[0].Value, nil, true
		case len(found) > 1:
			return "", found, false
		}
	}
	return "", nil, false
}

// unnumbered is a choice label without its leading "N - " numbering.
func unnumbered(label string) string {
	label = strings.TrimSpace(label)
	digits := strings.TrimLeft(label, "0123456789")
	if len(digits) == len(label) {
		return label
	}
	rest := strings.TrimLeft(digits, " ")
	if !strings.HasPrefix(rest, "-") {
		return label
	}
	return strings.TrimSpace(rest[1:])
}

func (f *FieldMeta) choiceList() string {
	parts := make([]string, len(f.Choices))
	for i, ch := range f.Choices {
		parts[i] = fmt.Sprintf("%s (%s)", ch.Value, ch.Label)
	}
	return strings.Join(parts, ", ")
}

// metaTTL bounds how long a dictionary, choice list or resolved
// reference is trusted; metaEntries bounds each cache's size.
const (
	metaTTL     = 10 * time.Minute
	metaEntries = 512
)

// caches are per Deps, that is per server. The dictionary cache is keyed
// by connection and table, not by user: a table's columns and choices are
// the same for every user of an instance, and sharing them is what lets a
// steady-state tool call cost one ServiceNow request. The price is that a
// user may learn the name of a column that an ACL hides from them (never
// its values). Resolved references are keyed by user too, because which
// records a user can see differs.
type caches struct {
	tables *ttlCache[*TableMeta]
	refs   *ttlCache[string]
}

var cachesByDeps sync.Map // *Deps → *caches

func (d *Deps) caches() *caches {
	if v, ok := cachesByDeps.Load(d); ok {
		return v.(*caches)
	}
	v, _ := cachesByDeps.LoadOrStore(d, &caches{
		tables: newTTLCache[*TableMeta](metaEntries, metaTTL),
		refs:   newTTLCache[string](metaEntries*4, metaTTL),
	})
	return v.(*caches)
}

// dictionary returns the table's metadata, cached per connection. A table
// the instance does not know is an InputError naming it.
func (d *Deps) dictionary(ctx context.Context, c *Call, table string) (*TableMeta, error) {
	if !validTable(table) {
		return nil, &servicenow.InputError{Msg: fmt.Sprintf("%q is not a table name: use the table's internal name, e.g. incident, sys_user, change_request", table)}
	}
	key := c.Key.Connection + "\x00" + table
	cache := d.caches().tables
	if m, ok := cache.get(key); ok {
		return m, nil
	}
	m, err := loadTableMeta(ctx, d, c, table)
	if err != nil {
		return nil, err
	}
	cache.put(key, m)
	return m, nil
}

func validTable(name string) bool {
	return name != "" && !strings.Contains(name, ".") && servicenow.ValidField(name)
}

// loadTableMeta reads sys_db_object (the table and its super classes),
// then sys_dictionary and sys_choice for all of them.
func loadTableMeta(ctx context.Context, d *Deps, c *Call, table string) (*TableMeta, error) {
	m := &TableMeta{Name: table, Fields: map[string]*FieldMeta{}}
	chain := []string{}
	next := "name=" + table
	for depth := 0; depth < 8 && next != ""; depth++ {
		rows, err := metaRows(ctx, d, c, "sys_db_object", next, "sys_id,name,label,super_class", 1)
		if err != nil {
			return nil, err
		}
		if len(rows) == 0 {
			if depth == 0 {
				return nil, &servicenow.InputError{Msg: fmt.Sprintf("unknown table %q: the instance has no such table (or this user may not see it); check the name, e.g. incident, sys_user, change_request", table)}
			}
			break
		}
		row := rows[0]
		if depth == 0 {
			m.Label = row["label"]
		}
		chain = append(chain, row["name"])
		next = ""
		if sc := row["super_class"]; sc != "" {
			if isSysID(sc) {
				next = "sys_id=" + sc
			} else if validTable(sc) {
				next = "name=" + sc
			}
		}
	}
	m.Parents = chain[1:]
	in := "nameIN" + strings.Join(chain, ",")

	dict, err := allMetaRows(ctx, d, c, "sys_dictionary", in+"^elementISNOTEMPTY",
		"name,element,column_label,internal_type,reference,mandatory,read_only,max_length,display")
	if err != nil {
		return nil, err
	}
	// The nearest table wins when a child overrides a parent's column.
	rank := map[string]int{}
	for i, n := range chain {
		rank[n] = i
	}
	sort.SliceStable(dict, func(i, j int) bool { return rank[dict[i]["name"]] > rank[dict[j]["name"]] })
	for _, row := range dict {
		name := row["element"]
		if _, seen := m.Fields[name]; !seen {
			m.Order = append(m.Order, name)
		}
		maxLen, _ := strconv.Atoi(row["max_length"])
		m.Fields[name] = &FieldMeta{
			Name: name, Label: row["column_label"], Type: row["internal_type"], Reference: row["reference"],
			Mandatory: row["mandatory"] == "true", ReadOnly: row["read_only"] == "true", MaxLength: maxLen,
		}
		if row["display"] == "true" {
			m.Display = name
		}
	}

	// sys_id breaks ties of sequence, so that pages neither repeat nor
	// skip a choice.
	choices, err := allMetaRows(ctx, d, c, "sys_choice", in+"^inactive!=true^language=en^ORlanguageISEMPTY^ORDERBYsequence^ORDERBYsys_id",
		"name,element,value,label")
	if err != nil {
		return nil, err
	}
	owner := map[string]string{} // field → table whose choices were taken
	for _, row := range choices {
		f := m.Fields[row["element"]]
		if f == nil {
			continue
		}
		if o, ok := owner[f.Name]; ok && o != row["name"] {
			if rank[row["name"]] > rank[o] {
				continue
			}
			f.Choices = nil
		}
		owner[f.Name] = row["name"]
		f.Choices = append(f.Choices, Choice{Value: row["value"], Label: row["label"]})
	}
	return m, nil
}

// metaPageRows is how many rows one request for a table's dictionary or
// choices asks for; maxMetaPages bounds how many such pages one table's
// metadata may take.
var metaPageRows = 5000

const maxMetaPages = 20

// metaRows lists plain values of a metadata table: the first limit rows.
func metaRows(ctx context.Context, d *Deps, c *Call, table, query, fields string, limit int) ([]map[string]string, error) {
	rows, _, err := metaPage(ctx, d, c, table, query, fields, limit, 0, false)
	return rows, err
}

// allMetaRows lists every row a metadata query matches, page by page:
// while X-Total-Count says more rows follow, or, without it, while pages
// come back full. A page that fails after others came back is a
// *partialReadError, which says how much was read.
func allMetaRows(ctx context.Context, d *Deps, c *Call, table, query, fields string) ([]map[string]string, error) {
	var out []map[string]string
	total := -1
	for offset := 0; ; offset += metaPageRows {
		if offset >= maxMetaPages*metaPageRows {
			return nil, fmt.Errorf("read %s: the table's metadata holds more than %d rows, more than this server reads", table, offset)
		}
		rows, count, err := metaPage(ctx, d, c, table, query, fields, metaPageRows, offset, true)
		if err != nil {
			if offset > 0 {
				return nil, &partialReadError{Table: table, Read: len(out), Total: total, Err: err}
			}
			return nil, err
		}
		out = append(out, rows...)
		total = count
		more := len(rows) == metaPageRows
		if total >= 0 {
			more = offset+metaPageRows < total
		}
		if !more {
			return out, nil
		}
	}
}

// metaPage reads one page of a metadata table, with the number of rows
// the query matches when count is set and the instance says (else -1).
func metaPage(ctx context.Context, d *Deps, c *Call, table, query, fields string, limit, offset int, count bool) ([]map[string]string, int, error) {
	q := url.Values{}
	q.Set("sysparm_query", query)
	q.Set("sysparm_fields", fields)
	q.Set("sysparm_limit", strconv.Itoa(limit))
	q.Set("sysparm_exclude_reference_link", "true")
	if offset > 0 {
		q.Set("sysparm_offset", strconv.Itoa(offset))
	}
	if !count {
		q.Set("sysparm_no_count", "true")
	}
	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{Method: "GET", Path: "/api/now/table/" + table, Query: q})
	if err != nil {
		return nil, -1, fmt.Errorf("read %s: %w", table, err)
	}
	var body struct {
		Result []map[string]any `json:"result"`
	}
	if err := json.Unmarshal(resp.Body, &body); err != nil {
		return nil, -1, fmt.Errorf("read %s: %w", table, err)
	}
	out := make([]map[string]string, len(body.Result))
	for i, r := range body.Result {
		row := map[string]string{}
		for k, v := range r {
			row[k] = plainValue(v)
		}
		out[i] = row
	}
	total := -1
	if n, err := strconv.Atoi(resp.Header.Get("X-Total-Count")); err == nil && n >= 0 {
		total = n
	}
	return out, total, nil
}

// partialReadError is a read of several pages that failed part way: Read
// rows came back before Err stopped the rest. Total is how many rows the
// instance said there were, or -1.
type partialReadError struct {
	Table string
	Read  int
	Total int
	Err   error
}

func (e *partialReadError) Error() string { return e.Summary() + ": " + e.Err.Error() }

func (e *partialReadError) Unwrap() error { return e.Err }

// Summary says what was read and that the rest failed.
func (e *partialReadError) Summary() string {
	of := ""
	if e.Total >= 0 {
		of = fmt.Sprintf(" of %d", e.Total)
	}
	return fmt.Sprintf("%d%s rows of %s were read, then reading the rest failed, so none of it was used", e.Read, of, e.Table)
}

// plainValue reads a Table API value: a string, or a reference object.
func plainValue(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case map[string]any:
		if s, ok := x["value"].(string); ok {
			return s
		}
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

func isSysID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ttlCache is a small LRU whose entries also expire.
type ttlCache[V any] struct {
	mu    sync.Mutex
	max   int
	ttl   time.Duration
	now   func() time.Time
	order *list.List // front = most recent
	items map[string]*list.Element
}

type ttlEntry[V any] struct {
	key     string
	value   V
	expires time.Time
}

func newTTLCache[V any](max int, ttl time.Duration) *ttlCache[V] {
	return &ttlCache[V]{max: max, ttl: ttl, now: time.Now, order: list.New(), items: map[string]*list.Element{}}
}

func (c *ttlCache[V]) get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var zero V
	el, ok := c.items[key]
	if !ok {
		return zero, false
	}
	e := el.Value.(*ttlEntry[V])
	if c.now().After(e.expires) {
		c.order.Remove(el)
		delete(c.items, key)
		return zero, false
	}
	c.order.MoveToFront(el)
	return e.value, true
}

func (c *ttlCache[V]) put(key string, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.order.Remove(el)
	}
	c.items[key] = c.order.PushFront(&ttlEntry[V]{key: key, value: v, expires: c.now().Add(c.ttl)})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*ttlEntry[V]).key)
	}
}

func (c *ttlCache[V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
