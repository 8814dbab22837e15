package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper())
	}
	goleak.VerifyTestMain(m)
}

func openTest(t testing.TB, dir string, keys Keyring) *DiskStore {
	t.Helper()
	s, err := Open(context.Background(), Options{Dir: dir, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.(*DiskStore)
}

func testAccount(conn, user, token string) *Account {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	return &Account{
		Connection: conn, User: user, Status: StatusActive,
		AccessToken: "at-" + token, RefreshToken: "rt-" + token, TokenType: "Bearer",
		Expiry: now.Add(time.Hour), InstanceURL: "https://dev1.service-now.com",
		SNUserSysID: "6816f79cc0a8016401c5a33be04be441", SNUserName: user,
		LinkedAt: now, RefreshedAt: now, UpdatedAt: now,
	}
}

func TestAccounts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTest(t, t.TempDir(), Keyring{Current: testKey(1)})

	alice, bob := testAccount("dev", "alice", "1"), testAccount("dev", "bob", "2")
	for _, a := range []*Account{alice, bob} {
		if err := s.PutAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
	}

	got, err := s.GetAccount(ctx, alice.Key())
	if err != nil || *got != *alice {
		t.Fatalf("GetAccount = %+v, %v", got, err)
	}
	if _, err := s.GetAccount(ctx, AccountKey{"dev", "carol"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent account: err = %v", err)
	}
	if _, err := s.GetAccount(ctx, AccountKey{"dev", ""}); err == nil {
		t.Fatal("empty user accepted")
	}

	list, errs, err := s.ListAccounts(ctx)
	if err != nil || len(list) != 2 || len(errs) != 0 {
		t.Fatalf("ListAccounts = %d accounts, %v, %v", len(list), errs, err)
	}

	if err := s.DeleteAccount(ctx, alice.Key()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAccount(ctx, alice.Key()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted account: err = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.GetAccount(ctx, bob.Key()); err == nil {
		t.Fatal("GetAccount after Close succeeded")
	}
}

func TestWrongKeyKeepsData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	alice := testAccount("dev", "alice", "1")

	right := openTest(t, dir, Keyring{Current: testKey(1)})
	if err := right.PutAccount(ctx, alice); err != nil {
		t.Fatal(err)
	}
	right.Close()

	wrong := openTest(t, dir, Keyring{Current: testKey(2)})
	if _, err := wrong.GetAccount(ctx, alice.Key()); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("GetAccount with wrong key: err = %v", err)
	}
	if err := wrong.PutAccount(ctx, testAccount("dev", "alice", "other")); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("PutAccount over a record of another key: err = %v", err)
	}
	_, errs, err := wrong.ListAccounts(ctx)
	if err != nil || !errors.Is(errs[alice.Key()], ErrWrongKey) {
		t.Fatalf("ListAccounts with wrong key: %v, %v", errs, err)
	}
	wrong.Close()

	again := openTest(t, dir, Keyring{Current: testKey(1)})
	if got, err := again.GetAccount(ctx, alice.Key()); err != nil || *got != *alice {
		t.Fatalf("after wrong key, GetAccount = %+v, %v", got, err)
	}
}

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	oldKey, newKey := testKey(1), testKey(2)
	alice, bob := testAccount("dev", "alice", "1"), testAccount("dev", "bob", "2")
	pending := testPending("state-1", "dev", "carol", time.Now(), time.Hour)

	old := openTest(t, dir, Keyring{Current: oldKey})
	for _, a := range []*Account{alice, bob} {
		if err := old.PutAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.PutPending(ctx, pending); err != nil {
		t.Fatal(err)
	}
	old.Close()

	// Both keys: old records open; a write re-seals with the new key.
	both := openTest(t, dir, Keyring{Current: newKey, Previous: [][]byte{oldKey}})
	if _, err := both.GetAccount(ctx, alice.Key()); err != nil {
		t.Fatalf("previous key: %v", err)
	}
	if err := both.PutAccount(ctx, alice); err != nil {
		t.Fatal(err)
	}
	both.Close()

	onlyNew := openTest(t, dir, Keyring{Current: newKey})
	if _, err := onlyNew.GetAccount(ctx, alice.Key()); err != nil {
		t.Fatalf("rewritten record with the new key alone: %v", err)
	}
	if _, err := onlyNew.GetAccount(ctx, bob.Key()); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("untouched record with the new key alone: err = %v", err)
	}
	onlyNew.Close()

	// Rekey rewrites the rest.
	both = openTest(t, dir, Keyring{Current: newKey, Previous: [][]byte{oldKey}})
	if n, err := both.Rekey(ctx); err != nil || n != 2 {
		t.Fatalf("Rekey = %d, %v; want 2 (bob and the pending record)", n, err)
	}
	both.Close()

	onlyNew = openTest(t, dir, Keyring{Current: newKey})
	if _, err := onlyNew.GetAccount(ctx, bob.Key()); err != nil {
		t.Fatalf("after Rekey: %v", err)
	}
	if _, err := onlyNew.TakePending(ctx, "state-1"); err != nil {
		t.Fatalf("pending after Rekey: %v", err)
	}
}

func TestNoPlainSecretsOnDisk(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, dir, Keyring{Current: testKey(1)})

	secrets := [][]byte{[]byte("at-SECRET-TOKEN-4242"), []byte("rt-SECRET-TOKEN-4242"),
		[]byte("VERIFIER-SECRET-7777"), []byte("STATE-SECRET-8888")}
	for i := range 50 {
		if err := s.PutAccount(ctx, testAccount("dev", fmt.Sprint("user", i), "SECRET-TOKEN-4242")); err != nil {
			t.Fatal(err)
		}
	}
	p := testPending("STATE-SECRET-8888", "dev", "user1", time.Now(), time.Hour)
	p.Verifier = "VERIFIER-SECRET-7777"
	if err := s.PutPending(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Type()&fs.ModeSocket != 0 {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, secret := range secrets {
			if bytes.Contains(data, secret) {
				t.Errorf("%s holds %q in the clear", path, secret)
			}
		}
		return nil
	})
	if err != nil || files == 0 {
		t.Fatalf("walk: %d files, %v", files, err)
	}
}

func TestDataDirMode(t *testing.T) {
	t.Parallel()
	fresh := filepath.Join(t.TempDir(), "data")
	openTest(t, fresh, Keyring{Current: testKey(1)})
	assertMode(t, fresh, 0o700)

	loose := filepath.Join(t.TempDir(), "loose")
	if err := os.Mkdir(loose, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(loose, 0o755)
	openTest(t, loose, Keyring{Current: testKey(1)})
	assertMode(t, loose, 0o700)
}

func testPending(state, conn, user string, created time.Time, ttl time.Duration) *PendingAuthorization {
	return &PendingAuthorization{
		State: state, Connection: conn, User: user, Verifier: "verifier-" + state,
		RedirectURI: "http://127.0.0.1:8080/oauth/callback",
		AuthURL:     "https://dev1.service-now.com/oauth_auth.do?state=" + state,
		CreatedAt:   created, ExpiresAt: created.Add(ttl),
	}
}

func TestPending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var now atomic.Pointer[time.Time]
	start := time.Now()
	now.Store(&start)
	s, err := Open(ctx, Options{Dir: t.TempDir(), Keys: Keyring{Current: testKey(1)},
		Now: func() time.Time { return *now.Load() }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	alice := AccountKey{"dev", "alice"}

	older := testPending("s-old", "dev", "alice", start, 10*time.Minute)
	newer := testPending("s-new", "dev", "alice", start.Add(time.Minute), 10*time.Minute)
	short := testPending("s-short", "dev", "alice", start.Add(2*time.Minute), time.Minute)
	other := testPending("s-bob", "dev", "bob", start.Add(5*time.Minute), 10*time.Minute)
	for _, p := range []*PendingAuthorization{older, newer, short, other} {
		if err := s.PutPending(ctx, p); err != nil {
			t.Fatal(err)
		}
	}

	steps := []struct {
		at        time.Duration
		wantState string // "" means ErrNotFound
	}{
		{2 * time.Minute, "s-short"},
		{4 * time.Minute, "s-new"}, // s-short expired at 3m
		{10 * time.Minute, "s-new"},
		{12 * time.Minute, ""},
	}
	for _, step := range steps {
		at := start.Add(step.at)
		now.Store(&at)
		p, err := s.PendingFor(ctx, alice)
		switch {
		case step.wantState == "" && !errors.Is(err, ErrNotFound):
			t.Errorf("at %v: PendingFor = %v, %v; want ErrNotFound", step.at, p, err)
		case step.wantState != "" && (err != nil || p.State != step.wantState):
			t.Errorf("at %v: PendingFor = %v, %v; want %s", step.at, p, err, step.wantState)
		}
	}

	// Expiry is checked by the application, not left to the database TTL.
	if _, err := s.TakePending(ctx, "s-old"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("take expired: err = %v", err)
	}

	now.Store(&start)
	got, err := s.TakePending(ctx, "s-new")
	if err != nil || got.State != newer.State || got.Verifier != newer.Verifier ||
		!got.ExpiresAt.Equal(newer.ExpiresAt) {
		t.Fatalf("TakePending = %+v, %v", got, err)
	}
	if _, err := s.TakePending(ctx, "s-new"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second take: err = %v", err)
	}
	if p, err := s.PendingFor(ctx, alice); err != nil || p.State != "s-short" {
		t.Fatalf("PendingFor after take = %v, %v", p, err)
	}
	if _, err := s.TakePending(ctx, "never-issued"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown state: err = %v", err)
	}
}

func TestTakePendingOnceUnderConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTest(t, t.TempDir(), Keyring{Current: testKey(1)})
	if err := s.PutPending(ctx, testPending("race", "dev", "alice", time.Now(), time.Hour)); err != nil {
		t.Fatal(err)
	}

	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			_, err := s.TakePending(ctx, "race")
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, ErrNotFound):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d takes succeeded, want 1", wins.Load())
	}
}

func TestCorruptRecordStaysLocal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	keys := Keyring{Current: testKey(1)}

	s := openTest(t, dir, keys)
	for _, user := range []string{"alice", "bob", "carol", "dave"} {
		if err := s.PutAccount(ctx, testAccount("dev", user, user)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	// Damage two records behind the store's back: garbage for bob, and
	// alice's sealed bytes moved under carol's key.
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(accountDBKey(AccountKey{"dev", "alice"}))
		if err != nil {
			return err
		}
		aliceSealed, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		if err := txn.Set(accountDBKey(AccountKey{"dev", "bob"}), []byte("\x00garbage")); err != nil {
			return err
		}
		return txn.Set(accountDBKey(AccountKey{"dev", "carol"}), aliceSealed)
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	s = openTest(t, dir, keys)
	for user, want := range map[string]error{"alice": nil, "bob": ErrCorrupt, "carol": ErrCorrupt, "dave": nil} {
		if _, err := s.GetAccount(ctx, AccountKey{"dev", user}); !errors.Is(err, want) {
			t.Errorf("GetAccount(%s): err = %v, want %v", user, err, want)
		}
	}
	list, errs, err := s.ListAccounts(ctx)
	if err != nil || len(list) != 2 || len(errs) != 2 ||
		!errors.Is(errs[AccountKey{"dev", "bob"}], ErrCorrupt) {
		t.Fatalf("ListAccounts = %d accounts, %v, %v", len(list), errs, err)
	}
}

func TestLockAccountInProcess(t *testing.T) {
	t.Parallel()
	s := openTest(t, t.TempDir(), Keyring{Current: testKey(1)})
	alice := AccountKey{"dev", "alice"}

	unlock, err := s.LockAccount(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.LockAccount(ctx, alice); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock: err = %v, want deadline", err)
	}
	other, err := s.LockAccount(context.Background(), AccountKey{"dev", "bob"})
	if err != nil {
		t.Fatalf("another account's lock: %v", err)
	}
	other()

	// Goroutines queue; each holds the lock alone.
	var inside, most atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			u, err := s.LockAccount(context.Background(), alice)
			if err != nil {
				t.Error(err)
				return
			}
			if n := inside.Add(1); n > most.Load() {
				most.Store(n)
			}
			time.Sleep(time.Millisecond)
			inside.Add(-1)
			u()
		})
	}
	unlock()
	unlock() // idempotent
	wg.Wait()
	if most.Load() != 1 {
		t.Fatalf("%d holders at once", most.Load())
	}
}

func TestLongDirectoryPathUsesShortSocket(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), strings.Repeat("long-directory-name/", 6))

	first := openTest(t, dir, Keyring{Current: testKey(1)})
	if err := first.PutAccount(ctx, testAccount("dev", "alice", "1")); err != nil {
		t.Fatal(err)
	}
	second := openTest(t, dir, Keyring{Current: testKey(1)})
	if _, err := second.GetAccount(ctx, AccountKey{"dev", "alice"}); err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(second.socket, dir) || len(second.socket) >= 100 {
		t.Fatalf("socket %s for a %d-byte directory path", second.socket, len(dir))
	}
}

// TestReopenAfterKillWhileCreatingAFile: a process killed between Badger
// creating a memtable or value-log file and sizing it leaves the file
// empty; the next process opens the store anyway, with every account.
func TestReopenAfterKillWhileCreatingAFile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, name := range []string{"00099.mem", "000099.vlog"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir, keys := t.TempDir(), Keyring{Current: testKey(1)}
			s := openTest(t, dir, keys)
			alice := testAccount("dev", "alice", "1")
			if err := s.PutAccount(ctx, alice); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
				t.Fatal(err)
			}

			again := openTest(t, dir, keys)
			got, err := again.GetAccount(ctx, alice.Key())
			if err != nil || *got != *alice {
				t.Fatalf("after an empty %s: GetAccount = %+v, %v", name, got, err)
			}
		})
	}
}
