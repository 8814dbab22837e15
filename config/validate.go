package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ValidateOptions loosens Validate for callers that complete the
// configuration themselves.
type ValidateOptions struct {
	// AllowNoConnections accepts a configuration without connections, for
	// a caller that adds one (serve --sandbox adds the sandbox instance).
	AllowNoConnections bool
}

// Answer budget bounds: below 4 KiB a single record does not fit; above
// 10 MiB the answer no longer fits a model's context anyway.
const (
	MinAnswerBudget = 4 << 10
	MaxAnswerBudget = 10 << 20
)

var (
	connectionNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	apiKeyHashRE     = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// Validate checks a configuration after ApplyDefaults. The error holds
// one line per problem, each naming the key (or the environment variable
// that set it), the cause and the fix. Secret values are never quoted.
func (c *Config) Validate() error {
	return c.ValidateWith(ValidateOptions{})
}

// ValidateWith is Validate with options.
func (c *Config) ValidateWith(opts ValidateOptions) error {
	v := &validator{cfg: c}
	v.storage()
	v.logging()
	v.server()
	v.timeouts()
	v.tools()
	v.connections(opts)
	return errors.Join(v.errs...)
}

// DecodeEncryptionKey decodes a base64 (standard or URL alphabet, padded
// or not) 32-byte AES-256 key.
func DecodeEncryptionKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding,
	} {
		key, err := enc.DecodeString(s)
		if err == nil && len(key) == 32 {
			return key, nil
		}
		if err == nil {
			return nil, fmt.Errorf("the key is %d bytes, want 32", len(key))
		}
	}
	return nil, errors.New("the key is not base64")
}

type validator struct {
	cfg  *Config
	errs []error
}

// fail records a problem with key. A key set from the environment is
// reported under the variable's name, since that is where the fix goes.
func (v *validator) fail(key, format string, args ...any) {
	e := &keyError{File: v.cfg.File, Key: key, Msg: fmt.Sprintf(format, args...)}
	if name, ok := v.cfg.overridden[key]; ok {
		e.File, e.Key = "", name+" (overrides "+key+")"
	}
	v.errs = append(v.errs, e)
}

func (v *validator) storage() {
	c := v.cfg

	if c.DataDir == "" {
		v.fail("data_dir", "is empty; set a directory, or remove the key to use the default")
	}
	if c.User == "" {
		v.fail("user", "is empty; set the end user served over stdio")
	} else if problem := CheckUserName(c.User); problem != "" {
		v.fail("user", "%s", problem)
	}

	switch {
	case c.EncryptionKey != "" && c.EncryptionKeyFile != "":
		v.fail("encryption_key", "(or %s) is set together with encryption_key_file (or %s); keep one of the two",
			EnvEncryptionKey, EnvEncryptionKeyFile)
	case c.EncryptionKey != "":
		if _, err := DecodeEncryptionKey(c.EncryptionKey); err != nil {
			v.fail("encryption_key", "%v; make one with: openssl rand -base64 32", err)
		}
	case c.EncryptionKeyFile == "":
		v.fail("encryption_key_file", "is empty and no encryption_key is set; set one of the two")
	case c.DataDir != "" && within(c.EncryptionKeyFile, c.DataDir):
		v.fail("encryption_key_file", "%s is inside data_dir %s; keep the key apart from the data it "+
			"protects, e.g. under ~/.config/servicenow-mcp", c.EncryptionKeyFile, c.DataDir)
	}

	for i, key := range c.PreviousEncryptionKeys {
		if _, err := DecodeEncryptionKey(key); err != nil {
			v.fail(fmt.Sprintf("previous_encryption_keys[%d]", i), "%v; list the base64 keys used before", err)
		}
	}
}

func (v *validator) logging() {
	switch v.cfg.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.fail("log.level", "%q is not a level; use debug, info, warn or error", v.cfg.Log.Level)
	}
	switch v.cfg.Log.Format {
	case "json", "console", "auto":
	default:
		v.fail("log.format", "%q is not a format; use json, console or auto", v.cfg.Log.Format)
	}
}

func (v *validator) server() {
	s := &v.cfg.Server

	if problem := checkListen(s.Listen); problem != "" {
		v.fail("server.listen", "%s", problem)
	}
	if problem := checkPublicURL(s.PublicURL); problem != "" {
		v.fail("server.public_url", "%s", problem)
	}

	switch {
	case s.TLSCert != "" && s.TLSKey == "":
		v.fail("server.tls_key_file", "is empty while tls_cert_file is set; set both or neither")
	case s.TLSCert == "" && s.TLSKey != "":
		v.fail("server.tls_cert_file", "is empty while tls_key_file is set; set both or neither")
	case s.TLSCert != "":
		v.readable("server.tls_cert_file", s.TLSCert)
		v.readable("server.tls_key_file", s.TLSKey)
	}

	if problem := checkHeaderName(s.UserHeader); problem != "" {
		v.fail("server.user_header", "%s", problem)
	}
	if s.MaxBodyBytes <= 0 {
		v.fail("server.max_body_bytes", "must be positive, got %d", s.MaxBodyBytes)
	}

	names, hashes := map[string]int{}, map[string]int{}
	for i, k := range s.APIKeys {
		key := fmt.Sprintf("server.api_keys[%d]", i)
		switch first, dup := names[k.Name]; {
		case k.Name == "":
			v.fail(key+".name", "is required; name the key after its holder, for the logs")
		case dup:
			v.fail(key+".name", "%q is used by server.api_keys[%d] too; names must be unique", k.Name, first)
		default:
			names[k.Name] = i
		}

		switch first, dup := hashes[k.Hash]; {
		case !apiKeyHashRE.MatchString(k.Hash):
			v.fail(key+".hash", `is not "sha256:" followed by 64 hex digits; `+
				"make it with: servicenow-mcp keys hash")
		case dup:
			v.fail(key+".hash", "is the same as server.api_keys[%d].hash; give each holder its own key", first)
		default:
			hashes[k.Hash] = i
		}

		switch {
		case k.User != "" && k.Gateway:
			v.fail(key, "sets both user and gateway; bind the key to one user, or make it a gateway key")
		case k.User == "" && !k.Gateway:
			v.fail(key, "sets neither user nor gateway; add user: <name>, or gateway: true")
		}
	}
}

func (v *validator) timeouts() {
	t := v.cfg.Timeouts
	for _, d := range []struct {
		key   string
		value time.Duration
	}{
		{"timeouts.tool_call", t.ToolCall},
		{"timeouts.request", t.Request},
		{"timeouts.shutdown", t.Shutdown},
		{"timeouts.refresh_margin", t.RefreshMargin},
		{"timeouts.link_expiry", t.LinkExpiry},
	} {
		if d.value <= 0 {
			v.fail(d.key, "must be positive, got %s", d.value)
		}
	}

	// A request longer than the tool call is harmless: the call's bound
	// cuts it. Bounds beyond any working setup are refused.
	if t.ToolCall > MaxToolCall {
		v.fail("timeouts.tool_call", "%s is longer than MCP clients wait for an answer; use at most %s", t.ToolCall, MaxToolCall)
	}
	if t.LinkExpiry > 0 && t.LinkExpiry < MinLinkExpiry {
		v.fail("timeouts.link_expiry", "%s is too short for a person to open the link and sign in; use at least %s", t.LinkExpiry, MinLinkExpiry)
	}
	if t.RefreshMargin > MaxRefreshMargin {
		v.fail("timeouts.refresh_margin", "%s is longer than ServiceNow's access tokens live (30 minutes unless the OAuth app says otherwise), "+
			"so every call would refresh; use a few minutes (at most %s)", t.RefreshMargin, MaxRefreshMargin)
	}
}

// Bounds on timeouts that no working setup goes beyond.
const (
	MaxToolCall      = 10 * time.Minute
	MinLinkExpiry    = time.Minute
	MaxRefreshMargin = time.Hour
)

// MaxUserLength bounds an end-user name.
const MaxUserLength = 256

// CheckUserName accepts a printable UTF-8 name of bounded length, and
// otherwise says what is wrong with it, worded to follow the name's
// source ("header X-…", "argument \"user\""). Every place that takes an
// end-user name from a caller checks it here.
func CheckUserName(user string) string {
	switch {
	case user == "":
		return "is empty; name the end user"
	case len(user) > MaxUserLength:
		return fmt.Sprintf("is longer than %d bytes; use a shorter stable id for the end user", MaxUserLength)
	case !utf8.ValidString(user):
		return "is not valid UTF-8"
	}
	for _, r := range user {
		if !unicode.IsPrint(r) {
			return fmt.Sprintf("holds a control or invisible character (%U); send the plain user id", r)
		}
	}
	return ""
}

func (v *validator) tools() {
	budget := v.cfg.Tools.AnswerBudget
	if budget < MinAnswerBudget || budget > MaxAnswerBudget {
		v.fail("tools.answer_budget_bytes", "%d is out of range; use %d to %d bytes",
			budget, MinAnswerBudget, MaxAnswerBudget)
	}
}

func (v *validator) connections(opts ValidateOptions) {
	conns := v.cfg.Connections
	if len(conns) == 0 && !opts.AllowNoConnections {
		v.fail("connections", "none configured; add one (see config.example.yaml), or serve --sandbox")
	}

	names := map[string]int{}
	defaultAt := -1
	for i, conn := range conns {
		key := fmt.Sprintf("connections[%d]", i)

		switch first, dup := names[conn.Name]; {
		case conn.Name == "":
			v.fail(key+".name", "is required; tools take it in their connection argument")
		case !connectionNameRE.MatchString(conn.Name):
			v.fail(key+".name", "%q is not a valid name; use lowercase letters, digits, - and _, "+
				"starting with a letter or digit", conn.Name)
		case dup:
			v.fail(key+".name", "%q is used by connections[%d] too; names must be unique", conn.Name, first)
		default:
			names[conn.Name] = i
		}

		if problem := checkInstanceURL(conn.InstanceURL); problem != "" {
			v.fail(key+".instance_url", "%s", problem)
		}
		if conn.ClientID == "" {
			v.fail(key+".client_id", "is required; copy it from the instance's "+
				"System OAuth > Application Registry entry")
		}
		for j, scope := range conn.Scopes {
			if scope == "" || strings.ContainsAny(scope, " \t\r\n") {
				v.fail(fmt.Sprintf("%s.scopes[%d]", key, j), "%q is not a scope; give one scope name per item", scope)
			}
		}

		if conn.Default {
			if defaultAt >= 0 {
				v.fail(key+".default", "connections[%d] is the default already; mark one connection only",
					defaultAt)
			} else {
				defaultAt = i
			}
		}
	}
}

func (v *validator) readable(key, path string) {
	f, err := os.Open(path)
	if err != nil {
		v.fail(key, "cannot be read: %v", err)
		return
	}
	_ = f.Close()
}

// checkInstanceURL accepts the root URL of an instance: https, or http
// for a loopback host (the sandbox); no user info, path, query or fragment.
// The URL is not quoted when it holds user info, which may be a password.
func checkInstanceURL(raw string) string {
	const example = "https://dev12345.service-now.com"
	if raw == "" {
		return "is required; give the instance root URL, e.g. " + example
	}

	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Sprintf("is not a URL; give the instance root URL, e.g. %s", example)
	case u.User != nil:
		return "must not hold a user name or password; credentials come from OAuth"
	case u.Scheme == "" || u.Host == "":
		return fmt.Sprintf("%q is not an absolute URL; write it like %s", raw, example)
	case u.Path != "" && u.Path != "/":
		return fmt.Sprintf("%q has a path; give the instance root only, e.g. %s", raw, example)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return fmt.Sprintf("%q has a query or fragment; give the instance root only", raw)
	case u.Scheme == "http" && !isLoopbackHost(u.Hostname()):
		return fmt.Sprintf("%q uses plain http; use https (http is accepted only for loopback hosts "+
			"such as the sandbox)", raw)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf("%q has scheme %q; use https", raw, u.Scheme)
	}
	return ""
}

func checkPublicURL(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case raw == "":
		return "is empty; set the URL browsers reach this server at, or remove the key for the default"
	case err != nil:
		return fmt.Sprintf("%q is not a URL; write it like https://mcp.example.com", raw)
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		return fmt.Sprintf("%q is not an absolute http(s) URL; write it like https://mcp.example.com", raw)
	case u.User != nil:
		return "must not hold a user name or password"
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return fmt.Sprintf("%q has a query or fragment; the redirect URI is built by appending %s",
			raw, CallbackPath)
	case u.Port() == "0":
		// Most often derived from a listen address with port 0: the port
		// is only known once bound, but the redirect URI registered at
		// ServiceNow must name it.
		return fmt.Sprintf("%q has port 0, which no browser can reach, and the redirect URI registered at ServiceNow must name a fixed port: "+
			"give server.listen (--listen) a fixed port, or set public_url", raw)
	}
	return ""
}

func checkListen(listen string) string {
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Sprintf("%q is not host:port; write e.g. %s", listen, DefaultListen)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Sprintf("%q has no valid port number; write e.g. %s", listen, DefaultListen)
	}
	return ""
}

// checkHeaderName accepts an HTTP token that is not a header we own.
func checkHeaderName(name string) string {
	if name == "" {
		return "is empty; remove the key for the default " + DefaultUserHeader
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r)) {
			return fmt.Sprintf("%q is not a valid header name", name)
		}
	}
	switch strings.ToLower(name) {
	case "authorization", "cookie", "host", "content-type", "content-length":
		return fmt.Sprintf("%q is a standard header; pick a header of your own, e.g. %s", name, DefaultUserHeader)
	}
	return ""
}

// within reports whether path is dir or lies under it, comparing absolute
// clean paths.
func within(path, dir string) bool {
	absPath, err1 := filepath.Abs(path)
	absDir, err2 := filepath.Abs(dir)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(absDir, absPath)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
