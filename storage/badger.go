package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/rs/zerolog"
)

// Badger sizing for a few kilobytes per account rather than a database
// server: the whole store fits in a handful of small files.
const (
	memTableSize     = 2 << 20
	valueLogFileSize = 16 << 20
	// Records (a few KiB at most) stay in the LSM tree, where compaction
	// reclaims rewritten tokens promptly; measured with 1.5 KB tokens, a
	// 1 KiB threshold let the value log swing to 170 MiB between GC runs.
	valueThreshold = 64 << 10
	indexCacheSize = 4 << 20
	gcDiscardRatio = 0.5
)

// defaultGCInterval is how often the owner reclaims value-log space.
const defaultGCInterval = 5 * time.Minute

// localDB is the Badger database of the owner process. It opens in the
// background; operations wait until it is ready.
type localDB struct {
	ready chan struct{}
	db    *badger.DB
	err   error // open failure, set before ready closes

	mu     sync.RWMutex // held shared by operations, exclusively by close
	closed bool

	stopGC chan struct{}
	gcDone chan struct{}
}

// openLocalDB starts opening the database in dir and returns at once.
func openLocalDB(dir string, log zerolog.Logger, gcEvery time.Duration) *localDB {
	l := &localDB{ready: make(chan struct{}), stopGC: make(chan struct{}), gcDone: make(chan struct{})}
	go func() {
		defer close(l.gcDone)

		start := time.Now()
		removeEmptyLogs(dir, log)
		db, err := badger.Open(badgerOptions(dir, log))
		if err == nil {
			l.db = db
		}
		// On failure Badger may hand back a half-open database, whose Close
		// would panic: it is dropped, never used.
		l.err = err
		close(l.ready)
		if l.err != nil {
			log.Error().Err(l.err).Str("dir", dir).Msg("open storage database")
			return
		}
		log.Debug().Dur("took", time.Since(start)).Msg("storage database open")
		l.collectGarbage(log, gcEvery)
	}()
	return l
}

// removeEmptyLogs deletes zero-length memtable and value-log files. Badger
// creates such a file and sizes it at once; a process killed between the
// two leaves it empty, and Badger then refuses to open the directory
// ("Create a new file") although the file holds nothing.
func removeEmptyLogs(dir string, log zerolog.Logger) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasSuffix(name, ".mem") && !strings.HasSuffix(name, ".vlog") {
			continue
		}
		if info, err := e.Info(); err != nil || info.Size() != 0 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err == nil {
			log.Warn().Str("file", name).Msg("removed an empty storage file left by a process that stopped while creating it")
		}
	}
}

func badgerOptions(dir string, log zerolog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log: log.With().Str("component", "badger").Logger()}).
		WithSyncWrites(true).
		WithNumVersionsToKeep(1).
		WithMemTableSize(memTableSize).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithBaseTableSize(1 << 20).
		WithBaseLevelSize(4 << 20).
		WithValueLogFileSize(valueLogFileSize).
		WithValueThreshold(valueThreshold).
		WithBlockCacheSize(0).
		WithIndexCacheSize(indexCacheSize).
		WithCompression(options.None). // sealed bytes do not compress
		WithNumCompactors(2).
		WithCompactL0OnClose(true).
		WithMetricsEnabled(false)
}

// collectGarbage runs value-log GC every interval until close.
func (l *localDB) collectGarbage(log zerolog.Logger, every time.Duration) {
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		select {
		case <-l.stopGC:
			return
		case <-ticker.C:
		}
		l.runGC(log)
	}
}

// runGC rewrites value-log files while each rewrite frees enough space.
func (l *localDB) runGC(log zerolog.Logger) {
	for rewrites := 0; ; rewrites++ {
		select {
		case <-l.stopGC:
			return
		default:
		}
		err := l.db.RunValueLogGC(gcDiscardRatio)
		if err == nil {
			continue
		}
		if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
			log.Warn().Err(err).Msg("storage value-log GC")
		} else if rewrites > 0 {
			log.Debug().Int("rewrites", rewrites).Msg("storage value-log GC")
		}
		return
	}
}

// use waits for the database and holds it open until done is called.
func (l *localDB) use(ctx context.Context) (db *badger.DB, done func(), err error) {
	select {
	case <-l.ready:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	if l.err != nil {
		return nil, nil, fmt.Errorf("open storage database: %w", l.err)
	}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return nil, nil, errUnavailable
	}
	return l.db, l.mu.RUnlock, nil
}

func (l *localDB) get(ctx context.Context, key []byte) ([]byte, error) {
	db, done, err := l.use(ctx)
	if err != nil {
		return nil, err
	}
	defer done()

	var val []byte
	err = db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		val, err = item.ValueCopy(nil)
		return err
	})
	return val, badgerError(err)
}

func (l *localDB) write(ctx context.Context, ops []writeOp) error {
	db, done, err := l.use(ctx)
	if err != nil {
		return err
	}
	defer done()

	return badgerError(l.retryConflicts(db, func(txn *badger.Txn) error {
		for i := range ops {
			if err := applyOp(txn, &ops[i]); err != nil {
				return err
			}
		}
		return nil
	}))
}

func applyOp(txn *badger.Txn, op *writeOp) error {
	if op.IfSet || len(op.KnownKeyIDs) > 0 {
		var old []byte
		item, err := txn.Get(op.Key)
		exists := err == nil
		if exists {
			old, err = item.ValueCopy(nil)
		}
		if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if err := checkOverwrite(op, old, exists); err != nil {
			return err
		}
	}

	if op.Delete {
		return txn.Delete(op.Key)
	}
	entry := badger.NewEntry(op.Key, op.Value)
	if op.TTL > 0 {
		entry = entry.WithTTL(op.TTL)
	}
	return txn.SetEntry(entry)
}

func (l *localDB) scan(ctx context.Context, prefix []byte, withValues bool) ([]pair, error) {
	db, done, err := l.use(ctx)
	if err != nil {
		return nil, err
	}
	defer done()

	var pairs []pair
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{
			Prefix: prefix, PrefetchValues: withValues, PrefetchSize: 64,
		})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			p := pair{Key: it.Item().KeyCopy(nil)}
			if withValues {
				v, err := it.Item().ValueCopy(nil)
				if err != nil {
					return err
				}
				p.Value = v
			}
			pairs = append(pairs, p)
		}
		return nil
	})
	return pairs, badgerError(err)
}

// retryConflicts runs fn in an update transaction, again when a concurrent
// transaction conflicts with it: the next run reads the winner's write,
// so compare-and-swap conditions (single use) still hold.
func (l *localDB) retryConflicts(db *badger.DB, fn func(*badger.Txn) error) error {
	for attempt := 0; ; attempt++ {
		err := db.Update(fn)
		if !errors.Is(err, badger.ErrConflict) || attempt == 10 {
			return err
		}
	}
}

// close stops GC and closes the database once no operation uses it.
func (l *localDB) close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()

	close(l.stopGC)
	<-l.gcDone // also waits for a background open to finish
	if l.db == nil {
		return nil
	}
	return l.db.Close()
}

func badgerError(err error) error {
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return ErrNotFound
	case errors.Is(err, badger.ErrDBClosed):
		return errUnavailable
	}
	return err
}

// badgerLogger routes Badger's warnings and errors to zerolog. Badger's
// messages describe files and levels, never values.
type badgerLogger struct{ log zerolog.Logger }

func (b badgerLogger) Errorf(f string, v ...any) {
	b.log.Error().Msgf(trimNewline(f), v...)
}

func (b badgerLogger) Warningf(f string, v ...any) {
	b.log.Warn().Msgf(trimNewline(f), v...)
}

func (b badgerLogger) Infof(string, ...any)  {}
func (b badgerLogger) Debugf(string, ...any) {}

func trimNewline(s string) string {
	if n := len(s); n > 0 && s[n-1] == '\n' {
		return s[:n-1]
	}
	return s
}
