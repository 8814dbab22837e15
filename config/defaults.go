package config

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Defaults for keys left empty. Each is documented in config.example.yaml.
const (
	DefaultListen        = "127.0.0.1:8765"
	DefaultUserHeader    = "X-ServiceNow-MCP-User"
	DefaultMaxBodyBytes  = 1 << 20
	DefaultAnswerBudget  = 64 << 10
	DefaultToolCall      = 25 * time.Second
	DefaultRequest       = 20 * time.Second
	DefaultShutdown      = 10 * time.Second
	DefaultRefreshMargin = 5 * time.Minute
	DefaultLinkExpiry    = 10 * time.Minute
	DefaultLogLevel      = "info"
	DefaultLogFormat     = "auto"
	DefaultScope         = "useraccount"
)

// ApplyDefaults fills every empty key with its default, expands a leading
// ~ in paths, and normalises case and trailing slashes. It is idempotent.
// Paths under the home directory come from env (os.LookupEnv when none is
// given): $XDG_DATA_HOME, $XDG_CONFIG_HOME, $HOME, $USER.
func (c *Config) ApplyDefaults(env ...Env) {
	lookupEnv := firstEnv(env)
	home := homeDir(lookupEnv)

	if c.DataDir == "" {
		c.DataDir = filepath.Join(xdgDir(lookupEnv, "XDG_DATA_HOME", ".local/share"), "servicenow-mcp")
	}
	if c.EncryptionKey == "" && c.EncryptionKeyFile == "" {
		c.EncryptionKeyFile = filepath.Join(xdgDir(lookupEnv, "XDG_CONFIG_HOME", ".config"),
			"servicenow-mcp", "encryption.key")
	}
	for _, p := range []*string{&c.DataDir, &c.EncryptionKeyFile, &c.Server.TLSCert, &c.Server.TLSKey} {
		*p = expandHome(*p, home)
	}
	if c.User == "" {
		c.User = "local"
		if user, ok := lookup(lookupEnv, "USER"); ok {
			c.User = user
		}
	}

	c.Log.Level = orDefault(strings.ToLower(c.Log.Level), DefaultLogLevel)
	c.Log.Format = orDefault(strings.ToLower(c.Log.Format), DefaultLogFormat)

	s := &c.Server
	s.Listen = orDefault(s.Listen, DefaultListen)
	if s.PublicURL == "" {
		s.PublicURL = defaultPublicURL(s.Listen, s.TLSCert != "")
	}
	s.UserHeader = orDefault(s.UserHeader, DefaultUserHeader)
	if s.MaxBodyBytes == 0 {
		s.MaxBodyBytes = DefaultMaxBodyBytes
	}
	for i := range s.APIKeys {
		s.APIKeys[i].Hash = strings.ToLower(strings.TrimSpace(s.APIKeys[i].Hash))
	}

	t := &c.Timeouts
	for _, d := range []struct {
		value *time.Duration
		def   time.Duration
	}{
		{&t.ToolCall, DefaultToolCall},
		{&t.Request, DefaultRequest},
		{&t.Shutdown, DefaultShutdown},
		{&t.RefreshMargin, DefaultRefreshMargin},
		{&t.LinkExpiry, DefaultLinkExpiry},
	} {
		if *d.value == 0 {
			*d.value = d.def
		}
	}

	if c.Tools.AnswerBudget == 0 {
		c.Tools.AnswerBudget = DefaultAnswerBudget
	}

	for i := range c.Connections {
		normalizeConnection(&c.Connections[i])
	}
}

// normalizeConnection gives a connection its default scope and drops the
// trailing slash of the instance URL, so that paths can be appended.
func normalizeConnection(conn *Connection) {
	if len(conn.Scopes) == 0 {
		conn.Scopes = []string{DefaultScope}
	}
	conn.InstanceURL = strings.TrimRight(strings.TrimSpace(conn.InstanceURL), "/")
}

// defaultPublicURL is the URL a browser on this machine reaches the
// listener at. An all-interfaces address is reached via loopback; an
// operator serving other machines sets public_url.
func defaultPublicURL(listen string, tls bool) string {
	scheme := "http"
	if tls {
		scheme = "https"
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return scheme + "://" + listen
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// xdgDir is $<variable> when it is an absolute path (the XDG rule), else
// ~/<fallback>.
func xdgDir(env Env, variable, fallback string) string {
	if dir, ok := lookup(env, variable); ok && filepath.IsAbs(dir) {
		return dir
	}
	return filepath.Join(homeDir(env), filepath.FromSlash(fallback))
}

func homeDir(env Env) string {
	if home, ok := lookup(env, "HOME"); ok {
		return home
	}
	home, _ := os.UserHomeDir()
	return home
}

// expandHome turns "~" and "~/x" into paths under home; "~user" is left
// alone.
func expandHome(path, home string) string {
	if path == "~" {
		return home
	}
	if rest, ok := strings.CutPrefix(path, "~/"); ok {
		return filepath.Join(home, rest)
	}
	return path
}

func orDefault(value, def string) string {
	if value == "" {
		return def
	}
	return value
}

// SetListen changes the listen address, moving public_url along with it
// when public_url was only the default derived from the old address.
func (c *Config) SetListen(listen string) {
	tls := c.Server.TLSCert != ""
	if c.Server.PublicURL == "" || c.Server.PublicURL == defaultPublicURL(c.Server.Listen, tls) {
		c.Server.PublicURL = defaultPublicURL(listen, tls)
	}
	c.Server.Listen = listen
}
