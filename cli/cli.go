// Package cli is the servicenow-mcp command line: it parses subcommands,
// loads and validates the configuration, builds the logger and the store,
// and hands over to the server, the sandbox or the account commands.
package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/rs/zerolog"

	"servicenow-mcp/config"
	"servicenow-mcp/sandbox"
	"servicenow-mcp/server"
	"servicenow-mcp/storage"
	"servicenow-mcp/tools"
)

// Version is set at build time with -ldflags "-X servicenow-mcp/cli.Version=…".
var Version = ""

// ExitError asks main to exit with a given status without printing more.
type ExitError int

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

const usage = `servicenow-mcp serves ServiceNow to AI agents as MCP tools, acting as each
user on their own ServiceNow instance through OAuth.

Usage:
  servicenow-mcp serve [--config FILE] [--user ID] [--sandbox] [flags]
                                      serve MCP (stdio by default)
  servicenow-mcp sandbox [flags]      run the simulated ServiceNow instance alone
  servicenow-mcp auth login|status|logout [--connection NAME] [--user ID]
                                      link, inspect or unlink an account from a terminal
  servicenow-mcp keys generate|hash|rekey
                                      make or hash an API key for HTTP callers, or
                                      re-seal stored tokens after an encryption key rotation
  servicenow-mcp version              print the version

Run "servicenow-mcp COMMAND --help" for a command's flags.
`

// Run executes one command line.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitError(2)
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdin, stdout, stderr)
	case "sandbox":
		return sandbox.Command(ctx, args[1:], stdout, stderr)
	case "auth":
		return auth(ctx, args[1:], stdout, stderr)
	case "keys":
		return keys(ctx, args[1:], stdin, stdout, stderr)
	case "version", "--version", "-v":
		fs := newFlagSet("version", "version\n\nPrints the version.", stderr)
		if done, err := parseFlags(fs, args[1:], stdout); done || err != nil {
			return err
		}
		fmt.Fprintln(stdout, "servicenow-mcp", version())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "servicenow-mcp: unknown command %q\n\n%s", args[0], usage)
	return ExitError(2)
}

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// common holds the flags every account-touching command shares.
type common struct {
	configPath string
	user       string
	logLevel   string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.configPath, "config", "", "config file (default $SERVICENOW_MCP_CONFIG, else ~/.config/servicenow-mcp/config.yaml when present)")
	fs.StringVar(&c.user, "user", "", "end user to act for (default: $SERVICENOW_MCP_USER, else the config file's user, else $USER)")
	fs.StringVar(&c.logLevel, "log-level", "", "debug, info, warn or error (default: config, else info)")
}

func (c *common) load() (*config.Config, error) {
	cfg, err := config.Load(c.configPath, nil)
	if err != nil {
		return nil, err
	}
	if c.user != "" {
		cfg.User = c.user
	}
	if c.logLevel != "" {
		cfg.Log.Level = c.logLevel
	}
	return cfg, nil
}

// newFlagSet makes a command's flag set. Its usage starts with synopsis
// (which may go on with a description) and lists the flags, if any.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: servicenow-mcp %s\n", synopsis)
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprint(fs.Output(), "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args into fs. Asked for help (-h, --help), it prints
// the usage on stdout and reports done: the command then does nothing
// else and exits 0. A bad flag is reported with the usage on the flag
// set's output (stderr) and returned.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (done bool, err error) {
	out := fs.Output()
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	err = fs.Parse(args)
	fs.SetOutput(out)
	if errors.Is(err, flag.ErrHelp) {
		_, werr := stdout.Write(buf.Bytes())
		return true, werr
	}
	_, _ = out.Write(buf.Bytes())
	return false, err
}

// newLogger writes to stderr only: stdout belongs to the stdio protocol.
func newLogger(cfg *config.Config, stderr io.Writer) zerolog.Logger {
	level, err := zerolog.ParseLevel(strings.ToLower(cfg.Log.Level))
	if err != nil || cfg.Log.Level == "" {
		level = zerolog.InfoLevel
	}
	var w io.Writer = stderr
	format := cfg.Log.Format
	if format == "" || format == "auto" {
		format = "json"
		if f, ok := stderr.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "console"
			}
		}
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: stderr, TimeFormat: "15:04:05"}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

// openStore opens the data directory with the configured keys, which it
// returns too.
func openStore(ctx context.Context, cfg *config.Config, log zerolog.Logger) (storage.Store, storage.Keyring, error) {
	keys, err := loadKeys(cfg, log)
	if err != nil {
		return nil, keys, err
	}
	store, err := storage.Open(ctx, storage.Options{Dir: cfg.DataDir, Keys: keys, Logger: log})
	return store, keys, err
}

// warnUnopenableAccounts logs one error when stored accounts were sealed
// with a key that no configured key matches: without it a wrong key shows
// only on tool calls and in auth status. It waits for the store, which
// opens in the background, so it runs beside the start-up, not before it.
// It logs key ids and account names, never a key or token.
func warnUnopenableAccounts(ctx context.Context, store storage.Store, ring storage.Keyring, dataDir string, log zerolog.Logger) {
	accounts, broken, err := store.ListAccounts(ctx)
	if err != nil {
		if ctx.Err() == nil {
			log.Warn().Err(err).Msg("could not list the stored accounts to check the encryption key")
		}
		return
	}

	var names []string
	needed := map[string]bool{}
	for k, err := range broken {
		if !errors.Is(err, storage.ErrWrongKey) {
			continue
		}
		names = append(names, k.Connection+"/"+k.User)
		if wrong := (*storage.WrongKeyError)(nil); errors.As(err, &wrong) {
			needed[wrong.Needed] = true
		}
	}
	if len(names) == 0 {
		log.Debug().Int("accounts", len(accounts)).Msg("every stored account opens with the configured encryption keys")
		return
	}

	sort.Strings(names)
	neededIDs := make([]string, 0, len(needed))
	for id := range needed {
		neededIDs = append(neededIDs, id)
	}
	sort.Strings(neededIDs)
	configured := []string{storage.KeyID(ring.Current)}
	for _, k := range ring.Previous {
		configured = append(configured, storage.KeyID(k))
	}
	which := "a key"
	if len(neededIDs) > 0 {
		which = "key " + strings.Join(neededIDs, ", ")
	}
	log.Error().Strs("needed_key_ids", neededIDs).Strs("configured_key_ids", configured).
		Str("accounts", strings.Join(names, ", ")).Str("data_dir", dataDir).
		Msgf("wrong encryption key: %d stored account(s) were sealed with %s, and no configured key (%s) matches, "+
			"so their tool calls fail until this is fixed. Set encryption_key (%s) or the key file to the key with that id; "+
			"if it is the old key of a rotation, keep the new key current, list the old one under previous_encryption_keys "+
			"and run `servicenow-mcp keys rekey` (SECURITY.md, \"Rotating the encryption key\"). The stored accounts are kept as they are",
			len(names), which, strings.Join(configured, ", "), config.EnvEncryptionKey)
}

func loadKeys(cfg *config.Config, log zerolog.Logger) (storage.Keyring, error) {
	var ring storage.Keyring
	if cfg.EncryptionKey != "" {
		k, err := storage.ParseKey(cfg.EncryptionKey)
		if err != nil {
			return ring, fmt.Errorf("encryption_key (or %s): %w", config.EnvEncryptionKey, err)
		}
		ring.Current = k
	} else {
		// A missing key file beside an existing store is a lost key, not a
		// first run: a new key would leave every stored account unreadable.
		if _, err := os.Stat(cfg.EncryptionKeyFile); errors.Is(err, fs.ErrNotExist) && storage.HasStore(cfg.DataDir) {
			return ring, fmt.Errorf("encryption_key_file %s does not exist, but the data directory %s (data_dir) already holds accounts sealed with a key: "+
				"a new key could not read them. Restore the key file from your backup (or set %s to the key); "+
				"to start over without the stored accounts, move %s away", cfg.EncryptionKeyFile, cfg.DataDir, config.EnvEncryptionKey, cfg.DataDir)
		}
		k, created, err := storage.LoadOrCreateKeyFile(cfg.EncryptionKeyFile)
		if err != nil {
			return ring, fmt.Errorf("encryption_key_file %s: %w", cfg.EncryptionKeyFile, err)
		}
		if created {
			log.Info().Str("path", cfg.EncryptionKeyFile).Msg("created a new encryption key file; back it up: without it the stored tokens cannot be read")
		}
		ring.Current = k
	}
	for i, s := range cfg.PreviousEncryptionKeys {
		k, err := storage.ParseKey(s)
		if err != nil {
			return ring, fmt.Errorf("previous_encryption_keys[%d]: %w", i, err)
		}
		ring.Previous = append(ring.Previous, k)
	}
	return ring, nil
}

// listOf splits comma-separated flag values.
func listOf(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func serve(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", "serve [flags]", stderr)
	var c common
	c.register(fs)
	withSandbox := fs.Bool("sandbox", false, "also run a simulated ServiceNow instance in this process and add a connection named sandbox")
	transport := fs.String("transport", "stdio", "stdio, or http (streamable HTTP at /mcp and SSE at /sse)")
	listen := fs.String("listen", "", "address for the callback and, with --transport http, MCP (default: config server.listen, 127.0.0.1:8765)")
	toolsets := fs.String("toolsets", "", "comma-separated toolsets to enable (all, default, or names below)")
	toolNames := fs.String("tools", "", "comma-separated tools to enable in addition to the toolsets")
	exclude := fs.String("exclude-tools", "", "comma-separated tools to leave out")
	readOnly := fs.Bool("read-only", false, "register read tools only; servicenow_request may only GET")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: servicenow-mcp serve [flags]\n\nServes MCP over stdio (default) or HTTP. Logs go to stderr; stdout carries only JSON-RPC.\n\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), "\nToolsets and tools:\n"+tools.HelpText())
	}
	if done, err := parseFlags(fs, args, stdout); done || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve takes no arguments, got %q; see --help", fs.Arg(0))
	}
	if *transport != "stdio" && *transport != "http" {
		return fmt.Errorf("--transport %q: use stdio or http", *transport)
	}
	cfg, err := c.load()
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.SetListen(*listen)
	}
	if *toolsets != "" {
		cfg.Tools.Toolsets = listOf(*toolsets)
	}
	if *toolNames != "" {
		cfg.Tools.Enable = listOf(*toolNames)
	}
	if *exclude != "" {
		cfg.Tools.Exclude = listOf(*exclude)
	}
	if *readOnly {
		cfg.Tools.ReadOnly = true
	}
	if err := cfg.ValidateWith(config.ValidateOptions{AllowNoConnections: *withSandbox}); err != nil {
		return err
	}
	if *transport == "stdio" && cfg.User == "" {
		return errors.New("no user for stdio: set --user, user in the config file, or SERVICENOW_MCP_USER")
	}
	log := newLogger(cfg, stderr)

	if *withSandbox {
		sb, err := startSandbox(ctx, cfg, log)
		if err != nil {
			return err
		}
		defer sb.Close()
	}
	store, ring, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error().Err(err).Msg("close the store")
			return
		}
		log.Info().Msg("store closed")
	}()
	checkCtx, stopCheck := context.WithCancel(ctx)
	checked := make(chan struct{})
	go func() {
		defer close(checked)
		warnUnopenableAccounts(checkCtx, store, ring, cfg.DataDir, log)
	}()
	defer func() { stopCheck(); <-checked }()

	app, err := server.New(server.Options{Config: cfg, Store: store, Logger: log, Version: version()})
	if err != nil {
		return err
	}
	log.Info().Str("version", version()).Str("transport", *transport).Str("data_dir", cfg.DataDir).
		Str("summary", app.Describe()).Msg("servicenow-mcp starting")

	if *transport == "http" {
		return app.ServeHTTP(ctx)
	}
	return app.ServeStdio(ctx, stdin, stdout, cfg.User)
}
