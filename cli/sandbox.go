package cli

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"servicenow-mcp/config"
	"servicenow-mcp/sandbox"
)

// sandboxConnection is the name of the connection --sandbox adds.
const sandboxConnection = "sandbox"

// sandboxAddr is where serve --sandbox tries to run its instance.
const sandboxAddr = "127.0.0.1:8766"

// sandboxRetry is how long a process that shares a sandbox waits before
// trying again when the instance is gone and its address is held by a
// program that is not this data directory's sandbox.
const sandboxRetry = 2 * time.Second

// localSandbox is this process's simulated instance for its data
// directory: one it runs, or one another process runs and it shares.
// A sharer follows the instance and, when the process running it stops,
// runs it in its place at the same address with the same state file, so
// that the connection's URL and the tokens linked on it keep working.
type localSandbox struct {
	url     string // http://host:port, the connection's instance_url
	opts    sandbox.Options
	stateID string // the state file's id, as /sandbox/instance reports it
	urlFile string // records url for other processes on this data directory
	log     zerolog.Logger

	stop    context.CancelFunc
	watched chan struct{} // closed when the watch has ended (at once for a runner)
	// running is closed once this process runs the instance, from the
	// start or after taking it over.
	running chan struct{}

	mu  sync.Mutex
	run *sandbox.Running // set once this process runs the instance
}

// startSandbox runs the simulated instance in this process, or shares the
// one another servicenow-mcp runs for the same data directory, and adds
// the connection "sandbox" that points at it.
func startSandbox(ctx context.Context, cfg *config.Config, log zerolog.Logger) (*localSandbox, error) {
	return startSandboxAt(ctx, cfg, log, sandboxAddr)
}

func startSandboxAt(ctx context.Context, cfg *config.Config, log zerolog.Logger, addr string) (*localSandbox, error) {
	// Tokens are stored per connection name: a configured connection of
	// the same name would share them with the simulated instance.
	for _, c := range cfg.Connections {
		if c.Name == sandboxConnection {
			return nil, fmt.Errorf("--sandbox adds a connection named %q, but the configuration already has one (instance_url %s): "+
				"rename the configured connection, or drop --sandbox", sandboxConnection, c.InstanceURL)
		}
	}
	stateFile, err := sandboxStateFile(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	watchCtx, stop := context.WithCancel(ctx)
	s := &localSandbox{
		opts:    sandbox.Options{RedirectURIs: []string{cfg.RedirectURI()}, StateFile: stateFile},
		stateID: sandbox.StateID(stateFile),
		urlFile: strings.TrimSuffix(stateFile, ".json") + ".url",
		log:     log,
		stop:    stop,
		watched: make(chan struct{}),
		running: make(chan struct{}),
	}

	users, err := s.find(ctx, addr)
	if err != nil {
		stop()
		return nil, err
	}
	if s.run == nil {
		go s.watch(watchCtx)
	} else {
		close(s.watched)
	}

	hasDefault := false
	for _, c := range cfg.Connections {
		hasDefault = hasDefault || c.Default
	}
	cfg.AddConnection(config.Connection{
		Name:         sandboxConnection,
		InstanceURL:  s.url,
		ClientID:     "sandbox-client",
		ClientSecret: sandboxSecret(),
		Scopes:       []string{"useraccount"},
		Default:      !hasDefault,
	})
	var signIn []string
	for _, u := range users {
		signIn = append(signIn, fmt.Sprintf("%s/%s (%s)", u.UserName, u.Password, strings.Join(u.Roles, ",")))
	}
	log.Info().Str("url", s.url).Str("connection", sandboxConnection).
		Str("sign_in_users", strings.Join(signIn, "; ")).
		Msg("sandbox ServiceNow instance for the connection \"sandbox\"; sign in on its consent page with one of these users (user/password)")
	return s, nil
}

// find sets s.url to this data directory's instance: in order, the one
// its sandbox last recorded (it may run on another port), our own on the
// stable address, the one already on the stable address when it keeps
// this data directory's state, else our own on a free port. A stable
// port keeps links valid across restarts.
func (s *localSandbox) find(ctx context.Context, addr string) ([]sandbox.SeedUser, error) {
	const sharing = "using the sandbox instance another servicenow-mcp process runs for this data directory; " +
		"this process runs it in its place if that process stops"
	stable := "http://" + addr
	if b, err := os.ReadFile(s.urlFile); err == nil {
		if recorded := strings.TrimSpace(string(b)); recorded != "" && recorded != stable {
			if users, ok := s.answers(ctx, recorded); ok {
				s.url = recorded
				s.log.Info().Str("url", s.url).Msg(sharing)
				return users, nil
			}
		}
	}
	var err error
	if s.url, err = s.own(addr); err == nil {
		return s.run.Server.Users(), nil
	}
	if users, ok := s.answers(ctx, stable); ok {
		s.url = stable
		s.log.Info().Str("url", s.url).Msg(sharing)
		return users, nil
	}
	if s.url, err = s.own("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("start sandbox: %w", err)
	}
	s.log.Warn().Str("busy", addr).Str("url", s.url).
		Msg("the sandbox address is held by another data directory's sandbox or by another program; this process runs its own sandbox for its data directory on another port")
	return s.run.Server.Users(), nil
}

// own runs the instance in this process at addr and records its URL, so
// that other processes on this data directory find and share it. It does
// not end with the caller's context: Close stops it, after taking the
// record away, so that a process taking over can rewrite it.
func (s *localSandbox) own(addr string) (url string, err error) {
	run, err := sandbox.Start(context.Background(), addr, s.opts)
	if err != nil {
		return "", err
	}
	_ = os.WriteFile(s.urlFile, []byte(run.URL+"\n"), 0o600)
	s.mu.Lock()
	s.run = run
	s.mu.Unlock()
	close(s.running)
	return run.URL, nil
}

// answers reports whether the instance at base keeps this data
// directory's state, and who can sign in there. Only such an instance is
// shared: the tokens stored here were issued by it, and another one would
// refuse them.
func (s *localSandbox) answers(ctx context.Context, base string) ([]sandbox.SeedUser, bool) {
	id, users, ok := probeSandbox(ctx, base)
	return users, ok && id == s.stateID
}

// watch follows the shared instance until ctx ends or this process runs
// the instance itself. It holds an idle connection to the instance, which
// ends when the process running it stops (or dies); then the first
// sharer to bind the address runs the instance there, and the others go
// on sharing it.
func (s *localSandbox) watch(ctx context.Context) {
	defer close(s.watched)
	addr := strings.TrimPrefix(s.url, "http://")
	warned := false
	for {
		held := time.Now()
		holdConnection(ctx, addr)
		if ctx.Err() != nil {
			return
		}
		_, there := s.answers(ctx, s.url)
		if !there {
			_, err := s.own(addr)
			if err == nil {
				s.log.Info().Str("url", s.url).
					Msg("the process that ran this data directory's sandbox instance stopped; this process runs it now, at the same address and with the same state")
				return
			}
			if _, there = s.answers(ctx, s.url); !there && !warned {
				warned = true
				s.log.Error().Str("url", s.url).Str("error", err.Error()).
					Msg("this data directory's sandbox instance stopped and its address is held by another program; " +
						"the connection \"sandbox\" fails until the address is free (this process then runs the instance there) " +
						"or until this process restarts")
			}
		}
		if there {
			warned = false
		}
		// An instance that answers but drops the idle connection at once,
		// or an address held by another program, is asked again later.
		if !there || time.Since(held) < time.Second {
			select {
			case <-ctx.Done():
				return
			case <-time.After(sandboxRetry):
			}
		}
	}
}

// holdConnection opens a keep-alive connection to the instance at addr,
// makes one request on it, and returns when the connection ends or ctx
// does. The instance's server keeps an idle connection open until it
// shuts down, and the system closes it when the process dies.
func holdConnection(ctx context.Context, addr string) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/sandbox/instance", nil)
	if err != nil || req.Write(conn) != nil {
		return
	}
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, req)
	if err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.Close {
		return
	}
	_, _ = r.ReadByte() // blocks while the connection is idle
}

// Close stops the watch, and the instance when this process runs it.
func (s *localSandbox) Close() {
	s.stop()
	<-s.watched
	s.mu.Lock()
	run := s.run
	s.mu.Unlock()
	if run == nil {
		return
	}
	if b, err := os.ReadFile(s.urlFile); err == nil && strings.TrimSpace(string(b)) == run.URL {
		_ = os.Remove(s.urlFile)
	}
	run.Close()
}

// probeSandbox asks base which state file the sandbox there keeps and
// who can sign in; ok is false when no sandbox answers there.
func probeSandbox(ctx context.Context, base string) (stateID string, users []sandbox.SeedUser, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	get := func(path string, v any) bool {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return false
		}
		resp, err := c.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK && json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v) == nil
	}
	var id struct {
		StateID *string `json:"state_id"`
	}
	if !get("/sandbox/instance", &id) || id.StateID == nil || !get("/sandbox/users", &users) {
		return "", nil, false
	}
	return *id.StateID, users, true
}

// sandboxStateFile keeps the simulated instance's records and tokens
// between runs. It lives outside the data directory: the sandbox stores
// its tokens in plain form, and nothing plain belongs beside our sealed
// store.
func sandboxStateFile(dataDir string) (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "servicenow-mcp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("sandbox state directory: %w", err)
	}
	abs, _ := filepath.Abs(dataDir)
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join(dir, "sandbox-"+hex.EncodeToString(sum[:6])+".json"), nil
}

func sandboxSecret() string {
	if s := os.Getenv("SANDBOX_CLIENT_SECRET"); s != "" {
		return s
	}
	return "sandbox-secret"
}
