package sandbox

import (
	"bytes"
	"encoding/json"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

func TestAggregate(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.userTokens("alice")["alice"]
	total := len(e.api("GET", "/api/now/table/incident", tok, nil).list(t))
	r := e.api("GET", "/api/now/stats/incident?sysparm_count=true", tok, nil)
	if r.status != 200 || string(r.body) != `{"result":{"stats":{"count":"`+strconv.Itoa(total)+`"}}}` {
		t.Fatalf("ungrouped: %s", r.body)
	}
	active := len(e.api("GET", "/api/now/table/incident?sysparm_query=active=true", tok, nil).list(t))
	r = e.api("GET", "/api/now/stats/incident?sysparm_count=true&sysparm_query=active=true", tok, nil)
	if r.one(t)["stats"].(map[string]any)["count"] != strconv.Itoa(active) {
		t.Fatalf("filtered count %s", r.body)
	}
	var grouped struct {
		Result []struct {
			Stats         map[string]any      `json:"stats"`
			GroupbyFields []map[string]string `json:"groupby_fields"`
		}
	}
	r = e.api("GET", "/api/now/stats/incident?sysparm_count=true&sysparm_group_by=state&sysparm_avg_fields=reassignment_count&sysparm_order_by=COUNT^DESC", tok, nil)
	if err := json.Unmarshal(r.body, &grouped); err != nil || len(grouped.Result) < 2 {
		t.Fatalf("grouped %s", r.body)
	}
	sum, prev := 0, 1<<30
	for _, g := range grouped.Result {
		n, _ := strconv.Atoi(g.Stats["count"].(string))
		if n > prev {
			t.Fatal("order_by COUNT^DESC not applied")
		}
		prev = n
		sum += n
		gf := g.GroupbyFields[0]
		if gf["field"] != "state" || gf["value"] == "" {
			t.Fatalf("groupby_fields %v", gf)
		}
		if _, ok := g.Stats["avg"].(map[string]any)["reassignment_count"]; !ok {
			t.Fatalf("avg missing: %v", g.Stats)
		}
	}
	if sum != total {
		t.Fatalf("group counts add to %d, want %d", sum, total)
	}
	r = e.api("GET", "/api/now/stats/incident?sysparm_count=true&sysparm_group_by=state&sysparm_having="+url.QueryEscape("count^state^>^100"), tok, nil)
	if string(r.body) != `{"result":[]}` {
		t.Fatalf("having: %s", r.body)
	}
	r = e.api("GET", "/api/now/stats/incident?sysparm_min_fields=priority&sysparm_max_fields=priority&sysparm_sum_fields=reassignment_count", tok, nil)
	st := r.one(t)["stats"].(map[string]any)
	if st["min"].(map[string]any)["priority"] != "1" || st["max"].(map[string]any)["priority"] != "5" || st["sum"].(map[string]any)["reassignment_count"] != "0" || st["count"] != nil {
		t.Fatalf("min/max/sum: %s", r.body)
	}
	assertEnvelope(t, e.api("GET", "/api/now/stats/nope?sysparm_count=true", tok, nil), 400, "Invalid table nope", nil)
}

// TestAggregateGroupByShape checks groupby_fields entries: field and the
// stored value by default, plus display_value when sysparm_display_value is
// true or all; value never turns into the display text.
func TestAggregateGroupByShape(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.userTokens("alice")["alice"]
	id := e.api("POST", "/api/now/table/incident", tok, map[string]any{"short_description": "agg", "impact": "1", "urgency": "1"}).one(t)["sys_id"].(string)
	groupOfOurs := "sysparm_count=true&sysparm_group_by=state,assignment_group,priority&sysparm_query=sys_id=" + id
	cases := []struct {
		dv   string
		want string
	}{
		{"", `[{"field":"state","value":"1"},{"field":"assignment_group","value":""},{"field":"priority","value":"1"}]`},
		{"false", `[{"field":"state","value":"1"},{"field":"assignment_group","value":""},{"field":"priority","value":"1"}]`},
		{"true", `[{"display_value":"New","field":"state","value":"1"},{"display_value":"","field":"assignment_group","value":""},{"display_value":"1 - Critical","field":"priority","value":"1"}]`},
		{"all", `[{"display_value":"New","field":"state","value":"1"},{"display_value":"","field":"assignment_group","value":""},{"display_value":"1 - Critical","field":"priority","value":"1"}]`},
	}
	for _, tc := range cases {
		t.Run("display_value="+tc.dv, func(t *testing.T) {
			q := groupOfOurs
			if tc.dv != "" {
				q += "&sysparm_display_value=" + tc.dv
			}
			r := e.api("GET", "/api/now/stats/incident?"+q, tok, nil)
			var body struct {
				Result []struct {
					GroupbyFields json.RawMessage `json:"groupby_fields"`
				} `json:"result"`
			}
			if err := json.Unmarshal(r.body, &body); err != nil || len(body.Result) != 1 {
				t.Fatalf("%d %s", r.status, r.body)
			}
			if got := string(body.Result[0].GroupbyFields); got != tc.want {
				t.Fatalf("groupby_fields\n got %s\nwant %s", got, tc.want)
			}
		})
	}
	t.Run("reference display value", func(t *testing.T) {
		g := seedID("sys_user_group:Hardware")
		r := e.api("GET", "/api/now/stats/incident?sysparm_count=true&sysparm_group_by=assignment_group&sysparm_display_value=all&sysparm_query=assignment_group="+g, tok, nil)
		want := `"groupby_fields":[{"display_value":"Hardware","field":"assignment_group","value":"` + g + `"}]`
		if !strings.Contains(string(r.body), want) {
			t.Fatalf("got %s", r.body)
		}
	})
}

func binaryPayload() []byte {
	b := make([]byte, 0, 1024)
	for i := 0; i < 1024; i++ {
		b = append(b, byte(i*7))
	}
	return append(b, 0, 0, 0xff, 0xfe, '\r', '\n', 0x80)
}

func TestAttachments(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.userTokens("alice", "carol")
	inc := seedID("incident:inc1")
	payload := binaryPayload()

	upload := func(tk, q string, ct string, body []byte) resp {
		req, _ := http.NewRequest("POST", e.srv.URL+"/api/now/attachment/file?"+q, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tk)
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		return e.do(req)
	}
	r := upload(tok["alice"], "table_name=incident&table_sys_id="+inc+"&file_name=blob.bin", "application/octet-stream", payload)
	if r.status != 201 {
		t.Fatalf("upload %d %s", r.status, r.body)
	}
	meta := r.one(t)
	id := meta["sys_id"].(string)
	if r.header.Get("Location") != e.srv.URL+"/api/now/attachment/"+id || meta["size_bytes"] != strconv.Itoa(len(payload)) ||
		meta["file_name"] != "blob.bin" || meta["table_sys_id"] != inc || meta["download_link"] != e.srv.URL+"/api/now/attachment/"+id+"/file" {
		t.Fatalf("meta %v", meta)
	}
	for k, v := range meta {
		if _, ok := v.(string); !ok {
			t.Fatalf("%s not a string", k)
		}
	}
	for _, k := range []string{"average_image_color", "compressed", "content_type", "created_by_name", "image_height", "image_width", "size_compressed", "sys_created_by", "sys_created_on", "sys_mod_count", "sys_tags", "sys_updated_by", "sys_updated_on", "table_name", "updated_by_name"} {
		if _, ok := meta[k]; !ok {
			t.Fatalf("metadata lacks %s", k)
		}
	}
	dl := e.api("GET", "/api/now/attachment/"+id+"/file", tok["alice"], nil)
	if !bytes.Equal(dl.body, payload) || dl.header.Get("Content-Type") != "application/octet-stream" || !strings.Contains(dl.header.Get("X-Attachment-Metadata"), id) {
		t.Fatalf("download mismatch (%d bytes, %q)", len(dl.body), dl.header.Get("Content-Type"))
	}
	// multipart upload
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("table_name", "incident")
	_ = mw.WriteField("table_sys_id", inc)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="uploadFile"; filename="pic.png"`)
	h.Set("Content-Type", "image/png")
	pw, _ := mw.CreatePart(h)
	_, _ = pw.Write(payload)
	_ = mw.Close()
	req, _ := http.NewRequest("POST", e.srv.URL+"/api/now/attachment/upload", &buf)
	req.Header.Set("Authorization", "Bearer "+tok["alice"])
	req.Header.Set("Content-Type", mw.FormDataContentType())
	r = e.do(req)
	if r.status != 201 {
		t.Fatalf("multipart %d %s", r.status, r.body)
	}
	id2 := r.one(t)["sys_id"].(string)
	dl = e.api("GET", "/api/now/attachment/"+id2+"/file", tok["alice"], nil)
	if !bytes.Equal(dl.body, payload) || dl.header.Get("Content-Type") != "image/png" {
		t.Fatal("multipart round trip differs")
	}
	list := e.api("GET", "/api/now/attachment?sysparm_query="+url.QueryEscape("table_name=incident^table_sys_id="+inc), tok["alice"], nil).list(t)
	if len(list) != 2 {
		t.Fatalf("list %d", len(list))
	}
	if got := e.api("GET", "/api/now/attachment/"+id, tok["alice"], nil).one(t); got["sys_id"] != id {
		t.Fatal("metadata by id")
	}
	// errors
	assertEnvelope(t, upload(tok["alice"], "table_name=incident&file_name=x", "text/plain", []byte("x")), 400, "Failed to create the attachment. File part might be missing in the request.", "*")
	if r := upload(tok["alice"], "table_name=incident&table_sys_id="+inc+"&file_name=x", "", []byte("x")); r.status != 400 {
		t.Fatalf("missing content type: %d", r.status)
	}
	if r := upload(tok["alice"], "table_name=incident&table_sys_id="+strings.Repeat("1", 32)+"&file_name=x", "text/plain", []byte("x")); r.status != 404 {
		t.Fatalf("missing target: %d", r.status)
	}
	if r := upload(tok["carol"], "table_name=incident&table_sys_id="+inc+"&file_name=x", "text/plain", []byte("x")); r.status != 404 {
		t.Fatalf("carol cannot see erin's incident: %d", r.status)
	}
	if r := upload(tok["carol"], "table_name=incident&table_sys_id="+seedID("incident:inc0")+"&file_name=x", "text/plain", []byte("x")); r.status != 403 {
		t.Fatalf("carol may not attach to incidents: %d", r.status)
	}
	if r := e.api("DELETE", "/api/now/attachment/"+id, tok["alice"], nil); r.status != 204 {
		t.Fatalf("delete %d", r.status)
	}
	if r := e.api("GET", "/api/now/attachment/"+id+"/file", tok["alice"], nil); r.status != 404 {
		t.Fatalf("deleted file %d", r.status)
	}
}

func TestKnowledgeAPI(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.userTokens("carol")["carol"]
	r := e.api("GET", "/api/sn_km_api/knowledge/articles?limit=2&fields=number,workflow_state", tok, nil)
	var kr struct {
		Result struct {
			Meta     map[string]any   `json:"meta"`
			Articles []map[string]any `json:"articles"`
		}
	}
	if err := json.Unmarshal(r.body, &kr); err != nil || r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if kr.Result.Meta["count"] != float64(6) || len(kr.Result.Articles) != 2 || kr.Result.Meta["end"] != float64(2) {
		t.Fatalf("meta %v, %d articles", kr.Result.Meta, len(kr.Result.Articles))
	}
	a := kr.Result.Articles[0]
	if !strings.HasPrefix(a["id"].(string), "kb_knowledge:") || a["number"] == "" || a["fields"].(map[string]any)["workflow_state"].(map[string]any)["value"] != "published" {
		t.Fatalf("article %v", a)
	}
	if !strings.Contains(string(r.body), `"link":"?id=kb_article_view&sysparm_article=KB`) {
		t.Fatalf("JSON must not HTML-escape: %s", r.body)
	}
	r = e.api("GET", "/api/sn_km_api/knowledge/articles?query=vpn", tok, nil)
	_ = json.Unmarshal(r.body, &kr)
	if kr.Result.Meta["count"] != float64(1) || kr.Result.Articles[0]["title"] != "How to connect to the VPN" {
		t.Fatalf("search: %s", r.body)
	}
	num := kr.Result.Articles[0]["number"].(string)
	one := e.api("GET", "/api/sn_km_api/knowledge/articles/"+num, tok, nil).one(t)
	if !strings.Contains(one["content"].(string), "VPN client") {
		t.Fatalf("article by number %v", one)
	}
	// drafts are not served to carol
	draft := seedID("kb_knowledge:kb6")
	if r := e.api("GET", "/api/sn_km_api/knowledge/articles/"+draft, tok, nil); r.status != 404 {
		t.Fatalf("draft %d", r.status)
	}
	off := newEnv(t, Options{NoKnowledgeAPI: true})
	tk := off.userTokens("carol")["carol"]
	assertEnvelope(t, off.api("GET", "/api/sn_km_api/knowledge/articles", tk, nil), 400, "Requested URI does not represent any resource", nil)
	if r := off.api("GET", "/api/now/table/kb_knowledge?sysparm_query=workflow_state=published", tk, nil); len(r.list(t)) != 6 {
		t.Fatal("fallback table must still work")
	}
}

func TestCatalog(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.userTokens("carol", "alice")
	items := e.api("GET", "/api/sn_sc/servicecatalog/items", tok["carol"], nil).list(t)
	if len(items) != 4 {
		t.Fatalf("items %d", len(items))
	}
	if n := len(e.api("GET", "/api/sn_sc/servicecatalog/items?sysparm_text=laptop", tok["carol"], nil).list(t)); n != 1 {
		t.Fatalf("text search %d", n)
	}
	if n := len(e.api("GET", "/api/sn_sc/servicecatalog/items?sysparm_category="+seedID("sc_category:hardware"), tok["carol"], nil).list(t)); n != 2 {
		t.Fatalf("category %d", n)
	}
	item := seedID("sc_cat_item:item2") // New Mobile Phone
	got := e.api("GET", "/api/sn_sc/servicecatalog/items/"+item, tok["carol"], nil).one(t)
	vars := got["variables"].([]any)
	if len(vars) != 2 || vars[0].(map[string]any)["name"] != "model" || vars[0].(map[string]any)["mandatory"] != true || len(vars[0].(map[string]any)["choices"].([]any)) != 2 {
		t.Fatalf("variables %v", vars)
	}
	order := "/api/sn_sc/servicecatalog/items/" + item + "/order_now"
	assertEnvelope(t, e.api("POST", order, tok["carol"], map[string]any{"sysparm_quantity": "0", "variables": map[string]any{"model": "iphone"}}), 400, "Invalid quantity", "*")
	assertEnvelope(t, e.api("POST", order, tok["carol"], map[string]any{"sysparm_quantity": "1", "variables": map[string]any{}}), 400, "Mandatory Variables are required", "*")
	r := e.api("POST", order, tok["carol"], map[string]any{"sysparm_quantity": 2, "variables": map[string]any{"model": "android"}})
	if r.status != 200 {
		t.Fatalf("order %d %s", r.status, r.body)
	}
	res := r.one(t)
	if res["table"] != "sc_request" || !strings.HasPrefix(res["number"].(string), "REQ") || res["request_id"] != res["sys_id"] || res["request_number"] != res["number"] {
		t.Fatalf("order answer %v", res)
	}
	reqRec := e.api("GET", "/api/now/table/sc_request/"+res["sys_id"].(string), tok["carol"], nil).one(t)
	if reqRec["sys_created_by"] != "carol" {
		t.Fatalf("request %v", reqRec)
	}
	ritms := e.api("GET", "/api/now/table/sc_req_item?sysparm_query=request="+res["sys_id"].(string), tok["alice"], nil).list(t)
	if len(ritms) != 1 || ritms[0]["quantity"] != "2" || !strings.Contains(ritms[0]["variables"].(string), `"model":"android"`) || !strings.Contains(ritms[0]["variables"].(string), `"color":"black"`) {
		t.Fatalf("ritms %v", ritms)
	}
}

func TestFormatPrice(t *testing.T) {
	cases := []struct{ in, want string }{
		{"1100.00", "$1,100.00"},
		{"1100", "$1,100.00"},
		{"650", "$650.00"},
		{"0.00", "$0.00"},
		{"999.999", "$1,000.00"},
		{"1234567.5", "$1,234,567.50"},
		{"100000", "$100,000.00"},
		{"-1200", "-$1,200.00"},
		{"n/a", "n/a"},
	}
	for _, tc := range cases {
		if got := formatPrice(tc.in); got != tc.want {
			t.Errorf("formatPrice(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestCatalogFidelity checks what the catalog shows and refuses as
// ServiceNow does: choice labels, formatted prices, and an unknown
// requested_for refused instead of silently ordering for the caller.
func TestCatalogFidelity(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.userTokens("admin", "alice")
	laptop := seedID("sc_cat_item:item0")

	t.Run("item price and choice labels", func(t *testing.T) {
		got := e.api("GET", "/api/sn_sc/servicecatalog/items/"+laptop, tok["alice"], nil).one(t)
		if got["price"] != "$1,100.00" {
			t.Errorf("price %v", got["price"])
		}
		osVar := got["variables"].([]any)[0].(map[string]any)
		want := map[string]string{"windows": "Windows", "macos": "macOS", "linux": "Linux"}
		for _, ch := range osVar["choices"].([]any) {
			c := ch.(map[string]any)
			if want[c["value"].(string)] != c["label"] {
				t.Errorf("choice %v", c)
			}
		}
		if osVar["value"] != "windows" || osVar["displayvalue"] != "Windows" {
			t.Errorf("default value %v / display %v", osVar["value"], osVar["displayvalue"])
		}
		for _, it := range e.api("GET", "/api/sn_sc/servicecatalog/items?sysparm_text=laptop", tok["alice"], nil).list(t) {
			if it["price"] != "$1,100.00" {
				t.Errorf("list price %v", it["price"])
			}
		}
	})

	inactive := e.api("POST", "/api/now/table/sys_user", tok["admin"], map[string]any{"user_name": "gone", "active": false}).one(t)["sys_id"].(string)
	bob := seedID("sys_user:bob")
	cases := []struct {
		name, requestedFor string
		status             int
		wantFor            string
	}{
		{"no requested_for orders for the caller", "", 200, seedID("sys_user:alice")},
		{"a known user", bob, 200, bob},
		{"an unknown sys_id", strings.Repeat("ab", 16), 400, ""},
		{"a user name is not a sys_id", "bob", 400, ""},
		{"an inactive user", inactive, 400, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := map[string]any{"sysparm_quantity": 1}
			if tc.requestedFor != "" {
				body["sysparm_requested_for"] = tc.requestedFor
			}
			r := e.api("POST", "/api/sn_sc/servicecatalog/items/"+laptop+"/order_now", tok["alice"], body)
			if tc.status != 200 {
				assertEnvelope(t, r, tc.status, "Invalid requested_for", "No active user with sys_id "+tc.requestedFor)
				return
			}
			if r.status != 200 {
				t.Fatalf("order %d %s", r.status, r.body)
			}
			id := r.one(t)["sys_id"].(string)
			rec := e.api("GET", "/api/now/table/sc_request/"+id+"?sysparm_exclude_reference_link=true&sysparm_display_value=all", tok["alice"], nil).one(t)
			if rf := rec["requested_for"].(map[string]any); rf["value"] != tc.wantFor {
				t.Errorf("requested_for %v, want %s", rf, tc.wantFor)
			}
			if pr := rec["price"].(map[string]any); pr["value"] != "1100.00" || pr["display_value"] != "$1,100.00" {
				t.Errorf("price %v", pr)
			}
		})
	}
}

// TestAttachmentListPaging checks that the attachment list pages like the
// Table API: X-Total-Count and a first/prev/next/last Link header,
// honouring sysparm_no_count and sysparm_suppress_pagination_header.
func TestAttachmentListPaging(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.userTokens("alice")["alice"]
	inc := seedID("incident:inc1")
	for _, name := range []string{"a.txt", "b.txt", "c.txt"} {
		req, _ := http.NewRequest("POST", e.srv.URL+"/api/now/attachment/file?table_name=incident&table_sys_id="+inc+"&file_name="+name, strings.NewReader(name))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "text/plain")
		if r := e.do(req); r.status != 201 {
			t.Fatalf("upload %s: %d %s", name, r.status, r.body)
		}
	}
	query := "sysparm_query=" + url.QueryEscape("table_sys_id="+inc)
	cases := []struct {
		name, params string
		rows         int
		total        string   // "" means no X-Total-Count
		rels         []string // "" means no Link header; rel=offset
	}{
		{"one page", "", 3, "3", nil},
		{"first of two", "&sysparm_limit=2", 2, "3", []string{"first=0", "next=2", "last=2"}},
		{"second of two", "&sysparm_limit=2&sysparm_offset=2", 1, "3", []string{"first=0", "prev=0", "last=2"}},
		{"suppressed", "&sysparm_limit=2&sysparm_suppress_pagination_header=true", 2, "3", nil},
		{"no count", "&sysparm_limit=2&sysparm_no_count=true", 2, "", []string{"first=0", "next=2"}},
		{"no count, last page", "&sysparm_limit=2&sysparm_offset=2&sysparm_no_count=true", 1, "", []string{"first=0", "prev=0"}},
		{"neither", "&sysparm_limit=2&sysparm_no_count=true&sysparm_suppress_pagination_header=true", 2, "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.api("GET", "/api/now/attachment?"+query+tc.params, tok, nil)
			if n := len(r.list(t)); n != tc.rows {
				t.Fatalf("%d rows, want %d", n, tc.rows)
			}
			if got := r.header.Get("X-Total-Count"); got != tc.total {
				t.Errorf("X-Total-Count %q, want %q", got, tc.total)
			}
			link := r.header.Get("Link")
			if tc.rels == nil {
				if link != "" {
					t.Errorf("want no Link header, got %q", link)
				}
				return
			}
			if !strings.HasPrefix(link, "<"+e.srv.URL+"/api/now/attachment?") {
				t.Fatalf("Link %q", link)
			}
			got := parseLink(t, link)
			if len(got) != len(tc.rels) {
				t.Errorf("Link %q, want rels %v", link, tc.rels)
			}
			for _, want := range tc.rels {
				rel, off, _ := strings.Cut(want, "=")
				if got[rel] == nil || got[rel].Get("sysparm_offset") != off || got[rel].Get("sysparm_query") != "table_sys_id="+inc {
					t.Errorf("rel %s in %q, want offset %s and the query echoed", rel, link, off)
				}
			}
		})
	}
}

// TestAttachmentNotFoundEnvelope checks the 404s of the Attachment API:
// "No Record found" with the reason in detail, as the Table API answers.
func TestAttachmentNotFoundEnvelope(t *testing.T) {
	e := newEnv(t, Options{})
	tok := e.userTokens("alice")["alice"]
	missing := strings.Repeat("0", 32)
	cases := []struct{ method, path string }{
		{"GET", "/api/now/attachment/" + missing},
		{"GET", "/api/now/attachment/" + missing + "/file"},
		{"DELETE", "/api/now/attachment/" + missing},
		{"POST", "/api/now/attachment/file?table_name=incident&table_sys_id=" + missing + "&file_name=x.txt"},
		{"POST", "/api/now/attachment/file?table_name=no_table&table_sys_id=" + missing + "&file_name=x.txt"},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.srv.URL+tc.path, strings.NewReader("x"))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "text/plain")
			assertEnvelope(t, e.do(req), 404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
		})
	}
}
