package faulttest

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"servicenow-mcp/config"
	"servicenow-mcp/internal/testenv"
	"servicenow-mcp/storage"
)

// instanceProxy sits between the product and the sandbox instance. It
// records every secret that crosses the wire (so that a test can look for
// them where they must not be) and signals when API requests arrive and
// when they end, so that tests wait on events instead of sleeping.
type instanceProxy struct {
	srv *httptest.Server
	rp  *httputil.ReverseProxy

	mu      sync.Mutex
	secrets map[string]string // value → what it is

	arrived chan struct{} // one per /api/ request
	ended   chan error    // the request context's error when one ends
}

func newInstanceProxy(t testing.TB, target string) *instanceProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &instanceProxy{
		secrets: map[string]string{},
		arrived: make(chan struct{}, 256),
		ended:   make(chan error, 256),
	}
	p.rp = httputil.NewSingleHostReverseProxy(u)
	p.rp.ModifyResponse = p.record
	p.rp.FlushInterval = -1 // pass a cut-short body on as it is, headers first
	p.rp.ErrorLog = log.New(io.Discard, "", 0)
	p.srv = httptest.NewServer(p)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *instanceProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/api/") {
		p.arrived <- struct{}{}
		defer func() { p.ended <- r.Context().Err() }()
	}
	if r.URL.Path == "/oauth_token.do" && r.Method == http.MethodPost {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := url.ParseQuery(string(body))
		for name, what := range map[string]string{
			"code": "authorization code", "code_verifier": "code_verifier",
			"refresh_token": "refresh token", "client_secret": "client_secret",
		} {
			p.add(form.Get(name), what)
		}
	}
	p.rp.ServeHTTP(w, r)
}

// record collects the tokens of token answers and the code of consent
// redirects.
func (p *instanceProxy) record(resp *http.Response) error {
	switch resp.Request.URL.Path {
	case "/oauth_auth.do":
		if loc, err := url.Parse(resp.Header.Get("Location")); err == nil {
			p.add(loc.Query().Get("code"), "authorization code")
		}
	case "/oauth_token.do":
		body, err := io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if err != nil {
			return err
		}
		var tok struct {
			Access  string `json:"access_token"`
			Refresh string `json:"refresh_token"`
		}
		if json.Unmarshal(body, &tok) == nil {
			p.add(tok.Access, "access token")
			p.add(tok.Refresh, "refresh token")
		}
	}
	return nil
}

func (p *instanceProxy) add(value, what string) {
	if len(value) < 8 {
		return
	}
	p.mu.Lock()
	p.secrets[value] = what
	p.mu.Unlock()
}

// Secrets returns what the proxy has seen, value → kind.
func (p *instanceProxy) Secrets() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]string, len(p.secrets))
	for k, v := range p.secrets {
		out[k] = v
	}
	return out
}

// drain forgets the arrival and end signals seen so far.
func (p *instanceProxy) drain() {
	for {
		select {
		case <-p.arrived:
		case <-p.ended:
		default:
			return
		}
	}
}

// newEnv runs the product against a sandbox behind an instanceProxy.
func newEnv(t testing.TB, opts testenv.Options) (*testenv.Env, *instanceProxy) {
	t.Helper()
	var proxy *instanceProxy
	configure := opts.Configure
	opts.Configure = func(c *config.Config) {
		proxy = newInstanceProxy(t, c.Connections[0].InstanceURL)
		c.Connections[0].InstanceURL = proxy.srv.URL
		if configure != nil {
			configure(c)
		}
	}
	if opts.Link == nil {
		opts.Link = []string{"alice"}
	}
	return testenv.New(t, opts), proxy
}

func accountKey(user string) storage.AccountKey {
	return storage.AccountKey{Connection: testenv.Connection, User: user}
}
