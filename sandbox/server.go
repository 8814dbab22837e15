package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// Options configure a sandbox instance. The zero value is usable.
type Options struct {
	// OAuth client registered on the instance. Defaults "sandbox-client" and
	// "sandbox-secret" (or $SANDBOX_CLIENT_SECRET when set).
	ClientID, ClientSecret string
	// RedirectURIs registered for the client, compared byte for byte. Empty
	// means any absolute http(s) redirect URI is accepted.
	RedirectURIs []string
	// Token lifetimes; defaults 1800s and 100 days. expires_in is
	// AccessTTL-1s, as ServiceNow answers 1799.
	AccessTTL, RefreshTTL time.Duration
	// CodeTTL is how long an authorization code lives; default 60s.
	CodeTTL time.Duration
	// RotateRefresh makes the refresh grant return a new refresh token and
	// treat reuse of a replaced one as theft (the whole family is revoked).
	RotateRefresh bool
	// RefreshOmitsToken makes the refresh grant answer without
	// refresh_token ("returns only an access token", as ServiceNow's
	// parameter reference puts it); the refresh token in use stays valid.
	// Ignored while refresh tokens rotate.
	RefreshOmitsToken bool
	// StateRequired is kept for readability: state is required unless
	// StateOptional is set (a bool cannot default to true).
	StateRequired bool
	StateOptional bool
	// KnowledgeAPI is likewise on unless NoKnowledgeAPI is set.
	KnowledgeAPI   bool
	NoKnowledgeAPI bool
	// Faults are the initial fault switches.
	Faults Faults
	// Now is the clock; default time.Now.
	Now func() time.Time
	// StateFile, when set, is loaded at start and rewritten (atomically) after
	// changes and on Close.
	StateFile string
}

// SeedUser is a sign-in user created at start.
type SeedUser struct {
	UserName string   `json:"user_name"`
	Password string   `json:"password"`
	Name     string   `json:"name"`
	Roles    []string `json:"roles"`
	SysID    string   `json:"sys_id"`
}

type record map[string]string

type tableData struct {
	rows  map[string]record
	order []string
}

// Server is a simulated ServiceNow instance; it implements http.Handler.
type Server struct {
	opts   Options
	clock  func() time.Time // the host's clock; now() adds ClockOffset
	schema map[string]*tableDef

	mu       sync.RWMutex
	data     map[string]*tableData
	counters map[string]int
	files    map[string][]byte
	tokens   map[string]*token
	codes    map[string]*authCode
	pending  map[string]*authRequest
	pwd      map[string]string // user_name -> password

	fmu    sync.Mutex
	faults Faults

	smu   sync.Mutex
	stats Stats

	done      chan struct{}
	closeOnce sync.Once

	saveMu    sync.Mutex // guards saveTimer and saveErr
	saveTimer *time.Timer
	saveErr   error
	writeMu   sync.Mutex // one state-file save at a time, snapshot to rename

	users []SeedUser

	onHang func() // test hook: called when a request starts hanging
	// onDelay is a test hook: called when a request starts its delay.
	onDelay func()
}

// New builds a sandbox with seeded data (or the state file's data).
func New(opts Options) *Server {
	if opts.ClientID == "" {
		opts.ClientID = "sandbox-client"
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = os.Getenv("SANDBOX_CLIENT_SECRET")
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = "sandbox-secret"
	}
	if opts.AccessTTL <= 0 {
		opts.AccessTTL = 1800 * time.Second
	}
	if opts.RefreshTTL <= 0 {
		opts.RefreshTTL = 8640000 * time.Second
	}
	if opts.CodeTTL <= 0 {
		opts.CodeTTL = 60 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{
		opts:     opts,
		clock:    opts.Now,
		schema:   buildSchema(),
		data:     map[string]*tableData{},
		counters: map[string]int{},
		files:    map[string][]byte{},
		tokens:   map[string]*token{},
		codes:    map[string]*authCode{},
		pending:  map[string]*authRequest{},
		pwd:      map[string]string{},
		faults:   opts.Faults.normalized(),
		done:     make(chan struct{}),
	}
	s.stats.reset()
	for name := range s.schema {
		s.data[name] = &tableData{rows: map[string]record{}}
	}
	s.seed()
	if opts.StateFile != "" {
		_ = s.load(opts.StateFile)
	}
	return s
}

// now is the instance's clock: the host's clock shifted by the
// clock_offset switch. Token lifetimes, sys_ timestamps, queries relative
// to today and the Date header all read it.
func (s *Server) now() time.Time {
	return s.clock().Add(time.Duration(s.Faults().ClockOffset))
}

func (s *Server) stateRequired() bool { return s.opts.StateRequired || !s.opts.StateOptional }
func (s *Server) knowledgeOn() bool   { return s.opts.KnowledgeAPI || !s.opts.NoKnowledgeAPI }

// Users lists the seeded sign-in users (user name, password, name, roles).
func (s *Server) Users() []SeedUser { return append([]SeedUser(nil), s.users...) }

// Close releases hanging requests and writes the state file.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { close(s.done) })
	return s.saveNow()
}

// ---------- routing ----------

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// the instance's own time, so that a clock_offset shows here too
	w.Header().Set("Date", s.now().UTC().Format(http.TimeFormat))
	p := r.URL.Path
	if strings.HasPrefix(p, "/sandbox/") {
		s.serveAdmin(w, r)
		return
	}
	if m := r.Header.Get("X-HTTP-Method-Override"); m != "" && r.Method == http.MethodPost {
		r.Method = strings.ToUpper(m)
	}
	switch {
	case p == "/oauth_token.do":
		s.serveToken(w, r)
	case strings.HasPrefix(p, "/api/"):
		s.serveAPI(w, r)
	default:
		if s.applyFaults(w, r, scopeOther, "") {
			return
		}
		switch p {
		case "/oauth_auth.do":
			s.serveAuthorize(w, r)
		case "/oauth_revoke_token.do":
			s.serveRevoke(w, r)
		case "/", "/index.do", "/login.do":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write([]byte(`<!DOCTYPE html><html><head><title>ServiceNow sandbox</title></head><body><h1>ServiceNow sandbox</h1><p>This is a simulated instance. See /sandbox/stats.</p></body></html>`))
		default:
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`<!DOCTYPE html><html><head><title>Not found</title></head><body><p>The page you are looking for could not be found.</p></body></html>`))
		}
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w}
	u := s.authenticate(r)
	userName := ""
	if u != nil {
		userName = u.UserName
	}
	defer func() {
		st := rec.status
		if st == 0 {
			st = http.StatusOK
		}
		s.countAPI(st, userName)
	}()
	if s.applyFaults(rec, r, scopeAPI, userName) {
		return
	}
	if u == nil {
		writeErr(rec, http.StatusUnauthorized, "User Not Authenticated", "Required to provide Auth information")
		return
	}
	if s.truncateFault(scopeAPI, r.URL.Path, userName) {
		buf := &bufferWriter{header: http.Header{}}
		s.routeAPI(buf, r, u)
		writeTruncated(rec, buf)
		return
	}
	s.routeAPI(rec, r, u)
}

func (s *Server) routeAPI(w http.ResponseWriter, r *http.Request, u *principal) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	// parts[0] == "api"
	if len(parts) >= 3 && parts[1] == "now" {
		rest := parts[2:]
		version := ""
		if len(rest) > 0 && (rest[0] == "v1" || rest[0] == "v2") {
			version, rest = rest[0], rest[1:]
		}
		if len(rest) >= 2 && rest[0] == "table" && len(rest) <= 3 {
			id := ""
			if len(rest) == 3 {
				id = rest[2]
			}
			s.serveTable(w, r, u, rest[1], id, version)
			return
		}
		if len(rest) == 2 && rest[0] == "stats" {
			s.serveAggregate(w, r, u, rest[1])
			return
		}
		if len(rest) >= 1 && rest[0] == "attachment" {
			if s.serveAttachment(w, r, u, rest[1:]) {
				return
			}
		}
	}
	if len(parts) >= 4 && parts[1] == "sn_km_api" && parts[2] == "knowledge" && parts[3] == "articles" && s.knowledgeOn() {
		s.serveKnowledge(w, r, u, parts[4:])
		return
	}
	if len(parts) >= 3 && parts[1] == "sn_sc" {
		rest := parts[2:]
		if len(rest) > 0 && strings.HasPrefix(rest[0], "v") && len(rest[0]) <= 3 {
			rest = rest[1:]
		}
		if len(rest) >= 2 && rest[0] == "servicecatalog" && rest[1] == "items" {
			if s.serveCatalog(w, r, u, rest[2:]) {
				return
			}
		}
	}
	writeErr(w, http.StatusBadRequest, "Requested URI does not represent any resource", nil)
}

// ---------- principals ----------

type principal struct {
	SysID, UserName, Name string
	Roles                 map[string]bool
}

func (p *principal) has(roles []string) bool {
	if len(roles) == 0 || p.Roles["admin"] {
		return true
	}
	for _, r := range roles {
		if p.Roles[r] {
			return true
		}
	}
	return false
}

// authenticate resolves the caller of an /api request from a bearer token
// (or basic credentials of a seeded user); nil when not authenticated.
func (s *Server) authenticate(r *http.Request) *principal {
	h := r.Header.Get("Authorization")
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case len(h) > 7 && strings.EqualFold(h[:7], "bearer "):
		t := s.tokens[strings.TrimSpace(h[7:])]
		if t == nil || t.Kind != "access" || !s.tokenLive(t) {
			return nil
		}
		return s.principalLocked(t.User)
	case len(h) > 6 && strings.EqualFold(h[:6], "basic "):
		user, pass, ok := r.BasicAuth()
		if !ok {
			return nil
		}
		if pw, ok := s.pwd[user]; !ok || pw != pass {
			return nil
		}
		id := s.userIDByNameLocked(user)
		if id == "" {
			return nil
		}
		return s.principalLocked(id)
	}
	return nil
}

func (s *Server) principalLocked(userID string) *principal {
	u := s.data["sys_user"].rows[userID]
	if u == nil || u["active"] == "false" {
		return nil
	}
	p := &principal{SysID: userID, UserName: u["user_name"], Name: u["name"], Roles: map[string]bool{}}
	for _, r := range strings.Split(u["roles"], ",") {
		if r = strings.TrimSpace(r); r != "" {
			p.Roles[r] = true
		}
	}
	return p
}

func (s *Server) userIDByNameLocked(name string) string {
	for _, id := range s.data["sys_user"].order {
		if s.data["sys_user"].rows[id]["user_name"] == name {
			return id
		}
	}
	return ""
}

// ---------- helpers ----------

const timeLayout = "2006-01-02 15:04:05"

func fmtTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func parseTime(v string) (time.Time, bool) {
	v = strings.TrimSpace(v)
	for _, l := range []string{timeLayout, "2006-01-02T15:04:05Z07:00", "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.Parse(l, v); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

func newSysID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// seedID derives a stable sys_id so that seeded records keep their ids.
func seedID(key string) string {
	h := sha256.Sum256([]byte("sandbox:" + key))
	return hex.EncodeToString(h[:16])
}

func randToken() string {
	var b [64]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:]) // 86 characters
}

func isSysID(v string) bool {
	if len(v) != 32 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // ServiceNow sends & < > as they are
	b := []byte(`{"error":{"message":"encoding failed","detail":null},"status":"failure"}`)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
	} else {
		b = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	}
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeErr writes ServiceNow's error envelope; detail may be nil (JSON null).
func writeErr(w http.ResponseWriter, status int, msg string, detail any) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"message": msg, "detail": detail}, "status": "failure"})
}

func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func isLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// ---------- Start ----------

// Running is a sandbox listening on a TCP address.
type Running struct {
	URL    string
	Server *Server
	srv    *http.Server
	ln     net.Listener
	once   sync.Once
	exited chan struct{}
}

// Close stops the listener, releases hanging requests and saves state.
func (r *Running) Close() {
	r.once.Do(func() {
		_ = r.Server.Close() // releases hangs first
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := r.srv.Shutdown(ctx); err != nil {
			_ = r.srv.Close()
		}
		<-r.exited
		_ = r.Server.saveNow()
	})
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves until ctx is done
// or Close is called.
func Start(ctx context.Context, addr string, opts Options) (*Running, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := New(opts)
	run := &Running{Server: s, ln: ln, exited: make(chan struct{}),
		URL: "http://" + ln.Addr().String(),
		srv: &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		defer close(run.exited)
		if err := run.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err
		}
	}()
	go func() {
		select {
		case <-ctx.Done():
			run.Close()
		case <-run.exited:
		}
	}()
	return run, nil
}
