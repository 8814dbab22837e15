package tools

import (
	"bytes"
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
	register(Def{
		Name:    "servicenow_request",
		Toolset: "request",
		Title:   "Call a ServiceNow REST API",
		Description: "Call any ServiceNow REST API on the user's instance as that user, for what no specific tool covers " +
			"(Table API, Aggregate, CMDB, Import Set, scripted APIs). The path is relative and under /api/, for example " +
			"/api/now/table/incident; put sysparm_* parameters in query and always set sysparm_limit on lists. " +
			"Returns the HTTP status, useful headers (X-Total-Count, Link, Location) and the JSON body, cut to a size budget with a note when it is cut.",
		ReadOnly: false, Destructive: true, Idempotent: false, OpenWorld: true,
		Params: []Param{
			{Name: "method", Type: "string", Required: true, Enum: []string{"GET", "POST", "PUT", "PATCH", "DELETE"},
				Description: "HTTP method."},
			{Name: "path", Type: "string", Required: true,
				Description: "Path under /api/ on the instance, e.g. /api/now/table/incident or /api/now/table/incident/<sys_id>. No host, no query string."},
			{Name: "query", Type: "object", Values: "string",
				Description: "Query parameters, e.g. {\"sysparm_query\":\"active=true^ORDERBYDESCopened_at\",\"sysparm_limit\":\"10\",\"sysparm_fields\":\"number,short_description\"}."},
			{Name: "body", Type: "object",
				Description: "JSON body for POST, PUT and PATCH, e.g. {\"short_description\":\"Printer jammed\"}."},
			{Name: "headers", Type: "object", Values: "string",
				Description: "Extra request headers. Only " + strings.Join(servicenow.AllowedRequestHeaders(), " and ") + " are passed on; authentication is added by the server."},
		},
		Handler:      request,
		ReadOnlyMode: requestReadOnly,
	})
}

// requestReadOnly is servicenow_request in read-only mode: GET only, so
// its hints say it reads, and its method argument offers GET alone.
func requestReadOnly(d Def) Def {
	d.ReadOnly, d.Destructive, d.Idempotent = true, false, true
	d.Params = slices.Clone(d.Params)
	for i, p := range d.Params {
		switch p.Name {
		case "method":
			p.Enum = []string{http.MethodGet}
			p.Description = "HTTP method: only GET, because the server runs in read-only mode."
		case "body":
			p.Description = "Not accepted in read-only mode: a GET sends no body."
		}
		d.Params[i] = p
	}
	return d
}

func request(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	method := strings.ToUpper(c.Args.String("method"))
	path := c.Args.String("path")
	if d.ReadOnly && method != http.MethodGet {
		return errorResult("the server runs in read-only mode, so only GET is allowed; %s was refused", method)
	}
	if err := servicenow.ValidatePath(path); err != nil {
		return failure(ctx, d, c, err)
	}

	q := url.Values{}
	for k, v := range c.Args.Object("query") {
		q.Set(k, fmt.Sprint(v))
	}
	headers := http.Header{}
	for k, v := range c.Args.Object("headers") {
		if err := servicenow.CheckHeader(k, fmt.Sprint(v)); err != nil {
			c.outcome = "bad_arguments"
			return errorResult("argument \"headers\": %s", err)
		}
		canon := http.CanonicalHeaderKey(k)
		if !allowedHeader(canon) {
			return errorResult("header %q is not passed on; allowed headers are %s (authentication is added by the server)",
				k, strings.Join(servicenow.AllowedRequestHeaders(), ", "))
		}
		headers.Set(canon, fmt.Sprint(v))
	}
	var body []byte
	if b := c.Args.Object("body"); b != nil {
		if method == http.MethodGet || method == http.MethodDelete {
			return errorResult("a body is not sent with %s; put parameters in query instead", method)
		}
		var err error
		if body, err = marshal(b); err != nil {
			return errorResult("argument \"body\" could not be encoded as JSON")
		}
	}

	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{
		Method: method, Path: path, Query: q, Body: body, Headers: headers,
		MaxBody: readCap(d.budget()), Compact: true,
	})
	if err != nil {
		return failure(ctx, d, c, err)
	}

	hs := map[string]string{}
	for k := range resp.Header {
		if k != "Content-Type" {
			hs[k] = strings.Join(resp.Header.Values(k), ", ")
		}
	}
	// The body gets what the status, the headers and a note leave of the
	// budget; room for the note is kept only when the body is cut.
	shaped, note := shapeBody(resp.Body, resp.Truncated, resp.Compacted, d.budget()-len(requestAnswer(resp.Status, hs, nil, "")))
	if note != "" {
		room := d.budget() - len(requestAnswer(resp.Status, hs, nil, strings.Repeat("x", maxBodyNote)))
		shaped, note = shapeBody(resp.Body, resp.Truncated, resp.Compacted, room)
	}
	return mcp.NewToolResultText(string(requestAnswer(resp.Status, hs, shaped, note)))
}

// maxBodyNote is the most bytes a note of shapeBody takes.
const maxBodyNote = 400

// requestAnswer writes {"status","headers","body","truncated","note"} by
// hand: the body is already compact JSON, and encoding/json would scan
// it once more to check and compact it again.
func requestAnswer(status int, headers map[string]string, body json.RawMessage, note string) []byte {
	var b bytes.Buffer
	b.Grow(len(body) + 256)
	b.WriteString(`{"status":`)
	b.WriteString(strconv.Itoa(status))
	if len(headers) > 0 {
		hb, _ := marshal(headers)
		b.WriteString(`,"headers":`)
		b.Write(hb)
	}
	if body != nil {
		b.WriteString(`,"body":`)
		b.Write(body)
	}
	if note != "" {
		nb, _ := marshal(note)
		b.WriteString(`,"truncated":true,"note":`)
		b.Write(nb)
	}
	b.WriteByte('}')
	return b.Bytes()
}

func allowedHeader(h string) bool {
	for _, a := range servicenow.AllowedRequestHeaders() {
		if http.CanonicalHeaderKey(a) == h {
			return true
		}
	}
	return false
}

// readCap is how much of an answer is read for a budget: enough to fill
// the budget with whole records after shaping, never the whole of a huge
// answer, so memory follows the budget and not the answer's size.
func readCap(budget int) int64 {
	return int64(2*budget + 16<<10)
}

// shapeBody compacts a JSON body into the budget, cutting whole records
// of a {"result":[…]} list when it is too large, and the long values of a
// record too large on its own. compact says the body is known to be
// compact JSON already. A note says what was cut.
func shapeBody(body []byte, cut, compact bool, budget int) (json.RawMessage, string) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, ""
	}
	if compact && !cut && len(body) <= budget {
		return body, ""
	}
	if !cut && !compact {
		var buf bytes.Buffer
		if json.Compact(&buf, body) == nil && buf.Len() <= budget {
			return buf.Bytes(), ""
		}
	}
	if records, total, ok := leadingRecords(body); ok {
		kept := make([]json.RawMessage, 0, len(records))
		size := len(`{"result":[]}`)
		for _, r := range records {
			if size+len(r)+1 > budget {
				break
			}
			kept = append(kept, r)
			size += len(r) + 1
		}
		of := fmt.Sprintf("%d", total)
		if cut {
			of = "more than " + of
		}
		var rec map[string]any
		if len(kept) == 0 && len(records) > 0 && json.Unmarshal(records[0], &rec) == nil {
			fitRecord(rec, budget-len(`{"result":[]}`))
			b, _ := marshal(map[string]any{"result": []any{rec}})
			return b, fmt.Sprintf("the answer was too large: kept the first of %s records, and even it only with its long values cut, each ending in %s "+
				"(its _cut_fields names them). Ask for fewer fields (sysparm_fields), or page with sysparm_offset=1.", of, cutMark)
		}
		b, _ := marshal(map[string]any{"result": kept})
		return b, fmt.Sprintf("the answer was too large: kept the first %d of %s records. Ask for fewer fields (sysparm_fields), fewer records (sysparm_limit), or page with sysparm_offset=%d.",
			len(kept), of, len(kept))
	}
	var one struct {
		Result map[string]any `json:"result"`
	}
	if !cut && json.Unmarshal(body, &one) == nil && one.Result != nil {
		fitRecord(one.Result, budget-len(`{"result":}`))
		b, _ := marshal(one)
		return b, fmt.Sprintf("the record was larger than the size budget: its long values were cut, each ending in %s (its _cut_fields names them). "+
			"Ask for fewer fields (sysparm_fields) to see them whole.", cutMark)
	}

	// Anything else is shown as text, cut so that it fits once encoded as
	// a JSON string.
	n := budget
	for {
		text := cutUTF8(string(body), max(n, 0))
		s, _ := marshal(text)
		if len(s) <= budget || n <= 0 {
			return s, fmt.Sprintf("the answer was too large and is shown as text cut at %d bytes; narrow the request.", len(text))
		}
		n -= len(s) - budget
	}
}

// leadingRecords reads the records of a {"result":[…]} body, stopping
// quietly where the body was cut.
func leadingRecords(body []byte) ([]json.RawMessage, int, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, 0, false
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return nil, 0, false
		}
		if key != "result" {
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return nil, 0, false
			}
			continue
		}
		if t, err := dec.Token(); err != nil || t != json.Delim('[') {
			return nil, 0, false
		}
		var out []json.RawMessage
		for dec.More() {
			var r json.RawMessage
			if dec.Decode(&r) != nil {
				break
			}
			var buf bytes.Buffer
			if json.Compact(&buf, r) == nil {
				r = buf.Bytes()
			}
			out = append(out, r)
		}
		return out, len(out), true
	}
	return nil, 0, false
}
