package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/mark3labs/mcp-go/mcp"

	"servicenow-mcp/servicenow"
)

func init() {
	register(
		Def{
			Name:    "servicenow_search_catalog_items",
			Toolset: "catalog",
			Title:   "Search the service catalog",
			Description: "Search the Service Catalog items the user can order (laptops, software, access...), by words and optionally by category. " +
				"Use it to find what to order; then read the item's questions with servicenow_get_catalog_item. " +
				"Returns each item's sys_id, name, short_description, price and category, with next_offset.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: []Param{
				{Name: "query", Type: "string", Description: "Words to look for in the item's name or description, e.g. laptop."},
				{Name: "category", Type: "string", Description: "Only items of this catalog category: its title (e.g. Hardware) or sys_id."},
				{Name: "limit", Type: "integer", Min: ptr(1), Max: ptr(100), Description: "Most items to return (default 20, at most 100)."},
				{Name: "offset", Type: "integer", Min: ptr(0), Description: "Items to skip, for the next page (use next_offset)."},
			},
			Handler: searchCatalogItems,
		},
		Def{
			Name:    "servicenow_get_catalog_item",
			Toolset: "catalog",
			Title:   "Read a catalog item and its questions",
			Description: "Read one Service Catalog item with its variables (the questions asked when ordering), by sys_id or exact name. " +
				"Use it before servicenow_order_catalog_item to learn each variable's name, whether it is mandatory, its allowed choices and default. " +
				"Returns sys_id, name, description, price, category and variables.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: []Param{
				{Name: "item", Type: "string", Required: true, Description: "The item's sys_id or its exact name, e.g. Standard Laptop."},
			},
			Handler: getCatalogItem,
		},
		Def{
			Name:    "servicenow_order_catalog_item",
			Toolset: "catalog",
			Title:   "Order a catalog item",
			Description: "Order one Service Catalog item now, with answers to its variables, through the Service Catalog API. " +
				"Only call it when the user asked to order; read the item with servicenow_get_catalog_item first. " +
				"Variable values may be choice labels or values; mandatory variables without a default must be given. " +
				"Returns the new request's number (REQ...) and sys_id; follow it with servicenow_get_request_status.",
			ReadOnly: false, Destructive: false, Idempotent: false, OpenWorld: true,
			Params: []Param{
				{Name: "item", Type: "string", Required: true, Description: "The item's sys_id or its exact name."},
				{Name: "variables", Type: "object", Values: "string",
					Description: "Answers by variable name, e.g. {\"operating_system\":\"macos\",\"justification\":\"new hire\"}."},
				{Name: "quantity", Type: "integer", Min: ptr(1), Max: ptr(100), Description: "How many to order (default 1)."},
				{Name: "requested_for", Type: "string",
					Description: "Who the order is for: user name, email, name or sys_id. Leave out for the signed-in user. Ordering for others needs a role on most instances."},
			},
			Handler: orderCatalogItem,
		},
		Def{
			Name:    "servicenow_get_request_status",
			Toolset: "catalog",
			Title:   "Status of a catalog request",
			Description: "Show the status of a Service Catalog request and its requested items, by request number (REQ...), requested item number (RITM...) or sys_id. " +
				"Returns the request's state, approval, requested_for and opened_at, and each item's number, catalog item, state, stage and quantity.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: []Param{
				{Name: "request", Type: "string", Required: true, Description: "REQ or RITM number, or the request's sys_id."},
			},
			Handler: getRequestStatus,
		},
	)
}

const catalogAPI = "/api/sn_sc/servicecatalog/items"

// catalogItem is the model's view of a catalog item.
type catalogItem struct {
	SysID            string            `json:"sys_id"`
	Name             string            `json:"name"`
	ShortDescription string            `json:"short_description,omitempty"`
	Description      string            `json:"description,omitempty"`
	Price            string            `json:"price,omitempty"`
	Category         string            `json:"category,omitempty"`
	Variables        []catalogVariable `json:"variables,omitempty"`
}

// catalogVariable is one question of an item.
type catalogVariable struct {
	Name      string   `json:"name"`
	Label     string   `json:"label,omitempty"`
	Type      string   `json:"type,omitempty"`
	Mandatory bool     `json:"mandatory"`
	Default   string   `json:"default,omitempty"`
	Choices   []Choice `json:"choices,omitempty"`
}

// rawCatalogItem is the Service Catalog API's item.
type rawCatalogItem struct {
	SysID            string          `json:"sys_id"`
	Name             string          `json:"name"`
	ShortDescription string          `json:"short_description"`
	Description      string          `json:"description"`
	Price            string          `json:"price"`
	Category         json.RawMessage `json:"category"`
	Variables        []struct {
		Name         string          `json:"name"`
		Label        string          `json:"label"`
		Type         json.RawMessage `json:"type"`
		FriendlyType string          `json:"friendly_type"`
		Mandatory    json.RawMessage `json:"mandatory"`
		Value        any             `json:"value"`
		Choices      []struct {
			Value any    `json:"value"`
			Label string `json:"label"`
			Text  string `json:"text"`
		} `json:"choices"`
	} `json:"variables"`
}

func (r rawCatalogItem) shape(full bool) catalogItem {
	it := catalogItem{SysID: r.SysID, Name: r.Name, ShortDescription: r.ShortDescription, Price: r.Price}
	var cat struct {
		Title string `json:"title"`
	}
	if json.Unmarshal(r.Category, &cat) == nil {
		it.Category = cat.Title
	} else {
		var s string
		_ = json.Unmarshal(r.Category, &s)
		it.Category = s
	}
	if !full {
		return it
	}
	it.Description = htmlToText(r.Description)
	for _, v := range r.Variables {
		cv := catalogVariable{Name: v.Name, Label: v.Label, Type: v.FriendlyType, Default: plainString(v.Value)}
		if cv.Type == "" {
			cv.Type = strings.Trim(string(v.Type), `"`)
		}
		cv.Mandatory = strings.Trim(string(v.Mandatory), `"`) == "true"
		for _, ch := range v.Choices {
			label := ch.Label
			if label == "" {
				label = ch.Text
			}
			cv.Choices = append(cv.Choices, Choice{Value: plainString(ch.Value), Label: label})
		}
		it.Variables = append(it.Variables, cv)
	}
	return it
}

func searchCatalogItems(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	limit, offset := pageArgs(c)
	q := url.Values{
		"sysparm_limit":  {strconv.FormatInt(limit, 10)},
		"sysparm_offset": {strconv.FormatInt(offset, 10)},
	}
	if text := strings.TrimSpace(c.Args.String("query")); text != "" {
		q.Set("sysparm_text", text)
	}
	if key := strings.TrimSpace(c.Args.String("category")); key != "" {
		id, err := resolveReference(ctx, d, c, "sc_category", key)
		if err != nil {
			return referenceFailure(ctx, d, c, "category", err)
		}
		q.Set("sysparm_category", id)
	}

	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{Method: http.MethodGet, Path: catalogAPI, Query: q, MaxBody: readCap(d.budget())})
	if err != nil {
		return failure(ctx, d, c, err)
	}
	var body struct {
		Result []rawCatalogItem `json:"result"`
	}
	if err := json.Unmarshal(resp.Body, &body); err != nil {
		return failure(ctx, d, c, fmt.Errorf("decode catalog items: %w", err))
	}

	items := make([]catalogItem, 0, len(body.Result))
	for _, r := range body.Result {
		items = append(items, r.shape(false))
	}
	out := map[string]any{}
	total, hasTotal := totalCount(resp)
	if hasTotal {
		out["total"] = total
	}
	if next, ok := nextOffset(offset, limit, int64(len(items)), total, hasTotal); ok {
		out["next_offset"] = next
	}
	if len(items) == 0 {
		out["note"] = "No orderable catalog item matches; try other words or no category."
	}
	return fitList(d, out, "items", items, offset)
}

func getCatalogItem(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	item, res := loadCatalogItem(ctx, d, c, c.Args.String("item"))
	if res != nil {
		return res
	}
	return jsonResult(item.shape(true))
}

// loadCatalogItem reads an item with its variables by sys_id or exact name.
func loadCatalogItem(ctx context.Context, d *Deps, c *Call, key string) (*rawCatalogItem, *mcp.CallToolResult) {
	key = strings.TrimSpace(key)
	if key == "" {
		return nil, errorResult("argument \"item\" is empty; give the item's sys_id or name (find it with servicenow_search_catalog_items)")
	}
	id := key
	if !isSysID(key) {
		var res *mcp.CallToolResult
		if id, res = catalogItemByName(ctx, d, c, key); res != nil {
			return nil, res
		}
	}
	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{Method: http.MethodGet, Path: catalogAPI + "/" + id})
	if err != nil {
		if isNotFound(err) {
			c.outcome = "not_found"
			return nil, errorResult("no orderable catalog item %s is visible to this user; find items with servicenow_search_catalog_items", key)
		}
		return nil, failure(ctx, d, c, err)
	}
	var body struct {
		Result rawCatalogItem `json:"result"`
	}
	if err := json.Unmarshal(resp.Body, &body); err != nil {
		return nil, failure(ctx, d, c, fmt.Errorf("decode catalog item: %w", err))
	}
	return &body.Result, nil
}

// catalogItemByName finds the one item whose name is key (any case).
func catalogItemByName(ctx context.Context, d *Deps, c *Call, key string) (string, *mcp.CallToolResult) {
	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{
		Method: http.MethodGet, Path: catalogAPI,
		Query: url.Values{"sysparm_text": {key}, "sysparm_limit": {"50"}},
	})
	if err != nil {
		return "", failure(ctx, d, c, err)
	}
	var body struct {
		Result []rawCatalogItem `json:"result"`
	}
	if err := json.Unmarshal(resp.Body, &body); err != nil {
		return "", failure(ctx, d, c, fmt.Errorf("decode catalog items: %w", err))
	}
	var exact, similar []string
	ids := map[string]string{}
	for _, r := range body.Result {
		if strings.EqualFold(strings.TrimSpace(r.Name), key) {
			exact = append(exact, r.SysID)
			ids[r.SysID] = r.Name
		} else {
			similar = append(similar, r.Name)
		}
	}
	switch len(exact) {
	case 1:
		return exact[0], nil
	case 0:
		c.outcome = "bad_arguments"
		if len(similar) > 0 {
			return "", errorResult("no catalog item is named %q; items that mention it: %s. Give the exact name or the sys_id", key, strings.Join(first(similar, 10), ", "))
		}
		return "", errorResult("no catalog item is named %q; search with servicenow_search_catalog_items", key)
	}
	c.outcome = "bad_arguments"
	return "", errorResult("%d catalog items are named %q (sys_ids %s); give the sys_id of the one you mean", len(exact), key, strings.Join(exact, ", "))
}

func orderCatalogItem(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	if d.ReadOnly {
		return errorResult("the server runs in read-only mode; ordering is refused")
	}
	item, res := loadCatalogItem(ctx, d, c, c.Args.String("item"))
	if res != nil {
		return res
	}
	shaped := item.shape(true)
	vars, problems := orderVariables(shaped.Variables, c.Args.Object("variables"))
	if len(problems) > 0 {
		c.outcome = "bad_arguments"
		return jsonError(map[string]any{
			"error":     "the order was not sent: " + strings.Join(problems, "; "),
			"item":      shaped.Name,
			"variables": shaped.Variables,
		})
	}

	body := map[string]any{"sysparm_quantity": strconv.FormatInt(c.Args.Int("quantity", 1), 10), "variables": vars}
	if key := strings.TrimSpace(c.Args.String("requested_for")); key != "" {
		id, err := resolveReference(ctx, d, c, "sys_user", key)
		if err != nil {
			return referenceFailure(ctx, d, c, "requested_for", err)
		}
		body["sysparm_requested_for"] = id
	}
	payload, err := marshal(body)
	if err != nil {
		return errorResult("the order could not be encoded")
	}
	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{
		Method: http.MethodPost, Path: catalogAPI + "/" + item.SysID + "/order_now", Body: payload,
	})
	if err != nil {
		return failure(ctx, d, c, err)
	}
	var out struct {
		Result struct {
			SysID         string `json:"sys_id"`
			Number        string `json:"number"`
			RequestNumber string `json:"request_number"`
			RequestID     string `json:"request_id"`
		} `json:"result"`
	}
	if err := json.Unmarshal(resp.Body, &out); err != nil {
		return failure(ctx, d, c, fmt.Errorf("decode order answer: %w", err))
	}
	number := firstNonEmpty(out.Result.RequestNumber, out.Result.Number)
	return jsonResult(map[string]any{
		"status":         "ordered",
		"request_number": number,
		"request_sys_id": firstNonEmpty(out.Result.RequestID, out.Result.SysID),
		"item":           shaped.Name,
		"quantity":       body["sysparm_quantity"],
		"variables":      vars,
		"next":           "Follow it with servicenow_get_request_status and request " + number + ".",
	})
}

// orderVariables checks answers against the item's variables before
// anything is sent: unknown names, missing mandatory answers and values
// outside a choice list are named; a choice label becomes its value.
func orderVariables(defs []catalogVariable, given map[string]any) (map[string]string, []string) {
	out := map[string]string{}
	var problems []string
	byName := map[string]catalogVariable{}
	var names []string
	for _, v := range defs {
		byName[v.Name] = v
		names = append(names, v.Name)
	}
	keys := make([]string, 0, len(given))
	for k := range given {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v, ok := byName[k]
		if !ok {
			problems = append(problems, fmt.Sprintf("the item has no variable %q (its variables: %s)", k, strings.Join(names, ", ")))
			continue
		}
		val := strings.TrimSpace(plainString(given[k]))
		if val == "" {
			continue
		}
		if len(v.Choices) > 0 {
			match := ""
			var allowed []string
			for _, ch := range v.Choices {
				allowed = append(allowed, ch.Value)
				if ch.Value == val || strings.EqualFold(ch.Label, val) || strings.EqualFold(ch.Value, val) {
					match = ch.Value
				}
			}
			if match == "" {
				problems = append(problems, fmt.Sprintf("variable %s does not accept %q; choose one of %s", k, val, strings.Join(allowed, ", ")))
				continue
			}
			val = match
		}
		if v.Type == "boolean" || v.Type == "checkbox" {
			switch strings.ToLower(val) {
			case "true", "yes", "1":
				val = "true"
			case "false", "no", "0":
				val = "false"
			default:
				problems = append(problems, fmt.Sprintf("variable %s is a checkbox: give true or false, not %q", k, val))
				continue
			}
		}
		out[k] = val
	}
	for _, v := range defs {
		if v.Mandatory && out[v.Name] == "" && v.Default == "" {
			problems = append(problems, fmt.Sprintf("variable %s (%s) is mandatory", v.Name, v.Label))
		}
	}
	return out, problems
}

func getRequestStatus(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	key := strings.TrimSpace(c.Args.String("request"))
	upper := strings.ToUpper(key)
	var cond servicenow.Condition
	switch {
	case isSysID(key):
		cond = servicenow.Condition{Field: "sys_id", Op: "=", Values: []string{key}}
	case strings.HasPrefix(upper, "RITM") && looksLikeNumber(key):
		items, _, err := tableRows(ctx, d, c, "sc_req_item", servicenow.Query{All: []servicenow.Condition{
			{Field: "number", Op: "=", Values: []string{upper}}}}, []string{"request"}, 1)
		if err != nil {
			return failure(ctx, d, c, err)
		}
		if len(items) == 0 {
			return requestNotFound(c, key)
		}
		cond = servicenow.Condition{Field: "sys_id", Op: "=", Values: []string{plainString(items[0]["request"])}}
	case looksLikeNumber(key):
		cond = servicenow.Condition{Field: "number", Op: "=", Values: []string{upper}}
	default:
		return errorResult("request %q is neither a REQ or RITM number nor a sys_id", clipArg(key))
	}

	reqs, _, err := tableRows(ctx, d, c, "sc_request", servicenow.Query{All: []servicenow.Condition{cond}},
		[]string{"sys_id", "number", "short_description", "state", "request_state", "approval", "requested_for", "opened_by", "opened_at", "price"}, 1)
	if err != nil {
		return failure(ctx, d, c, err)
	}
	if len(reqs) == 0 {
		return requestNotFound(c, key)
	}
	req := reqs[0]
	id := plainString(req["sys_id"])
	items, total, err := tableRows(ctx, d, c, "sc_req_item", servicenow.Query{
		All:   []servicenow.Condition{{Field: "request", Op: "=", Values: []string{id}}},
		Order: []servicenow.Order{{Field: "number"}},
	}, []string{"sys_id", "number", "short_description", "cat_item", "state", "stage", "quantity", "price", "assignment_group"}, 100)
	if err != nil {
		return failure(ctx, d, c, err)
	}

	out := map[string]any{"request": shapeRow(req)}
	shapedItems := make([]map[string]any, 0, len(items))
	for _, it := range items {
		shapedItems = append(shapedItems, shapeRow(it))
	}
	out["items"] = shapedItems
	if total > int64(len(items)) {
		out["note"] = fmt.Sprintf("showing %d of %d requested items", len(items), total)
	}
	return jsonResult(out)
}

func requestNotFound(c *Call, key string) *mcp.CallToolResult {
	c.outcome = "not_found"
	return jsonError(map[string]any{
		"error": fmt.Sprintf("no request %s is visible to this user", key),
		"hint":  "Check the number; users without the itil role see only requests they opened or that are for them.",
	})
}

// tableRows reads up to limit rows of a table with display values, for
// answers that combine several tables.
func tableRows(ctx context.Context, d *Deps, c *Call, table string, q servicenow.Query, fields []string, limit int) ([]map[string]any, int64, error) {
	encoded, err := q.Encode()
	if err != nil {
		return nil, 0, err
	}
	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{
		Method: http.MethodGet, Path: "/api/now/table/" + table,
		Query: url.Values{
			"sysparm_query":                  {encoded},
			"sysparm_fields":                 {strings.Join(fields, ",")},
			"sysparm_display_value":          {"all"},
			"sysparm_exclude_reference_link": {"true"},
			"sysparm_limit":                  {strconv.Itoa(limit)},
		},
		MaxBody: readCap(d.budget()),
	})
	if err != nil {
		return nil, 0, err
	}
	var body struct {
		Result []map[string]any `json:"result"`
	}
	if err := json.Unmarshal(resp.Body, &body); err != nil {
		return nil, 0, fmt.Errorf("decode %s list: %w", table, err)
	}
	total, ok := totalCount(resp)
	if !ok {
		total = int64(len(body.Result))
	}
	return body.Result, total, nil
}

// shapeRow flattens a display_value=all row: a value whose display
// differs (a choice label, a reference's name) keeps both; dates become
// RFC 3339; empty values are left out.
func shapeRow(row map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range row {
		m, ok := v.(map[string]any)
		if !ok {
			if s := plainString(v); s != "" {
				out[k] = s
			}
			continue
		}
		val, disp := plainString(m["value"]), ""
		if s, ok := m["display_value"].(string); ok {
			disp = s
		}
		switch {
		case val == "" && disp == "":
		case isoUTC(val) != val:
			out[k] = isoUTC(val)
		case disp == "" || disp == val:
			out[k] = val
		default:
			out[k] = map[string]string{"value": val, "display": disp}
		}
	}
	return out
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func first(ss []string, n int) []string {
	if len(ss) > n {
		return ss[:n]
	}
	return ss
}
