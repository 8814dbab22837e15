// Package config owns the servicenow-mcp configuration: the Config type,
// loading from YAML with ${VAR} expansion and environment overrides, and
// validation that names the offending key.
package config

import "time"

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
