package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Env looks up one environment variable; os.LookupEnv fits. A nil Env
// means os.LookupEnv.
type Env func(name string) (string, bool)

// Environment variables read by Load and Default. The overrides win over
// the file; an empty value counts as unset.
const (
	EnvConfig            = "SERVICENOW_MCP_CONFIG"
	EnvDataDir           = "SERVICENOW_MCP_DATA_DIR"
	EnvUser              = "SERVICENOW_MCP_USER"
	EnvLogLevel          = "SERVICENOW_MCP_LOG_LEVEL"
	EnvLogFormat         = "SERVICENOW_MCP_LOG_FORMAT"
	EnvEncryptionKey     = "SERVICENOW_MCP_ENCRYPTION_KEY"
	EnvEncryptionKeyFile = "SERVICENOW_MCP_ENCRYPTION_KEY_FILE"
	EnvListen            = "SERVICENOW_MCP_LISTEN"
	EnvPublicURL         = "SERVICENOW_MCP_PUBLIC_URL"
)

// maxNodes bounds the work of one Load, aliases included, so that a
// hostile file cannot make decoding explode.
const maxNodes = 100_000

// Load reads the YAML file at path, expands ${VAR}, ${VAR:-default} and
// $$ in its values, applies the SERVICENOW_MCP_* overrides and then the
// defaults. It does not validate; call Validate.
//
// An empty path means DefaultPath(env). A missing file is an error when
// the path was named (by the caller or by $SERVICENOW_MCP_CONFIG), and
// yields Default(env) when it is the default location. Relative paths in
// the file are taken relative to the file's directory.
func Load(path string, env Env) (*Config, error) {
	env = orOS(env)

	missingOK := path == "" || path == fallbackPath(env)
	if path == "" {
		if named, ok := lookup(env, EnvConfig); ok {
			path, missingOK = named, false
		} else {
			path = fallbackPath(env)
		}
	}

	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && missingOK {
		return Default(env), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}

	cfg, err := parse(data, path, env)
	if err != nil {
		return nil, err
	}
	cfg.File = path

	resolveRelativePaths(cfg, filepath.Dir(path))
	applyEnv(cfg, env)
	cfg.ApplyDefaults(env)
	return cfg, nil
}

// Parse is Load for a document already in memory: no file, and relative
// paths stay relative to the working directory.
func Parse(data []byte, env Env) (*Config, error) {
	env = orOS(env)

	cfg, err := parse(data, "", env)
	if err != nil {
		return nil, err
	}

	applyEnv(cfg, env)
	cfg.ApplyDefaults(env)
	return cfg, nil
}

// Default is the configuration without a file (serve --sandbox, first
// run): the environment overrides and the defaults.
func Default(env ...Env) *Config {
	lookupEnv := firstEnv(env)
	cfg := &Config{}
	applyEnv(cfg, lookupEnv)
	cfg.ApplyDefaults(lookupEnv)
	return cfg
}

// DefaultPath is $SERVICENOW_MCP_CONFIG, else
// $XDG_CONFIG_HOME/servicenow-mcp/config.yaml, else
// ~/.config/servicenow-mcp/config.yaml.
func DefaultPath(env Env) string {
	env = orOS(env)
	if path, ok := lookup(env, EnvConfig); ok {
		return path
	}
	return fallbackPath(env)
}

func fallbackPath(env Env) string {
	return filepath.Join(xdgDir(env, "XDG_CONFIG_HOME", ".config"), "servicenow-mcp", "config.yaml")
}

// parse decodes one YAML document into a Config, strictly: every problem
// is reported with file, line and key path, all of them at once.
func parse(data []byte, file string, env Env) (*Config, error) {
	cfg := &Config{}

	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return cfg, nil
	} else if err != nil {
		return nil, &keyError{File: file, Msg: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return nil, &keyError{File: file, Line: next.Line,
			Msg: "holds more than one YAML document; keep one (remove the extra ---)"}
	}

	d := &decoder{file: file, env: env}
	if len(doc.Content) > 0 {
		d.value(doc.Content[0], reflect.ValueOf(cfg).Elem(), "")
	}
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	return cfg, nil
}

// decoder walks the YAML node tree along the Config type. It replaces
// yaml's own decoding so that unknown keys, type mismatches and unset
// variables name their full key path.
type decoder struct {
	file  string
	env   Env
	nodes int
	errs  []error

	// merging holds the mappings whose merge keys are being applied, to
	// refuse a mapping that merges itself.
	merging map[*yaml.Node]bool
}

var durationType = reflect.TypeFor[time.Duration]()

func (d *decoder) fail(n *yaml.Node, key, format string, args ...any) {
	d.errs = append(d.errs, &keyError{File: d.file, Line: n.Line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) value(n *yaml.Node, v reflect.Value, key string) {
	d.nodes++
	if d.nodes > maxNodes {
		if d.nodes == maxNodes+1 {
			d.fail(n, key, "the document is too large (more than %d values once aliases are followed)", maxNodes)
		}
		return
	}

	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}

	switch v.Kind() {
	case reflect.Struct:
		d.mapping(n, v, key)
	case reflect.Slice:
		d.sequence(n, v, key)
	default:
		d.scalar(n, v, key)
	}
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, keyOrRoot(key), "expected a mapping of keys to values, found %s", describe(n))
		return
	}

	// YAML merge keys (<<: *anchor) come first, whatever their place, so
	// that the keys written out in this mapping win.
	explicit := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.ShortTag() != "!!merge" {
			explicit[k.Value]++
		}
	}
	if d.merging == nil {
		d.merging = map[*yaml.Node]bool{}
	}
	d.merging[n] = true
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].ShortTag() == "!!merge" {
			d.merge(n.Content[i+1], v, key, explicit)
		}
	}
	delete(d.merging, n)

	fields := yamlFields(v.Type())
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.ShortTag() == "!!merge" {
			continue
		}
		path := joinKey(key, k.Value)
		if k.Kind != yaml.ScalarNode {
			d.fail(k, keyOrRoot(key), "a key must be a plain name, found %s", describe(k))
			continue
		}
		index, ok := fields[k.Value]
		if !ok {
			d.fail(k, path, "unknown key%s", suggest(k.Value, fields))
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.fail(k, path, "given twice (first on line %d); keep one", line)
			continue
		}
		seen[k.Value] = k.Line
		d.value(val, v.Field(index), path)
	}
}

// merge applies the mappings named by a merge key, skipping keys the
// merging mapping sets itself.
func (d *decoder) merge(n *yaml.Node, v reflect.Value, key string, skip map[string]int) {
	d.nodes++
	if d.nodes > maxNodes {
		return
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}

	switch n.Kind {
	case yaml.SequenceNode:
		for _, item := range n.Content {
			d.merge(item, v, key, skip)
		}
	case yaml.MappingNode:
		if d.merging[n] {
			d.fail(n, keyOrRoot(key), "a merge key (<<) refers to a mapping that contains it")
			return
		}
		d.merging[n] = true
		defer delete(d.merging, n)

		kept := &yaml.Node{Kind: yaml.MappingNode, Line: n.Line, Column: n.Column}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if skip[n.Content[i].Value] == 0 || n.Content[i].ShortTag() == "!!merge" {
				kept.Content = append(kept.Content, n.Content[i], n.Content[i+1])
			}
		}
		d.mapping(kept, v, key)
	default:
		d.fail(n, keyOrRoot(key), "a merge key (<<) needs a mapping or a list of mappings, found %s", describe(n))
	}
}

func (d *decoder) sequence(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind != yaml.SequenceNode {
		d.fail(n, key, "expected a list, found %s", describe(n))
		return
	}

	items := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.value(item, items.Index(i), fmt.Sprintf("%s[%d]", key, i))
	}
	v.Set(items)
}

func (d *decoder) scalar(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, key, "expected a single value, found %s", describe(n))
		return
	}

	text, err := expand(n.Value, d.env)
	if err != nil {
		d.fail(n, key, "%v", err)
		return
	}

	switch {
	case v.Kind() == reflect.String:
		v.SetString(text)

	case v.Type() == durationType:
		dur, err := time.ParseDuration(strings.TrimSpace(text))
		if err != nil {
			d.fail(n, key, "%q is not a duration; write a number with a unit, such as 30s, 5m or 1h", text)
			return
		}
		v.SetInt(int64(dur))

	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(text))
		if err != nil {
			d.fail(n, key, "%q is not a boolean; write true or false", text)
			return
		}
		v.SetBool(b)

	case v.CanInt():
		digits := strings.ReplaceAll(strings.TrimSpace(text), "_", "")
		i, err := strconv.ParseInt(digits, 10, v.Type().Bits())
		if err != nil {
			d.fail(n, key, "%q is not a whole number", text)
			return
		}
		v.SetInt(i)

	default:
		d.fail(n, key, "values of type %s are not supported", v.Type())
	}
}

// expand replaces ${NAME} and ${NAME:-default} with values from env and
// $$ with a single dollar. Any other dollar stays as it is. The default
// is used when the variable is unset or empty, as in the shell.
func expand(s string, env Env) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}

	var out strings.Builder
	for {
		i := strings.IndexByte(s, '$')
		if i < 0 || i == len(s)-1 {
			out.WriteString(s)
			return out.String(), nil
		}
		out.WriteString(s[:i])
		s = s[i:]

		switch s[1] {
		case '$':
			out.WriteByte('$')
			s = s[2:]
			continue
		case '{':
		default:
			out.WriteByte('$')
			s = s[1:]
			continue
		}

		end := strings.IndexByte(s, '}')
		if end < 0 {
			return "", errors.New(`"${" is not closed by "}"; write $$ for a literal dollar sign`)
		}
		ref := s[2:end]
		s = s[end+1:]

		name, fallback, hasFallback := strings.Cut(ref, ":-")
		if !validEnvName(name) {
			return "", fmt.Errorf("${%s} is not a variable reference; write ${NAME} or ${NAME:-default}, "+
				"or $$ for a literal dollar sign", ref)
		}
		value, ok := env(name)
		switch {
		case hasFallback && value == "":
			value = fallback
		case !ok:
			return "", fmt.Errorf("environment variable %s is not set; set it, or give a default with ${%s:-value}",
				name, name)
		case value == "" && !hasFallback:
			return "", fmt.Errorf("environment variable %s is set but empty; give it a value, or write ${%s:-} where an empty value is meant",
				name, name)
		}
		out.WriteString(value)
	}
}

func validEnvName(name string) bool {
	if name == "" || (name[0] >= '0' && name[0] <= '9') {
		return false
	}
	for _, r := range name {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// applyEnv applies the SERVICENOW_MCP_* overrides and remembers which key
// each one set. An encryption key from the environment replaces the
// file's key source of either kind; setting both variables is left for
// Validate to refuse.
func applyEnv(c *Config, env Env) {
	set := func(dst *string, key, name string) {
		if v, ok := lookup(env, name); ok {
			*dst = v
			if c.overridden == nil {
				c.overridden = map[string]string{}
			}
			c.overridden[key] = name
		}
	}

	set(&c.DataDir, "data_dir", EnvDataDir)
	set(&c.User, "user", EnvUser)
	set(&c.Log.Level, "log.level", EnvLogLevel)
	set(&c.Log.Format, "log.format", EnvLogFormat)
	set(&c.Server.Listen, "server.listen", EnvListen)
	set(&c.Server.PublicURL, "server.public_url", EnvPublicURL)

	_, hasKey := lookup(env, EnvEncryptionKey)
	_, hasFile := lookup(env, EnvEncryptionKeyFile)
	if hasKey && !hasFile {
		c.EncryptionKeyFile = ""
	}
	if hasFile && !hasKey {
		c.EncryptionKey = ""
	}
	set(&c.EncryptionKey, "encryption_key", EnvEncryptionKey)
	set(&c.EncryptionKeyFile, "encryption_key_file", EnvEncryptionKeyFile)
}

// resolveRelativePaths anchors relative paths from the file at the file's
// directory: a desktop host starts us in a working directory nobody chose.
func resolveRelativePaths(c *Config, dir string) {
	for _, p := range []*string{&c.DataDir, &c.EncryptionKeyFile, &c.Server.TLSCert, &c.Server.TLSKey} {
		if *p != "" && !filepath.IsAbs(*p) && !strings.HasPrefix(*p, "~") {
			*p = filepath.Join(dir, *p)
		}
	}
}

// keyError is one problem with one key: "file:line: key: message".
type keyError struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *keyError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// yamlFields maps the yaml names of a struct's fields to field indexes.
func yamlFields(t reflect.Type) map[string]int {
	fields := map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if f.IsExported() && name != "" && name != "-" {
			fields[name] = i
		}
	}
	return fields
}

// suggest names the closest known key, or lists them all.
func suggest(unknown string, fields map[string]int) string {
	best, bestDist := "", len(unknown)/3+2
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
		if dist := editDistance(unknown, name); dist < bestDist || dist == bestDist && name < best {
			best, bestDist = name, dist
		}
	}
	if best != "" {
		return "; did you mean " + best + "?"
	}
	slices.Sort(names)
	return "; known keys: " + strings.Join(names, ", ")
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("the value %q", n.Value)
	default:
		return "an unresolved alias"
	}
}

func joinKey(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func keyOrRoot(key string) string {
	if key == "" {
		return "(top level)"
	}
	return key
}

// lookup treats an empty variable as unset.
func lookup(env Env, name string) (string, bool) {
	v, ok := env(name)
	return v, ok && v != ""
}

func orOS(env Env) Env {
	if env == nil {
		return os.LookupEnv
	}
	return env
}

func firstEnv(env []Env) Env {
	if len(env) == 0 {
		return os.LookupEnv
	}
	return orOS(env[0])
}
