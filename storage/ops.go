package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// GetAccount reads and opens one account.
func (s *DiskStore) GetAccount(ctx context.Context, key AccountKey) (*Account, error) {
	if err := checkAccountKey(key); err != nil {
		return nil, err
	}

	dbKey := accountDBKey(key)
	var sealed []byte
	err := s.do(ctx, func(b backend) (err error) {
		sealed, err = b.get(ctx, dbKey)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("account %s/%s: %w", key.Connection, key.User, err)
	}
	a, err := s.openAccount(key, dbKey, sealed)
	if err != nil {
		return nil, fmt.Errorf("account %s/%s: %w", key.Connection, key.User, err)
	}
	return a, nil
}

func (s *DiskStore) openAccount(key AccountKey, dbKey, sealed []byte) (*Account, error) {
	plain, _, err := s.seal.open(dbKey, sealed)
	if err != nil {
		return nil, err
	}
	return decodeAccount(key, plain)
}

// PutAccount seals a with the current key and writes it durably. It
// refuses to replace a record sealed with a key it does not have.
func (s *DiskStore) PutAccount(ctx context.Context, a *Account) error {
	key := a.Key()
	if err := checkAccountKey(key); err != nil {
		return err
	}

	dbKey := accountDBKey(key)
	op := writeOp{
		Key:         dbKey,
		Value:       s.seal.seal(dbKey, encodeAccount(a)),
		KnownKeyIDs: s.seal.knownIDs(),
	}
	err := s.do(ctx, func(b backend) error { return b.write(ctx, []writeOp{op}) })

	var foreign *foreignKeyError
	if errors.As(err, &foreign) {
		err = wrongKeyError(foreign.id, s.seal.currentID)
	}
	if err != nil {
		return fmt.Errorf("write account %s/%s: %w", key.Connection, key.User, err)
	}
	return nil
}

// DeleteAccount removes an account; removing an absent one is no error.
func (s *DiskStore) DeleteAccount(ctx context.Context, key AccountKey) error {
	if err := checkAccountKey(key); err != nil {
		return err
	}

	op := writeOp{Key: accountDBKey(key), Delete: true}
	if err := s.do(ctx, func(b backend) error { return b.write(ctx, []writeOp{op}) }); err != nil {
		return fmt.Errorf("delete account %s/%s: %w", key.Connection, key.User, err)
	}
	return nil
}

// ListAccounts opens every account; one that cannot be opened is
// reported in errs and the listing goes on.
func (s *DiskStore) ListAccounts(ctx context.Context) ([]*Account, map[AccountKey]error, error) {
	var pairs []pair
	err := s.do(ctx, func(b backend) (err error) {
		pairs, err = b.scan(ctx, []byte(accountPrefix), true)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list accounts: %w", err)
	}

	accounts := make([]*Account, 0, len(pairs))
	errs := map[AccountKey]error{}
	for _, p := range pairs {
		key, ok := accountKeyFromDB(p.Key)
		if !ok {
			s.log.Warn().Msg("storage: skipping an account record with a malformed key")
			continue
		}
		a, err := s.openAccount(key, p.Key, p.Value)
		if err != nil {
			errs[key] = fmt.Errorf("account %s/%s: %w", key.Connection, key.User, err)
			continue
		}
		accounts = append(accounts, a)
	}
	return accounts, errs, nil
}

// PutPending seals p under the hash of its state and indexes it by account.
func (s *DiskStore) PutPending(ctx context.Context, p *PendingAuthorization) error {
	key := AccountKey{Connection: p.Connection, User: p.User}
	if err := checkAccountKey(key); err != nil {
		return err
	}
	if p.State == "" {
		return errors.New("pending authorization has no state")
	}

	hash := stateHash(p.State)
	dbKey := pendingDBKey(hash)
	ttl := s.ttlUntil(p.ExpiresAt)
	ops := []writeOp{
		{Key: dbKey, Value: s.seal.seal(dbKey, encodePending(p)), TTL: ttl},
		{Key: append(indexAccountPrefix(key), hash...), TTL: ttl},
	}
	if err := s.do(ctx, func(b backend) error { return b.write(ctx, ops) }); err != nil {
		return fmt.Errorf("write pending authorization: %w", err)
	}
	return nil
}

// PendingFor returns the newest unexpired pending authorization of key.
func (s *DiskStore) PendingFor(ctx context.Context, key AccountKey) (*PendingAuthorization, error) {
	if err := checkAccountKey(key); err != nil {
		return nil, err
	}

	prefix := indexAccountPrefix(key)
	var index []pair
	err := s.do(ctx, func(b backend) (err error) {
		index, err = b.scan(ctx, prefix, false)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pending authorization of %s/%s: %w", key.Connection, key.User, err)
	}

	var newest *PendingAuthorization
	var firstErr error
	for _, entry := range index {
		p, _, err := s.readPending(ctx, strings.TrimPrefix(string(entry.Key), string(prefix)))
		switch {
		case errors.Is(err, ErrNotFound):
			continue // taken or expired meanwhile
		case err != nil:
			firstErr = firstError(firstErr, err)
			continue
		}
		if p.Connection != key.Connection || p.User != key.User || !s.now().Before(p.ExpiresAt) {
			continue
		}
		if newest == nil || p.CreatedAt.After(newest.CreatedAt) {
			newest = p
		}
	}

	switch {
	case newest != nil:
		return newest, nil
	case firstErr != nil:
		return nil, fmt.Errorf("pending authorization of %s/%s: %w",
			key.Connection, key.User, firstErr)
	}
	return nil, fmt.Errorf("pending authorization of %s/%s: %w", key.Connection, key.User, ErrNotFound)
}

// readPending returns a pending authorization and its sealed bytes.
func (s *DiskStore) readPending(ctx context.Context, hash string) (*PendingAuthorization, []byte, error) {
	dbKey := pendingDBKey(hash)
	var sealed []byte
	err := s.do(ctx, func(b backend) (err error) {
		sealed, err = b.get(ctx, dbKey)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	plain, _, err := s.seal.open(dbKey, sealed)
	if err != nil {
		return nil, nil, err
	}
	p, err := decodePending(hash, plain)
	return p, sealed, err
}

// TakePending consumes the pending authorization of state. The record is
// deleted only if it is still the one read, in one transaction, so of two
// concurrent takes (from any processes) exactly one succeeds. A record
// that cannot be opened is left in place.
func (s *DiskStore) TakePending(ctx context.Context, state string) (*PendingAuthorization, error) {
	hash := stateHash(state)
	p, sealed, err := s.readPending(ctx, hash)
	if err != nil {
		return nil, fmt.Errorf("pending authorization: %w", err)
	}

	ops := []writeOp{
		{Key: pendingDBKey(hash), Delete: true, IfValue: sealed, IfSet: true},
		{Key: append(indexAccountPrefix(p.Key()), hash...), Delete: true},
	}
	err = s.do(ctx, func(b backend) error { return b.write(ctx, ops) })
	switch {
	case errors.Is(err, errConflict):
		return nil, fmt.Errorf("pending authorization: already used: %w", ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("pending authorization: %w", err)
	case !s.now().Before(p.ExpiresAt):
		return nil, fmt.Errorf("pending authorization: expired at %s: %w",
			p.ExpiresAt.Format("2006-01-02 15:04:05Z07:00"), ErrNotFound)
	}
	return p, nil
}

// LockAccount takes the account's lock shared by every process on the
// data directory; goroutines of this process queue before it.
func (s *DiskStore) LockAccount(ctx context.Context, key AccountKey) (func(), error) {
	if err := checkAccountKey(key); err != nil {
		return nil, err
	}
	return s.locks.lock(ctx, key)
}

// Rekey re-seals with the current key every record sealed with a previous
// one, and returns how many it rewrote. A record changed meanwhile is left
// to its writer; a record that cannot be opened is left as it is and
// reported.
func (s *DiskStore) Rekey(ctx context.Context) (int, error) {
	rewritten := 0
	var failed []string
	for _, prefix := range []string{accountPrefix, pendingPrefix} {
		var pairs []pair
		err := s.do(ctx, func(b backend) (err error) {
			pairs, err = b.scan(ctx, []byte(prefix), true)
			return err
		})
		if err != nil {
			return rewritten, fmt.Errorf("rekey: %w", err)
		}

		for _, p := range pairs {
			plain, current, err := s.seal.open(p.Key, p.Value)
			if err != nil {
				failed = append(failed, fmt.Sprintf("%q: %v", p.Key, err))
				continue
			}
			if current {
				continue
			}
			op := writeOp{Key: p.Key, Value: s.seal.seal(p.Key, plain), IfValue: p.Value, IfSet: true}
			if prefix == pendingPrefix {
				op.TTL = s.pendingTTL(plain)
			}
			err = s.do(ctx, func(b backend) error { return b.write(ctx, []writeOp{op}) })
			switch {
			case err == nil:
				rewritten++
			case !errors.Is(err, errConflict):
				return rewritten, fmt.Errorf("rekey: %w", err)
			}
		}
	}

	if len(failed) > 0 {
		return rewritten, fmt.Errorf("rekey: %d records left as they are: %s",
			len(failed), strings.Join(failed, "; "))
	}
	return rewritten, nil
}

// firstError keeps the first non-nil error.
func firstError(first, next error) error {
	if first != nil {
		return first
	}
	return next
}

// ttlUntil is the database lifetime of a pending record expiring at t.
func (s *DiskStore) ttlUntil(t time.Time) time.Duration {
	return max(t.Sub(s.now()), 0) + pendingGrace
}

// pendingTTL is ttlUntil for a record in its opened form.
func (s *DiskStore) pendingTTL(plain []byte) time.Duration {
	var r pendingRecord
	if json.Unmarshal(plain, &r) != nil {
		return pendingGrace
	}
	return s.ttlUntil(r.ExpiresAt)
}
