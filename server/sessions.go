package server

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"sync"

	mcpserver "github.com/mark3labs/mcp-go/server"
)

// errUnknownSession is what a session lookup fails with, whether the
// session never existed, has ended, or belongs to another principal: the
// caller cannot tell these apart, and in every case starts a new session.
var errUnknownSession = errors.New("unknown session")

// sessionBook records which principal owns each live MCP session, for
// both HTTP transports. A session id is a bearer of server-to-client
// traffic, so a request may only use a session its own principal opened.
// Ended sessions are forgotten: an unknown id and an ended one both get
// 404, which tells a client to start over.
type sessionBook struct {
	mu     sync.Mutex
	owners map[string]string // session id → principal.owner()
}

func newSessionBook() *sessionBook {
	return &sessionBook{owners: map[string]string{}}
}

// open mints a session id owned by owner.
func (b *sessionBook) open(owner string) string {
	id := "mcp-session-" + rand.Text()
	b.mu.Lock()
	b.owners[id] = owner
	b.mu.Unlock()
	return id
}

// owns reports whether id is a live session of owner.
func (b *sessionBook) owns(id, owner string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	have, ok := b.owners[id]
	return ok && have == owner
}

func (b *sessionBook) end(id string) {
	b.mu.Lock()
	delete(b.owners, id)
	b.mu.Unlock()
}

func (b *sessionBook) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.owners)
}

// ResolveSessionIdManager gives the streamable HTTP server a view of the
// book bound to the request's principal. mcp-go asks with a nil request
// when its idle sweeper or shutdown ends sessions; that view may end any.
func (b *sessionBook) ResolveSessionIdManager(r *http.Request) mcpserver.SessionIdManager {
	if r == nil {
		return boundSessions{book: b, any: true}
	}
	p, _ := principalFrom(r.Context())
	return boundSessions{book: b, owner: p.owner()}
}

// boundSessions implements mcp-go's SessionIdManager for one principal.
type boundSessions struct {
	book  *sessionBook
	owner string
	any   bool
}

func (s boundSessions) Generate() string { return s.book.open(s.owner) }

func (s boundSessions) Validate(id string) (isTerminated bool, err error) {
	if !s.book.owns(id, s.owner) {
		return false, errUnknownSession
	}
	return false, nil
}

func (s boundSessions) Terminate(id string) (isNotAllowed bool, err error) {
	if !s.any && !s.book.owns(id, s.owner) {
		// The HTTP layer answers 404 before this; refuse in case it did not.
		return true, nil
	}
	s.book.end(id)
	return false, nil
}

// inflight counts work that graceful shutdown waits for: streamable HTTP
// requests being served, and SSE requests whose response has not yet been
// written to their session's stream.
type inflight struct {
	mu        sync.Mutex
	n         int
	idle      chan struct{} // closed while n == 0
	bySession map[string]int
}

func newInflight() *inflight {
	idle := make(chan struct{})
	close(idle)
	return &inflight{idle: idle, bySession: map[string]int{}}
}

// add counts one more piece of work, for session when it is an SSE request.
func (f *inflight) add(session string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		f.idle = make(chan struct{})
	}
	f.n++
	if session != "" {
		f.bySession[session]++
	}
}

// done counts one piece of work finished. For a session, it ignores a
// response it did not count (a reply to an unparsed batch, say).
func (f *inflight) done(session string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if session != "" {
		if f.bySession[session] == 0 {
			return
		}
		f.bySession[session]--
		if f.bySession[session] == 0 {
			delete(f.bySession, session)
		}
	}
	f.release(1)
}

// dropSession forgets the work of a session whose stream has ended: its
// responses can no longer be delivered.
func (f *inflight) dropSession(session string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.bySession[session]
	delete(f.bySession, session)
	f.release(n)
}

func (f *inflight) release(n int) {
	if n == 0 {
		return
	}
	f.n -= n
	if f.n == 0 {
		close(f.idle)
	}
}

// wait returns when nothing is in flight, or with ctx's error.
func (f *inflight) wait(ctx context.Context) error {
	f.mu.Lock()
	idle := f.idle
	f.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *inflight) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}
