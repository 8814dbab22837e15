// Package server assembles servicenow-mcp: the MCP server fed by the tool
// registry, the transports, and the HTTP side (OAuth callback, health).
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
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
}

// New assembles an App. Unknown tool or toolset names are errors.
func New(opts Options) (*App, error) {
	cfg := opts.Config
	defs, err := tools.Select(cfg.Tools)
	if err != nil {
		return nil, err
	}
	tokens := oauth.NewManager(oauth.Options{
		Store:         opts.Store,
		Connections:   cfg.Connections,
		RedirectURI:   cfg.RedirectURI(),
		RefreshMargin: cfg.Timeouts.RefreshMargin,
		LinkExpiry:    cfg.Timeouts.LinkExpiry,
		HTTPClient:    &http.Client{Timeout: cfg.Timeouts.Request, CheckRedirect: noRedirects},
		Logger:        opts.Logger,
	})
	client, err := servicenow.NewClient(tokens, cfg.Connections, cfg.Timeouts.Request)
	if err != nil {
		return nil, err
	}
	deps := &tools.Deps{
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
		// No resources yet, but an empty resources/list is the answer
		// generic clients and the conformance suite expect; likewise
		// logging/setLevel, which clients such as the Inspector send.
		mcpserver.WithResourceCapabilities(false, false),
		mcpserver.WithLogging(),
		mcpserver.WithInstructions(tools.Instructions(defs)),
	)
	tools.Register(s, deps, defs)
	return &App{cfg: cfg, store: opts.Store, log: opts.Logger, Tokens: tokens, Client: client, MCP: s, Tools: defs}, nil
}

func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// CallbackMux serves the OAuth callback and the health check.
func (a *App) CallbackMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/oauth/callback", a.Tokens.CallbackHandler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	})
	return mux
}

// ServeStdio serves MCP on in/out for one user until ctx ends or in
// closes, with the OAuth callback on a loopback listener beside it.
func (a *App) ServeStdio(ctx context.Context, in io.Reader, out io.Writer, user string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	callbackDone := make(chan struct{})
	go func() {
		defer close(callbackDone)
		a.serveCallback(ctx)
	}()

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

// serveCallback keeps the callback listener up. When another process on
// this machine already holds the port, that process finishes links (the
// pending authorizations are in the shared store), and this one takes the
// port over when it is freed.
func (a *App) serveCallback(ctx context.Context) {
	addr := a.cfg.Server.Listen
	warned := false
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			a.log.Info().Str("listen", addr).Str("redirect_uri", a.cfg.RedirectURI()).Msg("OAuth callback listening")
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
			a.log.Error().Str("listen", addr).Str("error", err.Error()).Msg("cannot listen for OAuth callbacks; links cannot be completed")
			return
		}
		if !warned {
			a.log.Info().Str("listen", addr).Msg("callback port is in use (another servicenow-mcp?); it will finish links, and this process takes over when it stops")
			warned = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
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

// ServeCallbackOnly serves the OAuth callback until ctx ends, for the
// terminal login command.
func (a *App) ServeCallbackOnly(ctx context.Context) { a.serveCallback(ctx) }
