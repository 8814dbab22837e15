package tools

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/mark3labs/mcp-go/mcp"

	"servicenow-mcp/oauth"
	"servicenow-mcp/servicenow"
)

// attachmentCap is the largest file the attachment tools move in one call,
// either way. Larger files belong in a browser, not in a model's context.
const attachmentCap = 5 << 20

func init() {
	register(
		Def{
			Name:    "servicenow_list_attachments",
			Toolset: "attachments",
			Title:   "List a record's attachments",
			Description: "List the files attached to one ServiceNow record, for example an incident. " +
				"Use it before servicenow_download_attachment to learn the attachment sys_id. " +
				"Returns each file's sys_id, file_name, content_type, size_bytes, created_on and created_by, with total and next_offset.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: []Param{
				attachmentTableParam, attachmentRecordParam,
				{Name: "limit", Type: "integer", Min: ptr(1), Max: ptr(100), Description: "Most attachments to return (default 20, at most 100)."},
				{Name: "offset", Type: "integer", Min: ptr(0), Description: "Attachments to skip, for the next page (use next_offset)."},
			},
			Handler: listAttachments,
		},
		Def{
			Name:    "servicenow_download_attachment",
			Toolset: "attachments",
			Title:   "Download an attachment",
			Description: "Download one attachment by its sys_id (from servicenow_list_attachments). " +
				"Text files come back as text; other files come back as an embedded blob resource with their MIME type, byte for byte. " +
				"Files over 5 MiB are refused with a link to open in a browser instead.",
			ReadOnly: true, Destructive: false, Idempotent: true, OpenWorld: true,
			Params: []Param{
				{Name: "sys_id", Type: "string", Required: true, Description: "The attachment's sys_id (32 hex characters)."},
			},
			Handler: downloadAttachment,
		},
		Def{
			Name:    "servicenow_upload_attachment",
			Toolset: "attachments",
			Title:   "Attach a file to a record",
			Description: "Attach a file to one ServiceNow record. Give the content either as content_text (plain text) or content_base64 (any bytes), not both; " +
				"at most 5 MiB. Needs write access to the record (for incidents, usually the itil role). " +
				"Returns the new attachment's sys_id, file_name, content_type and size_bytes.",
			ReadOnly: false, Destructive: false, Idempotent: false, OpenWorld: true,
			Params: []Param{
				attachmentTableParam, attachmentRecordParam,
				{Name: "file_name", Type: "string", Required: true, Description: "File name to store, with its extension, e.g. notes.txt or screenshot.png."},
				{Name: "content_text", Type: "string", Description: "The file's content as text (stored as UTF-8)."},
				{Name: "content_base64", Type: "string", Description: "The file's bytes, base64-encoded (standard or URL alphabet, padding optional)."},
				{Name: "content_type", Type: "string", Description: "MIME type, e.g. image/png. Leave out to guess from file_name."},
			},
			Handler: uploadAttachment,
		},
	)
}

var (
	attachmentTableParam = Param{Name: "table", Type: "string", Required: true,
		Description: "Table of the record the files belong to, e.g. incident, change_request, sc_req_item."}
	attachmentRecordParam = Param{Name: "record", Type: "string", Required: true,
		Description: "The record: its sys_id or its number (e.g. INC0010001)."}
)

// attachment is the model's view of sys_attachment metadata.
type attachment struct {
	SysID       string `json:"sys_id"`
	FileName    string `json:"file_name"`
	ContentType string `json:"content_type"`
	SizeBytes   int64  `json:"size_bytes"`
	Table       string `json:"table,omitempty"`
	Record      string `json:"record_sys_id,omitempty"`
	CreatedOn   string `json:"created_on,omitempty"`
	CreatedBy   string `json:"created_by,omitempty"`
	download    string
}

func toAttachment(m map[string]any) attachment {
	size, _ := strconv.ParseInt(plainString(m["size_bytes"]), 10, 64)
	by := plainString(m["created_by_name"])
	if by == "" {
		by = plainString(m["sys_created_by"])
	}
	return attachment{
		SysID:       plainString(m["sys_id"]),
		FileName:    plainString(m["file_name"]),
		ContentType: plainString(m["content_type"]),
		SizeBytes:   size,
		Table:       plainString(m["table_name"]),
		Record:      plainString(m["table_sys_id"]),
		CreatedOn:   isoUTC(plainString(m["sys_created_on"])),
		CreatedBy:   by,
		download:    plainString(m["download_link"]),
	}
}

func listAttachments(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	table, err := checkTableName(c.Args.String("table"))
	if err != nil {
		return errorResult("%s", err)
	}
	id, err := resolveReference(ctx, d, c, table, c.Args.String("record"))
	if err != nil {
		return referenceFailure(ctx, d, c, "record", err)
	}

	limit, offset := pageArgs(c)
	q, err := servicenow.Query{All: []servicenow.Condition{
		{Field: "table_name", Op: "=", Values: []string{table}},
		{Field: "table_sys_id", Op: "=", Values: []string{id}},
	}, Order: []servicenow.Order{{Field: "sys_created_on"}}}.Encode()
	if err != nil {
		return errorResult("%s", err)
	}
	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{
		Method: http.MethodGet, Path: "/api/now/attachment",
		Query: url.Values{
			"sysparm_query":  {q},
			"sysparm_limit":  {strconv.FormatInt(limit, 10)},
			"sysparm_offset": {strconv.FormatInt(offset, 10)},
		},
	})
	if err != nil {
		return failure(ctx, d, c, err)
	}
	var body struct {
		Result []map[string]any `json:"result"`
	}
	if err := json.Unmarshal(resp.Body, &body); err != nil {
		return failure(ctx, d, c, fmt.Errorf("decode attachment list: %w", err))
	}

	items := make([]attachment, 0, len(body.Result))
	for _, m := range body.Result {
		a := toAttachment(m)
		a.Table, a.Record = "", ""
		items = append(items, a)
	}
	out := map[string]any{"table": table, "record_sys_id": id, "attachments": items}
	total, hasTotal := totalCount(resp)
	if hasTotal {
		out["total"] = total
	}
	if next, ok := nextOffset(offset, limit, int64(len(body.Result)), total, hasTotal); ok {
		out["next_offset"] = next
	}
	if len(items) == 0 && offset == 0 {
		out["note"] = "No attachments are visible on this record; attachments may also be hidden by access rules."
	}
	return jsonResult(out)
}

func downloadAttachment(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	id := strings.TrimSpace(c.Args.String("sys_id"))
	if !isSysID(id) {
		return errorResult("sys_id %q is not an attachment sys_id (32 hex characters); list the record's attachments with servicenow_list_attachments first", clipArg(id))
	}

	meta, res := attachmentMetadata(ctx, d, c, id)
	if res != nil {
		return res
	}
	if meta.SizeBytes > attachmentCap {
		return jsonError(map[string]any{
			"error":         fmt.Sprintf("%s is %d bytes, more than the %d bytes this tool downloads", meta.FileName, meta.SizeBytes, attachmentCap),
			"attachment":    meta,
			"hint":          "Ask the user to open download_link in a browser signed in to ServiceNow.",
			"download_link": meta.download,
		})
	}

	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{
		Method: http.MethodGet, Path: "/api/now/attachment/" + id + "/file",
		Accept: "*/*", MaxBody: attachmentCap,
	})
	if err != nil {
		return failure(ctx, d, c, err)
	}
	if resp.Truncated {
		return errorResult("%s is larger than the %d bytes this tool downloads; ask the user to open %s in a browser", meta.FileName, attachmentCap, meta.download)
	}

	data := resp.Body
	ct := mediaType(resp.Header.Get("Content-Type"))
	if ct == "" {
		ct = mediaType(meta.ContentType)
	}
	if ct == "" {
		ct = "application/octet-stream"
	}
	meta.ContentType = ct
	meta.SizeBytes = int64(len(data))
	meta.Table, meta.Record = "", ""

	if isTextual(ct, meta.FileName) && utf8.Valid(data) {
		text := string(data)
		info := map[string]any{"attachment": meta, "encoding": "text"}
		head, _ := marshal(info)
		if len(head)+len(text) > d.budget() {
			// The text gets what the description and its note leave.
			info["truncated"] = true
			info["note"] = fmt.Sprintf("the text is cut at %d of %d bytes to fit the answer budget", len(data), len(data))
			head, _ = marshal(info)
			text = cutUTF8(text, max(d.budget()-len(head), 0))
			info["note"] = fmt.Sprintf("the text is cut at %d of %d bytes to fit the answer budget", len(text), len(data))
			head, _ = marshal(info)
		}
		return &mcp.CallToolResult{Content: []mcp.Content{
			mcp.NewTextContent(string(head)),
			mcp.NewTextContent(text),
		}}
	}

	head, _ := marshal(map[string]any{"attachment": meta, "encoding": "base64 blob in the embedded resource"})
	uri := meta.download
	if uri == "" {
		uri = "servicenow://attachment/" + id
	}
	return mcp.NewToolResultResource(string(head), mcp.BlobResourceContents{
		URI: uri, MIMEType: ct, Blob: base64.StdEncoding.EncodeToString(data),
	})
}

func attachmentMetadata(ctx context.Context, d *Deps, c *Call, id string) (attachment, *mcp.CallToolResult) {
	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{Method: http.MethodGet, Path: "/api/now/attachment/" + id})
	if err != nil {
		var api *servicenow.APIError
		if errors.As(err, &api) && api.Status == http.StatusNotFound {
			c.outcome = "not_found"
			return attachment{}, jsonError(map[string]any{
				"status": 404, "error": fmt.Sprintf("no attachment %s is visible to this user", id),
				"detail": api.Detail,
				"hint":   "Check the sys_id with servicenow_list_attachments; an access rule on the parent record can also hide it.",
			})
		}
		return attachment{}, failure(ctx, d, c, err)
	}
	var body struct {
		Result map[string]any `json:"result"`
	}
	if err := json.Unmarshal(resp.Body, &body); err != nil || body.Result == nil {
		return attachment{}, failure(ctx, d, c, fmt.Errorf("decode attachment metadata: %w", errors.Join(err, errors.New("no result"))))
	}
	return toAttachment(body.Result), nil
}

func uploadAttachment(ctx context.Context, d *Deps, c *Call) *mcp.CallToolResult {
	if d.ReadOnly {
		return errorResult("the server runs in read-only mode; uploading attachments is refused")
	}
	table, err := checkTableName(c.Args.String("table"))
	if err != nil {
		return errorResult("%s", err)
	}
	name := strings.TrimSpace(c.Args.String("file_name"))
	if name == "" || strings.ContainsAny(name, "/\\") || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return errorResult("file_name %q must be a plain file name, without folders or control characters", clipArg(name))
	}
	data, isText, res := uploadContent(c)
	if res != nil {
		return res
	}
	ct, res := uploadContentType(c.Args.String("content_type"), name, isText)
	if res != nil {
		return res
	}
	id, err := resolveReference(ctx, d, c, table, c.Args.String("record"))
	if err != nil {
		return referenceFailure(ctx, d, c, "record", err)
	}

	resp, err := d.Client.Do(ctx, c.Key, servicenow.Request{
		Method: http.MethodPost, Path: "/api/now/attachment/file",
		Query: url.Values{"table_name": {table}, "table_sys_id": {id}, "file_name": {name}},
		Body:  data, ContentType: ct,
	})
	if err != nil {
		var api *servicenow.APIError
		if errors.As(err, &api) && api.Status == http.StatusForbidden {
			c.outcome = "servicenow_error"
			return jsonError(map[string]any{
				"status": 403, "error": api.Message, "detail": api.Detail,
				"hint": fmt.Sprintf("Attaching needs write access to the %s record (for incidents and changes, usually the itil role); ask a ServiceNow admin.", table),
			})
		}
		return failure(ctx, d, c, err)
	}
	var body struct {
		Result map[string]any `json:"result"`
	}
	if err := json.Unmarshal(resp.Body, &body); err != nil || body.Result == nil {
		return jsonResult(map[string]any{"status": "attached", "file_name": name, "size_bytes": len(data),
			"note": "ServiceNow accepted the file but did not describe it; list the record's attachments to see it."})
	}
	a := toAttachment(body.Result)
	return jsonResult(map[string]any{"status": "attached", "attachment": a})
}

// uploadContent decodes the one content argument given.
func uploadContent(c *Call) ([]byte, bool, *mcp.CallToolResult) {
	hasText, hasB64 := c.Args.Has("content_text"), c.Args.Has("content_base64")
	switch {
	case hasText && hasB64:
		return nil, false, errorResult("give either content_text or content_base64, not both")
	case !hasText && !hasB64:
		return nil, false, errorResult("give the file's content as content_text (text) or content_base64 (any bytes)")
	}
	var data []byte
	if hasText {
		data = []byte(c.Args.String("content_text"))
	} else {
		var err error
		if data, err = decodeBase64(c.Args.String("content_base64")); err != nil {
			return nil, false, errorResult("content_base64 is not valid base64 (%v); send the bytes base64-encoded, or plain text as content_text", err)
		}
	}
	if len(data) == 0 {
		return nil, false, errorResult("the file is empty; ServiceNow does not store empty attachments")
	}
	if len(data) > attachmentCap {
		return nil, false, errorResult("the file is %d bytes, more than the %d bytes this tool uploads", len(data), attachmentCap)
	}
	return data, hasText, nil
}

func uploadContentType(given, name string, isText bool) (string, *mcp.CallToolResult) {
	if given = strings.TrimSpace(given); given != "" {
		mt, params, err := mime.ParseMediaType(given)
		if err != nil || !strings.Contains(mt, "/") {
			return "", errorResult("content_type %q is not a MIME type such as text/plain or image/png", clipArg(given))
		}
		return mime.FormatMediaType(mt, params), nil
	}
	if guess := mime.TypeByExtension(strings.ToLower(path.Ext(name))); guess != "" {
		return guess, nil
	}
	if isText {
		return "text/plain; charset=utf-8", nil
	}
	return "application/octet-stream", nil
}

// decodeBase64 accepts the standard and URL alphabets, with or without
// padding, and ignores line breaks and spaces (models wrap long strings).
func decodeBase64(s string) ([]byte, error) {
	s = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\n' || r == '\r' || r == '\t' {
			return -1
		}
		return r
	}, s)
	if i := strings.Index(s, ";base64,"); strings.HasPrefix(s, "data:") && i > 0 {
		s = s[i+len(";base64,"):]
	}
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// isTextual reports whether a MIME type (or, for untyped files, the file
// name) says the content is text a model can read directly.
func isTextual(ct, name string) bool {
	if ct == "" || ct == "application/octet-stream" {
		ct = mediaType(mime.TypeByExtension(strings.ToLower(path.Ext(name))))
	}
	switch {
	case strings.HasPrefix(ct, "text/"):
		return true
	case strings.HasSuffix(ct, "+json"), strings.HasSuffix(ct, "+xml"):
		return true
	}
	switch ct {
	case "application/json", "application/xml", "application/javascript", "application/x-yaml",
		"application/yaml", "application/x-sh", "application/sql", "application/csv", "application/x-ndjson":
		return true
	}
	return false
}

func mediaType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ""
	}
	return mt
}

// ---------- helpers shared by the typed tools ----------

// checkTableName refuses table names that could not be ServiceNow tables,
// before they reach a path or a query.
func checkTableName(t string) (string, error) {
	t = strings.TrimSpace(t)
	if t == "" {
		return "", errors.New("argument \"table\" is empty; give a table name such as incident")
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return "", fmt.Errorf("table %q is not a table name: use lowercase letters, digits and _, e.g. incident", clipArg(t))
		}
	}
	return t, nil
}

// plainString reads a Table API value that may be a string or an object
// with value / display_value.
func plainString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case map[string]any:
		if s, ok := x["value"].(string); ok {
			return s
		}
		if s, ok := x["display_value"].(string); ok {
			return s
		}
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

// displayString prefers a display value over a raw value.
func displayString(v any) string {
	if m, ok := v.(map[string]any); ok {
		if s, ok := m["display_value"].(string); ok && s != "" {
			return s
		}
	}
	return plainString(v)
}

// pageArgs reads limit (default 20, at most 100) and offset.
func pageArgs(c *Call) (int64, int64) {
	limit := min(max(c.Args.Int("limit", 20), 1), 100)
	return limit, max(c.Args.Int("offset", 0), 0)
}

func totalCount(resp *servicenow.Response) (int64, bool) {
	n, err := strconv.ParseInt(resp.Header.Get("X-Total-Count"), 10, 64)
	return n, err == nil
}

// nextOffset says where the next page starts, when there is one.
func nextOffset(offset, limit, got, total int64, hasTotal bool) (int64, bool) {
	if hasTotal {
		return offset + limit, offset+limit < total
	}
	return offset + limit, got >= limit
}

func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

func clipArg(s string) string {
	if len(s) > 80 {
		return cutUTF8(s, 80) + "…"
	}
	return s
}

// referenceFailure reports a reference argument that did not resolve: an
// instance or account failure goes through failure, anything else is the
// resolver's own message about the key (no match, several matches).
func referenceFailure(ctx context.Context, d *Deps, c *Call, arg string, err error) *mcp.CallToolResult {
	var (
		needsLink *servicenow.NeedsLinkError
		api       *servicenow.APIError
		unavail   *servicenow.UnavailableError
		limited   *servicenow.RateLimitedError
		input     *servicenow.InputError
		refused   *servicenow.RefusedError
		tokenDown *oauth.UnavailableError
		client    *oauth.ClientRejectedError
	)
	if errors.Is(err, oauth.ErrNeedsAuthorization) || errors.As(err, &needsLink) || errors.As(err, &api) ||
		errors.As(err, &unavail) || errors.As(err, &limited) || errors.As(err, &input) || errors.As(err, &refused) ||
		errors.As(err, &tokenDown) || errors.As(err, &client) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return failure(ctx, d, c, err)
	}
	c.outcome = "bad_arguments"
	return errorResult("argument %q: %s", arg, err.Error())
}
