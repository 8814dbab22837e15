// Package config owns the servicenow-mcp configuration: the Config type,
// loading from YAML with ${VAR} expansion and environment overrides, and
// validation that names the offending key.
package config

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

// Config is the whole configuration of one servicenow-mcp process.
type Config struct {
	// DataDir holds the Badger store. Created 0700.
	DataDir string `yaml:"data_dir"`
	// EncryptionKey is a base64 (std or URL) 32-byte key. Usually
	// "${SERVICENOW_MCP_ENCRYPTION_KEY}". Mutually exclusive with EncryptionKeyFile.
	EncryptionKey string `yaml:"encryption_key"`
	// EncryptionKeyFile is read when EncryptionKey is empty; created 0600
	// with a fresh key on first run when absent. Must be outside DataDir.
	EncryptionKeyFile string `yaml:"encryption_key_file"`
	// PreviousEncryptionKeys still open records sealed before a rotation;
	// records are re-sealed with the current key on their next write.
	PreviousEncryptionKeys []string `yaml:"previous_encryption_keys"`
	// User is the end user served over stdio.
	User string `yaml:"user"`

	Log         Log          `yaml:"log"`
	Server      Server       `yaml:"server"`
	Timeouts    Timeouts     `yaml:"timeouts"`
	Tools       Tools        `yaml:"tools"`
	Connections []Connection `yaml:"connections"`

	// File is the path the configuration was read from; empty when it was
	// built from defaults alone. Error messages name it.
	File string `yaml:"-"`

	// overridden maps a key path to the environment variable that set it,
	// so that a validation error names the place the user has to fix.
	overridden map[string]string
}

// Log chooses level and format of the stderr log.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // json, console, auto (console on a terminal)
}

// Server is the HTTP side: the OAuth callback (all transports) and, with
// --transport http, the MCP endpoints on the same listener.
type Server struct {
	Listen    string `yaml:"listen"`     // default 127.0.0.1:8765
	PublicURL string `yaml:"public_url"` // default http://<listen>; redirect URI = PublicURL + /oauth/callback
	TLSCert   string `yaml:"tls_cert_file"`
	TLSKey    string `yaml:"tls_key_file"`

	APIKeys           []APIKey `yaml:"api_keys"`
	UserHeader        string   `yaml:"user_header"` // default X-ServiceNow-MCP-User
	AllowUserArgument bool     `yaml:"allow_user_argument"`
	MaxBodyBytes      int64    `yaml:"max_body_bytes"` // default 1 MiB
}

// APIKey is one caller key, stored as a hash ("sha256:<hex>").
type APIKey struct {
	Name    string `yaml:"name"`
	Hash    string `yaml:"hash"`
	User    string `yaml:"user"`    // bound user; exclusive with Gateway
	Gateway bool   `yaml:"gateway"` // may name the user per request
}

// Timeouts bound every tool call and every outbound request.
type Timeouts struct {
	ToolCall time.Duration `yaml:"tool_call"` // default 25s
	Request  time.Duration `yaml:"request"`   // default 20s
	Shutdown time.Duration `yaml:"shutdown"`  // default 10s
	// RefreshMargin: refresh this long before the access token expires. default 5m
	RefreshMargin time.Duration `yaml:"refresh_margin"`
	// LinkExpiry: how long an authorization link stays valid. default 10m
	LinkExpiry time.Duration `yaml:"link_expiry"`
}

// Tools chooses what is registered.
type Tools struct {
	Toolsets     []string `yaml:"toolsets"`
	Enable       []string `yaml:"tools"`
	Exclude      []string `yaml:"exclude_tools"`
	ReadOnly     bool     `yaml:"read_only"`
	AnswerBudget int      `yaml:"answer_budget_bytes"` // default 64 KiB
}

// Connection is one ServiceNow instance plus the OAuth app registered on it.
type Connection struct {
	Name         string   `yaml:"name"`
	InstanceURL  string   `yaml:"instance_url"`
	ClientID     string   `yaml:"client_id"`
	ClientSecret string   `yaml:"client_secret"`
	Scopes       []string `yaml:"scopes"`
	Default      bool     `yaml:"default"`
}

// RedactedValue replaces every secret in the copy made by Redacted.
const RedactedValue = "[redacted]"

// CallbackPath is the path of the OAuth redirect URI under PublicURL.
const CallbackPath = "/oauth/callback"

// Connection returns the connection called name. An empty name picks the
// connection marked default, or the only one. The error says which names
// exist, so that it can be shown to a model as is.
func (c *Config) Connection(name string) (*Connection, error) {
	if len(c.Connections) == 0 {
		return nil, errors.New("no ServiceNow connection is configured; " +
			"add one under connections in the config file")
	}

	if name == "" {
		for i := range c.Connections {
			if c.Connections[i].Default {
				return &c.Connections[i], nil
			}
		}
		if len(c.Connections) == 1 {
			return &c.Connections[0], nil
		}
		return nil, fmt.Errorf("several connections are configured (%s) and none is "+
			"the default; name one in the connection argument",
			strings.Join(c.ConnectionNames(), ", "))
	}

	for i := range c.Connections {
		if c.Connections[i].Name == name {
			return &c.Connections[i], nil
		}
	}
	return nil, fmt.Errorf("unknown connection %q; configured connections: %s",
		name, strings.Join(c.ConnectionNames(), ", "))
}

// ConnectionNames lists the connection names in config order.
func (c *Config) ConnectionNames() []string {
	names := make([]string, len(c.Connections))
	for i, conn := range c.Connections {
		names[i] = conn.Name
	}
	return names
}

// AddConnection appends conn (the sandbox, for instance) with the same
// defaults a connection from the file gets. Call Validate afterwards.
func (c *Config) AddConnection(conn Connection) {
	conn.Scopes = slices.Clone(conn.Scopes)
	normalizeConnection(&conn)
	c.Connections = append(c.Connections, conn)
}

// RedirectURI is the OAuth redirect URI: PublicURL without trailing
// slashes plus CallbackPath. Both OAuth legs must use this one value so
// that ServiceNow sees the same bytes twice.
func (c *Config) RedirectURI() string {
	return strings.TrimRight(c.Server.PublicURL, "/") + CallbackPath
}

// Redacted returns a deep copy with every secret replaced by
// RedactedValue, fit for a debug log. Empty secrets stay empty, so the
// log still shows whether one was given.
func (c *Config) Redacted() *Config {
	r := *c
	r.EncryptionKey = redact(c.EncryptionKey)
	r.PreviousEncryptionKeys = make([]string, len(c.PreviousEncryptionKeys))
	for i, k := range c.PreviousEncryptionKeys {
		r.PreviousEncryptionKeys[i] = redact(k)
	}
	r.Server.APIKeys = slices.Clone(c.Server.APIKeys)
	r.Tools.Toolsets = slices.Clone(c.Tools.Toolsets)
	r.Tools.Enable = slices.Clone(c.Tools.Enable)
	r.Tools.Exclude = slices.Clone(c.Tools.Exclude)
	r.Connections = slices.Clone(c.Connections)
	for i := range r.Connections {
		r.Connections[i].ClientSecret = redact(r.Connections[i].ClientSecret)
		r.Connections[i].Scopes = slices.Clone(r.Connections[i].Scopes)
	}
	return &r
}

// HashAPIKey returns the form in which an API key is stored in config:
// "sha256:" followed by the lowercase hex SHA-256 of the key.
func HashAPIKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// APIKeyFor returns the configured key whose hash matches key. Every
// configured hash is compared in constant time, so timing does not tell
// how close a guess came.
func (s *Server) APIKeyFor(key string) (*APIKey, bool) {
	want := []byte(HashAPIKey(key))
	var found *APIKey
	for i := range s.APIKeys {
		have := []byte(strings.ToLower(s.APIKeys[i].Hash))
		if subtle.ConstantTimeCompare(want, have) == 1 && found == nil {
			found = &s.APIKeys[i]
		}
	}
	return found, found != nil
}

// LoopbackOnly reports whether Listen binds a loopback address only. The
// server refuses HTTP transport on any other address without API keys.
func (s *Server) LoopbackOnly() bool {
	host, _, err := net.SplitHostPort(s.Listen)
	return err == nil && isLoopbackHost(host)
}

func redact(secret string) string {
	if secret == "" {
		return ""
	}
	return RedactedValue
}

// isLoopbackHost accepts localhost and literal loopback addresses
// (127.0.0.0/8, ::1). Other names are not resolved: a name that resolves
// to loopback today may not tomorrow.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
