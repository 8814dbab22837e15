package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// Options configure Open.
type Options struct {
	// Dir is the data directory, created 0700 when absent.
	Dir string
	// Keys seal and open records.
	Keys   Keyring
	Logger zerolog.Logger
	// Now is the clock for expiry checks; nil means time.Now.
	Now func() time.Time
	// GCInterval is how often the owning process runs value-log GC;
	// zero means every five minutes.
	GCInterval time.Duration
}

// DiskStore is the Store that Open returns. One process using a data
// directory owns its Badger database and serves it on a unix socket;
// the others reach it through that socket, and take over when it goes.
type DiskStore struct {
	dir     string
	socket  string
	seal    *sealer
	log     zerolog.Logger
	now     func() time.Time
	gcEvery time.Duration
	locks   *accountLocks

	closing chan struct{}
	workers sync.WaitGroup // connect attempts

	mu         sync.Mutex
	closed     bool
	cur        backend     // the working backend, nil until connected
	owner      *ownership  // set while this process owns the database
	connecting *connection // the attempt in progress, if any
}

// connection is one attempt to reach the database.
type connection struct {
	done chan struct{}
	err  error
}

// ownership is what the owning process holds.
type ownership struct {
	lock   *os.File // flock on owner.lock
	db     *localDB
	server *rpcServer
	socket string
}

// pendingGrace keeps a pending authorization in the database a while past
// its expiry; the application checks ExpiresAt itself.
const pendingGrace = 10 * time.Minute

var errClosed = errors.New("storage is closed")

var _ Store = (*DiskStore)(nil)

// Open opens the store in opts.Dir. It returns at once: the database opens
// in the background and the first operation waits for it.
func Open(ctx context.Context, opts Options) (Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("storage: no data directory configured")
	}
	seal, err := newSealer(opts.Keys)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("storage: data directory: %w", err)
	}
	if err := prepareDir(dir, opts.Logger); err != nil {
		return nil, err
	}
	// Processes reaching the directory through different symlinks must
	// still find the same socket.
	if dir, err = filepath.EvalSymlinks(dir); err != nil {
		return nil, fmt.Errorf("storage: data directory: %w", err)
	}
	socket, err := socketPath(dir)
	if err != nil {
		return nil, err
	}

	s := &DiskStore{
		dir:     dir,
		socket:  socket,
		seal:    seal,
		log:     opts.Logger,
		now:     opts.Now,
		gcEvery: opts.GCInterval,
		locks:   newAccountLocks(filepath.Join(dir, "locks")),
		closing: make(chan struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.gcEvery <= 0 {
		s.gcEvery = defaultGCInterval
	}

	s.mu.Lock()
	s.startConnectLocked() // start opening now; operations wait for it
	s.mu.Unlock()
	return s, nil
}

// prepareDir creates the data directory and its locks directory 0700, and
// takes group and world access away from an existing one.
func prepareDir(dir string, log zerolog.Logger) error {
	if err := os.MkdirAll(filepath.Join(dir, "locks"), 0o700); err != nil {
		return fmt.Errorf("storage: create data directory: %w", err)
	}
	info, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("storage: data directory: %w", err)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		log.Error().Str("dir", dir).Str("mode", fmt.Sprintf("%04o", perm)).
			Msg("data directory was open to group or others; setting it to 0700")
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("storage: data directory %s has mode %04o and cannot be "+
				"restricted (%v); run: chmod 700 %s", dir, perm, err, dir)
		}
	}
	return nil
}

// socketPath is <dir>/store.sock, or a path under the temporary directory
// when that is too long for a unix socket address.
func socketPath(dir string) (string, error) {
	path := filepath.Join(dir, "store.sock")
	if len(path) < 100 {
		return path, nil
	}

	sum := sha256.Sum256([]byte(dir))
	short := filepath.Join(os.TempDir(), fmt.Sprintf("servicenow-mcp-%d", os.Getuid()))
	if err := os.MkdirAll(short, 0o700); err != nil {
		return "", fmt.Errorf("storage: socket directory: %w", err)
	}
	info, err := os.Lstat(short)
	if err != nil {
		return "", fmt.Errorf("storage: socket directory: %w", err)
	}
	if st, ok := info.Sys().(*syscall.Stat_t); !ok || !info.IsDir() ||
		info.Mode().Perm() != 0o700 || int(st.Uid) != os.Getuid() {
		return "", fmt.Errorf("storage: socket directory %s must be our own directory "+
			"with mode 0700", short)
	}
	return filepath.Join(short, hex.EncodeToString(sum[:8])+".sock"), nil
}

// backend returns the working backend, connecting first when needed.
func (s *DiskStore) backend(ctx context.Context) (backend, error) {
	for {
		s.mu.Lock()
		switch {
		case s.closed:
			s.mu.Unlock()
			return nil, errClosed
		case s.cur != nil:
			b := s.cur
			s.mu.Unlock()
			return b, nil
		case s.connecting == nil:
			s.startConnectLocked()
		}
		c := s.connecting
		s.mu.Unlock()

		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if c.err != nil {
			return nil, c.err
		}
	}
}

func (s *DiskStore) startConnectLocked() {
	c := &connection{done: make(chan struct{})}
	s.connecting = c
	s.workers.Add(1)
	go s.connect(c)
}

// connect becomes the owner when no process is, and otherwise a client
// of the owner. It retries while the owner is starting or going away.
func (s *DiskStore) connect(c *connection) {
	defer s.workers.Done()

	delay := time.Millisecond
	for {
		b, own, err := s.tryConnect()
		if b != nil || err != nil {
			s.finishConnect(c, b, own, err)
			return
		}

		timer := time.NewTimer(delay)
		select {
		case <-s.closing:
			timer.Stop()
			s.finishConnect(c, nil, nil, errClosed)
			return
		case <-timer.C:
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// tryConnect makes one attempt; nil, nil, nil means "try again soon".
func (s *DiskStore) tryConnect() (backend, *ownership, error) {
	lock, err := tryLockFile(filepath.Join(s.dir, "owner.lock"))
	if err != nil {
		return nil, nil, fmt.Errorf("storage: %w", err)
	}
	if lock != nil {
		own, err := s.becomeOwner(lock)
		if err != nil {
			return nil, nil, err
		}
		return own.db, own, nil
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	client, err := dialRPC(ctx, s.socket)
	if err != nil {
		return nil, nil, nil // the owner is not listening yet, or just died
	}
	s.log.Debug().Str("dir", s.dir).Msg("storage: sharing the database of another process")
	return client, nil, nil
}

// becomeOwner starts the database and serves it to other processes.
func (s *DiskStore) becomeOwner(lock *os.File) (*ownership, error) {
	os.Remove(s.socket) // left behind by an owner that died
	ln, err := net.Listen("unix", s.socket)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("storage: listen on %s: %w", s.socket, err)
	}
	if err := os.Chmod(s.socket, 0o600); err != nil {
		ln.Close()
		lock.Close()
		return nil, fmt.Errorf("storage: restrict %s: %w", s.socket, err)
	}

	db := openLocalDB(s.dir, s.log, s.gcEvery)
	s.log.Debug().Str("dir", s.dir).Msg("storage: this process owns the database")
	return &ownership{lock: lock, db: db, server: serveRPC(ln, db), socket: s.socket}, nil
}

func (s *DiskStore) finishConnect(c *connection, b backend, own *ownership, err error) {
	s.mu.Lock()
	if s.closed && err == nil {
		err = errClosed
		defer closeBackend(b, own) // Close has already run: release what we got
	}
	if err == nil {
		s.cur, s.owner = b, own
	}
	c.err = err
	s.connecting = nil
	s.mu.Unlock()
	close(c.done)
}

func closeBackend(b backend, own *ownership) error {
	if own != nil {
		return own.close()
	}
	return b.close()
}

// close stops serving, closes the database, then gives up ownership:
// a successor can open Badger only once it is closed here.
func (o *ownership) close() error {
	o.server.close()
	err := o.db.close()
	os.Remove(o.socket)
	o.lock.Close()
	return err
}

// do runs op on the backend; when the owner went away it reconnects (and
// may become the owner) and runs op once more.
func (s *DiskStore) do(ctx context.Context, op func(backend) error) error {
	for attempt := 0; ; attempt++ {
		b, err := s.backend(ctx)
		if err != nil {
			return err
		}
		err = op(b)
		if !errors.Is(err, errUnavailable) {
			return err
		}
		s.drop(b)
		if attempt == 1 {
			return fmt.Errorf("storage: %w", err)
		}
		s.log.Warn().Str("dir", s.dir).Msg("storage: owner process went away; reconnecting")
	}
}

// drop forgets a backend that stopped working.
func (s *DiskStore) drop(b backend) {
	s.mu.Lock()
	stale := s.cur == b && s.owner == nil
	if stale {
		s.cur = nil
	}
	s.mu.Unlock()
	if stale {
		b.close()
	}
}

// Close stops the database or the connection to it and releases every
// lock this store holds. It is safe to call more than once.
func (s *DiskStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	b, own := s.cur, s.owner
	s.cur, s.owner = nil, nil
	s.mu.Unlock()

	s.workers.Wait()
	s.locks.closeAll()
	if b == nil {
		return nil
	}
	if err := closeBackend(b, own); err != nil {
		return fmt.Errorf("storage: close: %w", err)
	}
	return nil
}
