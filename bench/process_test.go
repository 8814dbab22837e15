package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"servicenow-mcp/storage"
)

// BenchmarkStartup (figure 5) times a stdio server from process start to
// its answer to initialize, sent the moment the process exists, as a
// desktop host does: with an empty store and with 10,000 linked
// accounts. Each iteration starts the process ten times.
func BenchmarkStartup(b *testing.B) {
	sb := sandbox(b)
	sizes := []int{0, 10_000}
	if short() {
		sizes = []int{0, 100}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("accounts=%d", n), func(b *testing.B) {
			in := newInstance(b, sb, fillerAccounts(sb, n), "")
			var lat samples
			for range b.N {
				for range 10 {
					srv := serveStdio(b, in, "filler-000001")
					if err := srv.stdio.initialize(); err != nil {
						b.Fatal(err)
					}
					lat.add(time.Since(srv.start))
					srv.close()
				}
			}
			b.ReportMetric(lat.quantile(0.5), "p50-ms-to-initialize")
			b.ReportMetric(lat.quantile(1), "max-ms-to-initialize")
		})
	}
}

// BenchmarkMemory (figure 6) reads the peak resident set (VmHWM) of the
// server process: idle over stdio and over HTTP, with 1,000 open
// streamable HTTP sessions, and while servicenow_request answers from a
// 20 MB ServiceNow response, which must be read only up to its cap.
func BenchmarkMemory(b *testing.B) {
	b.Run("idle", func(b *testing.B) {
		sb := sandbox(b)
		for range b.N {
			in := newInstance(b, sb, []*storage.Account{sb.grant(b, "alice", "alice")}, "")
			stdio := serveStdio(b, in, "alice")
			if err := stdio.stdio.initialize(); err != nil {
				b.Fatal(err)
			}
			if err := stdio.stdio.tool("servicenow_request", requestArgs); err != nil {
				b.Fatal(err)
			}
			time.Sleep(time.Second)
			b.ReportMetric(mib(peakRSS(b, stdio.pid())), "stdio-peak-MiB")
			stdio.close()

			srv := serveHTTP(b, newInstance(b, sb, []*storage.Account{sb.grant(b, "alice", "alice")}, ""))
			s, err := openSession(newHTTPClient(1), srv.base, "alice")
			if err != nil {
				b.Fatal(err)
			}
			if err := s.tool("servicenow_request", requestArgs); err != nil {
				b.Fatal(err)
			}
			time.Sleep(time.Second)
			b.ReportMetric(mib(peakRSS(b, srv.pid())), "http-peak-MiB")
			srv.close()
		}
	})

	b.Run("sessions=1000", func(b *testing.B) {
		sb := sandbox(b)
		n := 1000
		if short() {
			n = 50
		}
		for range b.N {
			srv := serveHTTP(b, newInstance(b, sb, nil, ""))
			client := newHTTPClient(16)
			var wg sync.WaitGroup
			errs := make(chan error, n)
			work := make(chan int)
			for range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range work {
						if _, err := openSession(client, srv.base, fmt.Sprintf("user%04d", i)); err != nil {
							errs <- err
						}
					}
				}()
			}
			for i := range n {
				work <- i
			}
			close(work)
			wg.Wait()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(mib(peakRSS(b, srv.pid())), "peak-MiB")
			b.ReportMetric(mib(rss(b, srv.pid())), "rss-MiB")
			srv.close()
		}
	})

	b.Run("response=20MB", func(b *testing.B) {
		// A sandbox of its own: the large articles would change what the
		// other benchmarks read.
		sb := startSandbox(b)
		defer stop(sb.cmd)
		size := fillKnowledge(b, sb, 20<<20)
		budget := 64 << 10
		for range b.N {
			srv := serveStdio(b, newInstance(b, sb, []*storage.Account{sb.grant(b, "admin", "admin")}, ""), "admin")
			if err := srv.stdio.initialize(); err != nil {
				b.Fatal(err)
			}
			if err := srv.stdio.tool("servicenow_request", requestArgs); err != nil {
				b.Fatal(err)
			}
			// The control: the same three calls with a small answer, so
			// that what the runtime adds to any call (GC pacing) is seen
			// apart from what the size of the response adds.
			added := func(args map[string]any) int64 {
				time.Sleep(200 * time.Millisecond)
				before := rss(b, srv.pid())
				resetPeak(b, srv.pid())
				for range 3 {
					if err := srv.stdio.tool("servicenow_request", args); err != nil {
						b.Fatal(err)
					}
				}
				return peakRSS(b, srv.pid()) - before
			}
			small := added(requestArgs)
			big := added(bigRequest)
			peak := peakRSS(b, srv.pid())
			b.ReportMetric(mib(size), "response-MiB")
			b.ReportMetric(mib(peak), "peak-MiB")
			b.ReportMetric(mib(big), "added-peak-MiB")
			b.ReportMetric(mib(small), "control-added-peak-MiB")
			b.ReportMetric(float64(big)/float64(budget), "added-peak-budgets")
			srv.close()
		}
	})
}

// bigRequest asks for every article with its whole text.
var bigRequest = map[string]any{"method": "GET", "path": "/api/now/table/kb_knowledge",
	"query": map[string]any{"sysparm_limit": "10000", "sysparm_fields": "number,short_description,text"}}

// fillKnowledge adds articles of 64,000 characters until the answer to
// bigRequest holds at least size bytes, and returns its size.
func fillKnowledge(b *testing.B, sb *sandboxProc, size int) int64 {
	admin := sb.grant(b, "admin", "admin").AccessToken
	text := strings.Repeat("All work and no play makes a large answer. ", 64000/43)
	client := &http.Client{Timeout: 30 * time.Second}
	for i := range size/len(text) + 1 {
		body, _ := json.Marshal(map[string]string{"short_description": fmt.Sprint("Large article ", i), "text": text})
		req, _ := http.NewRequest(http.MethodPost, sb.URL+"/api/now/table/kb_knowledge", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+admin)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			b.Fatalf("create article: HTTP %d", resp.StatusCode)
		}
	}
	q := bigRequest["query"].(map[string]any)
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/api/now/table/kb_knowledge?sysparm_limit=%s&sysparm_fields=%s",
		sb.URL, q["sysparm_limit"], q["sysparm_fields"]), nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	n, _ := io.Copy(io.Discard, resp.Body)
	if n < int64(size) {
		b.Fatalf("the sandbox answered %d bytes, want at least %d", n, size)
	}
	return n
}
