package storage

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

const generateHint = "generate one with: openssl rand -base64 32"

// GenerateKey returns a fresh random 32-byte key, base64 encoded.
func GenerateKey() string {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return base64.StdEncoding.EncodeToString(key)
}

// ParseKey decodes a 32-byte key written as base64 (standard or URL
// alphabet, padded or not) or as 64 hex digits. Surrounding space is ignored.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("encryption key is empty; " + generateHint)
	}

	if len(s) == 64 {
		if key, err := hex.DecodeString(s); err == nil {
			return key, nil
		}
	}
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding,
	} {
		key, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(key) != 32 {
			return nil, fmt.Errorf("encryption key decodes to %d bytes, want 32; %s",
				len(key), generateHint)
		}
		return key, nil
	}
	return nil, errors.New("encryption key is neither base64 nor 64 hex digits; " + generateHint)
}

// LoadOrCreateKeyFile reads the key in path, or creates the file (0600,
// parent directory 0700) holding a fresh key when it does not exist.
// A key file that group or others may read is refused.
func LoadOrCreateKeyFile(path string) (key []byte, created bool, err error) {
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return createKeyFile(path)
	case err != nil:
		return nil, false, fmt.Errorf("key file %s: %w", path, err)
	}

	if info.IsDir() {
		return nil, false, fmt.Errorf("key file %s is a directory; point it at the key file itself", path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, false, fmt.Errorf("key file %s has mode %04o: group or others may read it; "+
			"run: chmod 600 %s", path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, false, fmt.Errorf("read key file %s: %w", path, err)
	}
	key, err = ParseKey(string(data))
	if err != nil {
		return nil, false, fmt.Errorf("key file %s: %w", path, err)
	}
	return key, false, nil
}

func createKeyFile(path string) ([]byte, bool, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("create key file directory: %w", err)
	}

	// Write a temporary file, then link it into place: the key file never
	// exists half-written, and when another process wins the race we read
	// its key instead of replacing it.
	encoded := GenerateKey()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".key-*")
	if err != nil {
		return nil, false, fmt.Errorf("create key file %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(encoded + "\n")
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, false, fmt.Errorf("write key file %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			key, _, err := LoadOrCreateKeyFile(path)
			return key, false, err
		}
		return nil, false, fmt.Errorf("create key file %s: %w", path, err)
	}

	key, _ := base64.StdEncoding.DecodeString(encoded)
	return key, true, nil
}

// HasStore reports whether dir already holds a database. Its records were
// sealed with some key, so a key created now could not read them.
func HasStore(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "MANIFEST"))
	return err == nil
}
