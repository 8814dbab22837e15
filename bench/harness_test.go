package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"servicenow-mcp/config"
	"servicenow-mcp/storage"
)

// The harness drives the built binary as child processes, the way hosts
// run it: one sandbox process (the instance) shared by the benchmarks,
// and a server process per measurement, on loopback only.

const (
	connection   = "sandbox"
	clientID     = "sandbox-client"
	clientSecret = "sandbox-secret"
	seedPassword = "sandbox"
	gatewayKey   = "bench-gateway-key"
)

var (
	binPath    string // the servicenow-mcp binary under test
	workDir    string // removed when the benchmarks end
	sandboxMu  sync.Mutex
	sharedSB   *sandboxProc
	processes  []*exec.Cmd
	processMu  sync.Mutex
	benchShort bool
)

func TestMain(m *testing.M) {
	code := run(m)
	os.Exit(code)
}

func run(m *testing.M) int {
	// go test ./... runs no benchmarks: no need for a binary then.
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		return m.Run()
	}
	var err error
	workDir, err = os.MkdirTemp("", "snmcp-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer os.RemoveAll(workDir)
	defer stopAll()

	binPath = filepath.Join(workDir, "servicenow-mcp")
	if p := os.Getenv("BENCH_BIN"); p != "" {
		binPath = p
	} else {
		build := exec.Command(goTool(), "build", "-o", binPath, "servicenow-mcp")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: build servicenow-mcp:", err)
			return 1
		}
	}
	return m.Run()
}

func goTool() string {
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return "go"
}

// short reports a brief run (go test -short): smaller counts, so that CI
// can check the benchmarks still work without spending minutes.
func short() bool { return testing.Short() }

// start runs the binary with args and remembers it so it is always
// stopped. Stderr goes to a log file in the work directory.
func start(tb testing.TB, name string, env []string, args ...string) *exec.Cmd {
	tb.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(cleanEnv(), env...)
	logf, err := os.Create(filepath.Join(workDir, fmt.Sprintf("%s-%d.log", name, time.Now().UnixNano())))
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = logf
	return cmd
}

// launch starts cmd and registers it for stopping.
func launch(tb testing.TB, cmd *exec.Cmd) {
	tb.Helper()
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", cmd.Path, err)
	}
	processMu.Lock()
	processes = append(processes, cmd)
	processMu.Unlock()
}

// stop ends a child process: SIGTERM, then SIGKILL after two seconds.
func stop(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil || cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	if f, ok := cmd.Stderr.(*os.File); ok {
		f.Close()
	}
}

func stopAll() {
	processMu.Lock()
	defer processMu.Unlock()
	for _, c := range processes {
		stop(c)
	}
	processes = nil
}

// cleanEnv keeps PATH and points HOME and XDG dirs into the work dir, so
// that no user config or key file is read.
func cleanEnv() []string {
	home := filepath.Join(workDir, "home")
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home,
		"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "XDG_DATA_HOME=" + filepath.Join(home, ".local/share"),
		"USER=bench", "SANDBOX_CLIENT_SECRET=" + clientSecret}
	// BENCH_SERVER_GO* variables reach the children as GO*, for trying
	// runtime settings (BENCH_SERVER_GOGC=200, BENCH_SERVER_GOMAXPROCS=1).
	for _, v := range []string{"GOGC", "GOMAXPROCS", "GODEBUG", "GOMEMLIMIT"} {
		if val, ok := os.LookupEnv("BENCH_SERVER_" + v); ok {
			env = append(env, v+"="+val)
		}
	}
	return env
}

// freeAddr picks a loopback port that is free right now.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// ---------- the sandbox process ----------

type sandboxProc struct {
	cmd *exec.Cmd
	URL string
	// users maps a seed user_name to its sys_id.
	users map[string]string
}

// sandbox returns the shared sandbox process, starting it on first use.
func sandbox(tb testing.TB) *sandboxProc {
	tb.Helper()
	sandboxMu.Lock()
	defer sandboxMu.Unlock()
	if sharedSB != nil {
		return sharedSB
	}
	sharedSB = startSandbox(tb)
	return sharedSB
}

func startSandbox(tb testing.TB, extra ...string) *sandboxProc {
	tb.Helper()
	addrFile := filepath.Join(workDir, fmt.Sprintf("sandbox-%d.url", time.Now().UnixNano()))
	args := append([]string{"sandbox", "--listen", "127.0.0.1:0", "--addr-file", addrFile}, extra...)
	cmd := start(tb, "sandbox", nil, args...)
	launch(tb, cmd)
	var base string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(addrFile); err == nil && len(bytes.TrimSpace(b)) > 0 {
			base = strings.TrimSpace(string(b))
			break
		}
	}
	if base == "" {
		tb.Fatal("sandbox did not start within 10s")
	}
	sb := &sandboxProc{cmd: cmd, URL: base, users: map[string]string{}}
	var users []struct {
		UserName string `json:"user_name"`
		SysID    string `json:"sys_id"`
	}
	if err := getJSON(base+"/sandbox/users", &users); err != nil {
		tb.Fatalf("sandbox users: %v", err)
	}
	for _, u := range users {
		sb.users[u.UserName] = u.SysID
	}
	return sb
}

// sandboxStats is the part of /sandbox/stats the benchmarks read.
type sandboxStats struct {
	TokenRequests map[string]map[string]int64 `json:"token_requests"`
	APIRequests   int64                       `json:"api_requests"`
	APIByStatus   map[string]int64            `json:"api_by_status"`
}

func (s *sandboxProc) stats(tb testing.TB) sandboxStats {
	tb.Helper()
	var st sandboxStats
	if err := getJSON(s.URL+"/sandbox/stats", &st); err != nil {
		tb.Fatalf("sandbox stats: %v", err)
	}
	return st
}

// setFaults replaces the sandbox's fault switches (see docs/SANDBOX.md).
func (s *sandboxProc) setFaults(tb testing.TB, doc string) {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodPut, s.URL+"/sandbox/faults", strings.NewReader(doc))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("set sandbox faults: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("set sandbox faults %s: HTTP %d", doc, resp.StatusCode)
	}
}

func (s *sandboxProc) refreshes(tb testing.TB) int64 {
	return s.stats(tb).TokenRequests["refresh_token"]["ok"]
}

// grant signs a seed user in with the password grant and returns an
// account ready for the store, as a completed link would leave it.
func (s *sandboxProc) grant(tb testing.TB, endUser, snUser string) *storage.Account {
	tb.Helper()
	form := url.Values{"grant_type": {"password"}, "username": {snUser}, "password": {seedPassword},
		"client_id": {clientID}, "client_secret": {clientSecret}}
	resp, err := http.PostForm(s.URL+"/oauth_token.do", form)
	if err != nil {
		tb.Fatalf("password grant: %v", err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		ExpiresIn    int64  `json:"expires_in"`
		Scope        string `json:"scope"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		tb.Fatalf("password grant for %s: HTTP %d, %v", snUser, resp.StatusCode, err)
	}
	now := time.Now()
	return &storage.Account{
		Connection: connection, User: endUser, Status: storage.StatusActive,
		AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenType: "Bearer", Scope: tok.Scope,
		Expiry: now.Add(time.Duration(tok.ExpiresIn) * time.Second), InstanceURL: s.URL,
		SNUserSysID: s.users[snUser], SNUserName: snUser, LinkedAt: now, UpdatedAt: now,
	}
}

func getJSON(u string, v any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", u, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// ---------- store and config ----------

// instance is one data directory and config file for a server process.
type instance struct {
	dir    string
	config string
	key    string // base64 encryption key, passed in the environment
	listen string
}

// newInstance writes a config for a server against sb. Accounts are
// written straight into the store before any server opens it.
func newInstance(tb testing.TB, sb *sandboxProc, accounts []*storage.Account, extraYAML string) *instance {
	tb.Helper()
	dir, err := os.MkdirTemp(workDir, "inst-")
	if err != nil {
		tb.Fatal(err)
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	in := &instance{dir: dir, key: base64.StdEncoding.EncodeToString(raw), listen: freeAddr(tb)}
	seedStore(tb, filepath.Join(dir, "data"), raw, accounts)

	cfg := fmt.Sprintf(`data_dir: %s
encryption_key: ${SERVICENOW_MCP_ENCRYPTION_KEY}
log:
  level: info
  format: json
server:
  listen: %s
  api_keys:
    - name: bench-gateway
      hash: %s
      gateway: true
connections:
  - name: %s
    instance_url: %s
    client_id: %s
    client_secret: ${SANDBOX_CLIENT_SECRET}
    default: true
%s`, filepath.Join(dir, "data"), in.listen, config.HashAPIKey(gatewayKey), connection, sb.URL, clientID, extraYAML)
	in.config = filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(in.config, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	return in
}

// seedStore writes accounts through the product's store, concurrently so
// that the durable writes share fsyncs.
func seedStore(tb testing.TB, dir string, key []byte, accounts []*storage.Account) {
	tb.Helper()
	ctx := context.Background()
	st, err := storage.Open(ctx, storage.Options{Dir: dir, Keys: storage.Keyring{Current: key}, Logger: zerolog.Nop()})
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	defer st.Close()
	work := make(chan *storage.Account)
	errs := make(chan error, 64)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for a := range work {
				if err := st.PutAccount(ctx, a); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for _, a := range accounts {
		work <- a
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		tb.Fatalf("seed store: %v", err)
	default:
	}
}

// fillerAccounts are n linked accounts that no call uses, to give the
// store its size.
func fillerAccounts(sb *sandboxProc, n int) []*storage.Account {
	now := time.Now()
	out := make([]*storage.Account, n)
	for i := range out {
		out[i] = &storage.Account{
			Connection: connection, User: fmt.Sprintf("filler-%06d", i), Status: storage.StatusActive,
			AccessToken: "filler-access-" + strconv.Itoa(i), RefreshToken: "filler-refresh-" + strconv.Itoa(i),
			TokenType: "Bearer", Expiry: now.Add(time.Hour), InstanceURL: sb.URL,
			SNUserSysID: strings.Repeat("0", 32), SNUserName: "filler", LinkedAt: now, UpdatedAt: now,
		}
	}
	return out
}

func (in *instance) env() []string {
	return []string{"SERVICENOW_MCP_ENCRYPTION_KEY=" + in.key}
}

// ---------- server processes ----------

// server is one running `servicenow-mcp serve`.
type server struct {
	cmd   *exec.Cmd
	start time.Time
	stdio *stdioClient // for --transport stdio
	base  string       // http://addr for --transport http
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) close() { stop(s.cmd) }

// serveStdio starts a stdio server for user; the caller initializes.
func serveStdio(tb testing.TB, in *instance, user string) *server {
	tb.Helper()
	cmd := start(tb, "serve-stdio", in.env(), "serve", "--config", in.config, "--user", user, "--transport", "stdio")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	s := &server{cmd: cmd, start: time.Now()}
	launch(tb, cmd)
	s.stdio = newStdioClient(stdin, stdout)
	tb.Cleanup(s.close)
	return s
}

// serveHTTP starts an HTTP server and waits until /healthz answers.
func serveHTTP(tb testing.TB, in *instance) *server {
	tb.Helper()
	cmd := start(tb, "serve-http", in.env(), "serve", "--config", in.config, "--transport", "http")
	s := &server{cmd: cmd, start: time.Now(), base: "http://" + in.listen}
	launch(tb, cmd)
	tb.Cleanup(s.close)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		resp, err := http.Get(s.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if cmd.ProcessState != nil {
			break
		}
	}
	tb.Fatalf("HTTP server did not answer /healthz within 10s (log in %s)", workDir)
	return nil
}

// ---------- /proc readings ----------

// cpuTime is the user+system CPU a process has used so far.
func cpuTime(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatalf("read stat: %v", err)
	}
	// Fields after the command name, which is in parentheses.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz
}

// peakRSS is VmHWM, the peak resident set, in bytes.
func peakRSS(tb testing.TB, pid int) int64 { return procStatus(tb, pid, "VmHWM:") }

// rss is VmRSS, the resident set now, in bytes.
func rss(tb testing.TB, pid int) int64 { return procStatus(tb, pid, "VmRSS:") }

func procStatus(tb testing.TB, pid int, field string) int64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatalf("read status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field) {
			kb, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return kb << 10
		}
	}
	tb.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// resetPeak clears VmHWM (writing 5 to clear_refs), so that a later
// reading shows the peak of one phase only.
func resetPeak(tb testing.TB, pid int) {
	tb.Helper()
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		tb.Logf("cannot reset the peak RSS of %d: %v", pid, err)
	}
}
