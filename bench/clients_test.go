package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Lean MCP clients: a JSON-RPC line writer for stdio and plain HTTP posts
// for streamable HTTP. They do as little as possible, so that what is
// measured is the server and not a client library.

// protocolVersion is what desktop hosts and agent frameworks ask for.
const protocolVersion = "2025-06-18"

type rpcReply struct {
	ID     int64           `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// err is the reply's protocol error or, for a tool call, its isError.
func (r *rpcReply) err() error {
	if r.Error != nil {
		return fmt.Errorf("JSON-RPC error %d: %s", r.Error.Code, r.Error.Message)
	}
	if r.Result == nil {
		return errors.New("reply without result")
	}
	if bytes.Contains(r.Result, []byte(`"isError":true`)) {
		return fmt.Errorf("tool error: %.300s", r.Result)
	}
	return nil
}

func request(id int64, method string, params any) []byte {
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
	return b
}

func notification(method string) []byte {
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": method})
	return b
}

func initializeParams() map[string]any {
	return map[string]any{"protocolVersion": protocolVersion, "capabilities": map[string]any{},
		"clientInfo": map[string]any{"name": "bench", "version": "1"}}
}

func callParams(tool string, args any) map[string]any {
	return map[string]any{"name": tool, "arguments": args}
}

// ---------- stdio ----------

type stdioClient struct {
	in  io.WriteCloser
	wmu sync.Mutex
	ids atomic.Int64

	mu      sync.Mutex
	pending map[int64]chan *rpcReply
	dead    error
}

func newStdioClient(in io.WriteCloser, out io.Reader) *stdioClient {
	c := &stdioClient{in: in, pending: map[int64]chan *rpcReply{}}
	go c.read(out)
	return c
}

func (c *stdioClient) read(out io.Reader) {
	r := bufio.NewReaderSize(out, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			var rep rpcReply
			if json.Unmarshal(line, &rep) == nil && rep.ID != 0 {
				c.mu.Lock()
				ch := c.pending[rep.ID]
				delete(c.pending, rep.ID)
				c.mu.Unlock()
				if ch != nil {
					ch <- &rep
				}
			}
		}
		if err != nil {
			c.mu.Lock()
			c.dead = fmt.Errorf("server stdout closed: %w", err)
			for id, ch := range c.pending {
				close(ch)
				delete(c.pending, id)
			}
			c.mu.Unlock()
			return
		}
	}
}

// call sends one request and waits for its reply, at most timeout.
func (c *stdioClient) call(method string, params any, timeout time.Duration) (*rpcReply, error) {
	id := c.ids.Add(1)
	ch := make(chan *rpcReply, 1)
	c.mu.Lock()
	if c.dead != nil {
		c.mu.Unlock()
		return nil, c.dead
	}
	c.pending[id] = ch
	c.mu.Unlock()

	msg := append(request(id, method, params), '\n')
	c.wmu.Lock()
	_, err := c.in.Write(msg)
	c.wmu.Unlock()
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case rep, ok := <-ch:
		if !ok {
			return nil, errors.New("server stdout closed")
		}
		return rep, nil
	case <-t.C:
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return nil, fmt.Errorf("%s: no answer within %v", method, timeout)
	}
}

func (c *stdioClient) notify(method string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.in.Write(append(notification(method), '\n'))
	return err
}

// initialize runs the handshake.
func (c *stdioClient) initialize() error {
	rep, err := c.call("initialize", initializeParams(), 10*time.Second)
	if err != nil {
		return err
	}
	if rep.Error != nil {
		return rep.err()
	}
	return c.notify("notifications/initialized")
}

// tool calls a tool; a protocol error or an isError result is an error.
func (c *stdioClient) tool(name string, args any) error {
	rep, err := c.call("tools/call", callParams(name, args), 30*time.Second)
	if err != nil {
		return err
	}
	return rep.err()
}

// ---------- streamable HTTP ----------

// httpClient is shared by every session of a run; it keeps enough idle
// connections for all callers.
func newHTTPClient(conns int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = conns * 2
	t.MaxIdleConnsPerHost = conns * 2
	return &http.Client{Transport: t, Timeout: 60 * time.Second}
}

// httpSession is one MCP session on /mcp, acting for user through the
// gateway key.
type httpSession struct {
	client *http.Client
	url    string
	user   string
	id     string
	ids    atomic.Int64
}

func openSession(client *http.Client, base, user string) (*httpSession, error) {
	s := &httpSession{client: client, url: base + "/mcp", user: user}
	rep, hdr, err := s.post(request(s.ids.Add(1), "initialize", initializeParams()))
	if err != nil {
		return nil, err
	}
	if rep.Error != nil {
		return nil, rep.err()
	}
	s.id = hdr.Get("Mcp-Session-Id")
	if s.id == "" {
		return nil, errors.New("initialize answered without Mcp-Session-Id")
	}
	if _, _, err := s.post(notification("notifications/initialized")); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *httpSession) tool(name string, args any) error {
	rep, _, err := s.post(request(s.ids.Add(1), "tools/call", callParams(name, args)))
	if err != nil {
		return err
	}
	return rep.err()
}

// post sends one message. A notification gets 202 and no reply; a
// request gets JSON or a short SSE stream carrying the reply.
func (s *httpSession) post(msg []byte) (*rpcReply, http.Header, error) {
	req, err := http.NewRequest(http.MethodPost, s.url, bytes.NewReader(msg))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+gatewayKey)
	req.Header.Set("X-ServiceNow-MCP-User", s.user)
	if s.id != "" {
		req.Header.Set("Mcp-Session-Id", s.id)
		req.Header.Set("Mcp-Protocol-Version", protocolVersion)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode == http.StatusAccepted {
		return nil, resp.Header, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("POST /mcp: HTTP %d: %.200s", resp.StatusCode, body)
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		body = lastSSEData(body)
	}
	var rep rpcReply
	if err := json.Unmarshal(body, &rep); err != nil {
		return nil, nil, fmt.Errorf("decode reply: %w: %.200s", err, body)
	}
	return &rep, resp.Header, nil
}

// lastSSEData is the data of the last event of a stream: the reply comes
// after any notifications.
func lastSSEData(stream []byte) []byte {
	var last []byte
	for _, line := range bytes.Split(stream, []byte("\n")) {
		if d, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			last = bytes.TrimSpace(d)
		}
	}
	return last
}
