package sandbox

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
)

// savedState reads the state file as it is on disk right now.
func savedState(t *testing.T, path string) snapshot {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("state file not written: %v", err)
	}
	var snap snapshot
	if err := json.Unmarshal(b, &snap); err != nil {
		t.Fatalf("state file: %v", err)
	}
	return snap
}

func savedTokens(snap snapshot) map[string]bool {
	out := map[string]bool{}
	for _, tok := range snap.Tokens {
		out[tok.Value] = true
	}
	return out
}

// TestGrantsSavedBeforeAnswer: every grant is in the state file by the
// time its answer arrives, so a sandbox killed right after (no Close,
// no debounce timer) still honours it when started again.
func TestGrantsSavedBeforeAnswer(t *testing.T) {
	tests := []struct {
		name string
		// act performs the grant and returns what the file must (and must
		// not) hold once the answer is in.
		act func(t *testing.T, e *env) (want, gone []string)
		// after, when set, checks that a sandbox restarted from the file
		// honours the grant.
		after func(t *testing.T, e2 *env, want []string)
	}{
		{"code issued", func(t *testing.T, e *env) ([]string, []string) {
			q := e.signIn("alice", "", "allow")
			return []string{"code:" + q.Get("code")}, nil
		}, func(t *testing.T, e2 *env, want []string) {
			if r := e2.exchange(want[0][len("code:"):], ""); r.status != 200 {
				t.Fatalf("restarted sandbox refused the code: %d %s", r.status, r.body)
			}
		}},
		{"code exchanged", func(t *testing.T, e *env) ([]string, []string) {
			at, rt := e.tokens("alice")
			return []string{at, rt}, nil
		}, refreshes},
		{"refresh", func(t *testing.T, e *env) ([]string, []string) {
			_, rt := e.tokens("alice")
			r := e.refresh(rt)
			if r.status != 200 {
				t.Fatalf("refresh: %d", r.status)
			}
			return []string{r.json(t)["access_token"].(string), rt}, nil
		}, refreshes},
		{"rotating refresh", func(t *testing.T, e *env) ([]string, []string) {
			e.sb.opts.RotateRefresh = true
			_, rt := e.tokens("alice")
			r := e.refresh(rt)
			if r.status != 200 {
				t.Fatalf("refresh: %d", r.status)
			}
			m := r.json(t)
			return []string{m["access_token"].(string), m["refresh_token"].(string)}, nil
		}, refreshes},
		{"password grant", func(t *testing.T, e *env) ([]string, []string) {
			r := e.postForm("/oauth_token.do", url.Values{"grant_type": {"password"}, "username": {"bob"}, "password": {SeedPassword},
				"client_id": {"sandbox-client"}, "client_secret": {"sandbox-secret"}})
			if r.status != 200 {
				t.Fatalf("password grant: %d", r.status)
			}
			m := r.json(t)
			return []string{m["access_token"].(string), m["refresh_token"].(string)}, nil
		}, refreshes},
		{"revoke", func(t *testing.T, e *env) ([]string, []string) {
			at, rt := e.tokens("alice")
			_ = e.sb.saveNow() // both on disk; the revocation must take them off
			if r := e.postForm("/oauth_revoke_token.do", url.Values{"token": {rt}}); r.status != 200 {
				t.Fatalf("revoke: %d", r.status)
			}
			return nil, []string{at, rt}
		}, nil},
		{"admin revoke", func(t *testing.T, e *env) ([]string, []string) {
			at, rt := e.tokens("carol")
			_ = e.sb.saveNow()
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/sandbox/revoke?user=carol", nil)
			if r := e.do(req); r.status != 200 {
				t.Fatalf("admin revoke: %d", r.status)
			}
			return nil, []string{at, rt}
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			e := newEnv(t, Options{StateFile: path})
			want, gone := tt.act(t, e)
			snap := savedState(t, path)
			toks := savedTokens(snap)
			for _, w := range want {
				if c, ok := cutPrefix(w, "code:"); ok {
					if snap.Codes[c] == nil {
						t.Errorf("the issued code is not in the state file")
					}
				} else if !toks[w] {
					t.Errorf("a token the answer carried is not in the state file")
				}
			}
			for _, g := range gone {
				if toks[g] {
					t.Errorf("a revoked token is still in the state file")
				}
			}
			if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("state file mode: %v %v", fi.Mode(), err)
			}
			if tt.after != nil {
				// As after kill -9: the first sandbox is neither closed nor
				// given time to save.
				tt.after(t, newEnv(t, Options{StateFile: path, Now: e.clk.Now}), want)
			}
		})
	}
}

func refreshes(t *testing.T, e2 *env, want []string) {
	t.Helper()
	if r := e2.refresh(want[len(want)-1]); r.status != 200 {
		t.Fatalf("restarted sandbox refused the refresh token: %d %s", r.status, r.body)
	}
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return s, false
}

func TestInstanceIdentity(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name      string
		stateFile string
		want      string
	}{
		{"state file", filepath.Join(dir, "a.json"), StateID(filepath.Join(dir, "a.json"))},
		{"another state file", filepath.Join(dir, "b.json"), StateID(filepath.Join(dir, "b.json"))},
		{"no state file", "", ""},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Options{StateFile: tt.stateFile})
			r := e.get("/sandbox/instance")
			if r.status != 200 {
				t.Fatalf("status %d", r.status)
			}
			got := r.json(t)["state_id"]
			if got != tt.want {
				t.Fatalf("state_id %v, want %q", got, tt.want)
			}
			if tt.want != "" && (seen[tt.want] || len(tt.want) != 16) {
				t.Fatalf("state_id %q is not a distinct 16-digit id", tt.want)
			}
			seen[tt.want] = true
		})
	}
}
