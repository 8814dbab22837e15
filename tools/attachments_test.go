package tools_test

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"

	"servicenow-mcp/internal/testenv"
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
