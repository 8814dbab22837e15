package storage

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"
)

// seedAccounts writes n sealed accounts straight into a closed database
// with a batch writer, far faster than n durable PutAccount calls.
func seedAccounts(tb testing.TB, dir string, n int) {
	tb.Helper()
	db, err := badger.Open(badgerOptions(dir, zerolog.Nop()).WithSyncWrites(false))
	if err != nil {
		tb.Fatal(err)
	}
	seal, _ := newSealer(Keyring{Current: testKey(1)})
	wb := db.NewWriteBatch()
	for i := range n {
		a := testAccount("dev", userName(i), fmt.Sprint("token-", i))
		key := accountDBKey(a.Key())
		if err := wb.Set(key, seal.seal(key, encodeAccount(a))); err != nil {
			tb.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := db.Close(); err != nil {
		tb.Fatal(err)
	}
}

func userName(i int) string { return fmt.Sprintf("user%06d", i) }

// benchStores opens the owner of a seeded directory and a second store
// that reaches it over the socket, as a second process would.
func benchStores(b *testing.B, n int) (owner, client *DiskStore) {
	dir := b.TempDir()
	seedAccounts(b, dir, n)
	owner = openTest(b, dir, Keyring{Current: testKey(1)})
	if _, err := owner.GetAccount(context.Background(), AccountKey{"dev", userName(0)}); err != nil {
		b.Fatal(err)
	}
	client = openTest(b, dir, Keyring{Current: testKey(1)})
	if _, err := client.GetAccount(context.Background(), AccountKey{"dev", userName(0)}); err != nil {
		b.Fatal(err)
	}
	return owner, client
}

func BenchmarkGetAccount(b *testing.B) {
	for _, n := range []int{100, 100_000} {
		b.Run(fmt.Sprint("accounts=", n), func(b *testing.B) {
			owner, client := benchStores(b, n)
			for _, s := range []struct {
				name  string
				store *DiskStore
			}{{"owner", owner}, {"client", client}} {
				b.Run(s.name, func(b *testing.B) {
					ctx := context.Background()
					for b.Loop() {
						key := AccountKey{"dev", userName(rand.IntN(n))}
						if _, err := s.store.GetAccount(ctx, key); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}

func BenchmarkPutAccount(b *testing.B) {
	for _, n := range []int{100, 100_000} {
		b.Run(fmt.Sprint("accounts=", n), func(b *testing.B) {
			owner, client := benchStores(b, n)
			for _, s := range []struct {
				name  string
				store *DiskStore
			}{{"owner", owner}, {"client", client}} {
				b.Run(s.name, func(b *testing.B) {
					ctx := context.Background()
					for b.Loop() {
						i := rand.IntN(n)
						if err := s.store.PutAccount(ctx, testAccount("dev", userName(i), "new")); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}

// BenchmarkOpen reports how long Open takes to return and how long until
// the first GetAccount answers, with 10,000 accounts on disk.
func BenchmarkOpen(b *testing.B) {
	dir := b.TempDir()
	seedAccounts(b, dir, 10_000)
	ctx := context.Background()

	var opening, firstGet time.Duration
	for b.Loop() {
		start := time.Now()
		s, err := Open(ctx, Options{Dir: dir, Keys: Keyring{Current: testKey(1)}})
		if err != nil {
			b.Fatal(err)
		}
		opening += time.Since(start)
		if _, err := s.GetAccount(ctx, AccountKey{"dev", userName(42)}); err != nil {
			b.Fatal(err)
		}
		firstGet += time.Since(start)
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(opening.Microseconds())/float64(b.N), "µs-to-open")
	b.ReportMetric(float64(firstGet.Microseconds())/float64(b.N), "µs-to-first-get")
}

// TestDiskStaysBounded rewrites the tokens of 100 accounts 100,000 times
// and checks that the directory stays small, for opaque tokens and for
// JWT-sized ones. Every write is fsynced, so this runs only with
// STORAGE_LONG=1 (about two and a half minutes per size).
func TestDiskStaysBounded(t *testing.T) {
	if os.Getenv("STORAGE_LONG") == "" {
		t.Skip("set STORAGE_LONG=1 to rewrite tokens 100,000 times")
	}
	for _, tokenSize := range []int{40, 1500} {
		t.Run(fmt.Sprint("token bytes=", tokenSize), func(t *testing.T) {
			rewriteTokens(t, tokenSize, 100, 100_000)
		})
	}
}

func rewriteTokens(t *testing.T, tokenSize, accounts, rewrites int) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := Open(ctx, Options{Dir: dir, Keys: Keyring{Current: testKey(1)},
		GCInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	pad := strings.Repeat("x", tokenSize)
	start := time.Now()
	for i := range rewrites {
		token := fmt.Sprint(i, pad)[:tokenSize]
		if err := st.PutAccount(ctx, testAccount("dev", userName(i%accounts), token)); err != nil {
			t.Fatal(err)
		}
		if i%25_000 == 0 {
			t.Logf("after %6d rewrites: %s", i, diskUse(t, dir))
		}
	}
	t.Logf("%d rewrites in %v; at the end: %s", rewrites, time.Since(start), diskUse(t, dir))

	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	_, allocated := dirSize(t, dir)
	t.Logf("after close: %s", diskUse(t, dir))
	if allocated > 16<<20 {
		t.Fatalf("data directory holds %d MiB after rewrites of %d accounts", allocated>>20, accounts)
	}
}

func diskUse(t *testing.T, dir string) string {
	apparent, allocated := dirSize(t, dir)
	return fmt.Sprintf("%.1f MiB allocated, %.1f MiB apparent",
		float64(allocated)/(1<<20), float64(apparent)/(1<<20))
}

// dirSize sums file sizes and the blocks they occupy (Badger preallocates
// sparse files, so the two differ).
func dirSize(t *testing.T, dir string) (apparent, allocated int64) {
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		apparent += info.Size()
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			allocated += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return apparent, allocated
}
