package faulttest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"

	"servicenow-mcp/internal/testenv"
	"servicenow-mcp/server"
	"servicenow-mcp/storage"
)

// restart closes the env's store and serves again from the same data
// directory with keys, as a restarted process would.
func restart(t *testing.T, e *testenv.Env, keys storage.Keyring, damage func(dir string)) {
	t.Helper()
	if err := e.Store.Close(); err != nil {
		t.Fatal(err)
	}
	if damage != nil {
		damage(e.Config.DataDir)
	}
	st, err := storage.Open(context.Background(), storage.Options{Dir: e.Config.DataDir, Keys: keys, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatalf("reopen the data directory: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	app, err := server.New(server.Options{Config: e.Config, Store: st, Logger: zerolog.Nop(), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	e.Store, e.App = st, app
}

// corruptAccount overwrites one account's sealed record with garbage,
// behind the store's back.
func corruptAccount(t *testing.T, user string) func(string) {
	return func(dir string) {
		db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		err = db.Update(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.DefaultIteratorOptions)
			var target []byte
			for it.Rewind(); it.Valid(); it.Next() {
				k := it.Item().KeyCopy(nil)
				// The key layout of storage/records.go accountDBKey.
				if bytes.Equal(k, []byte("a/"+testenv.Connection+"\x00"+user)) {
					target = k
				}
			}
			it.Close()
			if target == nil {
				t.Fatalf("no account record for %s", user)
			}
			return txn.Set(target, []byte("\x01not a sealed record"))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// Issue 5, point 8: the data directory is 0700 and the key file 0600.
func TestDataDirAndKeyFileModes(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "data", "servicenow-mcp")
	st, err := storage.Open(context.Background(), storage.Options{Dir: dir, Keys: storage.Keyring{Current: bytes.Repeat([]byte{1}, 32)}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != 0o700 {
		t.Fatalf("data directory mode %v, %v; want 0700", info.Mode().Perm(), err)
	}

	keyPath := filepath.Join(root, "keys", "key")
	if _, created, err := storage.LoadOrCreateKeyFile(keyPath); err != nil || !created {
		t.Fatalf("create key file: %v", err)
	}
	if info, err := os.Stat(keyPath); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", info.Mode().Perm(), err)
	}

	// A key file others can read is refused, not used.
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := storage.LoadOrCreateKeyFile(keyPath); err == nil || !strings.Contains(err.Error(), "mode") {
		t.Fatalf("a world-readable key file was accepted: %v", err)
	}
}

// Issue 5, point 8: a corrupted record is reported for that account only:
// its user is asked to link again, every other user carries on, and the
// server keeps serving.
func TestCorruptedRecordIsThatAccountsAlone(t *testing.T) {
	e, _ := newEnv(t, testenv.Options{Link: []string{"alice", "bob"}})
	restart(t, e, storage.Keyring{Current: bytes.Repeat([]byte{7}, 32)}, corruptAccount(t, "bob"))

	args := map[string]any{"method": "GET", "path": "/api/now/table/incident", "query": map[string]any{"sysparm_limit": "1"}}
	mustContain(t, e.Call(t, "bob", "servicenow_request", args), true, "authorization_required", "/oauth_auth.do")
	mustContain(t, e.Call(t, "alice", "servicenow_request", args), false, `"result"`)
	mustContain(t, e.Call(t, "bob", "servicenow_connection_status", map[string]any{}), true, "damaged", "bob")
	mustContain(t, e.Call(t, "alice", "servicenow_request", args), false, `"result"`)
}

// Issue 5, point 8: a wrong key is reported as the operator's key
// problem, and the store is left intact for the right key.
func TestWrongKeyIsReportedAndStoreKeptIntact(t *testing.T) {
	e, _ := newEnv(t, testenv.Options{Link: []string{"alice"}})
	right := storage.Keyring{Current: bytes.Repeat([]byte{7}, 32)}
	before := stored(t, e, "alice")

	restart(t, e, storage.Keyring{Current: bytes.Repeat([]byte{9}, 32)}, nil)
	args := map[string]any{"method": "GET", "path": "/api/now/table/incident", "query": map[string]any{"sysparm_limit": "1"}}
	text := mustContain(t, e.Call(t, "alice", "servicenow_request", args), true, "encryption key", "operator")
	if strings.Contains(text, "authorization_required") {
		t.Fatalf("a wrong key was blamed on the user: %s", text)
	}

	restart(t, e, right, nil)
	if after := stored(t, e, "alice"); !sameTokens(before, after) {
		t.Fatal("the wrong key changed the stored account")
	}
	mustContain(t, e.Call(t, "alice", "servicenow_request", args), false, `"result"`)
}
