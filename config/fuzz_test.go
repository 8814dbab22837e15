package config

import (
	"os"
	"testing"
)

// FuzzLoad feeds arbitrary bytes through the whole load path: decoding,
// expansion, defaults, validation and redaction. Errors are fine; a panic
// or a hang is not. Seeds live in testdata/fuzz/FuzzLoad.
func FuzzLoad(f *testing.F) {
	if example, err := os.ReadFile("../config.example.yaml"); err == nil {
		f.Add(example)
	}

	env := testEnv(map[string]string{
		"SN_DEV_CLIENT_SECRET": "secret",
		"EMPTY":                "",
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parse(data, "fuzz.yaml", env)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}

		applyEnv(cfg, env)
		cfg.ApplyDefaults(env)
		_ = cfg.Validate()
		_ = cfg.Redacted()
		_, _ = cfg.Connection("")
		_ = cfg.RedirectURI()
	})
}
