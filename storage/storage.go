// Package storage keeps connected accounts and pending authorizations.
// Secrets are sealed with AES-256-GCM before they reach disk; the default
// backend is an embedded Badger database that several local processes can
// share.
package storage

import (
	"context"
	"errors"
	"time"
)

// Status is the state of a connected account.
type Status string

// Account statuses, after Scalekit's connected-account model.
const (
	StatusActive       Status = "ACTIVE"
	StatusPendingAuth  Status = "PENDING_AUTH"
	StatusExpired      Status = "EXPIRED"
	StatusDisconnected Status = "DISCONNECTED"
)

// Errors callers branch on.
var (
	ErrNotFound = errors.New("not found")
	// ErrWrongKey: the encryption key does not open what is stored.
	ErrWrongKey = errors.New("encryption key does not match the stored data")
	// ErrCorrupt: one record could not be decoded; other records are fine.
	ErrCorrupt = errors.New("stored record is corrupted")
)

// AccountKey names a connected account: one user on one connection.
type AccountKey struct {
	Connection string
	User       string
}

// Account is a connected account with its tokens (plain in memory, sealed at rest).
type Account struct {
	Connection string
	User       string
	Status     Status

	AccessToken  string
	RefreshToken string
	TokenType    string
	Scope        string
	Expiry       time.Time // access token expiry (absolute)

	InstanceURL string
	// ServiceNow identity of the linked user.
	SNUserSysID   string
	SNUserName    string
	SNDisplayName string

	LinkedAt    time.Time
	RefreshedAt time.Time
	UpdatedAt   time.Time
	LastError   string // last refresh failure, human readable, no secrets
}

// Key returns the account's key.
func (a *Account) Key() AccountKey { return AccountKey{a.Connection, a.User} }

// PendingAuthorization is a started link, consumed once by the callback.
type PendingAuthorization struct {
	State       string
	Connection  string
	User        string
	Verifier    string // PKCE verifier: a secret, sealed at rest
	RedirectURI string
	AuthURL     string
	CreatedAt   time.Time
	ExpiresAt   time.Time
}

// Store is what the rest of the product needs from storage.
type Store interface {
	// GetAccount returns ErrNotFound, ErrWrongKey or ErrCorrupt (wrapped) on failure.
	GetAccount(ctx context.Context, key AccountKey) (*Account, error)
	// PutAccount writes durably (fsync) before returning.
	PutAccount(ctx context.Context, a *Account) error
	DeleteAccount(ctx context.Context, key AccountKey) error
	// ListAccounts returns every account; a record that cannot be opened
	// is reported in errs by key and never stops the listing.
	ListAccounts(ctx context.Context) (accounts []*Account, errs map[AccountKey]error, err error)

	// PutPending stores p under its state and indexes it by account.
	PutPending(ctx context.Context, p *PendingAuthorization) error
	// PendingFor returns the newest unexpired pending authorization of an account.
	PendingFor(ctx context.Context, key AccountKey) (*PendingAuthorization, error)
	// TakePending atomically reads and deletes the pending authorization
	// for state (single use). ErrNotFound when unknown or already taken.
	TakePending(ctx context.Context, state string) (*PendingAuthorization, error)

	// LockAccount takes an exclusive lock on the account shared by every
	// process using the same data directory (and by goroutines within one).
	// It blocks until acquired or ctx ends.
	LockAccount(ctx context.Context, key AccountKey) (unlock func(), err error)

	Close() error
}
