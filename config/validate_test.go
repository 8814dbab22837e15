package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// validConfig is a configuration that passes Validate; cases change one
// thing each.
func validConfig() *Config {
	cfg := &Config{
		DataDir:           "/var/lib/servicenow-mcp",
		EncryptionKeyFile: "/etc/servicenow-mcp/encryption.key",
		Connections: []Connection{{
			Name: "dev", InstanceURL: "https://dev12345.service-now.com", ClientID: "abc",
		}},
	}
	cfg.ApplyDefaults(testEnv(nil))
	return cfg
}

func TestValidate(t *testing.T) {
	t.Parallel()

	tlsDir := t.TempDir()
	certFile := filepath.Join(tlsDir, "tls.crt")
	if err := os.WriteFile(certFile, []byte("cert"), 0o600); err != nil {
		t.Fatal(err)
	}
	conn := func(name, url string) Connection {
		return Connection{Name: name, InstanceURL: url, ClientID: "abc", Scopes: []string{"useraccount"}}
	}
	apiKey := func(name string, seed string) APIKey {
		return APIKey{Name: name, Hash: HashAPIKey(seed), User: name}
	}

	tests := []struct {
		name   string
		change func(c *Config)
		want   string // substring of the error; empty means valid
	}{
		{"valid", func(c *Config) {}, ""},
		{"missing instance url", func(c *Config) { c.Connections[0].InstanceURL = "" },
			"connections[0].instance_url: is required"},
		{"missing client id", func(c *Config) { c.Connections[0].ClientID = "" },
			"connections[0].client_id: is required"},
		{"missing name", func(c *Config) { c.Connections[0].Name = "" },
			"connections[0].name: is required"},
		{"bad name", func(c *Config) { c.Connections[0].Name = "Dev Box" },
			`connections[0].name: "Dev Box" is not a valid name`},
		{"http instance refused", func(c *Config) { c.Connections[0].InstanceURL = "http://dev12345.service-now.com" },
			`connections[0].instance_url: "http://dev12345.service-now.com" uses plain http; use https`},
		{"http loopback accepted", func(c *Config) { c.Connections[0].InstanceURL = "http://127.0.0.1:9000" }, ""},
		{"http 127/8 accepted", func(c *Config) { c.Connections[0].InstanceURL = "http://127.1.2.3" }, ""},
		{"http ::1 accepted", func(c *Config) { c.Connections[0].InstanceURL = "http://[::1]:9000/" }, ""},
		{"http localhost accepted", func(c *Config) { c.Connections[0].InstanceURL = "http://localhost:9000" }, ""},
		{"http localhost lookalike refused", func(c *Config) { c.Connections[0].InstanceURL = "http://localhost.evil.com" },
			"uses plain http"},
		{"custom domain accepted", func(c *Config) { c.Connections[0].InstanceURL = "https://itsm.acme.example" }, ""},
		{"relative url", func(c *Config) { c.Connections[0].InstanceURL = "dev12345.service-now.com" },
			"is not an absolute URL"},
		{"url with path", func(c *Config) { c.Connections[0].InstanceURL = "https://x.service-now.com/api" },
			"has a path"},
		{"url with query", func(c *Config) { c.Connections[0].InstanceURL = "https://x.service-now.com?a=b" },
			"has a query"},
		{"url with userinfo, not quoted", func(c *Config) { c.Connections[0].InstanceURL = "https://u:hunter2@x.service-now.com" },
			"connections[0].instance_url: must not hold a user name or password"},
		{"url with other scheme", func(c *Config) { c.Connections[0].InstanceURL = "ftp://x.service-now.com" },
			`has scheme "ftp"`},
		{"duplicate connection", func(c *Config) {
			c.Connections = append(c.Connections, conn("dev", "https://other.service-now.com"))
		}, `connections[1].name: "dev" is used by connections[0] too`},
		{"two defaults", func(c *Config) {
			c.Connections[0].Default = true
			second := conn("prod", "https://prod.service-now.com")
			second.Default = true
			c.Connections = append(c.Connections, second)
		}, "connections[1].default: connections[0] is the default already"},
		{"several without default is fine", func(c *Config) {
			c.Connections = append(c.Connections, conn("prod", "https://prod.service-now.com"))
		}, ""},
		{"bad scope", func(c *Config) { c.Connections[0].Scopes = []string{"a b"} },
			`connections[0].scopes[0]: "a b" is not a scope`},
		{"no connections", func(c *Config) { c.Connections = nil }, "connections: none configured"},
		{"log level", func(c *Config) { c.Log.Level = "trace" }, `log.level: "trace" is not a level`},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, `log.format: "xml" is not a format`},
		{"listen without port", func(c *Config) { c.Server.Listen = "localhost" }, `server.listen: "localhost" is not host:port`},
		{"listen with bad port", func(c *Config) { c.Server.Listen = "localhost:http" }, "has no valid port number"},
		{"public url with query", func(c *Config) { c.Server.PublicURL = "https://mcp.example.com/?x=1" },
			"server.public_url: \"https://mcp.example.com/?x=1\" has a query"},
		{"public url relative", func(c *Config) { c.Server.PublicURL = "mcp.example.com" },
			"server.public_url: \"mcp.example.com\" is not an absolute http(s) URL"},
		{"public url with path prefix", func(c *Config) { c.Server.PublicURL = "https://example.com/sn/" }, ""},
		{"listen on port 0", func(c *Config) { c.SetListen("127.0.0.1:0") },
			"server.public_url: \"http://127.0.0.1:0\" has port 0"},
		{"listen on port 0 behind a public url", func(c *Config) {
			c.Server.PublicURL = "https://mcp.example.com"
			c.SetListen("127.0.0.1:0")
		}, ""},
		{"user with a newline", func(c *Config) { c.User = "a\nb" }, "user: holds a control or invisible character"},
		{"tool call beyond clients' patience", func(c *Config) { c.Timeouts.ToolCall = time.Hour },
			"timeouts.tool_call: 1h0m0s is longer than MCP clients wait"},
		{"link that dies before sign-in", func(c *Config) { c.Timeouts.LinkExpiry = time.Nanosecond },
			"timeouts.link_expiry: 1ns is too short"},
		{"refresh on every call", func(c *Config) { c.Timeouts.RefreshMargin = 1000 * time.Hour },
			"timeouts.refresh_margin: 1000h0m0s is longer than ServiceNow's access tokens live"},
		{"negative request", func(c *Config) { c.Timeouts.Request = -time.Second }, "timeouts.request: must be positive"},
		{"key and key file", func(c *Config) { c.EncryptionKey = HashAPIKey("x")[7:] },
			"encryption_key: (or SERVICENOW_MCP_ENCRYPTION_KEY) is set together with encryption_key_file (or SERVICENOW_MCP_ENCRYPTION_KEY_FILE)"},
		{"short key", func(c *Config) { c.EncryptionKeyFile, c.EncryptionKey = "", "c2hvcnQ=" },
			"encryption_key: the key is 5 bytes, want 32"},
		{"good key", func(c *Config) {
			c.EncryptionKeyFile, c.EncryptionKey = "", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
		}, ""},
		{"bad previous key", func(c *Config) { c.PreviousEncryptionKeys = []string{"!!"} },
			"previous_encryption_keys[0]: the key is not base64"},
		{"key file inside data dir", func(c *Config) { c.EncryptionKeyFile = c.DataDir + "/enc.key" },
			"encryption_key_file: /var/lib/servicenow-mcp/enc.key is inside data_dir"},
		{"key file beside data dir", func(c *Config) { c.EncryptionKeyFile = c.DataDir + "-key" }, ""},
		{"key file is data dir", func(c *Config) { c.EncryptionKeyFile = c.DataDir + "/" }, "is inside data_dir"},
		{"cert without key", func(c *Config) { c.Server.TLSCert = certFile },
			"server.tls_key_file: is empty while tls_cert_file is set"},
		{"unreadable key", func(c *Config) { c.Server.TLSCert, c.Server.TLSKey = certFile, certFile+".nope" },
			"server.tls_key_file: cannot be read"},
		{"cert and key", func(c *Config) { c.Server.TLSCert, c.Server.TLSKey = certFile, certFile }, ""},
		{"api keys valid", func(c *Config) {
			c.Server.APIKeys = []APIKey{apiKey("a", "1"), {Name: "gw", Hash: HashAPIKey("2"), Gateway: true}}
		}, ""},
		{"bad api key hash", func(c *Config) {
			c.Server.APIKeys = []APIKey{{Name: "a", Hash: "plain-secret-key", User: "a"}}
		}, `server.api_keys[0].hash: is not "sha256:" followed by 64 hex digits; make it with: servicenow-mcp keys hash`},
		{"api key user and gateway", func(c *Config) {
			k := apiKey("a", "1")
			k.Gateway = true
			c.Server.APIKeys = []APIKey{k}
		}, "server.api_keys[0]: sets both user and gateway"},
		{"api key neither", func(c *Config) { c.Server.APIKeys = []APIKey{{Name: "a", Hash: HashAPIKey("1")}} },
			"server.api_keys[0]: sets neither user nor gateway"},
		{"api key names unique", func(c *Config) { c.Server.APIKeys = []APIKey{apiKey("a", "1"), apiKey("a", "2")} },
			`server.api_keys[1].name: "a" is used by server.api_keys[0] too`},
		{"api key hashes unique", func(c *Config) { c.Server.APIKeys = []APIKey{apiKey("a", "1"), apiKey("b", "1")} },
			"server.api_keys[1].hash: is the same as server.api_keys[0].hash"},
		{"api key name required", func(c *Config) { c.Server.APIKeys = []APIKey{apiKey("", "1")} },
			"server.api_keys[0].name: is required"},
		{"negative duration", func(c *Config) { c.Timeouts.Request = -1 }, "timeouts.request: must be positive"},
		{"zero max body", func(c *Config) { c.Server.MaxBodyBytes = -5 }, "server.max_body_bytes: must be positive"},
		{"budget too small", func(c *Config) { c.Tools.AnswerBudget = 100 },
			"tools.answer_budget_bytes: 100 is out of range; use 4096 to 10485760 bytes"},
		{"budget too large", func(c *Config) { c.Tools.AnswerBudget = 11 << 20 }, "is out of range"},
		{"user header reserved", func(c *Config) { c.Server.UserHeader = "Authorization" },
			`server.user_header: "Authorization" is a standard header`},
		{"user header invalid", func(c *Config) { c.Server.UserHeader = "X User" },
			`server.user_header: "X User" is not a valid header name`},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := validConfig()
			tt.change(cfg)
			err := cfg.Validate()

			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tt.want == "":
				return
			case err == nil:
				t.Fatalf("Validate = nil, want %q", tt.want)
			case !strings.Contains(err.Error(), tt.want):
				t.Fatalf("Validate = %q\nwant it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "plain-secret-key") {
				t.Errorf("error quotes a secret: %q", err)
			}
		})
	}
}

func TestValidateOneLinePerProblem(t *testing.T) {
	t.Parallel()

	cfg := validConfig()
	cfg.File = "/etc/sn.yaml"
	cfg.Log.Level = "loud"
	cfg.Connections[0].ClientID = ""
	cfg.Timeouts.Shutdown = -1

	lines := strings.Split(cfg.Validate().Error(), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3: %q", len(lines), lines)
	}
	for _, line := range lines {
		if !strings.HasPrefix(line, "/etc/sn.yaml: ") {
			t.Errorf("line %q does not name the file", line)
		}
	}
}

func TestLoadHTTPInstance(t *testing.T) {
	t.Parallel()

	for url, ok := range map[string]bool{
		"http://dev12345.service-now.com":   false,
		"http://127.0.0.1:8080/":            true,
		"https://dev12345.service-now.com/": true,
	} {
		body := "connections:\n  - name: dev\n    client_id: x\n    instance_url: " + url + "\n"
		cfg, err := Load(writeConfig(t, body), testEnv(nil))
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); (err == nil) != ok {
			t.Errorf("%s: Validate = %v, want ok=%v", url, err, ok)
		}
		if strings.HasSuffix(cfg.Connections[0].InstanceURL, "/") {
			t.Errorf("%s: trailing slash kept", url)
		}
	}
}
