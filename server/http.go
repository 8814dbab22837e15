package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	mcpserver "github.com/mark3labs/mcp-go/server"
	"github.com/rs/zerolog"

	"servicenow-mcp/tools"
)

// Paths of the HTTP listener. The OAuth callback and /healthz come from
// CallbackMux.
const (
	StreamablePath = "/mcp"
	SSEPath        = "/sse"
	MessagePath    = "/message"
)

// httpOptions tune the HTTP transport; tests shorten them.
type httpOptions struct {
	// keepAlive is the interval of keep-alive comments on SSE streams and
	// streamable HTTP GET streams. Proxies must allow a longer read idle.
	keepAlive time.Duration
	// sessionIdleTTL ends a streamable HTTP session nobody used this long.
	sessionIdleTTL time.Duration
	// bodyReadTimeout bounds reading one request body.
	bodyReadTimeout time.Duration
}

func defaultHTTPOptions() httpOptions {
	return httpOptions{
		keepAlive:       15 * time.Second,
		sessionIdleTTL:  time.Hour,
		bodyReadTimeout: 30 * time.Second,
	}
}

// httpTransport serves MCP over streamable HTTP and the legacy SSE
// transport beside the OAuth callback, admitting only authenticated
// callers and binding each session to the caller that opened it.
type httpTransport struct {
	app        *App
	opts       httpOptions
	auth       *authenticator
	sessions   *sessionBook
	inflight   *inflight
	streamable *mcpserver.StreamableHTTPServer
	sse        *mcpserver.SSEServer
	publicHost string
	mux        *http.ServeMux
}

// ServeHTTP serves MCP over streamable HTTP (/mcp) and SSE (/sse with
// its message endpoint /message), with the OAuth callback and /healthz,
// on the configured listener until ctx ends; then it shuts down
// gracefully within timeouts.shutdown.
func (a *App) ServeHTTP(ctx context.Context) error {
	s := &a.cfg.Server
	if err := checkExposure(s, a.cfg.User); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s (server.listen): %w", s.Listen, err)
	}
	return a.serveHTTP(ctx, ln, defaultHTTPOptions())
}

// serveHTTP serves on ln until ctx ends.
func (a *App) serveHTTP(ctx context.Context, ln net.Listener, opts httpOptions) error {
	t, err := a.newHTTPTransport(opts)
	if err != nil {
		_ = ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           t,
		ReadHeaderTimeout: 10 * time.Second,
		// No ReadTimeout or WriteTimeout: either would cut SSE streams.
		// Bodies get their own deadline in limitBody.
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       log.New(zerologWriter{a.log}, "", 0),
	}

	s := &a.cfg.Server
	if s.TLSCert != "" {
		// Loaded here so that a bad file stops the start with its name.
		cert, err := tls.LoadX509KeyPair(s.TLSCert, s.TLSKey)
		if err != nil {
			_ = ln.Close()
			t.closeStreams(context.Background())
			return fmt.Errorf("server.tls_cert_file and server.tls_key_file: %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	served := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			served <- srv.ServeTLS(ln, "", "")
			return
		}
		served <- srv.Serve(ln)
	}()
	a.logListening(ln.Addr().String())

	select {
	case err := <-served:
		t.closeStreams(context.Background())
		return fmt.Errorf("serve HTTP on %s: %w", s.Listen, err)
	case <-ctx.Done():
	}
	return t.shutdown(srv, served, a.cfg.Timeouts.Shutdown)
}

func (a *App) logListening(addr string) {
	s := &a.cfg.Server
	gateways := 0
	for _, k := range s.APIKeys {
		if k.Gateway {
			gateways++
		}
	}
	ev := a.log.Info()
	if len(s.APIKeys) == 0 {
		ev = a.log.Warn().Str("auth", "none: loopback only, every caller acts as user "+a.cfg.User)
	} else {
		ev = ev.Int("api_keys", len(s.APIKeys)).Int("gateway_keys", gateways).Str("user_header", s.UserHeader)
	}
	ev.Str("transport", "http").Str("listen", addr).Str("public_url", s.PublicURL).
		Str("streamable_http", strings.TrimRight(s.PublicURL, "/")+StreamablePath).
		Str("sse", strings.TrimRight(s.PublicURL, "/")+SSEPath).
		Str("redirect_uri", a.cfg.RedirectURI()).Bool("tls", s.TLSCert != "").
		Int("tools", len(a.Tools)).Msg("serving MCP")

	if len(s.APIKeys) > 0 && s.TLSCert == "" && !s.LoopbackOnly() && strings.HasPrefix(s.PublicURL, "http:") {
		a.log.Error().Str("listen", s.Listen).Str("public_url", s.PublicURL).
			Msg("API keys and ServiceNow links travel unencrypted: put a TLS terminator in front and set " +
				"server.public_url to its https URL, or set server.tls_cert_file and server.tls_key_file")
	}
}

// newHTTPTransport assembles the handler tree.
func (a *App) newHTTPTransport(opts httpOptions) (*httpTransport, error) {
	s := &a.cfg.Server
	public, err := url.Parse(s.PublicURL)
	if err != nil || public.Host == "" {
		return nil, fmt.Errorf("server.public_url %q is not an absolute URL", s.PublicURL)
	}
	t := &httpTransport{
		app:        a,
		opts:       opts,
		auth:       &authenticator{server: s, openUser: a.cfg.User, log: a.log},
		sessions:   newSessionBook(),
		inflight:   newInflight(),
		publicHost: public.Hostname(),
	}
	// mcp-go logs session ids; ours never do.
	mcpLog := slog.New(sessionFreeHandler{
		zerolog.NewSlogHandler(a.log.With().Str("component", "mcp-http").Logger()),
	})

	// DNS-rebinding protection is ours (guard): mcp-go's refuses a
	// reverse proxy on the same host that keeps the public Host header.
	t.streamable = mcpserver.NewStreamableHTTPServer(a.MCP,
		mcpserver.WithSessionIdManagerResolver(t.sessions),
		mcpserver.WithHTTPContextFunc(callerContext),
		mcpserver.WithSessionIdleTTL(opts.sessionIdleTTL),
		mcpserver.WithDisableLocalhostProtection(true),
		mcpserver.WithStreamableHTTPLogger(mcpLog),
	)
	// The endpoint event is built from public_url, never from the Host
	// header of the request.
	t.sse = mcpserver.NewSSEServer(a.MCP,
		mcpserver.WithBaseURL(strings.TrimRight(s.PublicURL, "/")),
		mcpserver.WithSSEEndpoint(SSEPath),
		mcpserver.WithMessageEndpoint(MessagePath),
		mcpserver.WithUseFullURLForMessageEndpoint(true),
		mcpserver.WithKeepAlive(false), // streamWriter sends keep-alives
		mcpserver.WithSSEContextFunc(callerContext),
		mcpserver.WithSessionIDGenerator(t.openSSESession),
		mcpserver.WithSSEDisableLocalhostProtection(true),
	)

	protect := func(h http.HandlerFunc) http.Handler { return t.guard(t.auth.wrap(h)) }
	t.mux = http.NewServeMux()
	t.mux.Handle(StreamablePath, protect(t.limitBody(t.serveStreamable)))
	t.mux.Handle(SSEPath, protect(t.serveSSEStream))
	t.mux.Handle(MessagePath, protect(t.limitBody(t.serveSSEMessage)))
	t.mux.Handle("/", a.CallbackMux())
	return t, nil
}

func (t *httpTransport) ServeHTTP(w http.ResponseWriter, r *http.Request) { t.mux.ServeHTTP(w, r) }

// callerContext hands the authenticated principal to the tools.
func callerContext(ctx context.Context, r *http.Request) context.Context {
	p, ok := principalFrom(r.Context())
	if !ok {
		return ctx
	}
	return tools.WithCaller(ctx, p.caller())
}

// shutdown stops accepting, lets requests in flight finish within bound,
// then ends the streams and the server.
func (t *httpTransport) shutdown(srv *http.Server, served <-chan error, bound time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	log := t.app.log

	// Shutdown closes the listener at once, then waits for every
	// connection to go idle, which streams only do once they are closed.
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(ctx) }()
	log.Info().Int("in_flight", t.inflight.count()).Dur("bound", bound).Msg("shutting down: no new connections")

	// Calls still running near the end of the bound are asked to stop, so
	// that each answers "shutting down" before its connection is cut.
	soft, cancelSoft := context.WithTimeout(ctx, bound-min(bound/4, 2*time.Second))
	defer cancelSoft()
	if err := t.inflight.wait(soft); err != nil {
		log.Warn().Int("in_flight", t.inflight.count()).Msg("shutdown bound near with calls in flight; stopping them")
		t.app.stopCalls()
		if err := t.inflight.wait(ctx); err != nil {
			log.Warn().Int("in_flight", t.inflight.count()).
				Msg("shutdown bound reached with requests in flight; cutting them off")
		}
	}
	t.closeStreams(ctx)

	if err := <-stopped; err != nil {
		_ = srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve HTTP: %w", err)
	}
	log.Info().Msg("HTTP transport stopped")
	return nil
}

// closeStreams ends every SSE stream and streamable HTTP session, and the
// idle-session sweeper.
func (t *httpTransport) closeStreams(ctx context.Context) {
	t.sse.CloseSessions()
	_ = t.streamable.Shutdown(ctx)
}

// serveStreamable serves /mcp. mcp-go validates the session of a POST
// through the book; GET and DELETE are checked here, since mcp-go would
// attach a GET stream to any id and end any session on DELETE.
func (t *httpTransport) serveStreamable(w http.ResponseWriter, r *http.Request) {
	p, _ := principalFrom(r.Context())
	id := r.Header.Get(mcpserver.HeaderKeySessionID)
	switch r.Method {
	case http.MethodDelete:
		if id == "" {
			writeJSONRPCError(w, http.StatusBadRequest, -32600,
				"DELETE needs the "+mcpserver.HeaderKeySessionID+" header")
			return
		}
		fallthrough
	case http.MethodGet:
		if id == "" {
			writeJSONRPCError(w, http.StatusBadRequest, -32600,
				"GET opens the event stream of a session and needs the "+mcpserver.HeaderKeySessionID+" header; send initialize first")
			return
		}
		if !t.sessions.owns(id, p.owner()) {
			writeUnknownSession(w)
			return
		}
		if r.Method == http.MethodGet {
			sw := t.newStreamWriter(w, nil)
			t.streamable.ServeHTTP(sw, r)
			sw.close()
			return
		}
	case http.MethodPost:
		// mcp-go would answer an unknown id in plain text; clients look
		// for a JSON-RPC error with the 404.
		if id != "" && !t.sessions.owns(id, p.owner()) {
			writeUnknownSession(w)
			return
		}
		t.inflight.add("")
		defer t.inflight.done("")
	}
	// A POST answer may turn into an SSE stream as well.
	w.Header().Set("X-Accel-Buffering", "no")
	t.streamable.ServeHTTP(w, r)
}

func writeUnknownSession(w http.ResponseWriter) {
	writeJSONRPCError(w, http.StatusNotFound, -32001,
		"unknown or ended session; start a new one with initialize")
}

type sseSlotKey struct{}

// openSSESession mints the id of a new SSE session for the principal of
// the GET that opens it, and tells serveSSEStream which id that was.
func (t *httpTransport) openSSESession(ctx context.Context, r *http.Request) (string, error) {
	p, ok := principalFrom(r.Context())
	if !ok {
		return "", errors.New("no authenticated caller")
	}
	id := t.sessions.open(p.owner())
	if slot, ok := r.Context().Value(sseSlotKey{}).(*string); ok {
		*slot = id
	}
	return id, nil
}

// serveSSEStream serves the SSE stream of one session for as long as the
// client keeps it open, then forgets the session.
func (t *httpTransport) serveSSEStream(w http.ResponseWriter, r *http.Request) {
	slot := new(string)
	r = r.WithContext(context.WithValue(r.Context(), sseSlotKey{}, slot))
	sw := t.newStreamWriter(w, slot)
	t.sse.SSEHandler().ServeHTTP(sw, r)
	sw.close()
	if *slot != "" {
		t.sessions.end(*slot)
		t.inflight.dropSession(*slot)
	}
}

// serveSSEMessage admits a POST to a session of the same principal and
// counts a request until its response is written to the stream.
func (t *httpTransport) serveSSEMessage(w http.ResponseWriter, r *http.Request) {
	p, _ := principalFrom(r.Context())
	id := r.URL.Query().Get("sessionId")
	if id == "" || !t.sessions.owns(id, p.owner()) {
		writeUnknownSession(w)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSONRPCError(w, http.StatusMethodNotAllowed, -32600, "use POST")
		return
	}
	// A browser may send a text/plain POST across origins without asking
	// first; JSON only closes that door.
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeJSONRPCError(w, http.StatusUnsupportedMediaType, -32600, "Content-Type must be application/json")
		return
	}

	body, _ := r.Context().Value(bodyKey{}).([]byte)
	counted := isJSONRPCRequest(body)
	if counted {
		t.inflight.add(id)
	}
	rec := &statusRecorder{ResponseWriter: w}
	t.sse.MessageHandler().ServeHTTP(rec, r)
	if counted && rec.status != http.StatusAccepted {
		t.inflight.done(id)
	}
}

// guard is the DNS-rebinding and cross-origin check. On a loopback
// connection the Host must be a loopback name or public_url's host, and a
// browser Origin must be one of those in every case.
func (t *httpTransport) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		if local != nil && isLoopbackAddr(local.String()) && !t.knownHost(r.Host) {
			writeJSONRPCError(w, http.StatusForbidden, -32001,
				fmt.Sprintf("Host %q is neither a loopback name nor the host of server.public_url", r.Host))
			return
		}
		if origin := r.Header.Get("Origin"); origin != "" {
			u, err := url.Parse(origin)
			if err != nil || u.Host == "" || !t.knownHost(u.Host) {
				writeJSONRPCError(w, http.StatusForbidden, -32001,
					fmt.Sprintf("Origin %q is not allowed", origin))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (t *httpTransport) knownHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	return isLoopbackAddr(host) || strings.EqualFold(host, t.publicHost)
}

// isLoopbackAddr accepts localhost and loopback IPs, with or without a port.
func isLoopbackAddr(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

type bodyKey struct{}

// limitBody reads the whole request body, up to server.max_body_bytes and
// within bodyReadTimeout, before the handler sees it; a larger body gets
// 413. Handlers find the bytes in the context too.
func (t *httpTransport) limitBody(next http.HandlerFunc) http.HandlerFunc {
	max := t.app.cfg.Server.MaxBodyBytes
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next(w, r)
			return
		}
		if r.ContentLength > max {
			writeTooLarge(w, max)
			return
		}
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(t.opts.bodyReadTimeout))
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
		_ = rc.SetReadDeadline(time.Time{})
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			writeTooLarge(w, max)
			return
		case err != nil:
			writeJSONRPCError(w, http.StatusBadRequest, -32700, "the request body could not be read")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next(w, r.WithContext(context.WithValue(r.Context(), bodyKey{}, body)))
	}
}

func writeTooLarge(w http.ResponseWriter, max int64) {
	writeJSONRPCError(w, http.StatusRequestEntityTooLarge, -32600,
		fmt.Sprintf("the request body is larger than %d bytes (server.max_body_bytes)", max))
}

// jsonrpcShape is enough of a JSON-RPC message to tell requests,
// notifications and responses apart.
type jsonrpcShape struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Result json.RawMessage `json:"result"`
	Error  json.RawMessage `json:"error"`
}

// isJSONRPCRequest reports a single request, which gets one response.
func isJSONRPCRequest(body []byte) bool {
	var m jsonrpcShape
	if json.Unmarshal(body, &m) != nil {
		return false
	}
	return m.Method != "" && len(m.ID) > 0 && string(m.ID) != "null"
}

// isSSEResponseEvent reports an SSE event that carries a JSON-RPC response.
func isSSEResponseEvent(event []byte) bool {
	for line := range bytes.SplitSeq(event, []byte("\n")) {
		data, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			continue
		}
		var m jsonrpcShape
		if json.Unmarshal(bytes.TrimSpace(data), &m) != nil {
			return false
		}
		return m.Method == "" && len(m.ID) > 0 && (m.Result != nil || m.Error != nil)
	}
	return false
}

// streamWriter is the writer of a long-lived stream: an SSE session or a
// streamable HTTP GET. Once the stream is open it writes an SSE comment
// every keepAlive, which every client ignores and which keeps proxies and
// load balancers from closing an idle connection. (mcp-go's own
// keep-alives are ping requests, whose ids some clients confuse with
// their own.) On an SSE session, each response written ends one counted
// request. It drops the wildcard CORS header mcp-go sets on SSE streams:
// this server answers no cross-origin reads.
type streamWriter struct {
	http.ResponseWriter
	t         *httpTransport
	session   *string // SSE session id once known; nil on streamable GET
	keepAlive time.Duration

	mu      sync.Mutex // serialises the handler's writes and keep-alives
	open    bool
	stop    chan struct{}
	stopped chan struct{}
}

func (t *httpTransport) newStreamWriter(w http.ResponseWriter, session *string) *streamWriter {
	w.Header().Set("X-Accel-Buffering", "no")
	return &streamWriter{ResponseWriter: w, t: t, session: session, keepAlive: t.opts.keepAlive}
}

func (w *streamWriter) WriteHeader(status int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.Header().Del("Access-Control-Allow-Origin")
	w.ResponseWriter.WriteHeader(status)
}

func (w *streamWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.Header().Del("Access-Control-Allow-Origin")
	n, err := w.ResponseWriter.Write(p)
	if w.session != nil && *w.session != "" && isSSEResponseEvent(p) {
		w.t.inflight.done(*w.session)
	}
	return n, err
}

// Flush sends what was written. The first flush opens the stream, and
// from then on keep-alives flow.
func (w *streamWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.Header().Del("Access-Control-Allow-Origin")
	_ = http.NewResponseController(w.ResponseWriter).Flush()
	if !w.open && w.keepAlive > 0 {
		w.open = true
		w.stop, w.stopped = make(chan struct{}), make(chan struct{})
		go w.keepAlives()
	}
}

func (w *streamWriter) keepAlives() {
	defer close(w.stopped)
	tick := time.NewTicker(w.keepAlive)
	defer tick.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-tick.C:
			w.mu.Lock()
			_, err := io.WriteString(w.ResponseWriter, ": keep-alive\n\n")
			if err == nil {
				err = http.NewResponseController(w.ResponseWriter).Flush()
			}
			w.mu.Unlock()
			if err != nil {
				return
			}
		}
	}
}

// close stops the keep-alives; the handler must not return before.
func (w *streamWriter) close() {
	w.mu.Lock()
	open := w.open
	w.mu.Unlock()
	if open {
		close(w.stop)
		<-w.stopped
	}
}

func (w *streamWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// statusRecorder remembers the status a handler answered with.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusRecorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// sessionFreeHandler drops log attributes that carry session or stream
// ids: they are bearer credentials for a session's traffic.
type sessionFreeHandler struct{ slog.Handler }

func (h sessionFreeHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, rec.Message, rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		if !sessionAttr(a.Key) {
			out.AddAttrs(a)
		}
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h sessionFreeHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var kept []slog.Attr
	for _, a := range attrs {
		if !sessionAttr(a.Key) {
			kept = append(kept, a)
		}
	}
	return sessionFreeHandler{h.Handler.WithAttrs(kept)}
}

func (h sessionFreeHandler) WithGroup(name string) slog.Handler {
	return sessionFreeHandler{h.Handler.WithGroup(name)}
}

func sessionAttr(key string) bool {
	k := strings.ToLower(key)
	return strings.Contains(k, "session") || strings.Contains(k, "stream")
}
