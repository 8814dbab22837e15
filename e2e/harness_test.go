package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	npmHint = "the end-to-end tests need node (20+) and the pinned MCP clients: run `npm ci --prefix e2e`"

	// sandboxClientID and sandboxSecret are the OAuth app the tests
	// register on the sandbox; the secret reaches the server only through
	// the environment, as the config example recommends.
	sandboxClientID = "e2e-client"
	sandboxSecret   = "e2e-secret-not-for-production"
	secretEnv       = "E2E_SERVICENOW_CLIENT_SECRET"

	// stepTimeout bounds one client step; a hang fails instead of stalling.
	stepTimeout = 30 * time.Second
)

var (
	binDir   string // removed by TestMain
	binOnce  sync.Once
	binPath  string
	binError error
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == guardCommand {
		// Not os.Exit: under -race it would first sleep a second for late
		// race reports, which the guard has none to give, and a client
		// closing the server would wait for it.
		syscall.Exit(runStdoutGuard(os.Args[2:]))
	}
	dir, err := os.MkdirTemp("", "servicenow-mcp-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// e2eDir is the directory of this package (go test runs in it).
func e2eDir(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

// requireClients skips the test, or fails it under CI, when node or the
// npm-installed clients are missing.
func requireClients(t *testing.T) {
	t.Helper()
	missing := ""
	if _, err := exec.LookPath("node"); err != nil {
		missing = "node is not on PATH"
	} else {
		for _, p := range []string{"@modelcontextprotocol/sdk", "@modelcontextprotocol/inspector"} {
			if _, err := os.Stat(filepath.Join(e2eDir(t), "node_modules", p, "package.json")); err != nil {
				missing = "e2e/node_modules/" + p + " is missing"
				break
			}
		}
	}
	if missing == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; %s", missing, npmHint)
	}
	t.Skipf("%s; %s", missing, npmHint)
}

// productBinary builds servicenow-mcp once per test run, with -race when
// the tests themselves run with -race.
func productBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binPath = filepath.Join(binDir, "servicenow-mcp")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, ".")
		cmd := exec.Command("go", args...)
		cmd.Dir = filepath.Dir(e2eDir(t))
		out, err := cmd.CombinedOutput()
		if err != nil {
			binError = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if binError != nil {
		t.Fatal(binError)
	}
	return binPath
}

// syncBuffer collects a child's output for the failure log.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// failOnRace fails the test when a -race build of the product reported a
// data race on its stderr.
func failOnRace(t *testing.T, name string, out *syncBuffer) {
	t.Helper()
	if s := out.String(); strings.Contains(s, "WARNING: DATA RACE") {
		t.Errorf("%s reported a data race:\n%s", name, s)
	}
}

// freeLoopbackAddr picks a port that is free now on 127.0.0.1.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// waitFor polls cond every 20 ms until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return json.Unmarshal(b, v)
}

// ---------- the sandbox instance ----------

// sandboxProc is a running "servicenow-mcp sandbox".
type sandboxProc struct {
	URL       string
	stateFile string
	cmd       *exec.Cmd
	stderr    *syncBuffer
	done      chan struct{}
}

type sandboxStats struct {
	TokenRequests   map[string]map[string]int64 `json:"token_requests"`
	APIRequests     int64                       `json:"api_requests"`
	APIByUser       map[string]int64            `json:"api_by_user"`
	RefreshesByUser map[string]int64            `json:"refreshes_by_user"`
	Authorizations  map[string]int64            `json:"authorizations"`
}

type sandboxUser struct {
	UserName string `json:"user_name"`
	Name     string `json:"name"`
	SysID    string `json:"sys_id"`
}

// sandboxToken is a token as the sandbox keeps it in its state file.
type sandboxToken struct {
	Value   string    `json:"value"`
	Kind    string    `json:"kind"`
	User    string    `json:"user"`
	Expires time.Time `json:"expires"`
}

// startSandbox runs the simulated instance on a free loopback port with
// our OAuth app and redirect URI registered, and waits for its address.
func startSandbox(t *testing.T, redirectURI string, extra ...string) *sandboxProc {
	t.Helper()
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "addr")
	sb := &sandboxProc{stateFile: filepath.Join(dir, "state.json"), stderr: &syncBuffer{}, done: make(chan struct{})}
	args := append([]string{"sandbox",
		"--listen", "127.0.0.1:0",
		"--addr-file", addrFile,
		"--state-file", sb.stateFile,
		"--client-id", sandboxClientID,
		"--client-secret", sandboxSecret,
		"--redirect-uri", redirectURI,
	}, extra...)
	sb.cmd = exec.Command(productBinary(t), args...)
	sb.cmd.Stdout = sb.stderr
	sb.cmd.Stderr = sb.stderr
	if err := sb.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = sb.cmd.Wait()
		close(sb.done)
	}()
	t.Cleanup(func() {
		sb.stop(t)
		failOnRace(t, "sandbox", sb.stderr)
		if t.Failed() {
			t.Logf("sandbox output:\n%s", sb.stderr.String())
		}
	})

	waitFor(t, "the sandbox address file", 20*time.Second, func() (bool, error) {
		select {
		case <-sb.done:
			t.Fatalf("sandbox exited early: %s", sb.stderr.String())
		default:
		}
		b, err := os.ReadFile(addrFile)
		if err != nil {
			return false, err
		}
		sb.URL = strings.TrimSpace(string(b))
		return sb.URL != "", nil
	})
	return sb
}

// stop ends the sandbox with SIGTERM, so that it saves its state file.
func (sb *sandboxProc) stop(t *testing.T) {
	select {
	case <-sb.done:
		return
	default:
	}
	_ = sb.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-sb.done:
	case <-time.After(10 * time.Second):
		t.Errorf("sandbox did not stop within 10s of SIGTERM; killing it")
		_ = sb.cmd.Process.Kill()
		<-sb.done
	}
}

func (sb *sandboxProc) stats(t *testing.T) sandboxStats {
	t.Helper()
	var st sandboxStats
	if err := getJSON(sb.URL+"/sandbox/stats", &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func (sb *sandboxProc) user(t *testing.T, name string) sandboxUser {
	t.Helper()
	var users []sandboxUser
	if err := getJSON(sb.URL+"/sandbox/users", &users); err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if u.UserName == name {
			return u
		}
	}
	t.Fatalf("sandbox has no user %q: %+v", name, users)
	return sandboxUser{}
}

// liveTokens reads the tokens the sandbox has saved to its state file.
// The file holds only live tokens and is written shortly after each grant,
// so callers poll it and remember what they saw.
func (sb *sandboxProc) liveTokens() ([]sandboxToken, error) {
	b, err := os.ReadFile(sb.stateFile)
	if err != nil {
		return nil, err
	}
	var snap struct {
		Tokens []sandboxToken `json:"tokens"`
	}
	if err := json.Unmarshal(b, &snap); err != nil {
		return nil, err
	}
	return snap.Tokens, nil
}

// refuses reports whether the sandbox API answers 401 to an access token.
func (sb *sandboxProc) refuses(accessToken string) (bool, error) {
	req, err := http.NewRequest(http.MethodGet, sb.URL+"/api/now/table/sys_user?sysparm_limit=1", nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusUnauthorized, nil
}

func (st sandboxStats) grants(grant, outcome string) int64 {
	return st.TokenRequests[grant][outcome]
}

// ---------- configuration ----------

// serverConfig is one servicenow-mcp configuration on disk, with its data
// directory and key file in separate directories.
type serverConfig struct {
	Path, DataDir, KeyFile, Listen string

	// APIKeys, when set, are the HTTP callers: key -> the user it acts for.
	APIKeys map[string]string
}

func (c serverConfig) redirectURI() string { return "http://" + c.Listen + "/oauth/callback" }

func newServerConfig(t *testing.T) serverConfig {
	t.Helper()
	return serverConfig{
		Path:    filepath.Join(t.TempDir(), "config.yaml"),
		DataDir: filepath.Join(t.TempDir(), "data"),
		KeyFile: filepath.Join(t.TempDir(), "encryption.key"),
		Listen:  freeLoopbackAddr(t),
	}
}

// write points the configuration at the sandbox. The access tokens of the
// tests live seconds, so the refresh margin is shortened to match.
func (c serverConfig) write(t *testing.T, instanceURL string) {
	t.Helper()
	keys := ""
	if len(c.APIKeys) > 0 {
		keys = "  api_keys:\n"
		i := 0
		for key, user := range c.APIKeys {
			sum := sha256.Sum256([]byte(key))
			keys += fmt.Sprintf("    - {name: key%d, hash: \"sha256:%x\", user: %s}\n", i, sum, user)
			i++
		}
	}
	yaml := fmt.Sprintf(`data_dir: %s
encryption_key_file: %s
user: e2e-user
log:
  level: debug
  format: json
server:
  listen: %s
%stimeouts:
  refresh_margin: 1s
connections:
  - name: sandbox
    instance_url: %s
    client_id: %s
    client_secret: ${%s}
    scopes: [useraccount]
    default: true
`, c.DataDir, c.KeyFile, c.Listen, keys, instanceURL, sandboxClientID, secretEnv)
	if err := os.WriteFile(c.Path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitHealthy waits until the callback listener of a server answers.
func (c serverConfig) waitHealthy(t *testing.T) {
	t.Helper()
	waitFor(t, "the callback listener's /healthz", 20*time.Second, func() (bool, error) {
		var h struct{ Status string }
		err := getJSON("http://"+c.Listen+"/healthz", &h)
		return err == nil && h.Status == "ok", err
	})
}

// ---------- the SDK client session ----------

// session is e2e/client.mjs driving one stdio server process; steps are
// sent one at a time so the test can act between them.
type session struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *syncBuffer
	done   chan struct{}
	closed bool
}

// stepResult is one line printed by client.mjs.
type stepResult struct {
	ID     any             `json:"id"`
	Op     string          `json:"op"`
	OK     bool            `json:"ok"`
	Error  string          `json:"error"`
	Result json.RawMessage `json:"result"`
}

// callResult is the result of a "call" step.
type callResult struct {
	IsError bool `json:"isError"`
	Content []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"content"`
	Parsed map[string]any `json:"parsed"`
}

func (c callResult) text() string {
	if len(c.Content) == 0 {
		return ""
	}
	return c.Content[0].Text
}

// startSession starts the SDK client, which spawns "servicenow-mcp serve"
// over stdio, under the stdout guard, and connects.
func startSession(t *testing.T, cfg serverConfig, extra ...string) *session {
	t.Helper()
	return startClient(t, append([]string{"stdio", "--"}, guardedServe(t, cfg, extra...)...)...)
}

// startClient starts client.mjs with args (options, transport, target)
// and waits for it to connect.
func startClient(t *testing.T, args ...string) *session {
	t.Helper()
	s := &session{t: t, lines: make(chan string, 16), stderr: &syncBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command("node", append([]string{"client.mjs"}, args...)...)
	s.cmd.Dir = e2eDir(t)
	s.cmd.Env = append(os.Environ(), secretEnv+"="+sandboxSecret)
	s.cmd.Stderr = s.stderr
	// Its own process group, so a failed test can stop node and the
	// server it spawned together.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var err error
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.close()
		failOnRace(t, "servicenow-mcp serve", s.stderr)
		if t.Failed() {
			t.Logf("client and server stderr:\n%s", s.stderr.String())
		}
	})

	connect := s.next()
	if !connect.OK || connect.Op != "connect" {
		t.Fatalf("client did not connect: %+v", connect)
	}
	return s
}

func (s *session) next() stepResult {
	s.t.Helper()
	select {
	case line, ok := <-s.lines:
		if !ok {
			s.t.Fatalf("client exited before answering; stderr:\n%s", s.stderr.String())
		}
		var r stepResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			s.t.Fatalf("client printed a line that is not JSON: %q", line)
		}
		return r
	case <-time.After(stepTimeout):
		s.t.Fatalf("no answer from the client within %s", stepTimeout)
	}
	return stepResult{}
}

// step sends one step and returns its result line.
func (s *session) step(step map[string]any) stepResult {
	s.t.Helper()
	s.send(step)
	return s.next()
}

// send sends one step without waiting for its result; next reads it.
func (s *session) send(step map[string]any) {
	s.t.Helper()
	b, err := json.Marshal(step)
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.stdin.Write(append(b, '\n')); err != nil {
		s.t.Fatalf("write step: %v", err)
	}
}

// call runs a tool and returns its result; a protocol error fails the test.
func (s *session) call(tool string, args map[string]any) callResult {
	s.t.Helper()
	r := s.step(map[string]any{"op": "call", "tool": tool, "args": args})
	if !r.OK {
		s.t.Fatalf("call %s %v: %s", tool, args, r.Error)
	}
	var c callResult
	if err := json.Unmarshal(r.Result, &c); err != nil {
		s.t.Fatal(err)
	}
	return c
}

// mustCall runs a tool and fails the test when it answers isError.
func (s *session) mustCall(tool string, args map[string]any) callResult {
	s.t.Helper()
	c := s.call(tool, args)
	if c.IsError {
		s.t.Fatalf("%s %v answered isError: %s", tool, args, c.text())
	}
	return c
}

// close ends the session the way a host does: close the client, which
// closes the server's stdin, and wait for both to exit.
func (s *session) close() {
	if s.closed {
		return
	}
	s.closed = true
	_ = s.stdin.Close()
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		s.t.Errorf("client and server did not exit within 15s of closing stdin; killing them")
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	if code := s.cmd.ProcessState.ExitCode(); code != 0 {
		s.t.Errorf("client exited with status %d", code)
	}
}

// ---------- the MCP Inspector CLI ----------

// inspector runs the MCP Inspector CLI (v2) once against a stdio server,
// under the stdout guard, and returns its stdout and exit status.
func inspector(t *testing.T, cfg serverConfig, args ...string) (stdout string, code int) {
	t.Helper()
	launcher := filepath.Join(e2eDir(t), "node_modules", "@modelcontextprotocol", "inspector",
		"clients", "launcher", "build", "index.js")
	full := append([]string{launcher, "--cli", "--format", "json", "-e", secretEnv + "=" + sandboxSecret}, args...)
	full = append(append(full, "--"), guardedServe(t, cfg)...)
	cmd := exec.Command("node", full...)
	cmd.Dir = t.TempDir()
	// The inspector keeps files under $HOME and would try a keychain.
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "MCP_INSPECTOR_SECRET_STORE=memory")
	var out bytes.Buffer
	errBuf := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = &out, errBuf
	if err := runBounded(t, cmd); err != nil {
		t.Fatalf("inspector %v: %v; stderr:\n%s", args, err, errBuf.String())
	}
	failOnRace(t, "servicenow-mcp serve (inspector)", errBuf)
	if t.Failed() {
		t.Logf("inspector %v stderr:\n%s", args, errBuf.String())
	}
	return out.String(), cmd.ProcessState.ExitCode()
}

// runClient runs client.mjs once with steps given on the command line and
// returns its output lines and exit status.
func runClient(t *testing.T, steps []map[string]any, args ...string) ([]stepResult, int) {
	t.Helper()
	b, err := json.Marshal(steps)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", append([]string{"client.mjs", "--steps", string(b)}, args...)...)
	cmd.Dir = e2eDir(t)
	var out bytes.Buffer
	errBuf := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = &out, errBuf
	if err := runBounded(t, cmd); err != nil {
		t.Fatalf("client %v: %v; stderr:\n%s", args, err, errBuf.String())
	}
	var results []stepResult
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r stepResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("client printed a line that is not JSON: %q", line)
		}
		results = append(results, r)
	}
	return results, cmd.ProcessState.ExitCode()
}

// runBounded runs cmd in its own process group, killing the group if it
// outlives stepTimeout. A non-zero exit status is not an error here.
func runBounded(t *testing.T, cmd *exec.Cmd) error {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(stepTimeout):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return fmt.Errorf("did not finish within %s", stepTimeout)
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return nil
	}
	return err
}

// ---------- the HTTP server ----------

// httpServer is "servicenow-mcp serve --transport http".
type httpServer struct {
	URL    string // http://host:port
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
}

func startHTTPServer(t *testing.T, cfg serverConfig) *httpServer {
	t.Helper()
	h := &httpServer{URL: "http://" + cfg.Listen, stderr: &syncBuffer{}, done: make(chan struct{})}
	h.cmd = exec.Command(productBinary(t), "serve", "--config", cfg.Path, "--transport", "http")
	h.cmd.Env = append(os.Environ(), secretEnv+"="+sandboxSecret)
	h.cmd.Stdout, h.cmd.Stderr = h.stderr, h.stderr
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = h.cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() {
		h.stop(t)
		failOnRace(t, "servicenow-mcp serve --transport http", h.stderr)
		if t.Failed() {
			t.Logf("HTTP server output:\n%s", h.stderr.String())
		}
	})
	waitFor(t, "the HTTP server's /healthz", 20*time.Second, func() (bool, error) {
		select {
		case <-h.done:
			t.Fatalf("HTTP server exited early: %s", h.stderr.String())
		default:
		}
		var st struct{ Status string }
		err := getJSON(h.URL+"/healthz", &st)
		return err == nil && st.Status == "ok", err
	})
	return h
}

// stop sends SIGTERM and wants a clean exit within the shutdown bound.
func (h *httpServer) stop(t *testing.T) {
	select {
	case <-h.done:
		return
	default:
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
		if code := h.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("HTTP server exited with status %d after SIGTERM", code)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("HTTP server did not stop within 15s of SIGTERM; killing it")
		_ = h.cmd.Process.Kill()
		<-h.done
	}
}
