package storage

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"sync"
	"time"

	"servicenow-mcp/storage/internal/wire"
)

// The owner process serves its database to the other processes on a unix
// socket with net/rpc. Only sealed bytes cross it.

// Methods and outcome codes of the wire protocol.
const (
	methodGet   = "get"
	methodWrite = "write"
	methodScan  = "scan"

	codeNotFound    = "not_found"
	codeConflict    = "conflict"
	codeForeignKey  = "foreign_key"
	codeUnavailable = "unavailable"
)

// rpcTimeout bounds one served call: a stuck owner must not hold a
// client's request forever.
const rpcTimeout = 30 * time.Second

// handler serves requests from db.
func handler(db backend) func(*wire.Request, *wire.Reply) error {
	return func(req *wire.Request, reply *wire.Reply) error {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()

		var err error
		switch req.Method {
		case methodGet:
			reply.Value, err = db.get(ctx, req.Key)
		case methodWrite:
			err = db.write(ctx, req.Ops)
		case methodScan:
			reply.Pairs, err = db.scan(ctx, req.Prefix, req.WithValues)
		default:
			return fmt.Errorf("unknown storage method %q", req.Method)
		}
		return fillReply(reply, err)
	}
}

func fillReply(reply *wire.Reply, err error) error {
	var foreign *foreignKeyError
	switch {
	case err == nil:
	case errors.Is(err, ErrNotFound):
		reply.Code = codeNotFound
	case errors.Is(err, errConflict):
		reply.Code = codeConflict
	case errors.As(err, &foreign):
		reply.Code, reply.ForeignKey = codeForeignKey, foreign.id
	case errors.Is(err, errUnavailable):
		reply.Code = codeUnavailable
	default:
		return err
	}
	return nil
}

func replyError(reply *wire.Reply) error {
	switch reply.Code {
	case "":
		return nil
	case codeNotFound:
		return ErrNotFound
	case codeConflict:
		return errConflict
	case codeForeignKey:
		return &foreignKeyError{id: reply.ForeignKey}
	default:
		return errUnavailable
	}
}

// rpcServer accepts connections until closed.
type rpcServer struct {
	ln    net.Listener
	srv   *rpc.Server
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func serveRPC(ln net.Listener, db backend) *rpcServer {
	s := &rpcServer{ln: ln, srv: rpc.NewServer(), conns: map[net.Conn]struct{}{}}
	// A valid receiver: registration cannot fail.
	_ = s.srv.RegisterName("Store", &wire.Service{Handle: handler(db)})

	s.wg.Add(1)
	go s.accept()
	return s
}

func (s *rpcServer) accept() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return // listener closed
		}
		s.mu.Lock()
		if s.conns == nil {
			s.mu.Unlock()
			conn.Close()
			return
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()

		go func() {
			defer s.wg.Done()
			s.srv.ServeConn(conn) // returns when conn closes, after replies are sent
			s.mu.Lock()
			delete(s.conns, conn)
			s.mu.Unlock()
		}()
	}
}

// close stops accepting, drops every client (they fail over) and waits
// for the served calls to finish.
func (s *rpcServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.conns = nil
	s.mu.Unlock()
	s.wg.Wait()
}

// rpcClient is the backend of a process that does not own the database.
type rpcClient struct{ c *rpc.Client }

func dialRPC(ctx context.Context, socket string) (*rpcClient, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	return &rpcClient{c: rpc.NewClient(conn)}, nil
}

// call runs one call; a broken connection becomes errUnavailable.
func (r *rpcClient) call(ctx context.Context, req *wire.Request) (*wire.Reply, error) {
	reply := new(wire.Reply)
	call := r.c.Go("Store.Call", req, reply, make(chan *rpc.Call, 1))
	select {
	case <-call.Done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	var served rpc.ServerError
	switch {
	case call.Error == nil:
		return reply, replyError(reply)
	case errors.As(call.Error, &served):
		return nil, errors.New(string(served))
	default:
		return nil, errUnavailable // connection lost: the owner went away
	}
}

func (r *rpcClient) get(ctx context.Context, key []byte) ([]byte, error) {
	reply, err := r.call(ctx, &wire.Request{Method: methodGet, Key: key})
	if err != nil {
		return nil, err
	}
	return reply.Value, nil
}

func (r *rpcClient) write(ctx context.Context, ops []writeOp) error {
	_, err := r.call(ctx, &wire.Request{Method: methodWrite, Ops: ops})
	return err
}

func (r *rpcClient) scan(ctx context.Context, prefix []byte, withValues bool) ([]pair, error) {
	reply, err := r.call(ctx, &wire.Request{Method: methodScan, Prefix: prefix, WithValues: withValues})
	if err != nil {
		return nil, err
	}
	return reply.Pairs, nil
}

func (r *rpcClient) close() error { return r.c.Close() }
