package storage

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Database keys. Connection and user names are not secret and appear in
// the clear so that listing needs no key; a state never does, only its hash.
//
//	a/<connection>\x00<user>                  sealed account
//	p/<sha256(state) hex>                     sealed pending authorization
//	i/<connection>\x00<user>\x00<state hash>  empty: pending index by account
const (
	accountPrefix = "a/"
	pendingPrefix = "p/"
	indexPrefix   = "i/"
)

func accountDBKey(k AccountKey) []byte {
	return []byte(accountPrefix + k.Connection + "\x00" + k.User)
}

func accountKeyFromDB(dbKey []byte) (AccountKey, bool) {
	conn, user, ok := strings.Cut(strings.TrimPrefix(string(dbKey), accountPrefix), "\x00")
	return AccountKey{Connection: conn, User: user}, ok
}

func stateHash(state string) string {
	sum := sha256.Sum256([]byte(state))
	return hex.EncodeToString(sum[:])
}

func pendingDBKey(hash string) []byte { return []byte(pendingPrefix + hash) }

func indexAccountPrefix(k AccountKey) []byte {
	return []byte(indexPrefix + k.Connection + "\x00" + k.User + "\x00")
}

func checkAccountKey(k AccountKey) error {
	switch {
	case k.Connection == "" || k.User == "":
		return fmt.Errorf("account key needs a connection and a user (got %q, %q)",
			k.Connection, k.User)
	case strings.ContainsRune(k.Connection, 0) || strings.ContainsRune(k.User, 0):
		return errors.New("account key contains a NUL byte")
	}
	return nil
}

// accountRecord is the sealed form of an Account. Its field names are the
// on-disk format: renaming a field of Account must not change them.
type accountRecord struct {
	Connection    string    `json:"connection"`
	User          string    `json:"user"`
	Status        Status    `json:"status"`
	AccessToken   string    `json:"access_token,omitempty"`
	RefreshToken  string    `json:"refresh_token,omitempty"`
	TokenType     string    `json:"token_type,omitempty"`
	Scope         string    `json:"scope,omitempty"`
	Expiry        time.Time `json:"expiry"`
	InstanceURL   string    `json:"instance_url,omitempty"`
	SNUserSysID   string    `json:"sn_user_sys_id,omitempty"`
	SNUserName    string    `json:"sn_user_name,omitempty"`
	SNDisplayName string    `json:"sn_display_name,omitempty"`
	LinkedAt      time.Time `json:"linked_at"`
	RefreshedAt   time.Time `json:"refreshed_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	LastError     string    `json:"last_error,omitempty"`
}

func encodeAccount(a *Account) []byte {
	data, _ := json.Marshal(accountRecord(*a)) // plain strings and times: cannot fail
	return data
}

func decodeAccount(key AccountKey, data []byte) (*Account, error) {
	var r accountRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%w: decode account: %v", ErrCorrupt, err)
	}
	a := Account(r)
	if a.Key() != key {
		return nil, fmt.Errorf("%w: record names account %s/%s", ErrCorrupt, a.Connection, a.User)
	}
	return &a, nil
}

// pendingRecord is the sealed form of a PendingAuthorization.
type pendingRecord struct {
	State       string    `json:"state"`
	Connection  string    `json:"connection"`
	User        string    `json:"user"`
	Verifier    string    `json:"verifier"`
	RedirectURI string    `json:"redirect_uri,omitempty"`
	AuthURL     string    `json:"auth_url,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	ExpiresAt   time.Time `json:"expires_at"`
}

func encodePending(p *PendingAuthorization) []byte {
	data, _ := json.Marshal(pendingRecord(*p))
	return data
}

func decodePending(hash string, data []byte) (*PendingAuthorization, error) {
	var r pendingRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%w: decode pending authorization: %v", ErrCorrupt, err)
	}
	if stateHash(r.State) != hash {
		return nil, fmt.Errorf("%w: pending authorization stored under another state", ErrCorrupt)
	}
	p := PendingAuthorization(r)
	return &p, nil
}

// Key returns the account the pending authorization belongs to.
func (p *PendingAuthorization) Key() AccountKey { return AccountKey{p.Connection, p.User} }
