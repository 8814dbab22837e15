// Package server assembles servicenow-mcp: the MCP server fed by the tool
// registry, the transports, and the HTTP side (OAuth callback, health).
package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mcpserver "github.com/mark3labs/mcp-go/server"
	"github.com/rs/zerolog"

	"servicenow-mcp/config"
	"servicenow-mcp/oauth"
	"servicenow-mcp/servicenow"
	"servicenow-mcp/storage"
	"servicenow-mcp/tools"
)

// Name is the MCP server name.
const Name = "servicenow-mcp"

// Options build an App.
type Options struct {
	Config  *config.Config
	Store   storage.Store
	Logger  zerolog.Logger
	Version string
}

// App is one assembled server: the token manager, the instance client and
// the MCP server with the selected tools.
type App struct {
	cfg    *config.Config
	store  storage.Store
	log    zerolog.Logger
	Tokens *oauth.Manager
	Client *servicenow.Client
	MCP    *mcpserver.MCPServer
	Tools  []tools.Def

	// storeID names the data directory in /healthz (see StoreID).
	storeID string
	cb      callbackState
	// stopCalls ends tools.Deps.Stopping: calls still in flight near the
	// end of the shutdown bound answer that the server is stopping.
	stopCalls context.CancelFunc
}

// New assembles an App. Unknown tool or toolset names are errors.
func New(opts Options) (*App, error) {
	cfg := opts.Config
	defs, err := tools.Select(cfg.Tools)
	if err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, store: opts.Store, log: opts.Logger, Tools: defs, storeID: StoreID(cfg.DataDir)}
	a.cb.init()
	tokens := oauth.NewManager(oauth.Options{
		Store:         opts.Store,
		Connections:   cfg.Connections,
		RedirectURI:   cfg.RedirectURI(),
		RefreshMargin: cfg.Timeouts.RefreshMargin,
		LinkExpiry:    cfg.Timeouts.LinkExpiry,
		HTTPClient:    &http.Client{Timeout: cfg.Timeouts.Request, CheckRedirect: noRedirects},
		Logger:        opts.Logger,
		LinkGate:      a.linkGate,
	})
	client, err := servicenow.NewClient(tokens, cfg.Connections, cfg.Timeouts.Request)
	if err != nil {
		return nil, err
	}
	stopping, stopCalls := context.WithCancel(context.Background())
	a.stopCalls = stopCalls
	deps := &tools.Deps{
		Stopping:     stopping,
		Config:       cfg,
		Tokens:       tokens,
		Client:       client,
		Log:          opts.Logger,
		ReadOnly:     cfg.Tools.ReadOnly,
		Budget:       cfg.Tools.AnswerBudget,
		UserArgument: cfg.Server.AllowUserArgument,
	}
	s := mcpserver.NewMCPServer(Name, opts.Version,
		mcpserver.WithToolCapabilities(false),
		// No resources or prompts yet, but empty lists are the answers
		// generic clients and the conformance suite expect; likewise
		// logging/setLevel, which clients such as the Inspector send.
		mcpserver.WithResourceCapabilities(false, false),
		mcpserver.WithPromptCapabilities(false),
		mcpserver.WithLogging(),
		mcpserver.WithInstructions(tools.Instructions(defs)),
	)
	tools.Register(s, deps, defs)
	a.Tokens, a.Client, a.MCP = tokens, client, s
	return a, nil
}

func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// CallbackMux serves the OAuth callback and the health check.
func (a *App) CallbackMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/oauth/callback", a.Tokens.CallbackHandler())
	// Besides "ok", /healthz says that this is servicenow-mcp and which
	// data directory it serves (a hash, see StoreID), so that another
	// process finding the callback port taken can tell whether the holder
	// will finish its links.
	health, _ := json.Marshal(healthAnswer{Status: "ok", Service: Name, Store: a.storeID})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(health)
	})
	return mux
}

// ServeStdio serves MCP on in/out for one user until ctx ends or in
// closes, with the OAuth callback on a loopback listener beside it.
func (a *App) ServeStdio(ctx context.Context, in io.Reader, out io.Writer, user string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	callbackDone := a.StartCallback(ctx)

	stdio := mcpserver.NewStdioServer(a.MCP)
	stdio.SetErrorLogger(log.New(zerologWriter{a.log}, "", 0))
	// Desktop hosts send calls in parallel; the default pool of 5 would
	// queue a sixth call behind slow ServiceNow answers.
	mcpserver.WithWorkerPoolSize(64)(stdio)
	stdio.SetContextFunc(func(ctx context.Context) context.Context {
		return tools.WithCaller(ctx, tools.Caller{User: user})
	})
	a.log.Info().Str("transport", "stdio").Str("user", user).Int("tools", len(a.Tools)).Msg("serving MCP")
	listenDone := make(chan error, 1)
	go func() { listenDone <- stdio.Listen(ctx, in, out) }()

	var err error
	select {
	case err = <-listenDone:
	case <-ctx.Done():
		// Calls in flight see their context end and stop; one that does
		// not may not hold the process past the shutdown bound.
		bound := time.NewTimer(a.shutdownBound())
		defer bound.Stop()
		select {
		case err = <-listenDone:
		case <-bound.C:
			a.log.Warn().Dur("bound", a.shutdownBound()).Msg("shutdown bound reached with calls still in flight; exiting anyway")
		}
	}
	cancel()
	<-callbackDone
	if errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func (a *App) shutdownBound() time.Duration {
	if a.cfg.Timeouts.Shutdown > 0 {
		return a.cfg.Timeouts.Shutdown
	}
	return config.DefaultShutdown
}

// serveCallback keeps the callback listener up. When another process
// already holds the port, it finishes our links only if it is a
// servicenow-mcp on the same data directory (the pending authorizations
// are in the shared store); otherwise links made here could not complete,
// and Link refuses to make them (see LinksBlocked) until the port is ours
// or such a process holds it. The holder is asked again on every retry.
func (a *App) serveCallback(ctx context.Context) {
	addr := a.cfg.Server.Listen
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			a.log.Info().Str("listen", addr).Str("redirect_uri", a.cfg.RedirectURI()).Msg("OAuth callback listening")
			a.setCallbackState("", func() {})
			srv := &http.Server{Handler: a.CallbackMux(), ReadHeaderTimeout: 10 * time.Second}
			go func() {
				<-ctx.Done()
				sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
				defer c()
				_ = srv.Shutdown(sctx)
			}()
			_ = srv.Serve(ln)
			return
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			reason := fmt.Sprintf("this servicenow-mcp cannot listen on %s (server.listen) for OAuth callbacks (%v), so an authorization link could not be completed; "+
				"free that address or set another server.listen (--listen) and register its redirect URI at the instance", addr, err)
			a.setCallbackState(reason, func() {
				a.log.Error().Str("listen", addr).Str("error", err.Error()).Msg("cannot listen for OAuth callbacks; links cannot be completed")
			})
			return
		}
		reason := a.probeCallbackHolder(ctx, addr)
		if ctx.Err() != nil {
			return // stopping: a probe cut short says nothing about the holder
		}
		a.setCallbackState(reason, func() {
			if reason == "" {
				a.log.Info().Str("listen", addr).Msg("callback port is held by another servicenow-mcp on this data directory; it will finish links, and this process takes over when it stops")
				return
			}
			a.log.Error().Str("listen", addr).Str("redirect_uri", a.cfg.RedirectURI()).Str("reason", reason).
				Msg("authorization links are refused until the OAuth callback address is free or held by a servicenow-mcp on this data directory")
		})
		select {
		case <-ctx.Done():
			return
		case <-time.After(a.cb.retry):
		}
	}
}

// StartCallback serves the OAuth callback in the background until ctx
// ends; the returned channel closes when it has stopped. Links asked for
// meanwhile wait (briefly) until it knows whether it can finish them.
func (a *App) StartCallback(ctx context.Context) <-chan struct{} {
	a.cb.started.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.serveCallback(ctx)
	}()
	return done
}

// LinksBlocked says why this process cannot currently hand out an
// authorization link that would complete, or "" when it can. It is set
// while the OAuth callback address (server.listen) is held by a process
// that is not a servicenow-mcp serving this data directory, and clears
// when the address frees or such a process holds it. The reason names the
// address and the fix; it holds no secret. Link (oauth.Manager) refuses
// with an *oauth.LinksUnavailableError carrying it.
func (a *App) LinksBlocked() string {
	a.cb.mu.Lock()
	defer a.cb.mu.Unlock()
	return a.cb.reason
}

// callbackState is what serveCallback learnt about the callback address.
type callbackState struct {
	started atomic.Bool // serveCallback runs (or is about to)
	retry   time.Duration
	wait    time.Duration // how long a Link waits for the first verdict
	probe   time.Duration // timeout of one /healthz probe

	mu       sync.Mutex
	reason   string
	known    bool
	settled  chan struct{}       // closed at the first verdict
	onChange func(reason string) // test hook: each new verdict
}

func (c *callbackState) init() {
	c.retry, c.wait, c.probe = 2*time.Second, 3*time.Second, time.Second
	c.settled = make(chan struct{})
}

// setCallbackState records a verdict; log runs when it differs from the
// previous one, so each change is logged once.
func (a *App) setCallbackState(reason string, log func()) {
	a.cb.mu.Lock()
	changed := !a.cb.known || a.cb.reason != reason
	first, previous := !a.cb.known, a.cb.reason
	a.cb.reason, a.cb.known = reason, true
	hook := a.cb.onChange
	a.cb.mu.Unlock()
	if first {
		close(a.cb.settled)
	}
	if changed {
		log()
		if !first && reason == "" && previous != "" {
			a.log.Info().Str("listen", a.cfg.Server.Listen).Msg("authorization links can be completed again")
		}
	}
	if changed && hook != nil {
		hook(reason)
	}
}

// linkGate is oauth's LinkGate: no link while links cannot complete.
func (a *App) linkGate(ctx context.Context) error {
	if a.cb.started.Load() {
		t := time.NewTimer(a.cb.wait)
		defer t.Stop()
		select {
		case <-a.cb.settled:
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if r := a.LinksBlocked(); r != "" {
		return &oauth.LinksUnavailableError{Reason: r}
	}
	return nil
}

// healthAnswer is the body of /healthz.
type healthAnswer struct {
	Status  string `json:"status"`
	Service string `json:"service"`
	// Store identifies the data directory (StoreID); "" when none.
	Store string `json:"store,omitempty"`
}

// StoreID is a short, non-secret identifier of a data directory: a hash
// of its absolute, symlink-resolved path. Processes with the same id share
// one store, and so can finish each other's links.
func StoreID(dataDir string) string {
	if dataDir == "" {
		return ""
	}
	p, err := filepath.Abs(dataDir)
	if err != nil {
		p = dataDir
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	sum := sha256.Sum256([]byte("servicenow-mcp data dir\x00" + p))
	return hex.EncodeToString(sum[:8])
}

// probeCallbackHolder asks whoever holds addr for its /healthz and returns
// "" when it is a servicenow-mcp on our data directory, else why links
// made here cannot complete.
func (a *App) probeCallbackHolder(ctx context.Context, addr string) string {
	fix := "stop the other process, or give this one its own server.listen (--listen; with public_url when it is not the default) " +
		"and register that redirect URI at the instance"
	var h healthAnswer
	err := getHealth(ctx, probeAddr(addr), a.cb.probe, &h)
	switch {
	case err == nil && h.Service == Name && a.storeID != "" && h.Store == a.storeID:
		return ""
	case err == nil && h.Service == Name:
		return fmt.Sprintf("the OAuth callback address %s (server.listen) is held by another servicenow-mcp that serves a different data directory, "+
			"so a link made here would end there and fail (\"Link unknown or already used\"): %s", addr, fix)
	case err == nil && h.Service == "" && h.Status == "ok":
		return fmt.Sprintf("the OAuth callback address %s (server.listen) is held by a process that does not say which data directory it serves "+
			"(an older servicenow-mcp?), so a link made here may end there and fail: %s", addr, fix)
	}
	return fmt.Sprintf("the OAuth callback address %s (server.listen) is held by another program that does not answer as servicenow-mcp, "+
		"so a link made here would end there and fail: %s", addr, fix)
}

// probeAddr is where to reach a listener bound to addr: its own host, or
// loopback for an all-interfaces address.
func probeAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// getHealth reads http://addr/healthz, or https:// when the holder speaks
// TLS (its certificate is not checked: nothing secret is sent, and only
// the non-secret store id is read).
func getHealth(ctx context.Context, addr string, timeout time.Duration, into *healthAnswer) error {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{
		Proxy: nil, DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // reads a public health answer only
	}, CheckRedirect: noRedirects}
	var err error
	for _, scheme := range []string{"http", "https"} {
		var req *http.Request
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+"/healthz", nil)
		if err != nil {
			return err
		}
		var resp *http.Response
		if resp, err = c.Do(req); err != nil {
			return err
		}
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if rerr != nil {
			return rerr
		}
		if resp.StatusCode == http.StatusBadRequest && scheme == "http" && strings.Contains(string(body), "HTTPS server") {
			continue // a TLS listener (server.tls_cert) answered plain HTTP
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/healthz answered %d", resp.StatusCode)
		}
		return json.Unmarshal(body, into)
	}
	return err
}

type zerologWriter struct{ log zerolog.Logger }

func (w zerologWriter) Write(p []byte) (int, error) {
	w.log.Error().Str("component", "mcp").Msg(string(trimNL(p)))
	return len(p), nil
}

func trimNL(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}

// Describe is a one-line summary for logs.
func (a *App) Describe() string {
	return fmt.Sprintf("%d tools, %d connections", len(a.Tools), len(a.cfg.Connections))
}
