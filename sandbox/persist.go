package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"time"
)

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// snapshot is the JSON state file: records (in insertion order), number
// counters, attachment bytes and tokens. Pending sign-ins and codes are not
// kept: they live for seconds.
type snapshot struct {
	Version  int                 `json:"version"`
	Tables   map[string][]record `json:"tables"`
	Counters map[string]int      `json:"counters"`
	Files    map[string][]byte   `json:"files"`
	Tokens   []*token            `json:"tokens"`
	Users    map[string]string   `json:"passwords"`
}

const saveDelay = 200 * time.Millisecond

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

// saveNow writes the state file at once (tmp file + rename).
func (s *Server) saveNow() error {
	if s.opts.StateFile == "" {
		return nil
	}
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
	b, err := json.Marshal(&snap)
	s.mu.RUnlock()
	if err != nil {
		return err
	}
	// one writer at a time
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	dir := filepath.Dir(s.opts.StateFile)
	tmp, err := os.CreateTemp(dir, ".sandbox-state-*")
	if err != nil {
		return err
	}
	if _, err = tmp.Write(b); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o600)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.opts.StateFile)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
	s.saveErr = err
	return err
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
	return nil
}
