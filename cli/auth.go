package cli

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"servicenow-mcp/config"
	"servicenow-mcp/server"
	"servicenow-mcp/storage"
)

// authCommands describe the auth subcommands for their usage.
var authCommands = map[string]string{
	"login":  "prints an authorization link, opens a browser when possible, and waits until it is approved",
	"status": "shows linked accounts and their token expiry",
	"logout": "revokes an account's tokens at ServiceNow and forgets them",
}

func auth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const synopsis = "auth login|status|logout [--connection NAME] [--user ID] [--config FILE]"
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		help := fmt.Sprintf("Usage: servicenow-mcp %s\n\n", synopsis)
		for _, sub := range []string{"login", "status", "logout"} {
			help += fmt.Sprintf("  %-7s %s\n", sub, authCommands[sub])
		}
		help += "\nRun \"servicenow-mcp auth COMMAND --help\" for its flags.\n"
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprint(stdout, help)
			return nil
		}
		fmt.Fprint(stderr, help)
		return ExitError(2)
	}
	sub := args[0]
	about, ok := authCommands[sub]
	if !ok {
		return fmt.Errorf("unknown auth command %q: use login, status or logout", sub)
	}
	fs := newFlagSet("auth "+sub, "auth "+sub+" [flags]\n\n"+strings.ToUpper(about[:1])+about[1:]+".", stderr)
	var c common
	c.register(fs)
	connName := fs.String("connection", "", "connection name (default: the default connection)")
	withSandbox := fs.Bool("sandbox", false, "use a sandbox instance in this process (for trying the flow)")
	noBrowser := fs.Bool("no-browser", false, "login: print the link only, do not try to open a browser")
	if done, err := parseFlags(fs, args[1:], stdout); done || err != nil {
		return err
	}
	cfg, err := c.load()
	if err != nil {
		return err
	}
	if err := cfg.ValidateWith(config.ValidateOptions{AllowNoConnections: *withSandbox || sub == "status"}); err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	if *withSandbox {
		sb, err := startSandbox(ctx, cfg, log)
		if err != nil {
			return err
		}
		defer sb.Close()
	}
	store, _, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()
	app, err := server.New(server.Options{Config: cfg, Store: store, Logger: log, Version: version()})
	if err != nil {
		return err
	}

	if sub == "status" {
		return authStatus(ctx, store, cfg, c.user, *connName, stdout)
	}
	conn, err := cfg.Connection(*connName)
	if err != nil {
		return err
	}
	key := storage.AccountKey{Connection: conn.Name, User: cfg.User}
	if sub == "logout" {
		found, revoked, err := app.Tokens.Disconnect(ctx, key)
		switch {
		case err != nil:
			return err
		case !found:
			fmt.Fprintf(stdout, "%s on %s was not linked.\n", key.User, key.Connection)
		case revoked:
			fmt.Fprintf(stdout, "Revoked and forgot the tokens of %s on %s.\n", key.User, key.Connection)
		default:
			fmt.Fprintf(stdout, "Forgot the tokens of %s on %s; ServiceNow could not confirm the revocation.\n", key.User, key.Connection)
		}
		return nil
	}
	return authLogin(ctx, app, store, key, !*noBrowser, stdout)
}

func authLogin(ctx context.Context, app *server.App, store storage.Store, key storage.AccountKey, browser bool, stdout io.Writer) error {
	started := time.Now()
	// The callback listener first: the link waits until it knows whether
	// a link made here can complete (see server.App.LinksBlocked).
	ctx, stopCallback := context.WithCancel(ctx)
	defer stopCallback()
	app.StartCallback(ctx)
	link, err := app.Tokens.Link(ctx, key)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithDeadline(ctx, link.ExpiresAt)
	defer cancel()

	fmt.Fprintf(stdout, "Open this link to link %s's ServiceNow account on %s (valid until %s):\n\n  %s\n\n",
		key.User, key.Connection, link.ExpiresAt.Local().Format("15:04"), link.URL)
	if browser {
		openBrowser(link.URL)
	}
	fmt.Fprintln(stdout, "Waiting for the approval… (Ctrl-C to stop)")

	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return errors.New("the link expired before it was approved; run auth login again")
			}
			return ctx.Err()
		case <-tick.C:
		}
		acct, err := store.GetAccount(ctx, key)
		if err == nil && acct.Status == storage.StatusActive && !acct.LinkedAt.Before(started.Add(-time.Second)) {
			fmt.Fprintf(stdout, "Linked %s (%s) on %s.\n", acct.SNDisplayName, acct.SNUserName, key.Connection)
			return nil
		}
	}
}

// openBrowser tries the desktop's opener; failure is fine, the link is printed.
func openBrowser(url string) {
	argv := browserCommand(runtime.GOOS, os.Getenv, url)
	if argv == nil {
		return
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return
	}
	// The link goes to the opener as one argument, never through a shell.
	cmd := exec.Command(path, argv[1:]...)
	if cmd.Start() == nil {
		go func() { _ = cmd.Wait() }()
	}
}

// browserCommand is the program and arguments that open url in a browser
// on goos, or nil when there is no desktop to open it on. macOS and
// Windows always have one; elsewhere a desktop session sets DISPLAY (X11)
// or WAYLAND_DISPLAY, and without either xdg-open would fall back to a
// text browser in the terminal that is waiting for the approval.
func browserCommand(goos string, getenv func(string) string, url string) []string {
	switch goos {
	case "darwin":
		return []string{"open", url}
	case "windows":
		return []string{"rundll32", "url.dll,FileProtocolHandler", url}
	}
	if getenv("DISPLAY") == "" && getenv("WAYLAND_DISPLAY") == "" {
		return nil
	}
	return []string{"xdg-open", url}
}

func authStatus(ctx context.Context, store storage.Store, cfg *config.Config, user, connName string, stdout io.Writer) error {
	accounts, broken, err := store.ListAccounts(ctx)
	if err != nil {
		return err
	}
	sort.Slice(accounts, func(i, j int) bool {
		if accounts[i].Connection != accounts[j].Connection {
			return accounts[i].Connection < accounts[j].Connection
		}
		return accounts[i].User < accounts[j].User
	})
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONNECTION\tUSER\tSTATUS\tSERVICENOW USER\tTOKEN EXPIRES")
	n := 0
	for _, a := range accounts {
		if (user != "" && a.User != user) || (connName != "" && a.Connection != connName) {
			continue
		}
		n++
		exp := "-"
		if a.Status == storage.StatusActive {
			exp = a.Expiry.Local().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.Connection, a.User, a.Status, a.SNUserName, exp)
	}
	for k, e := range broken {
		n++
		fmt.Fprintf(tw, "%s\t%s\tUNREADABLE\t-\t%s\n", k.Connection, k.User, e)
	}
	_ = tw.Flush()
	if n == 0 {
		fmt.Fprintln(stdout, "No linked accounts. Link one with: servicenow-mcp auth login")
	}
	return nil
}

func keys(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	help := "Usage: servicenow-mcp keys generate|hash|rekey\n\n" +
		"  generate  print a new random API key for an HTTP caller and the hash to put in server.api_keys\n" +
		"  hash      read an API key from standard input and print its hash\n" +
		"  rekey     [--config F] seal every stored record with the current encryption key\n" +
		"            (after a rotation, with the old key under previous_encryption_keys)\n"
	if len(args) == 0 {
		fmt.Fprint(stderr, help)
		return ExitError(2)
	}
	switch args[0] {
	case "-h", "--help", "-help":
		fmt.Fprint(stdout, help)
		return nil
	case "generate":
		fs := newFlagSet("keys generate", "keys generate\n\n"+
			"Prints a new random API key for an HTTP caller, and its hash for server.api_keys[].hash.", stderr)
		if done, err := parseFlags(fs, args[1:], stdout); done || err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("keys generate takes no arguments, got %q", fs.Arg(0))
		}
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		key := "snmcp_" + base64.RawURLEncoding.EncodeToString(b)
		fmt.Fprintf(stdout, "key:  %s\nhash: %s\n", key, config.HashAPIKey(key))
		fmt.Fprintln(stderr, "Give the key to the caller; put only the hash in the config (server.api_keys[].hash).")
		return nil
	case "rekey":
		return rekey(ctx, args[1:], stdout, stderr)
	case "hash":
		fs := newFlagSet("keys hash", "keys hash < KEY\n\n"+
			"Reads an API key from standard input and prints its hash for server.api_keys[].hash,\n"+
			"e.g. printf %s \"$KEY\" | servicenow-mcp keys hash", stderr)
		if done, err := parseFlags(fs, args[1:], stdout); done || err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return errors.New("keys hash reads the API key from standard input, not from its arguments (they stay in the shell history)")
		}
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		key := strings.TrimSpace(line)
		if key == "" {
			return errors.New("keys hash: give the API key on standard input, e.g. `printf %s \"$KEY\" | servicenow-mcp keys hash`")
		}
		fmt.Fprintln(stdout, config.HashAPIKey(key))
		return nil
	}
	return fmt.Errorf("unknown keys command %q: use generate, hash or rekey", args[0])
}

func rekey(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keys rekey", "keys rekey [--config FILE]\n\n"+
		"Seals every stored record with the current encryption key (see SECURITY.md, \"Rotating the encryption key\").", stderr)
	var c common
	c.register(fs)
	if done, err := parseFlags(fs, args, stdout); done || err != nil {
		return err
	}
	cfg, err := c.load()
	if err != nil {
		return err
	}
	if err := cfg.ValidateWith(config.ValidateOptions{AllowNoConnections: true}); err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	store, _, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()
	ds, ok := store.(*storage.DiskStore)
	if !ok {
		return errors.New("keys rekey: this store cannot be re-sealed")
	}
	n, err := ds.Rekey(ctx)
	if err != nil {
		return fmt.Errorf("rekey: %w (records re-sealed so far: %d)", err, n)
	}
	fmt.Fprintf(stdout, "Re-sealed %d records with the current key; previous_encryption_keys can now be removed.\n", n)
	return nil
}
