package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestConnection(t *testing.T) {
	t.Parallel()

	dev := Connection{Name: "dev"}
	prod := Connection{Name: "prod"}
	prodDefault := Connection{Name: "prod", Default: true}

	tests := []struct {
		name    string
		conns   []Connection
		arg     string
		want    string // connection name, or error substring
		wantErr bool
	}{
		{"only one", []Connection{dev}, "", "dev", false},
		{"the default", []Connection{dev, prodDefault}, "", "prod", false},
		{"named", []Connection{dev, prodDefault}, "dev", "dev", false},
		{"several, no default", []Connection{dev, prod}, "",
			"several connections are configured (dev, prod) and none is the default; " +
				"name one in the connection argument", true},
		{"unknown", []Connection{dev, prod}, "qa",
			`unknown connection "qa"; configured connections: dev, prod`, true},
		{"none", nil, "", "no ServiceNow connection is configured", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := &Config{Connections: tt.conns}
			conn, err := cfg.Connection(tt.arg)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("Connection(%q) error = %v, want %q", tt.arg, err, tt.want)
				}
				return
			}
			if err != nil || conn.Name != tt.want {
				t.Fatalf("Connection(%q) = %v, %v; want %s", tt.arg, conn, err, tt.want)
			}
			if conn != &cfg.Connections[indexOf(cfg, tt.want)] {
				t.Error("Connection returned a copy, want a pointer into the config")
			}
		})
	}
}

func indexOf(cfg *Config, name string) int {
	for i, c := range cfg.Connections {
		if c.Name == name {
			return i
		}
	}
	return -1
}

func TestRedirectURI(t *testing.T) {
	t.Parallel()

	for publicURL, want := range map[string]string{
		"http://127.0.0.1:8765":      "http://127.0.0.1:8765/oauth/callback",
		"https://mcp.example.com/":   "https://mcp.example.com/oauth/callback",
		"https://example.com/sn//":   "https://example.com/sn/oauth/callback",
		"https://example.com/prefix": "https://example.com/prefix/oauth/callback",
	} {
		cfg := &Config{Server: Server{PublicURL: publicURL}}
		if got := cfg.RedirectURI(); got != want {
			t.Errorf("RedirectURI(%q) = %q, want %q", publicURL, got, want)
		}
	}
}

func TestDefaultPublicURL(t *testing.T) {
	t.Parallel()

	for _, tt := range []struct {
		listen string
		tls    bool
		want   string
	}{
		{"127.0.0.1:8765", false, "http://127.0.0.1:8765"},
		{"[::1]:8765", false, "http://[::1]:8765"},
		{"0.0.0.0:9000", false, "http://127.0.0.1:9000"},
		{":9000", true, "https://127.0.0.1:9000"},
		{"mcp.internal:443", true, "https://mcp.internal:443"},
	} {
		if got := defaultPublicURL(tt.listen, tt.tls); got != tt.want {
			t.Errorf("defaultPublicURL(%q, %v) = %q, want %q", tt.listen, tt.tls, got, tt.want)
		}
	}
}

func TestHashAPIKeyAndLookup(t *testing.T) {
	t.Parallel()

	hash := HashAPIKey("k")
	if !apiKeyHashRE.MatchString(hash) {
		t.Fatalf("HashAPIKey = %q, not in the configured form", hash)
	}
	if want := "sha256:8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a"; hash != want {
		t.Fatalf("HashAPIKey(\"k\") = %q, want %q", hash, want)
	}

	s := &Server{APIKeys: []APIKey{
		{Name: "a", Hash: HashAPIKey("key-a"), User: "alice"},
		{Name: "gw", Hash: strings.ToUpper(HashAPIKey("key-gw")), Gateway: true},
	}}
	if k, ok := s.APIKeyFor("key-gw"); !ok || k.Name != "gw" {
		t.Errorf("APIKeyFor(key-gw) = %v, %v", k, ok)
	}
	if k, ok := s.APIKeyFor("key-a"); !ok || k.User != "alice" {
		t.Errorf("APIKeyFor(key-a) = %v, %v", k, ok)
	}
	if _, ok := s.APIKeyFor("other"); ok {
		t.Error("APIKeyFor(other) matched")
	}
}

func TestLoopbackOnly(t *testing.T) {
	t.Parallel()

	for listen, want := range map[string]bool{
		"127.0.0.1:8765": true, "localhost:1": true, "[::1]:1": true,
		"0.0.0.0:8765": false, ":8765": false, "10.0.0.1:80": false, "bad": false,
	} {
		s := &Server{Listen: listen}
		if got := s.LoopbackOnly(); got != want {
			t.Errorf("LoopbackOnly(%q) = %v, want %v", listen, got, want)
		}
	}
}

func TestRedacted(t *testing.T) {
	t.Parallel()

	cfg := validConfig()
	cfg.EncryptionKey = "secret-key"
	cfg.PreviousEncryptionKeys = []string{"old-key"}
	cfg.Connections[0].ClientSecret = "client-secret"
	cfg.Connections = append(cfg.Connections, Connection{Name: "public"})

	r := cfg.Redacted()

	dump := strings.Join([]string{r.EncryptionKey, r.PreviousEncryptionKeys[0], r.Connections[0].ClientSecret}, " ")
	if dump != "[redacted] [redacted] [redacted]" {
		t.Errorf("redacted secrets = %q", dump)
	}
	if r.Connections[1].ClientSecret != "" {
		t.Error("an absent secret became [redacted]; it should stay empty")
	}
	if cfg.EncryptionKey != "secret-key" || cfg.Connections[0].ClientSecret != "client-secret" ||
		cfg.PreviousEncryptionKeys[0] != "old-key" {
		t.Error("Redacted changed the original")
	}
	r.Connections[0].Scopes[0] = "changed"
	if cfg.Connections[0].Scopes[0] == "changed" {
		t.Error("Redacted shares slices with the original")
	}
}

func TestAddConnection(t *testing.T) {
	t.Parallel()

	cfg := Default(testEnv(nil))
	cfg.AddConnection(Connection{Name: "sandbox", InstanceURL: "http://127.0.0.1:9999/", ClientID: "sandbox"})

	conn, err := cfg.Connection("")
	if err != nil {
		t.Fatal(err)
	}
	if conn.InstanceURL != "http://127.0.0.1:9999" || !reflect.DeepEqual(conn.Scopes, []string{"useraccount"}) {
		t.Errorf("added connection = %+v, want defaults applied", conn)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate after AddConnection: %v", err)
	}
}

// exampleEnv sets every variable config.example.yaml requires.
func exampleEnv() Env {
	return testEnv(map[string]string{
		"SN_DEV_CLIENT_SECRET":          "dev-secret",
		"SERVICENOW_MCP_ENCRYPTION_KEY": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
	})
}

func TestExampleConfigLoadsAndValidates(t *testing.T) {
	t.Parallel()

	cfg, err := Load("../config.example.yaml", exampleEnv())
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}

	if got := cfg.Connections[0].ClientSecret; got != "dev-secret" {
		t.Errorf("client_secret = %q, want it from the environment", got)
	}
	if len(cfg.Server.APIKeys) != 2 || cfg.Server.APIKeys[0].User == "" || !cfg.Server.APIKeys[1].Gateway {
		t.Errorf("api_keys = %+v, want a user key and a gateway key", cfg.Server.APIKeys)
	}
	if cfg.Timeouts.ToolCall != DefaultToolCall {
		t.Errorf("tool_call = %s", cfg.Timeouts.ToolCall)
	}

	// Without an encryption key in the environment the key file is used.
	env := testEnv(map[string]string{"SN_DEV_CLIENT_SECRET": "x"})
	cfg, err = Load("../config.example.yaml", env)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil || cfg.EncryptionKeyFile == "" {
		t.Errorf("example without a key: file %q, Validate = %v", cfg.EncryptionKeyFile, err)
	}
}

// TestExampleConfigIsComplete keeps config.example.yaml in step with the
// Config type: every yaml key must appear in it (as a live or a commented
// key), and every key must be documented in a comment.
func TestExampleConfigIsComplete(t *testing.T) {
	t.Parallel()

	data, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	example := string(data)

	for _, key := range yamlKeys(reflect.TypeFor[Config](), "") {
		name := key[strings.LastIndex(key, ".")+1:]
		asKey := regexp.MustCompile(`(?m)^[\s#-]*` + regexp.QuoteMeta(name) + `:`)
		if !asKey.MatchString(example) {
			t.Errorf("config.example.yaml does not show key %s", key)
		}
		inComment := regexp.MustCompile(`(?m)^\s*#.*\b` + regexp.QuoteMeta(name) + `\b`)
		if !inComment.MatchString(example) {
			t.Errorf("config.example.yaml has no comment about key %s", key)
		}
	}
}

// yamlKeys lists the key paths of t, descending into structs and slices
// of structs.
func yamlKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		key := joinKey(prefix, name)
		keys = append(keys, key)

		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Duration]() {
			keys = append(keys, yamlKeys(ft, key)...)
		}
	}
	return keys
}
