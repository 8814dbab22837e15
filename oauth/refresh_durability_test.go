package oauth_test

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"servicenow-mcp/config"
	"servicenow-mcp/oauth"
	"servicenow-mcp/sandbox"
	"servicenow-mcp/servicenow"
	"servicenow-mcp/storage"
)

// The multi-process tests re-run this test binary as a server process: it
// opens the shared data directory, builds a token manager and an instance
// client against the parent's sandbox, and obeys one-line commands.
const (
	childEnv     = "OAUTH_FAULT_CHILD"
	childDir     = "OAUTH_FAULT_DIR"
	childKey     = "OAUTH_FAULT_KEY"
	childURL     = "OAUTH_FAULT_SANDBOX"
	childClock   = "OAUTH_FAULT_CLOCK"
	childRedirec = "OAUTH_FAULT_REDIRECT"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

// runChild is a server process in miniature. Its clock starts at the
// time the parent names, so that it sees the stored access token expired.
func runChild() int {
	ctx := context.Background()
	base, err := time.Parse(time.RFC3339Nano, os.Getenv(childClock))
	if err != nil {
		fmt.Println("err clock:", err)
		return 1
	}
	start := time.Now()
	now := func() time.Time { return base.Add(time.Since(start)) }
	key, _ := hex.DecodeString(os.Getenv(childKey))

	st, err := storage.Open(ctx, storage.Options{Dir: os.Getenv(childDir), Keys: storage.Keyring{Current: key}, Logger: zerolog.Nop(), Now: now})
	if err != nil {
		fmt.Println("err open store:", err)
		return 1
	}
	defer st.Close()
	conns := []config.Connection{{Name: "sandbox", InstanceURL: os.Getenv(childURL), ClientID: "sandbox-client", ClientSecret: "sandbox-secret"}}
	mgr := oauth.NewManager(oauth.Options{
		Store: st, Connections: conns, RedirectURI: os.Getenv(childRedirec),
		RefreshMargin: time.Minute, HTTPClient: &http.Client{Timeout: 10 * time.Second},
		Logger: zerolog.Nop(), Now: now,
	})
	client, err := servicenow.NewClient(mgr, conns, 10*time.Second)
	if err != nil {
		fmt.Println("err client:", err)
		return 1
	}
	fmt.Println("ready")

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) != 2 || f[0] != "calls" {
			fmt.Println("err unknown command")
			continue
		}
		n, _ := strconv.Atoi(f[1])
		fmt.Println(concurrentCalls(ctx, client, n))
	}
	return 0
}

// concurrentCalls reads one incident as alice n times at once and says
// "ok" when every call got data.
func concurrentCalls(ctx context.Context, client *servicenow.Client, n int) string {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			resp, err := client.Do(ctx, key("alice"), servicenow.Request{
				Method: "GET", Path: "/api/now/table/incident", Query: url.Values{"sysparm_limit": {"1"}},
			})
			if err == nil && resp.Status != 200 {
				err = fmt.Errorf("HTTP %d", resp.Status)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return "err " + strings.ReplaceAll(err.Error(), "\n", " ")
		}
	}
	return "ok"
}

// serverProcess is a child seen from the test.
type serverProcess struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	once sync.Once
}

// startServerProcess starts a child whose clock reads clockAt.
func (e *env) startServerProcess(t *testing.T, clockAt time.Time) *serverProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		childEnv+"=1", childDir+"="+e.dir, childKey+"="+hex.EncodeToString(e.key),
		childURL+"="+e.sandbox.URL, childClock+"="+clockAt.Format(time.RFC3339Nano),
		childRedirec+"="+e.callback.URL+"/oauth/callback",
	)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProcess{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(p.kill)
	if line := p.read(t); line != "ready" {
		t.Fatalf("server process did not start: %s", line)
	}
	return p
}

func (p *serverProcess) send(t *testing.T, command string) {
	t.Helper()
	if _, err := fmt.Fprintln(p.in, command); err != nil {
		t.Fatalf("send %q: %v", command, err)
	}
}

func (p *serverProcess) read(t *testing.T) string {
	t.Helper()
	if !p.out.Scan() {
		t.Fatalf("server process ended without an answer (%v)", p.out.Err())
	}
	return p.out.Text()
}

// kill is SIGKILL: no deferred close, no flush, nothing.
func (p *serverProcess) kill() {
	p.once.Do(func() {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	})
}

// handOver closes the parent's store so that the data directory belongs
// to the server processes alone, as on a desktop with two hosts.
func (e *env) handOver(t *testing.T) {
	t.Helper()
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
}

// reopen opens the data directory again in the parent, after the
// server processes are gone.
func (e *env) reopen(t *testing.T) storage.Store {
	t.Helper()
	st, err := storage.Open(context.Background(), storage.Options{Dir: e.dir, Keys: storage.Keyring{Current: e.key}, Logger: zerolog.Nop(), Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// Issue 5, point 1: two server processes sharing one data directory, with
// rotating refresh tokens, refresh an expired token exactly once between
// them, and every one of fifty concurrent calls succeeds.
func TestTwoProcessesRefreshOnceWithRotation(t *testing.T) {
	e := newEnv(t, sandbox.Options{RotateRefresh: true})
	e.linkUser("alice")
	e.handOver(t)

	later := e.clock.Now().Add(time.Hour) // the stored access token is dead by then
	a := e.startServerProcess(t, later)
	b := e.startServerProcess(t, later)
	a.send(t, "calls 25")
	b.send(t, "calls 25")
	if got := a.read(t); got != "ok" {
		t.Errorf("process A: %s", got)
	}
	if got := b.read(t); got != "ok" {
		t.Errorf("process B: %s", got)
	}
	if n := e.tokenRequests("refresh_token", "ok"); n != 1 {
		t.Errorf("%d refreshes between two processes, want exactly 1", n)
	}
	if n := e.tokenRequests("refresh_token", "refused"); n != 0 {
		t.Errorf("%d refused refreshes: a rotated-out refresh token was reused", n)
	}
}

// Issue 5, point 2: a server killed with SIGKILL right after a refresh
// never loses the rotated refresh token. Each round starts a process whose
// clock is an hour later than the last, so it must refresh with what the
// previous, killed process stored; reuse of an older refresh token would
// be refused by the sandbox and revoke the whole family.
func TestSIGKILLAfterRefreshKeepsNewestRefreshToken(t *testing.T) {
	rounds := 15
	if testing.Short() {
		rounds = 4
	}
	e := newEnv(t, sandbox.Options{RotateRefresh: true})
	e.linkUser("alice")
	e.handOver(t)

	clockAt := e.clock.Now()
	for round := range rounds {
		clockAt = clockAt.Add(time.Hour)
		p := e.startServerProcess(t, clockAt)
		p.send(t, "calls 3")
		if got := p.read(t); got != "ok" {
			t.Fatalf("round %d: %s", round, got)
		}
		// Kill at a varying moment after the refresh answered, while the
		// process may still be busy with its next calls.
		p.send(t, "calls 3")
		time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		p.kill()
	}
	if n := e.tokenRequests("refresh_token", "refused"); n != 0 {
		t.Fatalf("%d refreshes refused: a killed process lost its rotated refresh token", n)
	}
	if n := e.tokenRequests("refresh_token", "ok"); n != int64(rounds) {
		t.Errorf("%d refreshes for %d rounds, want one per round", n, rounds)
	}

	// The data directory still holds a working refresh token.
	st := e.reopen(t)
	acct, err := st.GetAccount(context.Background(), key("alice"))
	if err != nil || acct.Status != storage.StatusActive {
		t.Fatalf("account after the kills: %+v %v", acct, err)
	}
	resp, err := http.PostForm(e.sandbox.URL+"/oauth_token.do", url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {acct.RefreshToken},
		"client_id": {"sandbox-client"}, "client_secret": {"sandbox-secret"},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the stored refresh token is not the newest: the token endpoint answered %d", resp.StatusCode)
	}
}
