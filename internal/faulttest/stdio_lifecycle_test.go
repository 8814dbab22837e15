package faulttest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"servicenow-mcp/config"
	"servicenow-mcp/internal/testenv"
	"servicenow-mcp/sandbox"
)

// TestMain checks, after every test and its clean-ups, that no goroutine
// of the server, the store or a transport is left behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// stdioSession is the product serving stdio to a host over pipes.
type stdioSession struct {
	in     *io.PipeWriter
	lines  chan string
	done   chan struct{} // closed when ServeStdio has returned, err set
	err    error
	cancel context.CancelFunc
	ids    int
}

func startStdio(t *testing.T, e *testenv.Env) *stdioSession {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	s := &stdioSession{in: inW, lines: make(chan string, 64), done: make(chan struct{}), cancel: cancel}
	go func() {
		s.err = e.App.ServeStdio(ctx, inR, outW, "alice")
		outW.Close()
		close(s.done)
	}()
	go func() {
		sc := bufio.NewScanner(outR)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	t.Cleanup(func() {
		cancel()
		inW.Close()
		<-s.done
		outR.Close()
	})
	s.send(t, "initialize", map[string]any{"protocolVersion": "2025-06-18", "capabilities": map[string]any{},
		"clientInfo": map[string]any{"name": "lifecycle", "version": "0"}})
	s.reply(t)
	s.notify(t, "notifications/initialized", map[string]any{})
	return s
}

func (s *stdioSession) send(t *testing.T, method string, params any) int {
	t.Helper()
	s.ids++
	s.write(t, map[string]any{"jsonrpc": "2.0", "id": s.ids, "method": method, "params": params})
	return s.ids
}

func (s *stdioSession) notify(t *testing.T, method string, params any) {
	t.Helper()
	s.write(t, map[string]any{"jsonrpc": "2.0", "method": method, "params": params})
}

func (s *stdioSession) write(t *testing.T, msg any) {
	t.Helper()
	b, _ := json.Marshal(msg)
	if _, err := fmt.Fprintf(s.in, "%s\n", b); err != nil {
		t.Fatalf("write to the server: %v", err)
	}
}

func (s *stdioSession) reply(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-s.lines:
		if !ok {
			t.Fatal("the server closed stdout")
		}
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no answer from the server")
	}
	return ""
}

func hangingRead(s *stdioSession, t *testing.T) int {
	return s.send(t, "tools/call", map[string]any{"name": "servicenow_request", "arguments": map[string]any{
		"method": "GET", "path": "/api/now/table/incident", "query": map[string]any{"sysparm_limit": "1"},
	}})
}

func waitSignal[T any](t *testing.T, ch <-chan T, within time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(within):
		t.Fatalf("%s did not happen within %s", what, within)
	}
	var zero T
	return zero
}

func slowEnv(t *testing.T, shutdown time.Duration) (*testenv.Env, *instanceProxy) {
	e, proxy := newEnv(t, testenv.Options{Configure: func(c *config.Config) {
		c.Timeouts.ToolCall = 60 * time.Second
		c.Timeouts.Request = 60 * time.Second
		c.Timeouts.Shutdown = shutdown
	}})
	e.Sandbox.Server.SetFaults(sandbox.Faults{Hang: true, Scope: "api"})
	proxy.drain()
	return e, proxy
}

// Issue 5, point 5: notifications/cancelled from the host aborts the
// call's outbound request at once, though no time bound is near.
func TestStdioCancelAbortsOutboundRequest(t *testing.T) {
	e, proxy := slowEnv(t, 5*time.Second)
	s := startStdio(t, e)

	id := hangingRead(s, t)
	waitSignal(t, proxy.arrived, 10*time.Second, "the request reaching the instance")
	start := time.Now()
	s.notify(t, "notifications/cancelled", map[string]any{"requestId": id, "reason": "user pressed stop"})

	if err := waitSignal(t, proxy.ended, 2*time.Second, "the outbound request being aborted"); err == nil {
		t.Fatal("the outbound request ended without being aborted")
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the outbound request was aborted %s after the cancellation", took)
	}
}

// Issue 5, point 5 and point 9: shutdown with calls in flight completes
// within the shutdown bound, aborts their outbound requests, and leaves
// no goroutine behind.
func TestStdioShutdownWithCallsInFlight(t *testing.T) {
	e, proxy := slowEnv(t, 3*time.Second)
	s := startStdio(t, e)
	for range 3 {
		hangingRead(s, t)
	}
	for range 3 {
		waitSignal(t, proxy.arrived, 10*time.Second, "a request reaching the instance")
	}

	start := time.Now()
	s.cancel() // what SIGTERM does in main
	waitSignal(t, s.done, 5*time.Second, "ServeStdio returning")
	if s.err != nil {
		t.Fatalf("ServeStdio: %v", s.err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("shutdown took %s, bound 3s", took)
	}
	for range 3 {
		if err := waitSignal(t, proxy.ended, 2*time.Second, "an outbound request ending"); err == nil {
			t.Fatal("an outbound request outlived the shutdown")
		}
	}
}

// Issue 5, point 9: a stdio session that ends because the host closed
// stdin leaves no goroutine behind.
func TestStdioEndOfInputLeavesNoGoroutine(t *testing.T) {
	e, _ := newEnv(t, testenv.Options{})
	before := goleak.IgnoreCurrent()
	s := startStdio(t, e)
	s.send(t, "tools/list", map[string]any{})
	if r := s.reply(t); !strings.Contains(r, "servicenow_request") {
		t.Fatalf("tools/list: %.200s", r)
	}
	s.in.Close()
	waitSignal(t, s.done, 5*time.Second, "ServeStdio returning at end of input")
	if s.err != nil {
		t.Fatalf("ServeStdio: %v", s.err)
	}
	e.App.Client.HTTPClient().CloseIdleConnections()
	goleak.VerifyNone(t, before)
}
