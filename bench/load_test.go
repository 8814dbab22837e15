package bench

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"servicenow-mcp/storage"
)

// linkedUsers links n end users (user00, user01, …) to the sandbox's itil
// users in turn, each with a grant of its own.
func linkedUsers(tb testing.TB, sb *sandboxProc, n int, expiry time.Time) ([]*storage.Account, []string) {
	tb.Helper()
	sn := []string{"alice", "bob", "dave"}
	accts := make([]*storage.Account, n)
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("user%02d", i)
		accts[i] = sb.grant(tb, names[i], sn[i%len(sn)])
		if !expiry.IsZero() {
			accts[i].Expiry = expiry
		}
	}
	return accts, names
}

// openSessions opens one session per caller, caller i acting for
// users[i%len(users)].
func openSessions(tb testing.TB, base string, callers int, users []string) []*httpSession {
	tb.Helper()
	client := newHTTPClient(callers)
	out := make([]*httpSession, callers)
	for i := range out {
		s, err := openSession(client, base, users[i%len(users)])
		if err != nil {
			tb.Fatalf("open session %d: %v", i, err)
		}
		out[i] = s
	}
	return out
}

// BenchmarkThroughput (figure 3) runs 100 callers over 10 users, each in
// its own streamable HTTP session, calling servicenow_request as fast as
// answers come back, against a sandbox that answers at once. It reports
// calls per second, failures, and the CPU each process spent per call:
// the server must cost less CPU per call than the instance it fronts, so
// that the instance, not the server, is the first to fill a core.
func BenchmarkThroughput(b *testing.B) {
	sb := sandbox(b)
	const callers, users = 100, 10
	calls := 6000
	if short() {
		calls = 200
	}
	accts, names := linkedUsers(b, sb, users, time.Time{})
	srv := serveHTTP(b, newInstance(b, sb, accts, ""))
	sessions := openSessions(b, srv.base, callers, names)
	for _, s := range sessions[:users] { // warm each user's token
		if err := s.tool("servicenow_request", requestArgs); err != nil {
			b.Fatal(err)
		}
	}

	sbCPU, srvCPU := cpuTime(b, sb.cmd.Process.Pid), cpuTime(b, srv.pid())
	var failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		var next atomic.Int64
		var wg sync.WaitGroup
		for _, s := range sessions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(calls) {
					if err := s.tool("servicenow_request", requestArgs); err != nil {
						if failed.Add(1) == 1 {
							b.Errorf("%s: %v", s.user, err)
						}
					}
				}
			}()
		}
		wg.Wait()
	}
	took := time.Since(start)
	b.StopTimer()

	n := float64(b.N * calls)
	srvUsed, sbUsed := cpuTime(b, srv.pid())-srvCPU, cpuTime(b, sb.cmd.Process.Pid)-sbCPU
	b.ReportMetric(n/took.Seconds(), "calls/s")
	b.ReportMetric(float64(failed.Load()), "failed-calls")
	b.ReportMetric(float64(srvUsed.Microseconds())/n, "server-cpu-µs/call")
	b.ReportMetric(float64(sbUsed.Microseconds())/n, "sandbox-cpu-µs/call")
	b.ReportMetric(srvUsed.Seconds()/took.Seconds(), "server-cores")
	b.ReportMetric(sbUsed.Seconds()/took.Seconds(), "sandbox-cores")
	if failed.Load() > 0 {
		b.Errorf("%d of %.0f calls failed", failed.Load(), n)
	}
}

// BenchmarkRefreshUnderLoad (figure 4) links 50 users whose stored access
// tokens all reach the refresh margin at the same instant, warms each
// user's token, waits for that instant, and then sends 500 calls at once
// (ten per user, each user in its own session). Exactly 50 refreshes
// must reach the sandbox and no call may fail.
func BenchmarkRefreshUnderLoad(b *testing.B) {
	sb := sandbox(b)
	users, perUser := 50, 10
	if short() {
		users, perUser = 5, 4
	}
	for range b.N {
		refreshUnderLoad(b, sb, users, perUser)
	}
}

func refreshUnderLoad(b *testing.B, sb *sandboxProc, users, perUser int) {
	b.StopTimer()
	const margin = time.Minute
	// Long enough for linking, starting and warming to fit before it.
	due := time.Now().Add(8 * time.Second)
	accts, names := linkedUsers(b, sb, users, due.Add(margin))
	srv := serveHTTP(b, newInstance(b, sb, accts, "timeouts:\n  refresh_margin: 1m\n"))
	defer srv.close()
	sessions := openSessions(b, srv.base, users, names)
	for _, s := range sessions {
		if err := s.tool("servicenow_request", requestArgs); err != nil {
			b.Fatal(err)
		}
	}
	if wait := time.Until(due); wait > 0 {
		time.Sleep(wait + 50*time.Millisecond)
	} else {
		b.Fatalf("setup took %v too long: the tokens came due before the load", -wait)
	}

	before := sb.refreshes(b)
	var lat samples
	var failed atomic.Int64
	var wg sync.WaitGroup
	gate := make(chan struct{})
	b.StartTimer()
	for _, s := range sessions {
		for range perUser {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				t0 := time.Now()
				if err := s.tool("servicenow_request", requestArgs); err != nil {
					if failed.Add(1) == 1 {
						b.Errorf("%s: %v", s.user, err)
					}
					return
				}
				lat.add(time.Since(t0))
			}()
		}
	}
	close(gate)
	wg.Wait()
	b.StopTimer()

	refreshes := sb.refreshes(b) - before
	b.ReportMetric(float64(refreshes), "refreshes")
	b.ReportMetric(float64(failed.Load()), "failed-calls")
	b.ReportMetric(lat.quantile(0.5), "p50-ms")
	b.ReportMetric(lat.quantile(0.99), "p99-ms")
	if refreshes != int64(users) || failed.Load() > 0 {
		b.Errorf("%d refreshes for %d users and %d failed calls; want exactly one refresh per user and none failed",
			refreshes, users, failed.Load())
	}
	b.StartTimer()
}
