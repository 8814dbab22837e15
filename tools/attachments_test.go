package tools_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"

	"servicenow-mcp/internal/testenv"
	"servicenow-mcp/servicenow"
	"servicenow-mcp/storage"
)

// check is one expectation about a tool's answer.
type check struct {
	name    string
	user    string
	tool    string
	args    map[string]any
	wantErr bool
	// want are substrings the answer's text must contain; absent must not.
	want   []string
	absent []string
}

// runChecks runs cases in order (later ones may depend on earlier writes).
func runChecks(t *testing.T, env *testenv.Env, cases []check) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			user := tc.user
			if user == "" {
				user = "alice"
			}
			res := env.Call(t, user, tc.tool, tc.args)
			text := allText(res)
			if res.IsError != tc.wantErr {
				t.Fatalf("isError = %v, want %v:\n%s", res.IsError, tc.wantErr, text)
			}
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("answer lacks %q:\n%s", w, text)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(text, a) {
					t.Errorf("answer has %q:\n%s", a, text)
				}
			}
		})
	}
}

func allText(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			b.WriteString(tc.Text)
			b.WriteString("\n")
		}
	}
	return b.String()
}

// field digs a string out of a decoded answer by a dotted path.
func field(m map[string]any, path string) string {
	var cur any = m
	for _, p := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = mm[p]
	}
	s, _ := cur.(string)
	return s
}

func TestAttachments(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	binary := make([]byte, 0, 300)
	for i := 0; i < 300; i++ {
		binary = append(binary, byte(i*7))
	}
	binary = append([]byte("\x89PNG\r\n\x1a\n\x00\xff\xfe"), binary...)

	runChecks(t, env, []check{
		{name: "list by number", tool: "servicenow_list_attachments",
			args: map[string]any{"table": "incident", "record": "INC0010001"},
			want: []string{`"file_name":"vpn.log"`, `"content_type":"text/plain"`, `"size_bytes":44`, `"total":1`}},
		{name: "list record without files says so", tool: "servicenow_list_attachments",
			args: map[string]any{"table": "incident", "record": "INC0010002"},
			want: []string{`"attachments":[]`, "hidden by access rules"}},
		{name: "unknown record number is named", tool: "servicenow_list_attachments", wantErr: true,
			args: map[string]any{"table": "incident", "record": "INC9999999"},
			want: []string{"INC9999999"}},
		{name: "table name with a path trick is refused", tool: "servicenow_list_attachments", wantErr: true,
			args: map[string]any{"table": "incident/../sys_user", "record": "INC0010001"},
			want: []string{"not a table name"}},
		{name: "download a bad sys_id", tool: "servicenow_download_attachment", wantErr: true,
			args: map[string]any{"sys_id": "../../table/sys_user"}, want: []string{"32 hex"}},
		{name: "download an unknown sys_id", tool: "servicenow_download_attachment", wantErr: true,
			args: map[string]any{"sys_id": strings.Repeat("a", 32)}, want: []string{"no attachment", "404"}},
		{name: "both contents refused", tool: "servicenow_upload_attachment", wantErr: true,
			args: map[string]any{"table": "incident", "record": "INC0010001", "file_name": "a.txt", "content_text": "x", "content_base64": "eA=="},
			want: []string{"not both"}},
		{name: "no content refused", tool: "servicenow_upload_attachment", wantErr: true,
			args: map[string]any{"table": "incident", "record": "INC0010001", "file_name": "a.txt"},
			want: []string{"content_text"}},
		{name: "bad base64 refused", tool: "servicenow_upload_attachment", wantErr: true,
			args: map[string]any{"table": "incident", "record": "INC0010001", "file_name": "a.bin", "content_base64": "@@@not base64@@@"},
			want: []string{"not valid base64"}},
		{name: "file name with a folder refused", tool: "servicenow_upload_attachment", wantErr: true,
			args: map[string]any{"table": "incident", "record": "INC0010001", "file_name": "../etc/passwd", "content_text": "x"},
			want: []string{"plain file name"}},
		{name: "too large refused before sending", tool: "servicenow_upload_attachment", wantErr: true,
			args: map[string]any{"table": "incident", "record": "INC0010001", "file_name": "big.txt", "content_text": strings.Repeat("x", 5<<20+1)},
			want: []string{"more than"}},
		{name: "user without itil cannot attach to an incident", user: "carol", tool: "servicenow_upload_attachment", wantErr: true,
			args: map[string]any{"table": "incident", "record": "INC0010001", "file_name": "note.txt", "content_text": "hello"},
			want: []string{"403", "itil"}},
	})

	t.Run("seeded text file comes back as text", func(t *testing.T) {
		list := testenv.JSON(t, env.Call(t, "alice", "servicenow_list_attachments", map[string]any{"table": "incident", "record": "INC0010001"}))
		id := field(list["attachments"].([]any)[0].(map[string]any), "sys_id")
		res := env.Call(t, "alice", "servicenow_download_attachment", map[string]any{"sys_id": id})
		if res.IsError || len(res.Content) != 2 {
			t.Fatalf("download: %v %s", res.IsError, allText(res))
		}
		if got := res.Content[1].(mcp.TextContent).Text; got != "VPN client log\nerror: tunnel closed by peer\n" {
			t.Fatalf("text = %q", got)
		}
	})

	t.Run("binary round-trips byte for byte", func(t *testing.T) {
		up := env.Call(t, "alice", "servicenow_upload_attachment", map[string]any{
			"table": "incident", "record": "INC0010002", "file_name": "shot.png",
			"content_base64": base64.StdEncoding.EncodeToString(binary),
		})
		if up.IsError {
			t.Fatalf("upload: %s", allText(up))
		}
		m := testenv.JSON(t, up)
		id := field(m, "attachment.sys_id")
		if field(m, "attachment.content_type") != "image/png" {
			t.Errorf("content type guessed from the name: %s", allText(up))
		}
		res := env.Call(t, "alice", "servicenow_download_attachment", map[string]any{"sys_id": id})
		if res.IsError || len(res.Content) != 2 {
			t.Fatalf("download: %s", allText(res))
		}
		er, ok := res.Content[1].(mcp.EmbeddedResource)
		if !ok {
			t.Fatalf("second content is %T, want an embedded resource", res.Content[1])
		}
		blob, ok := er.Resource.(mcp.BlobResourceContents)
		if !ok {
			t.Fatalf("resource is %T, want a blob", er.Resource)
		}
		got, err := base64.StdEncoding.DecodeString(blob.Blob)
		if err != nil || !bytes.Equal(got, binary) {
			t.Fatalf("bytes differ (err %v): got %d bytes, want %d", err, len(got), len(binary))
		}
		if blob.MIMEType != "image/png" {
			t.Errorf("MIME type %q", blob.MIMEType)
		}
	})

	t.Run("url-safe unpadded base64 with line breaks is accepted", func(t *testing.T) {
		enc := base64.RawURLEncoding.EncodeToString(binary)
		enc = enc[:40] + "\n" + enc[40:]
		up := env.Call(t, "alice", "servicenow_upload_attachment", map[string]any{
			"table": "incident", "record": "INC0010002", "file_name": "blob.bin", "content_base64": enc,
		})
		if up.IsError {
			t.Fatalf("upload: %s", allText(up))
		}
		id := field(testenv.JSON(t, up), "attachment.sys_id")
		res := env.Call(t, "alice", "servicenow_download_attachment", map[string]any{"sys_id": id})
		blob := res.Content[1].(mcp.EmbeddedResource).Resource.(mcp.BlobResourceContents)
		got, _ := base64.StdEncoding.DecodeString(blob.Blob)
		if !bytes.Equal(got, binary) || blob.MIMEType != "application/octet-stream" {
			t.Fatalf("round trip: %d bytes, MIME %q", len(got), blob.MIMEType)
		}
	})

	t.Run("uploaded text comes back as text", func(t *testing.T) {
		text := "résumé — line 1\nline 2\n"
		up := env.Call(t, "alice", "servicenow_upload_attachment", map[string]any{
			"table": "incident", "record": "INC0010002", "file_name": "notes.txt", "content_text": text,
		})
		id := field(testenv.JSON(t, up), "attachment.sys_id")
		res := env.Call(t, "alice", "servicenow_download_attachment", map[string]any{"sys_id": id})
		if got := res.Content[1].(mcp.TextContent).Text; got != text {
			t.Fatalf("text = %q", got)
		}
		list := env.Call(t, "alice", "servicenow_list_attachments", map[string]any{"table": "incident", "record": "INC0010002", "limit": 2})
		if m := testenv.JSON(t, list); m["next_offset"] == nil || m["total"].(float64) != 3 {
			t.Fatalf("paging: %s", allText(list))
		}
	})
}

// A file larger than what the download tool moves gets a clear answer
// and no content: refused from its metadata before the download, and
// refused when the download itself runs past the cap (metadata that
// understates the size), never a partial file shown as whole.
func TestDownloadSizeCap(t *testing.T) {
	const cap, budget = 5 << 20, 16 << 10
	var lieAbout atomic.Value // the sys_id whose metadata understates its size
	lieAbout.Store("")
	env, sent := watchedEnv(t, testenv.Options{Link: []string{"alice"}, Budget: budget}, func(r *http.Response) error {
		id, _ := lieAbout.Load().(string)
		if id == "" || r.Request.URL.Path != "/api/now/attachment/"+id {
			return nil
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		body = regexp.MustCompile(`"size_bytes":"\d+"`).ReplaceAll(body, []byte(`"size_bytes":"100"`))
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		r.Header.Set("Content-Length", strconv.Itoa(len(body)))
		return nil
	})
	incident := value(records(t, ok(t, env.Call(t, "alice", "servicenow_query_records", map[string]any{
		"table": "incident", "filters": map[string]any{"number": "INC0010002"}, "fields": []string{"number"}})))[0]["sys_id"])
	upload := func(name string, size int) string {
		t.Helper()
		resp, err := env.App.Client.Do(context.Background(), storage.AccountKey{Connection: testenv.Connection, User: "alice"}, servicenow.Request{
			Method: http.MethodPost, Path: "/api/now/attachment/file", ContentType: "application/octet-stream",
			Query: url.Values{"table_name": {"incident"}, "table_sys_id": {incident}, "file_name": {name}},
			Body:  bytes.Repeat([]byte("x"), size),
		})
		if err != nil {
			t.Fatalf("upload %s: %v", name, err)
		}
		var out struct {
			Result struct {
				SysID string `json:"sys_id"`
			} `json:"result"`
		}
		if err := json.Unmarshal(resp.Body, &out); err != nil || out.Result.SysID == "" {
			t.Fatalf("upload %s: %v %s", name, err, resp.Body)
		}
		return out.Result.SysID
	}
	atCap, overCap, understated := upload("at-cap.bin", cap), upload("over-cap.bin", cap+1), upload("understated.bin", cap+4096)
	longText := upload("long.txt", 200<<10)
	lieAbout.Store(understated)

	tests := []struct {
		name    string
		id      string
		wantErr bool
		want    []string
		// file says whether the file itself was asked for.
		file bool
	}{
		{"at the cap comes whole", atCap, false, nil, true},
		{"over the cap refused from the metadata", overCap, true, []string{"over-cap.bin", strconv.Itoa(cap + 1), strconv.Itoa(cap), "download_link"}, false},
		{"over the cap found while downloading", understated, true, []string{"understated.bin", "larger than", strconv.Itoa(cap), "browser"}, true},
		{"text over the answer budget is cut and says so", longText, false, []string{`"truncated":true`, "of 204800 bytes"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(sent())
			res := env.Call(t, "alice", "servicenow_download_attachment", map[string]any{"sys_id": tt.id})
			text := allText(res)
			if res.IsError != tt.wantErr {
				t.Fatalf("isError = %v, want %v: %.300s", res.IsError, tt.wantErr, text)
			}
			fetched := false
			for _, r := range sent()[before:] {
				fetched = fetched || strings.HasSuffix(r.URL.Path, "/file")
			}
			if fetched != tt.file {
				t.Errorf("the file was fetched: %v, want %v", fetched, tt.file)
			}
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("the answer lacks %q: %.300s", w, text)
				}
			}
			if tt.id == longText {
				if n := len(text) - len(res.Content); n > budget || n < budget-512 {
					t.Errorf("the answer is %d bytes for a budget of %d", n, budget)
				}
				return
			}
			if !tt.wantErr {
				er, _ := res.Content[len(res.Content)-1].(mcp.EmbeddedResource)
				blob, _ := er.Resource.(mcp.BlobResourceContents)
				if got, err := base64.StdEncoding.DecodeString(blob.Blob); err != nil || len(got) != cap {
					t.Fatalf("the file did not come back whole: %d bytes (%v)", len(got), err)
				}
				return
			}
			if len(res.Content) != 1 || len(text) > 2000 {
				t.Fatalf("a refused download carries content: %d parts, %d bytes", len(res.Content), len(text))
			}
		})
	}
}
