package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// guardCommand makes the test binary a stdout guard (see runStdoutGuard)
// instead of running tests.
const guardCommand = "stdout-guard"

// guardedServe is the command line of a stdio server under the stdout
// guard, for a client to spawn. The SDK's stdio client hands a stdout line
// that is not JSON-RPC to onerror and carries on, and the Inspector does
// the same, so neither would notice one; the guard sees the raw bytes, and
// the test fails on any such line once the server has exited.
func guardedServe(t *testing.T, cfg serverConfig, extra ...string) []string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(t.TempDir(), "stdout-report")
	t.Cleanup(func() { checkStdoutReport(t, report) })
	args := []string{self, guardCommand, report, productBinary(t), "serve", "--config", cfg.Path}
	return append(args, extra...)
}

// checkStdoutReport fails the test for each stray line the guard wrote to
// report. It waits for the guard's "exit" line, which it writes once the
// server has exited and its stdout is drained.
func checkStdoutReport(t *testing.T, report string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var lines []string
	for {
		b, err := os.ReadFile(report)
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		if err == nil && strings.HasPrefix(lines[len(lines)-1], "exit ") {
			break
		}
		if time.Now().After(deadline) {
			if !t.Failed() {
				t.Errorf("the stdout guard of the stdio server did not finish within 10s (report: %q)", b)
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, line := range lines[:len(lines)-1] {
		t.Errorf("the stdio server wrote to stdout what is not a JSON-RPC message: %s", line)
	}
}

// runStdoutGuard runs "stdout-guard REPORT COMMAND [ARGS...]": COMMAND
// gets this process's stdin and stderr as they are, its stdout is passed
// through unchanged, and REPORT gets a line for each stdout line that is
// not one JSON-RPC message, then "exit STATUS". Signals are passed on, so
// a client stopping the guard stops the server the same way.
func runStdoutGuard(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: stdout-guard REPORT COMMAND [ARGS...]")
		return 2
	}
	report, err := os.OpenFile(args[0], os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stdout-guard:", err)
		return 2
	}
	defer report.Close()

	cmd := exec.Command(args[1], args[2:]...)
	cmd.Stdin, cmd.Stderr = os.Stdin, os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "stdout-guard:", err)
		return 2
	}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(report, "exit 127: start %s: %v\n", args[1], err)
		return 127
	}
	go func() {
		for sig := range signals {
			_ = cmd.Process.Signal(sig)
		}
	}()

	guardStdout(stdout, os.Stdout, report)
	status := exitStatus(cmd.Wait())
	fmt.Fprintf(report, "exit %d\n", status)
	return status
}

// guardStdout copies in to out line by line and reports each line that is
// not a JSON-RPC message, and an unterminated last line.
func guardStdout(in io.Reader, out, report io.Writer) {
	r := bufio.NewReaderSize(in, 64<<10)
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			_, _ = out.Write(line)
		}
		if len(line) > 0 && err != nil {
			fmt.Fprintf(report, "line %d has no newline: %s\n", n, excerpt(line))
		} else if len(line) > 0 {
			if problem := jsonRPCProblem(line[:len(line)-1]); problem != "" {
				fmt.Fprintf(report, "line %d %s: %s\n", n, problem, excerpt(line))
			}
		}
		if err != nil {
			return
		}
	}
}

// jsonRPCProblem says why line (without its newline) is not one JSON-RPC
// 2.0 request, notification or response, or returns "".
func jsonRPCProblem(line []byte) string {
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(line, &msg); err != nil {
		return "is not a JSON object"
	}
	if string(msg["jsonrpc"]) != `"2.0"` {
		return `has no "jsonrpc": "2.0"`
	}
	if method, ok := msg["method"]; ok {
		var name string
		if json.Unmarshal(method, &name) != nil || name == "" {
			return "has a method that is not a name"
		}
		return ""
	}
	_, hasResult := msg["result"]
	_, hasError := msg["error"]
	if _, ok := msg["id"]; !ok || hasResult == hasError {
		return "is neither a request nor a response"
	}
	return ""
}

func excerpt(b []byte) string {
	b = bytes.TrimRight(b, "\n")
	if len(b) > 200 {
		return fmt.Sprintf("%q…", b[:200])
	}
	return fmt.Sprintf("%q", b)
}

// exitStatus turns Wait's error into a shell-style status.
func exitStatus(err error) int {
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		if err != nil {
			return 1
		}
		return 0
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return exit.ExitCode()
}

// TestStdoutGuard checks the guard itself: what it passes through, what
// it reports, and the status it hands back.
func TestStdoutGuard(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		line string
		ok   bool
	}{
		{"request", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, true},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/message","params":{}}`, true},
		{"result", `{"jsonrpc":"2.0","id":"a","result":{}}`, true},
		{"error", `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}`, true},
		{"empty line", ``, false},
		{"log text", `servicenow-mcp starting`, false},
		{"JSON log line", `{"level":"info","message":"serving MCP"}`, false},
		{"JSON-RPC 1.0", `{"id":1,"result":{}}`, false},
		{"result and error", `{"jsonrpc":"2.0","id":1,"result":{},"error":{}}`, false},
		{"array", `[{"jsonrpc":"2.0","id":1,"result":{}}]`, false},
	}
	for _, tt := range tests {
		if got := jsonRPCProblem([]byte(tt.line)); (got == "") != tt.ok {
			t.Errorf("%s: jsonRPCProblem(%q) = %q, want ok=%v", tt.name, tt.line, got, tt.ok)
		}
	}

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(t.TempDir(), "report")
	script := `printf '{"jsonrpc":"2.0","id":1,"result":{}}\nstray\n{"jsonrpc":"2.0","method":"x"}\ntail'; exit 3`
	cmd := exec.Command(self, guardCommand, report, "sh", "-c", script)
	out, err := cmd.Output()
	if code := exitStatus(err); code != 3 {
		t.Errorf("guard exited %d, want the command's 3 (%v)", code, err)
	}
	if want := "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\nstray\n{\"jsonrpc\":\"2.0\",\"method\":\"x\"}\ntail"; string(out) != want {
		t.Errorf("guard changed stdout: got %q, want %q", out, want)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "line 2 ") ||
		!strings.HasPrefix(lines[1], "line 4 has no newline") || lines[2] != "exit 3" {
		t.Errorf("report: got %q, want line 2 and the unterminated line 4, then exit 3", lines)
	}
}
