package sandbox

import (
	"net/http"
	"sort"
	"strconv"
	"strings"
)

type aggGroup struct {
	key    []string // group-by values
	ids    []string
	counts int
	stats  map[string]map[string]string // avg/min/max/sum -> field -> value
}

func splitCSV(v string) []string {
	var out []string
	for _, x := range strings.Split(v, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func (s *Server) serveAggregate(w http.ResponseWriter, r *http.Request, p *principal, table string) {
	if r.Method != http.MethodGet {
		writeErr(w, http.StatusMethodNotAllowed, "Method not Supported", "Method "+r.Method+" not supported for API")
		return
	}
	td := s.schema[table]
	if td == nil {
		writeErr(w, http.StatusBadRequest, "Invalid table "+table, nil)
		return
	}
	q := r.URL.Query()
	count := strings.EqualFold(q.Get("sysparm_count"), "true")
	aggs := map[string][]*field{}
	for _, kind := range []string{"avg", "min", "max", "sum"} {
		for _, name := range splitCSV(q.Get("sysparm_" + kind + "_fields")) {
			if f := td.field(name); f != nil {
				aggs[kind] = append(aggs[kind], f)
			}
		}
	}
	var groupBy [][]*field
	var groupNames []string
	for _, name := range splitCSV(q.Get("sysparm_group_by")) {
		if path := resolvePath(s.schema, td, name); path != nil {
			groupBy = append(groupBy, path)
			groupNames = append(groupNames, name)
		}
	}
	dv := strings.ToLower(q.Get("sysparm_display_value"))
	env := &evalEnv{s: s, user: p, now: s.now()}
	s.mu.RLock()
	defer s.mu.RUnlock()
	cq, err := env.compile(td, parseQuery(listQuery(r, td)))
	if err != nil {
		writeErr(w, http.StatusForbidden, "Insufficient rights to query records", "Field(s) present in the query do not have permission to be read")
		return
	}
	data := s.data[td.Name]
	var readable []string
	for _, id := range env.selectRows(td.Name, cq) {
		if s.canReadRow(td, data.rows[id], p) {
			readable = append(readable, id)
		}
	}
	groups := []*aggGroup{}
	byKey := map[string]*aggGroup{}
	for _, id := range readable {
		key := make([]string, len(groupBy))
		for i, path := range groupBy {
			key[i] = s.pathValue(data.rows[id], path)
		}
		k := strings.Join(key, "\x00")
		g := byKey[k]
		if g == nil {
			g = &aggGroup{key: key}
			byKey[k] = g
			groups = append(groups, g)
		}
		g.ids = append(g.ids, id)
	}
	if len(groupBy) == 0 && len(groups) == 0 {
		groups = append(groups, &aggGroup{})
	}
	for _, g := range groups {
		g.counts = len(g.ids)
		g.stats = map[string]map[string]string{}
		for kind, fs := range aggs {
			m := map[string]string{}
			for _, f := range fs {
				m[f.Name] = aggregate(kind, f, data, g.ids)
			}
			g.stats[kind] = m
		}
	}
	// groups come ordered by their values, as the database groups them
	sort.SliceStable(groups, func(i, j int) bool {
		for n, path := range groupBy {
			if c := compareValues(path[len(path)-1], groups[i].key[n], groups[j].key[n]); c != 0 {
				return c < 0
			}
		}
		return false
	})
	groups = filterHaving(groups, q.Get("sysparm_having"))
	orderGroups(groups, q.Get("sysparm_order_by"), groupNames)
	statsOf := func(g *aggGroup) map[string]any {
		st := map[string]any{}
		if count {
			st["count"] = strconv.Itoa(g.counts)
		}
		for kind, m := range g.stats {
			st[kind] = m
		}
		return st
	}
	if len(groupBy) == 0 {
		writeJSON(w, http.StatusOK, map[string]any{"result": map[string]any{"stats": statsOf(groups[0])}})
		return
	}
	out := make([]map[string]any, 0, len(groups))
	for _, g := range groups {
		gf := make([]map[string]string, len(groupBy))
		for i, path := range groupBy {
			f := path[len(path)-1]
			v := g.key[i]
			// value is always the stored value; display_value comes only
			// when asked for (true or all), as ServiceNow answers
			gf[i] = map[string]string{"field": groupNames[i], "value": v}
			if dv == "true" || dv == "all" {
				gf[i]["display_value"] = s.displayOf(f, v)
			}
		}
		out = append(out, map[string]any{"stats": statsOf(g), "groupby_fields": gf})
	}
	writeJSON(w, http.StatusOK, map[string]any{"result": out})
}

func aggregate(kind string, f *field, data *tableData, ids []string) string {
	var vals []float64
	var strs []string
	for _, id := range ids {
		v := data.rows[id][f.Name]
		if v == "" {
			continue
		}
		strs = append(strs, v)
		if x, err := strconv.ParseFloat(v, 64); err == nil {
			vals = append(vals, x)
		}
	}
	switch kind {
	case "avg":
		if len(vals) == 0 {
			return ""
		}
		sum := 0.0
		for _, x := range vals {
			sum += x
		}
		return strconv.FormatFloat(sum/float64(len(vals)), 'f', 4, 64)
	case "sum":
		sum := 0.0
		for _, x := range vals {
			sum += x
		}
		if f.Type == tInteger {
			return strconv.FormatInt(int64(sum), 10)
		}
		return strconv.FormatFloat(sum, 'f', -1, 64)
	case "min", "max":
		if len(strs) == 0 {
			return ""
		}
		best := strs[0]
		for _, v := range strs[1:] {
			c := compareValues(f, v, best)
			if kind == "min" && c < 0 || kind == "max" && c > 0 {
				best = v
			}
		}
		return best
	}
	return ""
}

func groupMetric(g *aggGroup, agg, field string) (float64, bool) {
	agg = strings.ToLower(agg)
	if agg == "count" {
		return float64(g.counts), true
	}
	v, ok := g.stats[agg][field]
	if !ok {
		return 0, false
	}
	x, err := strconv.ParseFloat(v, 64)
	return x, err == nil
}

// filterHaving applies sysparm_having: aggregate^field^operator^value, comma separated.
func filterHaving(groups []*aggGroup, having string) []*aggGroup {
	for _, h := range splitCSV(having) {
		parts := strings.Split(h, "^")
		if len(parts) != 4 {
			continue
		}
		want, err := strconv.ParseFloat(parts[3], 64)
		if err != nil {
			continue
		}
		kept := groups[:0:0]
		for _, g := range groups {
			x, ok := groupMetric(g, parts[0], parts[1])
			if !ok {
				continue
			}
			var pass bool
			switch parts[2] {
			case ">":
				pass = x > want
			case ">=":
				pass = x >= want
			case "<":
				pass = x < want
			case "<=":
				pass = x <= want
			case "=":
				pass = x == want
			case "!=":
				pass = x != want
			}
			if pass {
				kept = append(kept, g)
			}
		}
		groups = kept
	}
	return groups
}

// orderGroups applies sysparm_order_by: a group-by field, COUNT or AGG^field, with ^DESC.
func orderGroups(groups []*aggGroup, order string, names []string) {
	if order == "" {
		return
	}
	parts := strings.Split(order, "^")
	desc := false
	if parts[len(parts)-1] == "DESC" {
		desc, parts = true, parts[:len(parts)-1]
	}
	if len(parts) == 0 {
		return
	}
	key := func(g *aggGroup) (float64, string) {
		if strings.EqualFold(parts[0], "COUNT") {
			return float64(g.counts), ""
		}
		if len(parts) == 2 {
			x, _ := groupMetric(g, parts[0], parts[1])
			return x, ""
		}
		for i, n := range names {
			if n == parts[0] {
				return 0, g.key[i]
			}
		}
		return 0, ""
	}
	sort.SliceStable(groups, func(i, j int) bool {
		a, as := key(groups[i])
		b, bs := key(groups[j])
		less := a < b || a == b && as < bs
		if desc {
			return b < a || a == b && bs < as
		}
		return less
	})
}
