package sandbox

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

const usage = `Usage: servicenow-mcp sandbox [flags]

Runs a simulated ServiceNow instance (OAuth sign-in, Table, Aggregate,
Attachment, Knowledge and Service Catalog APIs) with seeded users and data,
plus switches to inject failures. Admin endpoints (loopback only):
GET /sandbox/stats, POST /sandbox/stats/reset, GET|PUT /sandbox/faults,
POST /sandbox/revoke?user=NAME.

Flags:
`

// Command runs the "servicenow-mcp sandbox" subcommand until ctx is done.
func Command(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		opts      Options
		redirects listFlag
		f         Faults
		delay     time.Duration
		skew      time.Duration
		offset    time.Duration
		noKM      bool
		stateReq  bool
	)
	listen := fs.String("listen", "127.0.0.1:8766", "address to listen on (host:port; port 0 picks one)")
	addrFile := fs.String("addr-file", "", "write the base URL to this file once listening")
	fs.StringVar(&opts.ClientID, "client-id", "sandbox-client", "OAuth client id")
	fs.StringVar(&opts.ClientSecret, "client-secret", "", "OAuth client secret (default $SANDBOX_CLIENT_SECRET or sandbox-secret)")
	fs.Var(&redirects, "redirect-uri", "registered redirect URI (repeatable; none means any http(s) URI)")
	fs.DurationVar(&opts.AccessTTL, "access-ttl", 1800*time.Second, "access token lifetime")
	fs.DurationVar(&opts.RefreshTTL, "refresh-ttl", 8640000*time.Second, "refresh token lifetime")
	fs.DurationVar(&opts.CodeTTL, "code-ttl", 60*time.Second, "authorization code lifetime")
	fs.BoolVar(&opts.RotateRefresh, "rotate-refresh", false, "rotate refresh tokens (reuse of an old one revokes the family)")
	fs.BoolVar(&opts.RefreshOmitsToken, "refresh-omits-refresh-token", false, "answer the refresh grant with an access token only (the refresh token stays valid)")
	fs.BoolVar(&stateReq, "state-required", true, "require the state parameter on /oauth_auth.do")
	fs.StringVar(&opts.StateFile, "state-file", "", "JSON file to load at start and save on change")
	fs.BoolVar(&noKM, "no-knowledge-api", false, "act as if the Knowledge API plugin (sn_km_api) were not installed")
	fs.BoolVar(&f.Hibernate, "hibernate", false, "fault: answer every path with the hibernation page")
	fs.IntVar(&f.Status, "fail-status", 0, "fault: answer with this status (429, 500, 502, 503, ...)")
	fs.IntVar(&f.RetryAfter, "retry-after", 30, "fault: Retry-After seconds for 429")
	fs.DurationVar(&delay, "delay", 0, "fault: delay every matching answer")
	fs.BoolVar(&f.Hang, "hang", false, "fault: never answer")
	fs.BoolVar(&f.Truncate, "truncate", false, "fault: cut JSON bodies short")
	fs.StringVar(&f.TokenEndpoint, "token-endpoint", "", "fault for /oauth_token.do: close, 503, hang or html")
	fs.StringVar(&f.Scope, "fault-scope", "", "fault scope: all, api, token or oauth")
	fs.StringVar(&f.User, "fault-user", "", "fault only requests of this user_name")
	fs.IntVar(&f.Count, "fault-count", 0, "fault only the next N matching requests (0 = all)")
	fs.DurationVar(&skew, "token-skew", 0, "access tokens die this much before expires_in says")
	fs.DurationVar(&offset, "clock-offset", 0, "shift the instance's clock (token expiry, sys_ timestamps, Date header); negative is behind")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			fs.SetOutput(stdout)
			fs.Usage()
			return nil
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("sandbox: unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	switch f.TokenEndpoint {
	case "", "close", "503", "hang", "html":
	default:
		return fmt.Errorf("sandbox: --token-endpoint must be close, 503, hang or html")
	}
	opts.RedirectURIs = redirects
	opts.StateOptional = !stateReq
	opts.NoKnowledgeAPI = noKM
	f.Delay, f.TokenSkew, f.ClockOffset = Duration(delay), Duration(skew), Duration(offset)
	opts.Faults = f

	run, err := Start(ctx, *listen, opts)
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	defer run.Close()
	if *addrFile != "" {
		tmp := *addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(run.URL+"\n"), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, *addrFile); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "ServiceNow sandbox listening on %s\n", run.URL)
	fmt.Fprintf(stderr, "OAuth client: client_id=%s (secret from --client-secret, $SANDBOX_CLIENT_SECRET or the default)\n", run.Server.opts.ClientID)
	fmt.Fprintf(stderr, "Authorize: %s/oauth_auth.do  Token: %s/oauth_token.do\n", run.URL, run.URL)
	fmt.Fprintln(stderr, "Sign-in users (password for all: "+SeedPassword+"):")
	for _, u := range run.Server.Users() {
		roles := strings.Join(u.Roles, ",")
		if roles == "" {
			roles = "(no roles)"
		}
		fmt.Fprintf(stderr, "  %-6s %-22s %s\n", u.UserName, u.Name, roles)
	}
	<-ctx.Done()
	return nil
}
