package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"servicenow-mcp/storage"
)

// isolate points every default path at a temporary home.
func isolate(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	t.Setenv("XDG_DATA_HOME", filepath.Join(home, ".local", "share"))
	for _, v := range []string{"SERVICENOW_MCP_CONFIG", "SERVICENOW_MCP_ENCRYPTION_KEY", "SERVICENOW_MCP_ENCRYPTION_KEY_FILE",
		"SERVICENOW_MCP_DATA_DIR", "SERVICENOW_MCP_USER", "SERVICENOW_MCP_LISTEN", "SERVICENOW_MCP_PUBLIC_URL"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	return home
}

func run(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := Run(ctx, args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), err
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStartupErrorsNameTheCause(t *testing.T) {
	isolate(t)
	tests := []struct {
		name   string
		config string
		args   []string
		want   string
	}{
		{"unknown key", "connections:\n  - name: a\n    instance_url: https://x.service-now.com\n    client_id: c\n    instnce: y\n", nil, "instnce: unknown key"},
		{"http instance", "connections:\n  - name: a\n    instance_url: http://x.service-now.com\n    client_id: c\n", nil, "instance_url"},
		{"no connection", "user: a\n", nil, "connections"},
		{"unknown toolset", "connections:\n  - name: a\n    instance_url: https://x.service-now.com\n    client_id: c\n", []string{"--toolsets", "nope"}, `unknown toolset "nope"`},
		{"unknown tool", "connections:\n  - name: a\n    instance_url: https://x.service-now.com\n    client_id: c\n", []string{"--exclude-tools", "servicenow_nope"}, `unknown tool "servicenow_nope"`},
		{"unset env", "connections:\n  - name: a\n    instance_url: https://x.service-now.com\n    client_id: c\n    client_secret: ${NOPE_SECRET_FOR_TEST}\n", nil, "NOPE_SECRET_FOR_TEST"},
		{"sandbox name taken", "connections:\n  - name: sandbox\n    instance_url: https://x.service-now.com\n    client_id: c\n", []string{"--sandbox"}, `connection named "sandbox"`},
		{"sandbox name taken, the fix", "connections:\n  - name: sandbox\n    instance_url: https://x.service-now.com\n    client_id: c\n", []string{"--sandbox"}, "rename the configured connection, or drop --sandbox"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.config)
			args := append([]string{"serve", "--config", path}, tt.args...)
			stdout, _, err := run(t, "", args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			if stdout != "" {
				t.Errorf("stdout carried %q; it belongs to JSON-RPC", stdout)
			}
		})
	}
}

func TestHelpListsEveryTool(t *testing.T) {
	isolate(t)
	stdout, _, err := run(t, "", "serve", "--help")
	if err != nil || !strings.Contains(stdout, "servicenow_request") || !strings.Contains(stdout, "authorize_servicenow") {
		t.Fatalf("help: err=%v\n%s", err, stdout)
	}
}

func TestKeys(t *testing.T) {
	isolate(t)
	out, _, err := run(t, "", "keys", "generate")
	if err != nil || !strings.Contains(out, "key:  snmcp_") || !strings.Contains(out, "hash: sha256:") {
		t.Fatalf("generate: %v %q", err, out)
	}
	out, _, err = run(t, "secret-key\n", "keys", "hash")
	if err != nil || strings.TrimSpace(out) != "sha256:"+sha("secret-key") {
		t.Fatalf("hash: %v %q", err, out)
	}
	if _, _, err := run(t, "", "keys", "hash"); err == nil {
		t.Fatal("hash of nothing succeeded")
	}
}

func TestWrongEncryptionKeyIsReportedAndDataKept(t *testing.T) {
	home := isolate(t)
	dataDir := filepath.Join(home, "data")
	keyA, keyB := storage.GenerateKey(), storage.GenerateKey()
	ctx := context.Background()

	a, _ := storage.ParseKey(keyA)
	st, err := storage.Open(ctx, storage.Options{Dir: dataDir, Keys: storage.Keyring{Current: a}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	acct := &storage.Account{Connection: "a", User: "alice", Status: storage.StatusActive, AccessToken: "AT-secret", RefreshToken: "RT-secret", Expiry: time.Now().Add(time.Hour)}
	if err := st.PutAccount(ctx, acct); err != nil {
		t.Fatal(err)
	}
	st.Close()

	path := writeConfig(t, "data_dir: "+dataDir+"\nconnections:\n  - name: a\n    instance_url: https://x.service-now.com\n    client_id: c\n")
	t.Setenv("SERVICENOW_MCP_ENCRYPTION_KEY", keyB)
	out, _, err := run(t, "", "auth", "status", "--config", path)
	if err != nil || !strings.Contains(out, "UNREADABLE") || !strings.Contains(out, "key") {
		t.Fatalf("status with the wrong key: %v\n%s", err, out)
	}
	if strings.Contains(out, "AT-secret") || strings.Contains(out, "RT-secret") {
		t.Fatal("a token was printed")
	}

	t.Setenv("SERVICENOW_MCP_ENCRYPTION_KEY", keyA)
	out, _, err = run(t, "", "auth", "status", "--config", path)
	if err != nil || !strings.Contains(out, "ACTIVE") {
		t.Fatalf("the right key no longer opens the store: %v\n%s", err, out)
	}
}

// TestMissingKeyFileBesideAStore: a key file that has gone missing while
// the data directory holds sealed accounts stops the start with the cause
// and the fix, instead of creating a new key that cannot read them; the
// accounts are still there once the key file is restored.
func TestMissingKeyFileBesideAStore(t *testing.T) {
	home := isolate(t)
	dataDir := filepath.Join(home, "data")
	keyFile := filepath.Join(home, "keys", "encryption.key")
	key, _, err := storage.LoadOrCreateKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := storage.Open(ctx, storage.Options{Dir: dataDir, Keys: storage.Keyring{Current: key}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	acct := &storage.Account{Connection: "a", User: "alice", Status: storage.StatusActive, AccessToken: "AT", RefreshToken: "RT", Expiry: time.Now().Add(time.Hour)}
	if err := st.PutAccount(ctx, acct); err != nil {
		t.Fatal(err)
	}
	st.Close()
	saved, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, "data_dir: "+dataDir+"\nencryption_key_file: "+keyFile+
		"\nconnections:\n  - name: a\n    instance_url: https://x.service-now.com\n    client_id: c\n")

	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	_, _, err = run(t, "", "auth", "status", "--config", path)
	for _, want := range []string{keyFile, "does not exist", dataDir, "Restore the key file", "SERVICENOW_MCP_ENCRYPTION_KEY"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("start without the key file: %v, want it to say %q", err, want)
		}
	}
	if _, err := os.Stat(keyFile); err == nil {
		t.Fatal("a new key file was created beside the old store")
	}

	if err := os.WriteFile(keyFile, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, "", "auth", "status", "--config", path)
	if err != nil || !strings.Contains(out, "ACTIVE") {
		t.Fatalf("with the key file restored: %v\n%s", err, out)
	}
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestEveryCommandAnswersHelp: -h and --help print the command's usage
// on stdout and exit 0, and do nothing else: no key printed, no stdin
// read, no file created.
func TestEveryCommandAnswersHelp(t *testing.T) {
	tests := []struct {
		args []string
		want string // in the usage
	}{
		{nil, "Usage:\n  servicenow-mcp serve"},
		{[]string{"serve"}, "Usage: servicenow-mcp serve [flags]"},
		{[]string{"sandbox"}, "Usage: servicenow-mcp sandbox [flags]"},
		{[]string{"auth"}, "Usage: servicenow-mcp auth login|status|logout"},
		{[]string{"auth", "login"}, "Usage: servicenow-mcp auth login [flags]"},
		{[]string{"auth", "status"}, "Usage: servicenow-mcp auth status [flags]"},
		{[]string{"auth", "logout"}, "Usage: servicenow-mcp auth logout [flags]"},
		{[]string{"keys"}, "Usage: servicenow-mcp keys generate|hash|rekey"},
		{[]string{"keys", "generate"}, "Usage: servicenow-mcp keys generate"},
		{[]string{"keys", "hash"}, "Usage: servicenow-mcp keys hash"},
		{[]string{"keys", "rekey"}, "Usage: servicenow-mcp keys rekey"},
		{[]string{"version"}, "Usage: servicenow-mcp version"},
	}
	const apiKey = "snmcp_on-stdin-for-keys-hash"
	for _, tt := range tests {
		for _, flag := range []string{"-h", "--help"} {
			args := append(append([]string(nil), tt.args...), flag)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				home := isolate(t)
				t.Setenv("XDG_CACHE_HOME", filepath.Join(home, ".cache"))
				stdout, stderr, err := run(t, apiKey+"\n", args...)
				if err != nil {
					t.Fatalf("err = %v, want exit 0\nstderr: %s", err, stderr)
				}
				if !strings.Contains(stdout, tt.want) {
					t.Fatalf("stdout does not hold the usage %q:\n%s\nstderr: %s", tt.want, stdout, stderr)
				}
				for _, secret := range []string{"key:  snmcp_", "hash: sha256:", sha(apiKey)} {
					if strings.Contains(stdout+stderr, secret) {
						t.Fatalf("help printed %q:\n%s%s", secret, stdout, stderr)
					}
				}
				if made := filesUnder(t, home); len(made) > 0 {
					t.Fatalf("help created %q", made)
				}
			})
		}
	}
}

// filesUnder lists what exists below dir.
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, _ os.DirEntry, err error) error {
		if err == nil && path != dir {
			found = append(found, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestBadFlagsStopBeforeAnythingOpens: a flag value serve cannot use is
// refused before the key file, the store or a sandbox is touched, and
// before anything is logged.
func TestBadFlagsStopBeforeAnythingOpens(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown transport", []string{"--transport", "bogus"}, `--transport "bogus": use stdio or http`},
		{"unknown transport with the sandbox", []string{"--sandbox", "--transport", "bogus"}, `--transport "bogus": use stdio or http`},
		{"empty transport", []string{"--transport="}, `--transport "": use stdio or http`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := isolate(t)
			t.Setenv("XDG_CACHE_HOME", filepath.Join(home, ".cache"))
			path := writeConfig(t, "connections:\n  - name: a\n    instance_url: https://x.service-now.com\n    client_id: c\n")
			stdout, stderr, err := run(t, "", append([]string{"serve", "--config", path}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if stdout != "" || stderr != "" {
				t.Fatalf("serve wrote before refusing the flags:\nstdout: %s\nstderr: %s", stdout, stderr)
			}
			if made := filesUnder(t, home); len(made) > 0 {
				t.Fatalf("serve created %q before refusing the flags", made)
			}
		})
	}
}

// TestWrongKeyIsLoggedAtStart: serve names, at start-up and at ERROR
// level, the key id that sealed accounts no configured key opens, and the
// fix; a matching current or previous key logs nothing of the kind.
func TestWrongKeyIsLoggedAtStart(t *testing.T) {
	keyA, keyB := storage.GenerateKey(), storage.GenerateKey()
	a, _ := storage.ParseKey(keyA)
	const (
		warning = "wrong encryption key"
		allGood = "every stored account opens with the configured encryption keys"
	)
	tests := []struct {
		name     string
		current  string
		previous string
		warn     bool
	}{
		{"another key", keyB, "", true},
		{"the key that sealed them", keyA, "", false},
		{"the old key under previous_encryption_keys", keyB, keyA, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := isolate(t)
			dataDir := filepath.Join(home, "data")
			ctx := context.Background()
			st, err := storage.Open(ctx, storage.Options{Dir: dataDir, Keys: storage.Keyring{Current: a}, Logger: zerolog.Nop()})
			if err != nil {
				t.Fatal(err)
			}
			acct := &storage.Account{Connection: "a", User: "alice", Status: storage.StatusActive,
				AccessToken: "AT-secret", RefreshToken: "RT-secret", Expiry: time.Now().Add(time.Hour)}
			if err := st.PutAccount(ctx, acct); err != nil {
				t.Fatal(err)
			}
			st.Close()

			body := "data_dir: " + dataDir + "\nserver:\n  listen: " + freeAddr(t) +
				"\nconnections:\n  - name: a\n    instance_url: https://x.service-now.com\n    client_id: c\n"
			if tt.previous != "" {
				body += "previous_encryption_keys:\n  - '" + tt.previous + "'\n"
			}
			path := writeConfig(t, body)
			t.Setenv("SERVICENOW_MCP_ENCRYPTION_KEY", tt.current)

			// serve runs until its stdin closes, which the test does once
			// the check has spoken.
			logs := newWatchedWriter(warning, allGood)
			stdin, closeStdin := io.Pipe()
			defer closeStdin.Close()
			served := make(chan error, 1)
			go func() {
				served <- Run(ctx, []string{"serve", "--config", path, "--user", "alice", "--log-level", "debug"},
					stdin, io.Discard, logs)
			}()
			select {
			case <-logs.seen:
			case err := <-served:
				t.Fatalf("serve ended before checking the stored accounts: %v\n%s", err, logs)
			case <-time.After(15 * time.Second):
				t.Fatalf("no word on the stored accounts after 15s:\n%s", logs)
			}
			closeStdin.Close()
			if err := <-served; err != nil {
				t.Fatalf("serve: %v\n%s", err, logs)
			}

			out := logs.String()
			var line string
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, warning) {
					line = l
				}
			}
			if !tt.warn {
				if line != "" {
					t.Fatalf("warned with a key that opens the accounts:\n%s", line)
				}
				return
			}
			for _, want := range []string{`"level":"error"`, storage.KeyID(a), "a/alice", "SERVICENOW_MCP_ENCRYPTION_KEY",
				"previous_encryption_keys", "keys rekey", "Rotating the encryption key"} {
				if !strings.Contains(line, want) {
					t.Errorf("the warning does not say %q:\n%s", want, line)
				}
			}
			if n := strings.Count(out, warning); n != 1 {
				t.Errorf("warned %d times, want once", n)
			}
			for _, secret := range []string{keyA, keyB, "AT-secret", "RT-secret"} {
				if strings.Contains(out, secret) {
					t.Fatalf("the log holds a secret (%.6s…)", secret)
				}
			}
		})
	}
}

// watchedWriter collects log output and closes seen when any of its
// marks has been written.
type watchedWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	marks []string
	seen  chan struct{}
	once  sync.Once
}

func newWatchedWriter(marks ...string) *watchedWriter {
	return &watchedWriter{marks: marks, seen: make(chan struct{})}
}

func (w *watchedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, _ := w.buf.Write(p)
	for _, m := range w.marks {
		if bytes.Contains(w.buf.Bytes(), []byte(m)) {
			w.once.Do(func() { close(w.seen) })
		}
	}
	return n, nil
}

func (w *watchedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
