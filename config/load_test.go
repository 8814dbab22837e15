package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// mapEnv is an Env over a fixed map, so tests never see the real
// environment.
func mapEnv(vars map[string]string) Env {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

// testEnv is a home and user for default paths, plus extra variables.
func testEnv(extra map[string]string) Env {
	vars := map[string]string{"HOME": "/home/alice", "USER": "alice"}
	for k, v := range extra {
		vars[k] = v
	}
	return mapEnv(vars)
}

const minimal = `
connections:
  - name: dev
    instance_url: https://dev12345.service-now.com
    client_id: abc
`

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		yaml string
		env  map[string]string
		want []string // substrings of the error
	}{
		{
			name: "unknown key names its path and the closest key",
			yaml: "connections:\n  - name: dev\n    instnce_url: https://x.service-now.com\n",
			want: []string{"config.yaml:3: connections[0].instnce_url: unknown key; did you mean instance_url?"},
		},
		{
			name: "unknown top-level key lists nothing far-fetched",
			yaml: "zzzzzzzzzzzz: 1\n",
			want: []string{"zzzzzzzzzzzz: unknown key; known keys: connections, data_dir"},
		},
		{
			name: "every unknown key is reported",
			yaml: "log:\n  levle: info\nserver:\n  listn: x\n",
			want: []string{"log.levle: unknown key", "server.listn: unknown key"},
		},
		{
			name: "empty variable is named as empty, not as unset",
			yaml: "connections:\n  - name: dev\n    client_id: ${SN_ID}\n",
			env:  map[string]string{"SN_ID": ""},
			want: []string{"connections[0].client_id: environment variable SN_ID is set but empty", "${SN_ID:-}"},
		},
		{
			name: "unset variable names key and variable",
			yaml: "connections:\n  - name: dev\n    client_secret: ${SN_SECRET}\n",
			want: []string{"connections[0].client_secret: environment variable SN_SECRET is not set"},
		},
		{
			name: "unclosed reference",
			yaml: "user: ${USER\n",
			want: []string{`user: "${" is not closed by "}"`},
		},
		{
			name: "bad variable name",
			yaml: "user: ${1X}\n",
			want: []string{"user: ${1X} is not a variable reference"},
		},
		{
			name: "duration without unit",
			yaml: "timeouts:\n  tool_call: 25\n",
			want: []string{`timeouts.tool_call: "25" is not a duration`},
		},
		{
			name: "number that is not",
			yaml: "server:\n  max_body_bytes: lots\n",
			want: []string{`server.max_body_bytes: "lots" is not a whole number`},
		},
		{
			name: "boolean that is not",
			yaml: "tools:\n  read_only: maybe\n",
			want: []string{`tools.read_only: "maybe" is not a boolean`},
		},
		{
			name: "scalar where a list belongs",
			yaml: "connections:\n  - name: dev\n    scopes: useraccount\n",
			want: []string{`connections[0].scopes: expected a list, found the value "useraccount"`},
		},
		{
			name: "list where a mapping belongs",
			yaml: "log: [info]\n",
			want: []string{"log: expected a mapping"},
		},
		{
			name: "duplicate key",
			yaml: "user: a\nuser: b\n",
			want: []string{"config.yaml:2: user: given twice (first on line 1)"},
		},
		{
			name: "invalid YAML",
			yaml: "connections: [\n",
			want: []string{"config.yaml: invalid YAML"},
		},
		{
			name: "two documents",
			yaml: "user: a\n---\nuser: b\n",
			want: []string{"more than one YAML document"},
		},
		{
			name: "mapping that merges itself",
			yaml: "log: &a\n  <<: *a\n",
			want: []string{"log: a merge key (<<) refers to a mapping that contains it"},
		},
		{
			name: "top level is not a mapping",
			yaml: "- a\n",
			want: []string{"(top level): expected a mapping"},
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(writeConfig(t, tt.yaml), testEnv(tt.env))
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q\ndoes not contain %q", err, want)
				}
			}
		})
	}
}

func TestExpand(t *testing.T) {
	t.Parallel()

	env := mapEnv(map[string]string{"A": "alpha", "EMPTY": ""})
	tests := []struct {
		in, want string
	}{
		{"plain", "plain"},
		{"${A}", "alpha"},
		{"x-${A}-y", "x-alpha-y"},
		{"$${A}", "${A}"},
		{"pa$$word", "pa$word"},
		{"cost $5", "cost $5"},
		{"trailing $", "trailing $"},
		{"${MISSING:-fallback}", "fallback"},
		{"${EMPTY:-fallback}", "fallback"},
		{"${A:-fallback}", "alpha"},
		{"${MISSING:-}", ""},
		{"${A}${A}", "alphaalpha"},
		{"${MISSING:-a:-b}", "a:-b"},
	}
	for _, tt := range tests {
		got, err := expand(tt.in, env)
		if err != nil || got != tt.want {
			t.Errorf("expand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestLoadExpandsEveryScalar(t *testing.T) {
	t.Parallel()

	body := minimal + `
    client_secret: ${SECRET}
user: "$${literal}"
tools:
  read_only: ${RO}
  answer_budget_bytes: ${BUDGET:-8192}
timeouts:
  tool_call: ${TOOL_CALL}
`
	cfg, err := Load(writeConfig(t, body), testEnv(map[string]string{
		"SECRET": "s3cret", "RO": "true", "TOOL_CALL": "40s",
	}))
	if err != nil {
		t.Fatal(err)
	}

	if got := cfg.Connections[0].ClientSecret; got != "s3cret" {
		t.Errorf("client_secret = %q", got)
	}
	if cfg.User != "${literal}" {
		t.Errorf("user = %q, want the escaped dollar kept literal", cfg.User)
	}
	if !cfg.Tools.ReadOnly || cfg.Tools.AnswerBudget != 8192 || cfg.Timeouts.ToolCall != 40*time.Second {
		t.Errorf("typed values not expanded: %+v %+v", cfg.Tools, cfg.Timeouts)
	}
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()

	cfg, err := Load(writeConfig(t, minimal), testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}

	want := &Config{
		DataDir:           "/home/alice/.local/share/servicenow-mcp",
		EncryptionKeyFile: "/home/alice/.config/servicenow-mcp/encryption.key",
		User:              "alice",
		Log:               Log{Level: "info", Format: "auto"},
		Server: Server{
			Listen:       "127.0.0.1:8765",
			PublicURL:    "http://127.0.0.1:8765",
			UserHeader:   "X-ServiceNow-MCP-User",
			MaxBodyBytes: 1 << 20,
		},
		Timeouts: Timeouts{
			ToolCall: 25 * time.Second, Request: 20 * time.Second, Shutdown: 10 * time.Second,
			RefreshMargin: 5 * time.Minute, LinkExpiry: 10 * time.Minute,
		},
		Tools: Tools{AnswerBudget: 65536},
		Connections: []Connection{{
			Name: "dev", InstanceURL: "https://dev12345.service-now.com", ClientID: "abc",
			Scopes: []string{"useraccount"},
		}},
		File: cfg.File,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", cfg, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	if got := cfg.RedirectURI(); got != "http://127.0.0.1:8765/oauth/callback" {
		t.Errorf("RedirectURI = %q", got)
	}
}

func TestDefaultsFollowXDGAndUser(t *testing.T) {
	t.Parallel()

	cfg := Default(mapEnv(map[string]string{
		"HOME": "/home/bob", "XDG_DATA_HOME": "/xdg/data", "XDG_CONFIG_HOME": "/xdg/config",
	}))

	if cfg.DataDir != "/xdg/data/servicenow-mcp" {
		t.Errorf("DataDir = %q", cfg.DataDir)
	}
	if cfg.EncryptionKeyFile != "/xdg/config/servicenow-mcp/encryption.key" {
		t.Errorf("EncryptionKeyFile = %q", cfg.EncryptionKeyFile)
	}
	if cfg.User != "local" {
		t.Errorf("User = %q, want local without $USER", cfg.User)
	}
	if err := cfg.ValidateWith(ValidateOptions{AllowNoConnections: true}); err != nil {
		t.Errorf("Default does not validate for the sandbox: %v", err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "connections: none configured") {
		t.Errorf("Validate without connections = %v", err)
	}
}

func TestLoadEnvOverrides(t *testing.T) {
	t.Parallel()

	body := minimal + `
data_dir: /file/data
user: file-user
encryption_key_file: /file/key
log: {level: debug, format: json}
server: {listen: "127.0.0.1:1", public_url: "http://file"}
`
	key := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	cfg, err := Load(writeConfig(t, body), testEnv(map[string]string{
		EnvDataDir:       "/env/data",
		EnvUser:          "env-user",
		EnvLogLevel:      "WARN",
		EnvLogFormat:     "console",
		EnvEncryptionKey: key,
		EnvListen:        "0.0.0.0:9000",
		EnvPublicURL:     "https://mcp.example.com/",
	}))
	if err != nil {
		t.Fatal(err)
	}

	got := []string{cfg.DataDir, cfg.User, cfg.Log.Level, cfg.Log.Format, cfg.EncryptionKey,
		cfg.EncryptionKeyFile, cfg.Server.Listen, cfg.Server.PublicURL}
	want := []string{"/env/data", "env-user", "warn", "console", key,
		"", "0.0.0.0:9000", "https://mcp.example.com/"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("overrides:\n got %q\nwant %q", got, want)
	}
	if uri := cfg.RedirectURI(); uri != "https://mcp.example.com/oauth/callback" {
		t.Errorf("RedirectURI = %q", uri)
	}
}

func TestEnvKeyFileReplacesFileKey(t *testing.T) {
	t.Parallel()

	cfg, err := Load(writeConfig(t, minimal+"encryption_key: ${K:-abc}\n"),
		testEnv(map[string]string{EnvEncryptionKeyFile: "/secure/key"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EncryptionKey != "" || cfg.EncryptionKeyFile != "/secure/key" {
		t.Errorf("key = %q, file = %q", cfg.EncryptionKey, cfg.EncryptionKeyFile)
	}
}

func TestOverrideErrorNamesVariable(t *testing.T) {
	t.Parallel()

	cfg, err := Load(writeConfig(t, minimal), testEnv(map[string]string{EnvLogLevel: "loud"}))
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.Validate()
	want := `SERVICENOW_MCP_LOG_LEVEL (overrides log.level): "loud" is not a level`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Validate = %v, want %q", err, want)
	}
}

func TestLoadPaths(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	body := minimal + "data_dir: data\nencryption_key_file: ~/keys/enc.key\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}

	cfg, err := Load(path, testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "data"); cfg.DataDir != want {
		t.Errorf("DataDir = %q, want %q (relative to the file)", cfg.DataDir, want)
	}
	if cfg.EncryptionKeyFile != "/home/alice/keys/enc.key" {
		t.Errorf("EncryptionKeyFile = %q, want ~ expanded", cfg.EncryptionKeyFile)
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.yaml")

	if _, err := Load(missing, testEnv(nil)); err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Errorf("explicit missing file: err = %v, want an error naming it", err)
	}

	if _, err := Load("", testEnv(map[string]string{EnvConfig: missing})); err == nil {
		t.Error("missing $SERVICENOW_MCP_CONFIG file: want an error")
	}

	env := testEnv(map[string]string{"XDG_CONFIG_HOME": dir})
	cfg, err := Load("", env)
	if err != nil {
		t.Fatalf("missing default file: %v", err)
	}
	if cfg.File != "" || cfg.Server.Listen != DefaultListen {
		t.Errorf("missing default file: got %+v, want defaults", cfg)
	}
	if _, err := Load(DefaultPath(env), env); err != nil {
		t.Errorf("missing default file named explicitly: %v", err)
	}
}

func TestDefaultPath(t *testing.T) {
	t.Parallel()

	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"HOME": "/h"}, "/h/.config/servicenow-mcp/config.yaml"},
		{map[string]string{"HOME": "/h", "XDG_CONFIG_HOME": "/x"}, "/x/servicenow-mcp/config.yaml"},
		{map[string]string{"HOME": "/h", "XDG_CONFIG_HOME": "relative"}, "/h/.config/servicenow-mcp/config.yaml"},
		{map[string]string{"HOME": "/h", EnvConfig: "/etc/sn.yaml"}, "/etc/sn.yaml"},
	}
	for _, tt := range tests {
		if got := DefaultPath(mapEnv(tt.env)); got != tt.want {
			t.Errorf("DefaultPath(%v) = %q, want %q", tt.env, got, tt.want)
		}
	}
}

func TestLoadAliasesAndMerge(t *testing.T) {
	t.Parallel()

	body := `
x-common: &common
  client_id: shared
  scopes: [useraccount, admin]
connections:
  - <<: *common
    name: a
    instance_url: https://a.service-now.com
  - <<: *common
    name: b
    instance_url: https://b.service-now.com
    client_id: own
`
	_, err := Load(writeConfig(t, body), testEnv(nil))
	if err == nil || !strings.Contains(err.Error(), "x-common: unknown key") {
		t.Fatalf("unknown anchor holder: err = %v", err)
	}

	body = `
connections:
  - &first
    name: a
    instance_url: https://a.service-now.com
    client_id: shared
    scopes: [useraccount, admin]
  - <<: *first
    name: b
    client_id: own
`
	cfg, err := Load(writeConfig(t, body), testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Connections[1]
	if b.Name != "b" || b.ClientID != "own" || b.InstanceURL != "https://a.service-now.com" ||
		!reflect.DeepEqual(b.Scopes, []string{"useraccount", "admin"}) {
		t.Errorf("merged connection = %+v", b)
	}
}
