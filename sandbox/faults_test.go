package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func (e *env) putFaults(body string) resp {
	req, _ := http.NewRequest("PUT", e.srv.URL+"/sandbox/faults", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return e.do(req)
}

// tokenReq is a refresh request for the fault tests.
func (e *env) tokenReq(rt string) (*http.Response, []byte, error) {
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"sandbox-client"}, "client_secret": {"sandbox-secret"}}
	res, err := e.c.PostForm(e.srv.URL+"/oauth_token.do", form)
	if err != nil {
		return nil, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res, b, err
}

func TestAnsweringFaults(t *testing.T) {
	type check func(t *testing.T, r resp)
	html := func(status int, text string) check {
		return func(t *testing.T, r resp) {
			if r.status != status || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") || !strings.Contains(string(r.body), text) {
				t.Fatalf("got %d %q %s", r.status, r.header.Get("Content-Type"), r.body)
			}
		}
	}
	cases := []struct {
		name   string
		faults string
		want   check
	}{
		{"hibernate", `{"hibernate":true}`, html(200, "Instance Hibernating page")},
		{"502", `{"status":502}`, html(502, "Bad Gateway")},
		{"503", `{"status":503}`, html(503, "Service Unavailable")},
		{"500", `{"status":500}`, func(t *testing.T, r resp) { assertEnvelope(t, r, 500, "Internal server error", "*") }},
		{"429", `{"status":429,"retry_after":7}`, func(t *testing.T, r resp) {
			assertEnvelope(t, r, 429, "Rate limit exceeded", "Rate limit of 100 requests per hour for Table API exceeded")
			if r.header.Get("Retry-After") != "7" || r.header.Get("X-RateLimit-Limit") != "100" || r.header.Get("X-RateLimit-Rule") == "" ||
				r.header.Get("X-RateLimit-Reset") != "1773144007" {
				t.Fatalf("rate-limit headers %v", r.header)
			}
		}},
	}
	e := newEnv(t, Options{})
	at, rt := e.tokens("alice")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if r := e.putFaults(tc.faults); r.status != 200 {
				t.Fatalf("put faults %d %s", r.status, r.body)
			}
			defer e.sb.SetFaults(Faults{})
			tc.want(t, e.api("GET", "/api/now/table/incident?sysparm_limit=1", at, nil))
			tc.want(t, e.refresh(rt))
			if tc.name == "hibernate" {
				tc.want(t, e.get(e.authURL(nil)))
			}
			if r := e.get("/sandbox/faults"); r.status != 200 || !strings.Contains(string(r.body), `"scope"`) {
				t.Fatalf("admin endpoint must stay up: %d", r.status)
			}
		})
	}
	st := e.sb.Stats()
	if st.TokenRequests["refresh_token"]["fault"] != 5 || st.APIByStatus["502"] != 1 || st.APIByStatus["429"] != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestStatusFaultEnvelopes checks that an injected status answers with the
// envelope ServiceNow gives for it, not one generic message.
func TestStatusFaultEnvelopes(t *testing.T) {
	e := newEnv(t, Options{})
	at, rt := e.tokens("alice")
	inc := "/api/now/table/incident/" + seedID("incident:inc0")
	cases := []struct {
		status       int
		method, path string
		msg          string
		detail       any
	}{
		{400, "GET", "/api/now/table/incident", "Invalid table incident", nil},
		{400, "GET", "/api/now/v2/table/change_request/" + seedID("change_request:chg0"), "Invalid table change_request", nil},
		{400, "GET", "/api/now/stats/incident", "Requested URI does not represent any resource", nil},
		{401, "GET", "/api/now/table/incident", "User Not Authenticated", "Required to provide Auth information"},
		{403, "POST", "/api/now/table/incident", "Operation Failed", "ACL Exception Insert Failed due to security constraints"},
		{403, "PATCH", inc, "Operation Failed", "ACL Exception Update Failed due to security constraints"},
		{403, "PUT", inc, "Operation Failed", "ACL Exception Update Failed due to security constraints"},
		{403, "DELETE", inc, "Operation Failed", "ACL Exception Delete Failed due to security constraints"},
		{403, "GET", "/api/now/table/incident", "Insufficient rights to query records", "Field(s) present in the query do not have permission to be read"},
		{404, "GET", inc, "No Record found", "Record doesn't exist or ACL restricts the record retrieval"},
		{404, "GET", "/api/now/attachment/" + seedID("sys_attachment:att0"), "No Record found", "Record doesn't exist or ACL restricts the record retrieval"},
		{405, "GET", "/api/now/table/incident", "Method not Supported", "Method GET not supported for API"},
		{409, "GET", "/api/now/table/incident", "Conflict", nil},
		{500, "GET", "/api/now/table/incident", "Internal server error", "The sandbox injected this failure"},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.status, " ", tc.method, " ", tc.path), func(t *testing.T) {
			e.sb.SetFaults(Faults{Status: tc.status, Scope: "api"})
			defer e.sb.SetFaults(Faults{})
			var body any
			if tc.method != "GET" && tc.method != "DELETE" {
				body = map[string]any{"short_description": "x"}
			}
			assertEnvelope(t, e.api(tc.method, tc.path, at, body), tc.status, tc.msg, tc.detail)
		})
	}
	t.Run("401 on the token endpoint is OAuth's refusal", func(t *testing.T) {
		e.sb.SetFaults(Faults{Status: 401, Scope: "token"})
		defer e.sb.SetFaults(Faults{})
		assertRefused(t, e.refresh(rt))
	})
}

func TestFaultTargeting(t *testing.T) {
	e := newEnv(t, Options{})
	tok := map[string][2]string{}
	for _, u := range []string{"alice", "bob"} {
		a, r := e.tokens(u)
		tok[u] = [2]string{a, r}
	}
	apiStatus := func(u string) int {
		return e.api("GET", "/api/now/table/sys_user?sysparm_limit=1", tok[u][0], nil).status
	}

	e.sb.SetFaults(Faults{Status: 503, Count: 1})
	if apiStatus("alice") != 503 || apiStatus("alice") != 200 || e.sb.Faults().Status != 0 {
		t.Fatal("count=1 must fail exactly one request")
	}
	e.sb.SetFaults(Faults{Status: 500, Scope: "api"})
	if apiStatus("bob") != 500 || e.refresh(tok["bob"][1]).status != 200 {
		t.Fatal("scope api must spare the token endpoint")
	}
	e.sb.SetFaults(Faults{Status: 500, Scope: "token"})
	if apiStatus("bob") != 200 || e.refresh(tok["bob"][1]).status != 500 {
		t.Fatal("scope token must spare the API")
	}
	e.sb.SetFaults(Faults{Status: 502, User: "alice"})
	if apiStatus("alice") != 502 || apiStatus("bob") != 200 || e.refresh(tok["alice"][1]).status != 502 || e.refresh(tok["bob"][1]).status != 200 {
		t.Fatal("user targeting")
	}
	e.sb.SetFaults(Faults{Delay: Duration(40 * time.Millisecond), Scope: "api", Count: 1})
	start := time.Now()
	if apiStatus("bob") != 200 || time.Since(start) < 40*time.Millisecond {
		t.Fatal("delay")
	}
	e.sb.SetFaults(Faults{})

	// server-side revocation: the client still thinks its tokens are fine
	req, _ := http.NewRequest("POST", e.srv.URL+"/sandbox/revoke?user=alice", nil)
	if r := e.do(req); r.status != 200 || !strings.Contains(string(r.body), `"revoked":2`) {
		t.Fatalf("revoke user: %d %s", r.status, r.body)
	}
	if apiStatus("alice") != 401 || apiStatus("bob") != 200 {
		t.Fatal("revoke one user")
	}
	assertRefused(t, e.refresh(tok["alice"][1]))
	if r := e.putFaults(`{"revoke_all":true}`); r.status != 200 {
		t.Fatal(r.status)
	}
	if apiStatus("bob") != 401 {
		t.Fatal("revoke_all")
	}
	if r := e.putFaults(`{"bogus":1}`); r.status != 400 {
		t.Fatal("unknown fault field must be refused")
	}
	if r := e.putFaults(`{"token_endpoint":"explode"}`); r.status != 400 {
		t.Fatal("bad token_endpoint must be refused")
	}
}

func TestTokenSkew(t *testing.T) {
	e := newEnv(t, Options{})
	at, _ := e.tokens("alice")
	e.sb.SetFaults(Faults{TokenSkew: Duration(25 * time.Minute)})
	e.clk.Add(4 * time.Minute)
	if r := e.api("GET", "/api/now/table/sys_user?sysparm_limit=1", at, nil); r.status != 200 {
		t.Fatal("still inside the skewed lifetime")
	}
	e.clk.Add(2 * time.Minute)
	if r := e.api("GET", "/api/now/table/sys_user?sysparm_limit=1", at, nil); r.status != 401 {
		t.Fatal("token must die 25m early")
	}
	var f Faults
	if err := json.Unmarshal([]byte(`{"token_skew":"25m","delay":1.5}`), &f); err != nil || time.Duration(f.TokenSkew) != 25*time.Minute || time.Duration(f.Delay) != 1500*time.Millisecond {
		t.Fatalf("duration JSON: %v %+v", err, f)
	}
}

// TestClockOffset checks the clock_offset switch: the instance's Date
// header and sys_ timestamps move with it, and an offset raised while a
// token is out makes that token die earlier than its expires_in said.
func TestClockOffset(t *testing.T) {
	cases := []struct {
		name    string
		offset  time.Duration // set after the token was issued
		elapsed time.Duration // host time passed since issue
		want    int
	}{
		{"no offset, inside the lifetime", 0, 29 * time.Minute, 200},
		{"no offset, past the lifetime", 0, 31 * time.Minute, 401},
		{"instance 25m ahead, 4m later", 25 * time.Minute, 4 * time.Minute, 200},
		{"instance 25m ahead, 6m later", 25 * time.Minute, 6 * time.Minute, 401},
		{"instance 10m behind, 35m later", -10 * time.Minute, 35 * time.Minute, 200},
		{"instance 10m behind, 41m later", -10 * time.Minute, 41 * time.Minute, 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			at, _ := e.tokens("alice")
			body := fmt.Sprintf(`{"clock_offset":%q}`, tc.offset.String())
			if r := e.putFaults(body); r.status != 200 {
				t.Fatalf("put faults %d %s", r.status, r.body)
			}
			e.clk.Add(tc.elapsed)
			r := e.api("GET", "/api/now/table/sys_user?sysparm_limit=1", at, nil)
			if r.status != tc.want {
				t.Fatalf("API answered %d, want %d", r.status, tc.want)
			}
			instance := e.clk.Now().Add(tc.offset)
			if got := r.header.Get("Date"); got != instance.Format(http.TimeFormat) {
				t.Errorf("Date %q, want %q", got, instance.Format(http.TimeFormat))
			}
			if tc.want != 200 {
				return
			}
			rec := e.api("POST", "/api/now/table/incident", at, map[string]any{"short_description": "clock"}).one(t)
			if rec["sys_created_on"] != fmtTime(instance) || rec["opened_at"] != fmtTime(instance) {
				t.Errorf("sys_created_on %v opened_at %v, want %s", rec["sys_created_on"], rec["opened_at"], fmtTime(instance))
			}
		})
	}

	t.Run("a token issued under the offset lives its full lifetime", func(t *testing.T) {
		e := newEnv(t, Options{Faults: Faults{ClockOffset: Duration(time.Hour)}})
		at, _ := e.tokens("alice")
		e.clk.Add(29 * time.Minute)
		if r := e.api("GET", "/api/now/table/sys_user?sysparm_limit=1", at, nil); r.status != 200 {
			t.Fatalf("%d: a steady offset must not shorten tokens", r.status)
		}
	})

	t.Run("set by flag", func(t *testing.T) {
		addr := filepath.Join(t.TempDir(), "addr")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- Command(ctx, []string{"--listen", "127.0.0.1:0", "--addr-file", addr, "--clock-offset", "-90m"}, io.Discard, io.Discard)
		}()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
		var base string
		for i := 0; i < 200 && base == ""; i++ {
			if b, err := os.ReadFile(addr); err == nil {
				base = strings.TrimSpace(string(b))
			} else {
				time.Sleep(10 * time.Millisecond)
			}
		}
		res, err := http.Get(base + "/sandbox/faults")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if !strings.Contains(string(b), `"clock_offset":"-1h30m0s"`) {
			t.Fatalf("faults %s", b)
		}
		date, err := http.ParseTime(res.Header.Get("Date"))
		if d := time.Until(date) + 90*time.Minute; err != nil || d < -time.Minute || d > time.Minute {
			t.Fatalf("Date %q is not 90m behind the host", res.Header.Get("Date"))
		}
	})
}

func TestTokenEndpointFaults(t *testing.T) {
	e := newEnv(t, Options{})
	_, rt := e.tokens("alice")
	e.sb.SetFaults(Faults{TokenEndpoint: "close"})
	if _, _, err := e.tokenReq(rt); err == nil {
		t.Fatal("close: want a transport error")
	}
	e.sb.SetFaults(Faults{TokenEndpoint: "503"})
	if res, _, err := e.tokenReq(rt); err != nil || res.StatusCode != 503 {
		t.Fatal("503")
	}
	e.sb.SetFaults(Faults{TokenEndpoint: "html"})
	if res, b, err := e.tokenReq(rt); err != nil || res.StatusCode != 200 || !strings.Contains(string(b), "<html>") {
		t.Fatal("html")
	}
	e.sb.SetFaults(Faults{TokenEndpoint: "hang", Count: 1})
	c := &http.Client{Timeout: 150 * time.Millisecond}
	if _, err := c.PostForm(e.srv.URL+"/oauth_token.do", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}); err == nil {
		t.Fatal("hang: want a timeout")
	}
	if res, _, err := e.tokenReq(rt); err != nil || res.StatusCode != 200 {
		t.Fatal("token endpoint must recover after count")
	}
	e.sb.SetFaults(Faults{Truncate: true, Scope: "token", Count: 1})
	if _, b, err := e.tokenReq(rt); err == nil || json.Valid(b) {
		t.Fatalf("truncated token answer: err=%v body=%q", err, b)
	}
	if res, _, err := e.tokenReq(rt); err != nil || res.StatusCode != 200 {
		t.Fatal("token endpoint must recover after a truncated answer")
	}
	// the API is untouched by token endpoint faults
	e.sb.SetFaults(Faults{TokenEndpoint: "close"})
	if r := e.get("/api/now/table/incident"); r.status != 401 {
		t.Fatal(r.status)
	}
}

func TestTruncateAndHang(t *testing.T) {
	e := newEnv(t, Options{})
	at, _ := e.tokens("alice")
	e.sb.SetFaults(Faults{Truncate: true, Count: 1})
	req, _ := http.NewRequest("GET", e.srv.URL+"/api/now/table/incident", nil)
	req.Header.Set("Authorization", "Bearer "+at)
	res, err := e.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	cl := res.ContentLength
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) || int64(len(b)) >= cl || json.Valid(b) {
		t.Fatalf("truncate: err=%v len=%d declared=%d", err, len(b), cl)
	}
	// a hanging request gives up with the client ...
	e.sb.SetFaults(Faults{Hang: true, Count: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/api/now/table/incident", nil)
	req.Header.Set("Authorization", "Bearer "+at)
	if _, err := e.c.Do(req); err == nil {
		t.Fatal("hang: want an error")
	}
	// ... and ends when the sandbox closes.
	run, err := Start(context.Background(), "127.0.0.1:0", Options{Faults: Faults{Hang: true}})
	if err != nil {
		t.Fatal(err)
	}
	hanging := make(chan struct{})
	run.Server.onHang = func() { close(hanging) }
	done := make(chan error, 1)
	go func() {
		res, err := http.Get(run.URL + "/api/now/table/incident")
		if err == nil {
			res.Body.Close()
		}
		done <- err
	}()
	<-hanging
	run.Close()
	if err := <-done; err == nil {
		t.Fatal("closed sandbox must drop the hanging request")
	}
}

// TestDelayedRequestDroppedOnClose: a request waiting out its delay when
// the sandbox stops loses its connection; it never gets an empty 200 that
// a client would take for a write that worked.
func TestDelayedRequestDroppedOnClose(t *testing.T) {
	run, err := Start(context.Background(), "127.0.0.1:0", Options{Faults: Faults{Delay: Duration(time.Hour), Scope: "api"}})
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{})
	run.Server.onDelay = func() { close(waiting) }
	answered := make(chan int, 1) // the status, or 0 for a dropped connection
	go func() {
		req, _ := http.NewRequest(http.MethodPost, run.URL+"/api/now/table/incident", strings.NewReader(`{"short_description":"x"}`))
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth("alice", SeedPassword)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- 0
			return
		}
		res.Body.Close()
		answered <- res.StatusCode
	}()
	<-waiting
	run.Close()
	if status := <-answered; status != 0 {
		t.Fatalf("the stopping sandbox answered the delayed POST with %d, want a dropped connection", status)
	}
}

func TestAdminLoopbackOnly(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/sandbox/stats", 200},
		{"GET", "/sandbox/faults", 403},
		{"PUT", "/sandbox/faults", 403},
		{"POST", "/sandbox/revoke?user=alice", 403},
		{"POST", "/sandbox/stats/reset", 403},
	} {
		r := httptest.NewRequest(tc.method, tc.path, strings.NewReader(`{"hibernate":true}`))
		r.RemoteAddr = "10.1.2.3:4444"
		w := httptest.NewRecorder()
		sb.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Fatalf("%s %s from afar: %d", tc.method, tc.path, w.Code)
		}
	}
	if sb.Faults().Hibernate {
		t.Fatal("remote client changed faults")
	}
}

func TestStats(t *testing.T) {
	e := newEnv(t, Options{})
	at, rt := e.tokens("alice")
	e.refresh(rt)
	e.refresh("bogus")
	e.api("GET", "/api/now/table/incident?sysparm_limit=1", at, nil)
	e.api("GET", "/api/now/table/nope", at, nil)
	e.api("GET", "/api/now/table/incident", "bad", nil)
	r := e.get("/sandbox/stats")
	var st Stats
	if err := json.Unmarshal(r.body, &st); err != nil {
		t.Fatal(err)
	}
	if st.TokenRequests["authorization_code"]["ok"] != 1 || st.TokenRequests["refresh_token"]["ok"] != 1 || st.TokenRequests["refresh_token"]["refused"] != 1 ||
		st.APIRequests != 3 || st.APIByStatus["200"] != 1 || st.APIByStatus["400"] != 1 || st.APIByStatus["401"] != 1 ||
		st.APIByUser["alice"] != 2 || st.RefreshesByUser["alice"] != 1 || st.Authorizations["allow"] != 1 {
		t.Fatalf("stats %s", r.body)
	}
	req, _ := http.NewRequest("POST", e.srv.URL+"/sandbox/stats/reset", nil)
	e.do(req)
	if st := e.sb.Stats(); st.APIRequests != 0 || len(st.TokenRequests) != 0 {
		t.Fatalf("reset: %+v", st)
	}
}

func TestStateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	e := newEnv(t, Options{StateFile: path})
	at, rt := e.tokens("alice")
	id := e.api("POST", "/api/now/table/incident", at, map[string]any{"short_description": "persist me"}).one(t)["sys_id"].(string)
	if err := e.sb.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || !json.Valid(b) {
		t.Fatalf("state file: %v", err)
	}
	e2 := newEnv(t, Options{StateFile: path, Now: e.clk.Now})
	if rec := e2.api("GET", "/api/now/table/incident/"+id, at, nil); rec.status != 200 || rec.one(t)["short_description"] != "persist me" {
		t.Fatalf("record or token lost: %d", rec.status)
	}
	if r := e2.refresh(rt); r.status != 200 {
		t.Fatal("refresh token lost")
	}
	// numbering continues
	n := e2.api("POST", "/api/now/table/incident", at, map[string]any{"short_description": "next"}).one(t)["number"]
	if n == "" || n == e2.api("GET", "/api/now/table/incident/"+id, at, nil).one(t)["number"] {
		t.Fatal("number counter not restored")
	}
}

func TestCommand(t *testing.T) {
	var out bytes.Buffer
	if err := Command(context.Background(), []string{"--help"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "--rotate-refresh") && !strings.Contains(out.String(), "-rotate-refresh") {
		t.Fatalf("help: %v %s", err, out.String())
	}
	if err := Command(context.Background(), []string{"--token-endpoint", "boom"}, io.Discard, io.Discard); err == nil {
		t.Fatal("bad flag value accepted")
	}
	addr := filepath.Join(t.TempDir(), "addr")
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Command(ctx, []string{"--listen", "127.0.0.1:0", "--addr-file", addr, "--client-id", "cid", "--redirect-uri", testRedirect, "--no-knowledge-api", "--state-required=false"}, io.Discard, pw)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var log strings.Builder
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "carol") {
			break
		}
	}
	go io.Copy(io.Discard, pr)
	b, err := os.ReadFile(addr)
	if err != nil {
		t.Fatal(err)
	}
	base := strings.TrimSpace(string(b))
	if !strings.Contains(log.String(), base) || !strings.Contains(log.String(), "alice") {
		t.Fatalf("startup log: %s", log.String())
	}
	res, err := http.Get(base + "/oauth_auth.do?response_type=code&client_id=cid&redirect_uri=" + url.QueryEscape(testRedirect))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("authorize without state on a --state-required=false sandbox: %v", err)
	}
	res.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
