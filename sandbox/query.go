package sandbox

import (
	"errors"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// An encoded query is parsed into groups joined by ^NQ (OR of groups); a
// group is a list of terms joined by ^ (AND); a term is a list of
// conditions joined by ^OR.
type condition struct {
	Path, Op, Value string
}

type orderTerm struct {
	Path string
	Desc bool
}

type parsedQuery struct {
	Groups [][][]condition
	Order  []orderTerm
}

// operators, longest first where one is a prefix of another.
var operators = []string{
	"NOT LIKE", "NOT IN", "ISNOTEMPTY", "ISEMPTY", "STARTSWITH", "ENDSWITH", "BETWEEN",
	"ANYTHING", "EMPTYSTRING", "NSAMEAS", "SAMEAS", "NOTON", "ON", "LIKE", "IN",
	"!=", ">=", "<=", "=", "<", ">",
}

// splitCaret splits on ^, reading ^^ as a literal caret.
func splitCaret(q string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(q); i++ {
		if q[i] == '^' {
			if i+1 < len(q) && q[i+1] == '^' {
				cur.WriteByte('^')
				i++
				continue
			}
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(q[i])
	}
	return append(parts, cur.String())
}

func parseQuery(q string) parsedQuery {
	var pq parsedQuery
	var group [][]condition
	inRL := false
	for _, part := range splitCaret(q) {
		switch {
		case part == "" || part == "EQ":
			continue
		case strings.HasPrefix(part, "RLQUERY"):
			inRL = true
			continue
		case strings.HasPrefix(part, "ENDRLQUERY"):
			inRL = false
			continue
		case inRL:
			continue
		case strings.HasPrefix(part, "ORDERBYDESC"):
			if f := part[len("ORDERBYDESC"):]; f != "" {
				pq.Order = append(pq.Order, orderTerm{Path: f, Desc: true})
			}
			continue
		case strings.HasPrefix(part, "ORDERBY"):
			if f := part[len("ORDERBY"):]; f != "" {
				pq.Order = append(pq.Order, orderTerm{Path: f})
			}
			continue
		case strings.HasPrefix(part, "GROUPBY"):
			continue
		case strings.HasPrefix(part, "NQ"):
			if len(group) > 0 {
				pq.Groups = append(pq.Groups, group)
			}
			group = nil
			part = part[2:]
			if c, ok := parseCondition(part); ok {
				group = append(group, []condition{c})
			}
			continue
		case strings.HasPrefix(part, "OR"):
			c, ok := parseCondition(part[2:])
			if !ok {
				continue
			}
			if len(group) == 0 {
				group = append(group, []condition{c})
			} else {
				group[len(group)-1] = append(group[len(group)-1], c)
			}
			continue
		}
		if c, ok := parseCondition(part); ok {
			group = append(group, []condition{c})
		}
	}
	if len(group) > 0 {
		pq.Groups = append(pq.Groups, group)
	}
	return pq
}

func isFieldChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.'
}

func parseCondition(p string) (condition, bool) {
	i := 0
	for i < len(p) && isFieldChar(p[i]) {
		i++
	}
	if i == 0 {
		return condition{}, false
	}
	rest := p[i:]
	for _, op := range operators {
		if strings.HasPrefix(rest, op) {
			return condition{Path: p[:i], Op: op, Value: rest[len(op):]}, true
		}
	}
	return condition{}, false
}

// ---------- compiling against a table ----------

type cond struct {
	path   []*field
	op     string
	value  string
	values []string
	lo, hi string
	other  []*field
}

type compiledQuery struct {
	groups [][][]cond
	order  []compiledOrder
}

type compiledOrder struct {
	path []*field
	desc bool
}

var errQueryACL = errors.New("Insufficient rights to query records")

type evalEnv struct {
	s    *Server
	user *principal
	now  time.Time
}

func (e *evalEnv) canRead(path []*field) bool {
	for _, f := range path {
		if len(f.Roles) > 0 && (e.user == nil || !e.user.has(f.Roles)) {
			return false
		}
	}
	return true
}

// compile resolves fields (dropping conditions on unknown fields or with
// unsupported operators, as ServiceNow ignores invalid query parts) and
// evaluates javascript: values. It fails only when a field in the query
// may not be read by the user.
func (e *evalEnv) compile(t *tableDef, pq parsedQuery) (*compiledQuery, error) {
	cq := &compiledQuery{}
	for _, g := range pq.Groups {
		var terms [][]cond
		for _, term := range g {
			var ors []cond
			for _, c := range term {
				path := resolvePath(e.s.schema, t, c.Path)
				if path == nil {
					continue
				}
				if !e.canRead(path) {
					return nil, errQueryACL
				}
				cc := cond{path: path, op: c.Op, value: c.Value}
				last := path[len(path)-1]
				switch c.Op {
				case "IN", "NOT IN":
					for _, v := range strings.Split(c.Value, ",") {
						cc.values = append(cc.values, e.jsValue(v))
					}
				case "BETWEEN":
					lo, hi, ok := strings.Cut(c.Value, "@")
					if !ok {
						continue
					}
					cc.lo, cc.hi = e.jsValue(lo), e.jsValue(hi)
				case "ON", "NOTON":
					parts := strings.Split(c.Value, "@")
					if len(parts) != 3 {
						continue
					}
					cc.lo, cc.hi = e.jsValue(parts[1]), e.jsValue(parts[2])
				case "SAMEAS", "NSAMEAS":
					cc.other = resolvePath(e.s.schema, t, c.Value)
					if cc.other == nil {
						continue
					}
				default:
					cc.value = e.jsValue(c.Value)
				}
				if last.Type == tBoolean && (c.Op == "=" || c.Op == "!=") {
					cc.value = normBool(cc.value)
				}
				ors = append(ors, cc)
			}
			if len(ors) > 0 {
				terms = append(terms, ors)
			}
		}
		cq.groups = append(cq.groups, terms)
	}
	for _, o := range pq.Order {
		path := resolvePath(e.s.schema, t, o.Path)
		if path == nil {
			continue
		}
		if !e.canRead(path) {
			return nil, errQueryACL
		}
		cq.order = append(cq.order, compiledOrder{path: path, desc: o.Desc})
	}
	return cq, nil
}

var jsCall = regexp.MustCompile(`^gs\.([A-Za-z]+)\(\s*([^)]*)\)\s*;?$`)

func startOfDay(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// jsValue evaluates the few javascript: helpers that queries use.
func (e *evalEnv) jsValue(v string) string {
	if !strings.HasPrefix(v, "javascript:") {
		return v
	}
	m := jsCall.FindStringSubmatch(strings.TrimSpace(v[len("javascript:"):]))
	if m == nil {
		return ""
	}
	args := strings.Split(m[2], ",")
	for i := range args {
		args[i] = strings.Trim(strings.TrimSpace(args[i]), `'"`)
	}
	n := 0
	if len(args) > 0 {
		n, _ = strconv.Atoi(args[0])
	}
	now := e.now.UTC()
	today := startOfDay(now)
	switch m[1] {
	case "getUserID":
		if e.user != nil {
			return e.user.SysID
		}
	case "getUserName":
		if e.user != nil {
			return e.user.UserName
		}
	case "daysAgoStart":
		return fmtTime(today.AddDate(0, 0, -n))
	case "daysAgoEnd":
		return fmtTime(today.AddDate(0, 0, -n+1).Add(-time.Second))
	case "daysAgo":
		return fmtTime(now.AddDate(0, 0, -n))
	case "hoursAgo":
		return fmtTime(now.Add(-time.Duration(n) * time.Hour))
	case "minutesAgo":
		return fmtTime(now.Add(-time.Duration(n) * time.Minute))
	case "beginningOfToday":
		return fmtTime(today)
	case "endOfToday":
		return fmtTime(today.AddDate(0, 0, 1).Add(-time.Second))
	case "beginningOfYesterday":
		return fmtTime(today.AddDate(0, 0, -1))
	case "endOfYesterday":
		return fmtTime(today.Add(-time.Second))
	case "now", "nowDateTime":
		return fmtTime(now)
	case "dateGenerate":
		if len(args) == 2 {
			if args[1] == "start" {
				args[1] = "00:00:00"
			} else if args[1] == "end" {
				args[1] = "23:59:59"
			}
			return args[0] + " " + args[1]
		}
	}
	return ""
}

func normBool(v string) string {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "1", "yes":
		return "true"
	case "", "false", "0", "no":
		return "false"
	}
	return v
}

// value follows a dot-walked path from a record (s.mu held).
func (s *Server) pathValue(rec record, path []*field) string {
	cur := rec
	for i, f := range path {
		v := cur[f.Name]
		if i == len(path)-1 {
			if f.Type == tBoolean {
				return normBool(v)
			}
			return v
		}
		td := s.data[f.Ref]
		if td == nil {
			return ""
		}
		cur = td.rows[v]
		if cur == nil {
			return ""
		}
	}
	return ""
}

// compareValues orders two stored values the way the field type does.
func compareValues(f *field, a, b string) int {
	switch {
	case f.numeric():
		x, err1 := strconv.ParseFloat(strings.TrimSpace(a), 64)
		y, err2 := strconv.ParseFloat(strings.TrimSpace(b), 64)
		if err1 == nil && err2 == nil {
			switch {
			case x < y:
				return -1
			case x > y:
				return 1
			}
			return 0
		}
	case f.Type == tDateTime || f.Type == tDate:
		x, ok1 := parseTime(a)
		y, ok2 := parseTime(b)
		if ok1 && ok2 {
			return x.Compare(y)
		}
	}
	return strings.Compare(strings.ToLower(a), strings.ToLower(b))
}

func valuesEqual(f *field, a, b string) bool {
	switch {
	case f.numeric() || f.Type == tDateTime || f.Type == tDate:
		if a == "" || b == "" {
			return a == b
		}
		return compareValues(f, a, b) == 0
	case f.Type == tReference || f.Type == tGUID:
		return a == b
	}
	return strings.EqualFold(a, b)
}

func (e *evalEnv) match(rec record, cq *compiledQuery) bool {
	if len(cq.groups) == 0 {
		return true
	}
	for _, g := range cq.groups {
		ok := true
		for _, term := range g {
			any := false
			for i := range term {
				if e.matchCond(rec, &term[i]) {
					any = true
					break
				}
			}
			if !any {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func (e *evalEnv) matchCond(rec record, c *cond) bool {
	f := c.path[len(c.path)-1]
	v := e.s.pathValue(rec, c.path)
	text := v
	if f.Type == tReference && v != "" {
		text = e.s.refDisplay(f.Ref, v)
	}
	lt, lv := strings.ToLower(text), strings.ToLower(c.value)
	switch c.op {
	case "=":
		return valuesEqual(f, v, c.value)
	case "!=":
		return v != "" && !valuesEqual(f, v, c.value)
	case "LIKE":
		return strings.Contains(lt, lv)
	case "NOT LIKE":
		return v != "" && !strings.Contains(lt, lv)
	case "STARTSWITH":
		return strings.HasPrefix(lt, lv)
	case "ENDSWITH":
		return strings.HasSuffix(lt, lv)
	case "IN", "NOT IN":
		in := false
		for _, x := range c.values {
			if valuesEqual(f, v, x) {
				in = true
				break
			}
		}
		if c.op == "IN" {
			return in
		}
		return v != "" && !in
	case "ISEMPTY", "EMPTYSTRING":
		return v == ""
	case "ISNOTEMPTY":
		return v != ""
	case "ANYTHING":
		return true
	case "<":
		return v != "" && compareValues(f, v, c.value) < 0
	case "<=":
		return v != "" && compareValues(f, v, c.value) <= 0
	case ">":
		return v != "" && compareValues(f, v, c.value) > 0
	case ">=":
		return v != "" && compareValues(f, v, c.value) >= 0
	case "BETWEEN", "ON":
		return v != "" && compareValues(f, v, c.lo) >= 0 && compareValues(f, v, c.hi) <= 0
	case "NOTON":
		return v != "" && !(compareValues(f, v, c.lo) >= 0 && compareValues(f, v, c.hi) <= 0)
	case "SAMEAS", "NSAMEAS":
		o := e.s.pathValue(rec, c.other)
		if c.op == "SAMEAS" {
			return v == o
		}
		return v != o
	}
	return true
}

// sortRows orders ids by the query's ORDERBY terms (stable on insertion order).
func (e *evalEnv) sortRows(td *tableData, ids []string, order []compiledOrder) {
	if len(order) == 0 || len(ids) < 2 {
		return
	}
	// precompute sort keys: numbers and times as float64, text lowercased
	type key struct {
		num   float64
		text  string
		empty bool
		typed bool
	}
	keys := make(map[string][]key, len(ids))
	for _, id := range ids {
		ks := make([]key, len(order))
		for i, o := range order {
			f := o.path[len(o.path)-1]
			v := e.s.pathValue(td.rows[id], o.path)
			if f.Type == tReference {
				v = e.s.refDisplay(f.Ref, v)
			}
			k := key{text: strings.ToLower(v), empty: v == ""}
			switch {
			case f.numeric():
				if x, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					k.num, k.typed = x, true
				}
			case f.Type == tDateTime || f.Type == tDate:
				if x, ok := parseTime(v); ok {
					k.num, k.typed = float64(x.Unix()), true
				}
			}
			ks[i] = k
		}
		keys[id] = ks
	}
	sort.SliceStable(ids, func(i, j int) bool {
		a, b := keys[ids[i]], keys[ids[j]]
		for n, o := range order {
			x, y := a[n], b[n]
			c := 0
			switch {
			case x.empty || y.empty:
				if x.empty == y.empty {
					continue
				}
				if x.empty {
					c = -1
				} else {
					c = 1
				}
			case x.typed && y.typed:
				if x.num < y.num {
					c = -1
				} else if x.num > y.num {
					c = 1
				}
			default:
				c = strings.Compare(x.text, y.text)
			}
			if c == 0 {
				continue
			}
			if o.desc {
				return c > 0
			}
			return c < 0
		}
		return false
	})
}

// selectRows runs a query on a table (s.mu held) and returns matching ids in order.
func (e *evalEnv) selectRows(table string, cq *compiledQuery) []string {
	td := e.s.data[table]
	ids := make([]string, 0, 16)
	for _, id := range td.order {
		if e.match(td.rows[id], cq) {
			ids = append(ids, id)
		}
	}
	e.sortRows(td, ids, cq.order)
	return ids
}
