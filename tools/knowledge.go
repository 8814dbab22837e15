package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/mark3labs/mcp-go/mcp"

	"servicenow-mcp/servicenow"
)

func init() {
	register(
		Def{
			Name:    "servicenow_search_knowledge",
			Toolset: "knowledge",
			Title:   "Search knowledge articles",
			Description: "Search the published knowledge articles the user can read, by words in the title or body, optionally in one knowledge base. " +
				"Use it to find how-to and policy answers before opening a ticket. Returns number, sys_id, title, a snippet and the knowledge base " +
				"of each match, best first, with total and next_offset; read one in full with servicenow_get_knowledge_article.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: []Param{
				{Name: "query", Type: "string", Description: "Words to look for, e.g. \"vpn password\". Leave out to list published articles."},
				{Name: "knowledge_base", Type: "string", Description: "Only this knowledge base: its title (e.g. IT) or sys_id."},
				{Name: "limit", Type: "integer", Min: ptr(1), Max: ptr(100), Description: "Most articles to return (default 20, at most 100)."},
				{Name: "offset", Type: "integer", Min: ptr(0), Description: "Articles to skip, for the next page (use next_offset)."},
			},
			Handler: searchKnowledge,
		},
		Def{
			Name:    "servicenow_get_knowledge_article",
			Toolset: "knowledge",
			Title:   "Read a knowledge article",
			Description: "Read one published knowledge article in full, by number (KB0010001) or sys_id. " +
				"Returns its number, title, knowledge base, last update and the body as plain text.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: []Param{
				{Name: "article", Type: "string", Required: true, Description: "The article's number (e.g. KB0010001) or sys_id."},
			},
			Handler: getKnowledgeArticle,
		},
	)
}

const knowledgeAPI = "/api/sn_km_api/knowledge/articles"

// knowledgeHit is one article in a search answer.
type knowledgeHit struct {
	Number        string  `json:"number"`
	SysID         string  `json:"sys_id"`
	Title         string  `json:"title"`
	Snippet       string  `json:"snippet,omitempty"`
	KnowledgeBase string  `json:"knowledge_base,omitempty"`
	Score         float64 `json:"score,omitempty"`
	UpdatedOn     string  `json:"updated_on,omitempty"`
}

func searchKnowledge(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	limit, offset := pageArgs(c)
	text := strings.TrimSpace(c.Args.String("query"))
	kb := ""
	if key := strings.TrimSpace(c.Args.String("knowledge_base")); key != "" {
		id, err := resolveReference(ctx, d, c, "kb_knowledge_base", key)
		if err != nil {
			return referenceFailure(ctx, d, c, "knowledge_base", err)
		}
		kb = id
	}

	hits, total, err := searchKnowledgeAPI(ctx, d, c, text, kb, limit, offset)
	source := "knowledge_api"
	if knowledgeAPIMissing(err) {
		source = "kb_knowledge_table"
		hits, total, err = searchKnowledgeTable(ctx, d, c, text, kb, limit, offset)
	}
	if err != nil {
		return failure(ctx, d, c, err)
	}

	out := map[string]any{"articles": hits, "total": total, "source": source}
	if next, ok := nextOffset(offset, limit, int64(len(hits)), total, true); ok {
		out["next_offset"] = next
	}
	if len(hits) == 0 {
		out["note"] = "No published article the user can read matches; try fewer or other words."
	}
	return fitList(d, out, "articles", hits, offset)
}

// searchKnowledgeAPI uses the Knowledge API (plugin sn_km_api), which
// ranks matches and returns published articles only.
func searchKnowledgeAPI(ctx context.Context, d *Deps, c *Call, text, kb string, limit, offset int64) ([]knowledgeHit, int64, error) {
	q := url.Values{
		"limit":  {strconv.FormatInt(limit, 10)},
		"offset": {strconv.FormatInt(offset, 10)},
		"fields": {"kb_knowledge_base,sys_updated_on"},
	}
	if text != "" {
		q.Set("query", text)
	}
	if kb != "" {
		q.Set("kb", kb)
	}
	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{Method: http.MethodGet, Path: knowledgeAPI, Query: q})
	if err != nil {
		return nil, 0, err
	}
	var body struct {
		Result struct {
			Meta struct {
				Count json.Number `json:"count"`
			} `json:"meta"`
			Articles []struct {
				ID      string                    `json:"id"`
				Number  string                    `json:"number"`
				Title   string                    `json:"title"`
				Snippet string                    `json:"snippet"`
				Score   float64                   `json:"score"`
				Fields  map[string]map[string]any `json:"fields"`
			} `json:"articles"`
		} `json:"result"`
	}
	if err := json.Unmarshal(resp.Body, &body); err != nil {
		return nil, 0, fmt.Errorf("decode knowledge search: %w", err)
	}
	hits := make([]knowledgeHit, 0, len(body.Result.Articles))
	for _, a := range body.Result.Articles {
		h := knowledgeHit{
			Number: a.Number, Title: a.Title, Score: a.Score,
			SysID:   strings.TrimPrefix(a.ID, "kb_knowledge:"),
			Snippet: snippet(a.Snippet),
		}
		if f := a.Fields["kb_knowledge_base"]; f != nil {
			h.KnowledgeBase = displayString(f)
		}
		if f := a.Fields["sys_updated_on"]; f != nil {
			h.UpdatedOn = isoUTC(plainString(f["value"]))
		}
		hits = append(hits, h)
	}
	total, err := body.Result.Meta.Count.Int64()
	if err != nil {
		total = offset + int64(len(hits))
	}
	return hits, total, nil
}

// searchKnowledgeTable is the fallback for instances without the
// Knowledge API: every word must be in the title or the body, and only
// published, active articles count.
func searchKnowledgeTable(ctx context.Context, d *Deps, c *Call, text, kb string, limit, offset int64) ([]knowledgeHit, int64, error) {
	query := servicenow.Query{
		All: []servicenow.Condition{
			{Field: "workflow_state", Op: "=", Values: []string{"published"}},
			{Field: "active", Op: "=", Values: []string{"true"}},
		},
		Order: []servicenow.Order{{Field: "sys_view_count", Desc: true}, {Field: "number"}},
	}
	if kb != "" {
		query.All = append(query.All, servicenow.Condition{Field: "kb_knowledge_base", Op: "=", Values: []string{kb}})
	}
	for _, word := range strings.Fields(text) {
		query.Any = append(query.Any, []servicenow.Condition{
			{Field: "short_description", Op: "LIKE", Values: []string{word}},
			{Field: "text", Op: "LIKE", Values: []string{word}},
		})
	}
	encoded, err := query.Encode()
	if err != nil {
		return nil, 0, err
	}
	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{
		Method: http.MethodGet, Path: "/api/now/table/kb_knowledge",
		Query: url.Values{
			"sysparm_query":                  {encoded},
			"sysparm_fields":                 {"sys_id,number,short_description,text,kb_knowledge_base,sys_updated_on"},
			"sysparm_display_value":          {"all"},
			"sysparm_exclude_reference_link": {"true"},
			"sysparm_limit":                  {strconv.FormatInt(limit, 10)},
			"sysparm_offset":                 {strconv.FormatInt(offset, 10)},
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
		return nil, 0, fmt.Errorf("decode kb_knowledge list: %w", err)
	}
	hits := make([]knowledgeHit, 0, len(body.Result))
	for _, r := range body.Result {
		hits = append(hits, knowledgeHit{
			Number: plainString(r["number"]), SysID: plainString(r["sys_id"]),
			Title:         plainString(r["short_description"]),
			Snippet:       snippet(htmlToText(plainString(r["text"]))),
			KnowledgeBase: displayString(r["kb_knowledge_base"]),
			UpdatedOn:     isoUTC(plainString(r["sys_updated_on"])),
		})
	}
	total, ok := totalCount(resp)
	if !ok {
		total = offset + int64(len(hits))
	}
	return hits, total, nil
}

func getKnowledgeArticle(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	key := strings.TrimSpace(c.Args.String("article"))
	if !isSysID(key) && !looksLikeNumber(key) {
		return errorResult("article %q is neither an article number (e.g. KB0010001) nor a sys_id; find it with servicenow_search_knowledge", clipArg(key))
	}

	art, err := articleFromAPI(ctx, d, c, key)
	source := "knowledge_api"
	if knowledgeAPIMissing(err) || isNotFound(err) {
		source = "kb_knowledge_table"
		art, err = articleFromTable(ctx, d, c, key)
	}
	if err != nil {
		return failure(ctx, d, c, err)
	}
	if art == nil {
		c.outcome = "not_found"
		return jsonError(map[string]any{
			"error": fmt.Sprintf("no published article %s is visible to this user", key),
			"hint":  "Check the number with servicenow_search_knowledge; drafts, retired articles and articles hidden by access rules are not shown.",
		})
	}
	if art.State != "" && art.State != "published" {
		c.outcome = "not_found"
		return jsonError(map[string]any{
			"error": fmt.Sprintf("article %s is not published (workflow state %s); only published articles are shown", key, art.State),
		})
	}

	out := map[string]any{
		"number": art.Number, "sys_id": art.SysID, "title": art.Title,
		"knowledge_base": art.KnowledgeBase, "updated_on": art.UpdatedOn, "source": source,
	}
	textBudget := d.budget() - 1024
	if len(art.Text) > textBudget {
		out["text"] = cutUTF8(art.Text, max(textBudget, 0))
		out["truncated"] = true
		out["note"] = fmt.Sprintf("the body is cut at %d of %d bytes to fit the answer budget", max(textBudget, 0), len(art.Text))
	} else {
		out["text"] = art.Text
	}
	return jsonResult(out)
}

// article is one knowledge article with its body as plain text.
type article struct {
	Number, SysID, Title, KnowledgeBase, UpdatedOn, State, Text string
}

func articleFromAPI(ctx context.Context, d *Deps, c *Call, key string) (*article, error) {
	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{
		Method: http.MethodGet, Path: knowledgeAPI + "/" + url.PathEscape(key),
		Query: url.Values{"fields": {"kb_knowledge_base,sys_updated_on,workflow_state"}},
	})
	if err != nil {
		return nil, err
	}
	var body struct {
		Result struct {
			SysID            string                    `json:"sys_id"`
			Number           string                    `json:"number"`
			ShortDescription string                    `json:"short_description"`
			Content          string                    `json:"content"`
			Fields           map[string]map[string]any `json:"fields"`
		} `json:"result"`
	}
	if err := json.Unmarshal(resp.Body, &body); err != nil {
		return nil, fmt.Errorf("decode knowledge article: %w", err)
	}
	r := body.Result
	a := &article{Number: r.Number, SysID: r.SysID, Title: r.ShortDescription, Text: htmlToText(r.Content)}
	if f := r.Fields["kb_knowledge_base"]; f != nil {
		a.KnowledgeBase = displayString(f)
	}
	if f := r.Fields["sys_updated_on"]; f != nil {
		a.UpdatedOn = isoUTC(plainString(f["value"]))
	}
	if f := r.Fields["workflow_state"]; f != nil {
		a.State = plainString(f["value"])
	}
	return a, nil
}

// articleFromTable reads a published article from kb_knowledge; nil when
// there is none the user can read.
func articleFromTable(ctx context.Context, d *Deps, c *Call, key string) (*article, error) {
	field := "number"
	if isSysID(key) {
		field = "sys_id"
	}
	encoded, err := servicenow.Query{All: []servicenow.Condition{
		{Field: field, Op: "=", Values: []string{key}},
		{Field: "workflow_state", Op: "=", Values: []string{"published"}},
	}}.Encode()
	if err != nil {
		return nil, err
	}
	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{
		Method: http.MethodGet, Path: "/api/now/table/kb_knowledge",
		Query: url.Values{
			"sysparm_query":                  {encoded},
			"sysparm_fields":                 {"sys_id,number,short_description,text,kb_knowledge_base,sys_updated_on,workflow_state"},
			"sysparm_display_value":          {"all"},
			"sysparm_exclude_reference_link": {"true"},
			"sysparm_limit":                  {"1"},
		},
	})
	if err != nil {
		return nil, err
	}
	var body struct {
		Result []map[string]any `json:"result"`
	}
	if err := json.Unmarshal(resp.Body, &body); err != nil {
		return nil, fmt.Errorf("decode kb_knowledge article: %w", err)
	}
	if len(body.Result) == 0 {
		return nil, nil
	}
	r := body.Result[0]
	return &article{
		Number: plainString(r["number"]), SysID: plainString(r["sys_id"]), Title: plainString(r["short_description"]),
		KnowledgeBase: displayString(r["kb_knowledge_base"]), UpdatedOn: isoUTC(plainString(r["sys_updated_on"])),
		State: plainString(r["workflow_state"]), Text: htmlToText(plainString(r["text"])),
	}, nil
}

// knowledgeAPIMissing reports an answer that means the instance has no
// Knowledge API (the sn_km_api plugin is not active).
func knowledgeAPIMissing(err error) bool {
	var api *servicenow.APIError
	if !errors.As(err, &api) {
		return false
	}
	return api.Status == http.StatusBadRequest && strings.Contains(api.Message, "Requested URI does not represent any resource") ||
		api.Status == http.StatusNotFound && !strings.Contains(strings.ToLower(api.Message+api.Detail), "article")
}

func isNotFound(err error) bool {
	var api *servicenow.APIError
	return errors.As(err, &api) && api.Status == http.StatusNotFound
}

var numberPattern = regexp.MustCompile(`^[A-Za-z]{2,8}[0-9]{4,12}$`)

// looksLikeNumber reports whether s has the shape of a record number
// such as INC0010001 or KB0000012.
func looksLikeNumber(s string) bool { return numberPattern.MatchString(s) }

var (
	breakTags = regexp.MustCompile(`(?i)<\s*(br|/p|/div|/h[1-6]|/li|/tr|/ul|/ol|/pre|/blockquote)\b[^>]*>`)
	itemTags  = regexp.MustCompile(`(?i)<\s*li\b[^>]*>`)
	dropTags  = regexp.MustCompile(`(?is)<\s*(script|style)\b.*?<\s*/\s*(script|style)\s*>`)
	anyTag    = regexp.MustCompile(`(?s)<[^>]*>`)
	manyBlank = regexp.MustCompile(`\n{3,}`)
)

// htmlToText renders an article body as plain text a model reads easily:
// block ends become line breaks, list items get a dash, entities are
// decoded, and scripts and styles are dropped.
func htmlToText(h string) string {
	s := dropTags.ReplaceAllString(h, "")
	s = breakTags.ReplaceAllString(s, "\n")
	s = itemTags.ReplaceAllString(s, "\n- ")
	s = anyTag.ReplaceAllString(s, "")
	s = html.UnescapeString(s)
	s = strings.ReplaceAll(s, "\u00a0", " ")
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	s = manyBlank.ReplaceAllString(strings.Join(lines, "\n"), "\n\n")
	return strings.TrimSpace(s)
}

func snippet(s string) string {
	s = strings.Join(strings.Fields(htmlToText(s)), " ")
	if len(s) > 200 {
		return cutUTF8(s, 200) + "…"
	}
	return s
}

// fitList renders out with list under key, dropping entries from the
// end until the answer fits the budget; when it cuts, next_offset points
// at the first entry left out.
func fitList[T any](d *Deps, out map[string]any, key string, list []T, offset int64) *mcp.CallToolResult {
	out[key] = list
	b, err := marshal(out)
	if err != nil || len(b) <= d.budget() {
		return jsonResult(out)
	}
	kept := len(list)
	for kept > 0 {
		kept--
		out[key] = list[:kept]
		if b, _ := marshal(out); len(b) <= d.budget() {
			break
		}
	}
	out["truncated"] = true
	out["next_offset"] = offset + int64(kept)
	out["note"] = fmt.Sprintf("only %d of %d entries fit the answer budget; page on with next_offset or ask for fewer with limit", kept, len(list))
	return jsonResult(out)
}
