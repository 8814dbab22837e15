package storage

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestSealOpen(t *testing.T) {
	t.Parallel()
	keyA, keyB := testKey(1), testKey(2)
	sealedByA := func() []byte {
		s, _ := newSealer(Keyring{Current: keyA})
		return s.seal([]byte("a/c\x00alice"), []byte("secret"))
	}

	tests := []struct {
		name     string
		keys     Keyring
		location string
		sealed   []byte
		want     error
		current  bool
	}{
		{"round trip", Keyring{Current: keyA}, "a/c\x00alice", sealedByA(), nil, true},
		{"previous key opens", Keyring{Current: keyB, Previous: [][]byte{keyA}}, "a/c\x00alice", sealedByA(), nil, false},
		{"moved to another account", Keyring{Current: keyA}, "a/c\x00bob", sealedByA(), ErrCorrupt, false},
		{"unknown key", Keyring{Current: keyB}, "a/c\x00alice", sealedByA(), ErrWrongKey, false},
		{"flipped byte", Keyring{Current: keyA}, "a/c\x00alice", flip(sealedByA(), 30), ErrCorrupt, false},
		{"truncated", Keyring{Current: keyA}, "a/c\x00alice", sealedByA()[:20], ErrCorrupt, false},
		{"garbage", Keyring{Current: keyA}, "a/c\x00alice", []byte("not sealed at all, no no no no no"), ErrCorrupt, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := newSealer(tt.keys)
			if err != nil {
				t.Fatal(err)
			}
			plain, current, err := s.open([]byte(tt.location), tt.sealed)
			if !errors.Is(err, tt.want) {
				t.Fatalf("open: err = %v, want %v", err, tt.want)
			}
			if tt.want == nil && (string(plain) != "secret" || current != tt.current) {
				t.Fatalf("open = %q, current %v", plain, current)
			}
		})
	}
}

func TestWrongKeyMessageSaysHowToFix(t *testing.T) {
	t.Parallel()
	a, _ := newSealer(Keyring{Current: testKey(1)})
	b, _ := newSealer(Keyring{Current: testKey(2)})
	_, _, err := b.open([]byte("x"), a.seal([]byte("x"), []byte("y")))
	for _, want := range []string{KeyID(testKey(1)), "SERVICENOW_MCP_ENCRYPTION_KEY", "previous_encryption_keys"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestSealUsesFreshNonce(t *testing.T) {
	t.Parallel()
	s, _ := newSealer(Keyring{Current: testKey(1)})
	if bytes.Equal(s.seal([]byte("k"), []byte("v")), s.seal([]byte("k"), []byte("v"))) {
		t.Fatal("two seals of the same value are identical")
	}
}

func flip(b []byte, i int) []byte {
	b[i] ^= 0xff
	return b
}

func TestParseKey(t *testing.T) {
	t.Parallel()
	raw := testKey(0xfb)
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"base64 std", "+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/s=", true},
		{"base64 std unpadded", "+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/s", true},
		{"base64 url", "-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_s=", true},
		{"base64 url unpadded, newline", "-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_s\n", true},
		{"hex", strings.Repeat("fb", 32), true},
		{"short", "c2hvcnQ=", false},
		{"empty", "  ", false},
		{"junk", "this is not a key!", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := ParseKey(tt.in)
			if !tt.ok {
				if err == nil || !strings.Contains(err.Error(), "openssl rand -base64 32") {
					t.Fatalf("ParseKey(%q) err = %v, want a hint", tt.in, err)
				}
				return
			}
			if err != nil || !bytes.Equal(key, raw) {
				t.Fatalf("ParseKey(%q) = %x, %v", tt.in, key, err)
			}
		})
	}

	if key, err := ParseKey(GenerateKey()); err != nil || len(key) != 32 {
		t.Fatalf("ParseKey(GenerateKey()) = %x, %v", key, err)
	}
}

func TestLoadOrCreateKeyFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "config", "key")

	key, created, err := LoadOrCreateKeyFile(path)
	if err != nil || !created || len(key) != 32 {
		t.Fatalf("create: %x, %v, %v", key, created, err)
	}
	assertMode(t, path, 0o600)
	assertMode(t, filepath.Dir(path), 0o700)

	again, created, err := LoadOrCreateKeyFile(path)
	if err != nil || created || !bytes.Equal(again, key) {
		t.Fatalf("reload: %x, %v, %v", again, created, err)
	}

	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKeyFile(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-readable key file: err = %v, want refusal", err)
	}
}

// TestUnreadableKeyFile: a key path that exists but cannot be read is an
// error naming the path, and no key is created in its place. The failures
// are ones that root cannot bypass, so the test runs under root too.
func TestUnreadableKeyFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// setup makes path unreadable as a key file.
		setup func(t *testing.T, path string)
		want  string
	}{
		{"a directory in its place", func(t *testing.T, path string) {
			if err := os.MkdirAll(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "is a directory; point it at the key file itself"},
		{"a file in place of its directory", func(t *testing.T, path string) {
			if err := os.WriteFile(filepath.Dir(path), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "config", "key")
			tt.setup(t, path)

			key, created, err := LoadOrCreateKeyFile(path)
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one naming %s and saying %q", err, path, tt.want)
			}
			if key != nil || created {
				t.Fatalf("got a key (created %v) from an unreadable key file", created)
			}
		})
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != want {
		t.Fatalf("%s: mode %04o, want %04o", path, got, want)
	}
}
