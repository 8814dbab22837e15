package bench

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"servicenow-mcp/storage"
)

// The GET both tools send, as a tool call and as a direct call.
var (
	requestArgs = map[string]any{"method": "GET", "path": "/api/now/table/incident",
		"query": map[string]any{"sysparm_limit": "5"}}
	requestPath = "/api/now/table/incident?sysparm_limit=5"
	queryArgs   = map[string]any{"table": "incident", "limit": 5}
)

// caller sends one call of one kind and reports its error.
type caller func() error

// BenchmarkOverhead (figure 1) sends the same GET of five incidents
// straight to the sandbox with a plain Go HTTP client, and through
// servicenow_request and servicenow_query_records over stdio and over
// streamable HTTP, interleaved with 32 calls in flight, so that every
// kind of call sees the same machine at the same moment. Added latency
// is the tool call's quantile minus the direct call's.
//
// instance=50ms makes the sandbox answer the API as slowly as a real
// instance does (its delay fault), which is the condition of the
// target; instance=0ms answers at once, so that 32 calls in flight keep
// both cores busy and every call waits in line for CPU.
func BenchmarkOverhead(b *testing.B) {
	for _, delay := range []time.Duration{50 * time.Millisecond, 0} {
		b.Run(fmt.Sprintf("instance=%v", delay), func(b *testing.B) { overhead(b, delay) })
	}
}

func overhead(b *testing.B, delay time.Duration) {
	sb := sandbox(b)
	calls := 3000
	if delay > 0 {
		calls = 6000
	}
	if short() {
		calls = 120
	}
	const inFlight = 32

	direct := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * inFlight}, Timeout: 30 * time.Second}
	token := sb.grant(b, "direct", "alice").AccessToken
	queryPath := probeQueryPath(b, sb)
	get := func(path string) caller {
		return func() error { return directGET(direct, sb.URL+path, token) }
	}

	stdioSrv := serveStdio(b, newInstance(b, sb, []*storage.Account{sb.grant(b, "alice", "alice")}, ""), "alice")
	if err := stdioSrv.stdio.initialize(); err != nil {
		b.Fatal(err)
	}
	httpSrv := serveHTTP(b, newInstance(b, sb, []*storage.Account{sb.grant(b, "alice", "alice")}, ""))
	sess, err := openSession(newHTTPClient(inFlight), httpSrv.base, "alice")
	if err != nil {
		b.Fatal(err)
	}

	kinds := []struct {
		name string
		call caller
	}{
		{"direct-request", get(requestPath)},
		{"direct-query", get(queryPath)},
		{"request-stdio", func() error { return stdioSrv.stdio.tool("servicenow_request", requestArgs) }},
		{"request-http", func() error { return sess.tool("servicenow_request", requestArgs) }},
		{"query-stdio", func() error { return stdioSrv.stdio.tool("servicenow_query_records", queryArgs) }},
		{"query-http", func() error { return sess.tool("servicenow_query_records", queryArgs) }},
	}
	// Warm every path: connections, caches, tokens.
	for range 3 {
		for _, k := range kinds {
			if err := k.call(); err != nil {
				b.Fatalf("%s: %v", k.name, err)
			}
		}
	}

	sb.setFaults(b, fmt.Sprintf(`{"delay":"%v","scope":"api"}`, delay))
	defer sb.setFaults(b, `{}`)
	stdioCPU, httpCPU := cpuTime(b, stdioSrv.pid()), cpuTime(b, httpSrv.pid())
	lat := make([]samples, len(kinds))
	b.ResetTimer()
	for range b.N {
		var next, failed atomic.Int64
		var wg sync.WaitGroup
		for range inFlight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1) - 1
					if i >= int64(calls) {
						return
					}
					k := int(i) % len(kinds)
					t0 := time.Now()
					if err := kinds[k].call(); err != nil {
						if failed.Add(1) == 1 {
							b.Errorf("%s: %v", kinds[k].name, err)
						}
						continue
					}
					lat[k].add(time.Since(t0))
				}
			}()
		}
		wg.Wait()
		if failed.Load() > 0 {
			b.Fatalf("%d of %d calls failed", failed.Load(), calls)
		}
	}
	b.StopTimer()
	// Each server process serves two of the six kinds.
	perServer := float64(b.N*calls) * 2 / float64(len(kinds))
	b.ReportMetric(float64((cpuTime(b, stdioSrv.pid())-stdioCPU).Microseconds())/perServer, "stdio-server-cpu-µs/call")
	b.ReportMetric(float64((cpuTime(b, httpSrv.pid())-httpCPU).Microseconds())/perServer, "http-server-cpu-µs/call")

	by := map[string]*samples{}
	for i, k := range kinds {
		by[k.name] = &lat[i]
	}
	for _, tool := range []string{"request", "query"} {
		base := by["direct-"+tool]
		b.ReportMetric(base.quantile(0.5), "direct-"+tool+"-p50-ms")
		b.ReportMetric(base.quantile(0.99), "direct-"+tool+"-p99-ms")
		for _, tr := range []string{"stdio", "http"} {
			s := by[tool+"-"+tr]
			name := tool + "-" + tr
			b.ReportMetric(s.quantile(0.5)-base.quantile(0.5), name+"-added-p50-ms")
			b.ReportMetric(s.quantile(0.99)-base.quantile(0.99), name+"-added-p99-ms")
			b.ReportMetric(s.quantile(0.5)/base.quantile(0.5), name+"-ratio-p50")
		}
	}
}

func directGET(c *http.Client, u, token string) error {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("direct GET: HTTP %d", resp.StatusCode)
	}
	return nil
}

// probeQueryPath finds the GET that servicenow_query_records sends in
// steady state, by running it once through a recording proxy, so that
// the direct call asks the sandbox for exactly the same work.
func probeQueryPath(b *testing.B, sb *sandboxProc) string {
	target, _ := url.Parse(sb.URL)
	var mu sync.Mutex
	var last string
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") {
			mu.Lock()
			last = r.URL.RequestURI()
			mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()

	viaProxy := &sandboxProc{URL: proxy.URL, users: sb.users}
	acct := sb.grant(b, "alice", "alice")
	srv := serveStdio(b, newInstance(b, viaProxy, []*storage.Account{acct}, ""), "alice")
	defer srv.close()
	if err := srv.stdio.initialize(); err != nil {
		b.Fatal(err)
	}
	for range 2 { // the first call also reads the dictionary
		if err := srv.stdio.tool("servicenow_query_records", queryArgs); err != nil {
			b.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if last == "" {
		b.Fatal("servicenow_query_records sent no request")
	}
	return last
}
