package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// tryLockFile opens path (creating it 0600) and takes an exclusive flock
// without waiting. It returns nil, nil when another holder has it.
func tryLockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		return f, nil
	}
	f.Close()
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return nil, nil
	}
	return nil, fmt.Errorf("lock %s: %w", path, err)
}

// lockFile waits for an exclusive flock on path, polling with backoff
// until ctx ends. A flock cannot be interrupted; polling can.
func lockFile(ctx context.Context, path string) (*os.File, error) {
	delay := time.Millisecond
	for {
		f, err := tryLockFile(path)
		if f != nil || err != nil {
			return f, err
		}

		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-timer.C:
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// accountLocks serialises work on one account: goroutines of this process
// queue on an in-process semaphore, and the one that gets it takes the
// flock shared with other processes.
type accountLocks struct {
	dir string // <data dir>/locks

	mu    sync.Mutex
	byKey map[string]*keyLock
	files map[*os.File]struct{} // flocks held, released by closeAll
}

type keyLock struct {
	sem  chan struct{}
	refs int
}

func newAccountLocks(dir string) *accountLocks {
	return &accountLocks{dir: dir, byKey: map[string]*keyLock{}, files: map[*os.File]struct{}{}}
}

func (l *accountLocks) lock(ctx context.Context, key AccountKey) (func(), error) {
	sum := sha256.Sum256([]byte(key.Connection + "\x00" + key.User))
	name := hex.EncodeToString(sum[:])

	kl := l.ref(name)
	select {
	case kl.sem <- struct{}{}:
	case <-ctx.Done():
		l.unref(name)
		return nil, fmt.Errorf("lock account %s/%s: %w", key.Connection, key.User, ctx.Err())
	}

	f, err := lockFile(ctx, filepath.Join(l.dir, name+".lock"))
	if err != nil {
		<-kl.sem
		l.unref(name)
		return nil, fmt.Errorf("lock account %s/%s: %w", key.Connection, key.User, err)
	}
	l.mu.Lock()
	l.files[f] = struct{}{}
	l.mu.Unlock()

	var once sync.Once
	return func() {
		once.Do(func() {
			l.release(f)
			<-kl.sem
			l.unref(name)
		})
	}, nil
}

func (l *accountLocks) ref(name string) *keyLock {
	l.mu.Lock()
	defer l.mu.Unlock()
	kl := l.byKey[name]
	if kl == nil {
		kl = &keyLock{sem: make(chan struct{}, 1)}
		l.byKey[name] = kl
	}
	kl.refs++
	return kl
}

func (l *accountLocks) unref(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if kl := l.byKey[name]; kl != nil {
		if kl.refs--; kl.refs == 0 {
			delete(l.byKey, name)
		}
	}
}

// release drops one flock unless closeAll already did. The lock file
// stays: removing it would let two holders lock different inodes.
func (l *accountLocks) release(f *os.File) {
	l.mu.Lock()
	_, held := l.files[f]
	delete(l.files, f)
	l.mu.Unlock()
	if held {
		f.Close() // closing the last descriptor drops the flock
	}
}

// closeAll drops every flock still held, for Close.
func (l *accountLocks) closeAll() {
	l.mu.Lock()
	files := l.files
	l.files = map[*os.File]struct{}{}
	l.mu.Unlock()
	for f := range files {
		f.Close()
	}
}
