package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"servicenow-mcp/storage"
)

// Lookup and write time at 100 and 100,000 accounts are the storage
// package's own benchmarks (BenchmarkGetAccount, BenchmarkPutAccount in
// storage/bench_test.go), which scripts/bench.sh runs beside these.

// BenchmarkStoreRewrites (figure 7, disk) rewrites the tokens of 100
// accounts 100,000 times through the store, 32 writers at once as under
// load, with JWT-sized (1.5 KB) access tokens, and reports the disk the
// data directory occupies at the end and after closing. Value-log GC runs
// every second here (every five minutes by default) so that it has run
// within the benchmark.
func BenchmarkStoreRewrites(b *testing.B) {
	rewrites := 100_000
	if short() {
		rewrites = 2_000
	}
	const accounts, writers = 100, 32
	for range b.N {
		dir := b.TempDir()
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		ctx := context.Background()
		st, err := storage.Open(ctx, storage.Options{Dir: dir, Keys: storage.Keyring{Current: key},
			Logger: zerolog.Nop(), GCInterval: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		pad := strings.Repeat("x", 1500)
		var next atomic.Int64
		var wg sync.WaitGroup
		var peak atomic.Int64
		start := time.Now()
		for range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1) - 1
					if i >= int64(rewrites) {
						return
					}
					now := time.Now()
					a := &storage.Account{Connection: connection, User: fmt.Sprintf("user%03d", i%accounts),
						Status: storage.StatusActive, AccessToken: fmt.Sprint(i, pad)[:1500], RefreshToken: fmt.Sprint("r", i),
						TokenType: "Bearer", Expiry: now.Add(30 * time.Minute), UpdatedAt: now}
					if err := st.PutAccount(ctx, a); err != nil {
						b.Error(err)
						return
					}
					if i%10_000 == 0 {
						if _, alloc := dirSize(b, dir); alloc > peak.Load() {
							peak.Store(alloc)
						}
					}
				}
			}()
		}
		wg.Wait()
		took := time.Since(start)
		_, atEnd := dirSize(b, dir)
		if err := st.Close(); err != nil {
			b.Fatal(err)
		}
		_, closed := dirSize(b, dir)
		b.ReportMetric(float64(took.Microseconds())/float64(rewrites), "µs/rewrite")
		b.ReportMetric(mib(max(peak.Load(), atEnd)), "peak-disk-MiB")
		b.ReportMetric(mib(atEnd), "disk-at-end-MiB")
		b.ReportMetric(mib(closed), "disk-closed-MiB")
	}
}

// dirSize sums the bytes the files of dir hold and the blocks they
// occupy (Badger preallocates sparse files, so the two differ).
func dirSize(tb testing.TB, dir string) (apparent, allocated int64) {
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed meanwhile by compaction or GC
		}
		apparent += info.Size()
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			allocated += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		tb.Logf("size of %s: %v", dir, err)
	}
	return apparent, allocated
}
