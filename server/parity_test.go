package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"testing"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// TestTransportParity lists and calls the tools over stdio, SSE and
// streamable HTTP: one registry feeds every transport, so the lists are
// identical and a call gives the same answer for the same user.
func TestTransportParity(t *testing.T) {
	inst := newFakeInstance(t)
	app, srv := newTestServer(t, inst, nil)
	inst.link(t, app, "alice", false)

	clients := map[string]*client.Client{
		"stdio": stdioClient(t, app, "alice"),
		"sse":   connect(t, srv.URL, "sse", headersFor(aliceKey, "")),
		"http":  connect(t, srv.URL, "http", headersFor(aliceKey, "")),
	}

	var want []mcp.Tool
	for _, kind := range []string{"stdio", "sse", "http"} {
		res, err := clients[kind].ListTools(context.Background(), mcp.ListToolsRequest{})
		if err != nil {
			t.Fatalf("%s: tools/list: %v", kind, err)
		}
		if len(res.Tools) != len(app.Tools) {
			t.Errorf("%s lists %d tools, the registry selected %d", kind, len(res.Tools), len(app.Tools))
		}
		if want == nil {
			want = res.Tools
			continue
		}
		if !reflect.DeepEqual(toJSON(t, res.Tools), toJSON(t, want)) {
			t.Errorf("%s lists other tools than stdio", kind)
		}
	}

	incidents := map[string]any{"method": "GET", "path": "/api/now/table/incident", "query": map[string]any{"sysparm_limit": "1"}}
	var wantText string
	for _, kind := range []string{"stdio", "sse", "http"} {
		status, isError := callTool(t, clients[kind], "servicenow_connection_status", nil)
		if isError || userOf(t, status) != "alice" {
			t.Errorf("%s: connection status isError=%v %s", kind, isError, status)
		}
		text, isError := callTool(t, clients[kind], "servicenow_request", incidents)
		if isError {
			t.Errorf("%s: servicenow_request failed: %s", kind, text)
		}
		if wantText == "" {
			wantText = text
		} else if text != wantText {
			t.Errorf("%s answers\n%s\nstdio answers\n%s", kind, text, wantText)
		}
	}
}

// stdioClient serves app over in-memory pipes, as the stdio transport
// does for a desktop host, and returns an initialized client.
func stdioClient(t *testing.T, app *App, user string) *client.Client {
	t.Helper()
	toServer, fromClient := io.Pipe()
	toClient, fromServer := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- app.ServeStdio(ctx, toServer, fromServer, user)
		_ = fromServer.Close()
	}()

	c := client.NewClient(transport.NewIO(toClient, fromClient, nil),
		client.WithProtocolVersion(mcp.ProtocolVersion20250618))
	initialize(t, c)
	t.Cleanup(func() {
		_ = c.Close()
		cancel()
		_ = toServer.Close()
		if err := <-served; err != nil {
			t.Errorf("ServeStdio: %v", err)
		}
	})
	return c
}

func toJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
