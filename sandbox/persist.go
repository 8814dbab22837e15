package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"time"
)

// StateID is a short, non-secret identity of a state file: a hash of its
// absolute path. GET /sandbox/instance answers it, so that a process can
// tell whether a sandbox already listening somewhere keeps the state file
// it would use itself. An empty path (no state file) has the empty id.
func StateID(stateFile string) string {
	if stateFile == "" {
		return ""
	}
	abs, err := filepath.Abs(stateFile)
	if err != nil {
		abs = stateFile
	}
	sum := sha256.Sum256([]byte("servicenow-mcp sandbox state\x00" + abs))
	return hex.EncodeToString(sum[:8])
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// snapshot is the JSON state file: records (in insertion order), number
// counters, attachment bytes, tokens and unexpired authorization codes.
// Pending sign-ins are not kept: nothing has been granted yet.
type snapshot struct {
	Version  int                  `json:"version"`
	Tables   map[string][]record  `json:"tables"`
	Counters map[string]int       `json:"counters"`
	Files    map[string][]byte    `json:"files"`
	Tokens   []*token             `json:"tokens"`
	Codes    map[string]*authCode `json:"codes,omitempty"`
	Users    map[string]string    `json:"passwords"`
}

// saveDelay batches record writes. Grants (codes, tokens, revocations)
// do not wait for it: they are saved before their answer is sent (see
// persistGrant), as a real instance commits them before answering.
const saveDelay = 200 * time.Millisecond

// persistGrant writes the state file now, before the caller answers a
// request that issued, used, refreshed or revoked a code or a token: a
// sandbox killed right after the answer must still know the grant. It
// must be called without s.mu held. A failed write is kept in saveErr
// (see SaveError) and does not change the answer.
func (s *Server) persistGrant() { _ = s.saveNow() }

// SaveError is the last error writing the state file, or nil.
func (s *Server) SaveError() error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	return s.saveErr
}

// markDirty schedules a debounced save of the state file.
func (s *Server) markDirty() {
	if s.opts.StateFile == "" {
		return
	}
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	if s.saveTimer == nil {
		s.saveTimer = time.AfterFunc(saveDelay, func() {
			s.saveMu.Lock()
			s.saveTimer = nil
			s.saveMu.Unlock()
			_ = s.saveNow()
		})
	}
}

// saveNow writes the state file at once (tmp file + fsync + rename, then
// fsync of the directory). Saves are serialised from snapshot to rename,
// so an older snapshot never replaces a newer one.
func (s *Server) saveNow() error {
	if s.opts.StateFile == "" {
		return nil
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.saveMu.Lock()
	if s.saveTimer != nil {
		s.saveTimer.Stop()
		s.saveTimer = nil
	}
	s.saveMu.Unlock()
	s.mu.RLock()
	snap := snapshot{Version: 1, Tables: map[string][]record{}, Counters: s.counters, Files: s.files, Users: s.pwd}
	for name, d := range s.data {
		rows := make([]record, 0, len(d.order))
		for _, id := range d.order {
			rows = append(rows, d.rows[id])
		}
		snap.Tables[name] = rows
	}
	now := s.now()
	for _, t := range s.tokens {
		if t.Expires.After(now) && !t.Revoked {
			snap.Tokens = append(snap.Tokens, t)
		}
	}
	for v, c := range s.codes {
		// A used code is kept until it expires: its reuse must still be
		// recognised (and revoke what it produced).
		if c.Expires.After(now) {
			if snap.Codes == nil {
				snap.Codes = map[string]*authCode{}
			}
			snap.Codes[v] = c
		}
	}
	b, err := json.Marshal(&snap)
	s.mu.RUnlock()
	if err != nil {
		return err
	}
	err = writeFileSync(s.opts.StateFile, b)
	s.saveMu.Lock()
	s.saveErr = err
	s.saveMu.Unlock()
	return err
}

// writeFileSync replaces path with b atomically and durably.
func writeFileSync(path string, b []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".sandbox-state-*")
	if err != nil {
		return err
	}
	if err = tmp.Chmod(0o600); err == nil {
		_, err = tmp.Write(b)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	// The rename is durable once the directory is.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// load replaces the seeded data with the state file's, when it exists.
func (s *Server) load(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var snap snapshot
	if err := json.Unmarshal(b, &snap); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, rows := range snap.Tables {
		if s.schema[name] == nil {
			continue
		}
		d := &tableData{rows: make(map[string]record, len(rows))}
		for _, r := range rows {
			if r == nil || r["sys_id"] == "" {
				continue
			}
			d.rows[r["sys_id"]] = r
			d.order = append(d.order, r["sys_id"])
		}
		s.data[name] = d
	}
	if snap.Counters != nil {
		s.counters = snap.Counters
	}
	if snap.Files != nil {
		s.files = snap.Files
	}
	for k, v := range snap.Users {
		s.pwd[k] = v
	}
	for _, t := range snap.Tokens {
		if t != nil && t.Value != "" {
			s.tokens[t.Value] = t
		}
	}
	for v, c := range snap.Codes {
		if c != nil && v != "" {
			s.codes[v] = c
		}
	}
	return nil
}
