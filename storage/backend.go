package storage

import (
	"context"
	"errors"
	"fmt"

	"servicenow-mcp/storage/internal/wire"
)

// backend moves sealed bytes; it never sees a key or a plain secret.
// The local Badger database and the client of the owner process both
// implement it, so sealing always happens in the calling process.
type backend interface {
	get(ctx context.Context, key []byte) ([]byte, error)
	// write applies all ops in one transaction, durably.
	write(ctx context.Context, ops []writeOp) error
	// scan returns every pair under prefix, values included when withValues.
	scan(ctx context.Context, prefix []byte, withValues bool) ([]pair, error)
	close() error
}

// pair is one key and its value; writeOp is one change within a write.
type (
	pair    = wire.Pair
	writeOp = wire.Op
)

// Errors between the store and its backends.
var (
	// errConflict: an IfValue condition did not hold.
	errConflict = errors.New("record changed meanwhile")
	// errUnavailable: the backend is closing or its owner went away;
	// the store reconnects and retries.
	errUnavailable = errors.New("store owner unavailable")
)

// foreignKeyError says an op would overwrite data sealed with an unknown key.
type foreignKeyError struct{ id string }

func (e *foreignKeyError) Error() string {
	return fmt.Sprintf("refusing to overwrite a record sealed with unknown key %s", e.id)
}

// checkOverwrite applies an op's conditions to the value now stored
// (nil when absent).
func checkOverwrite(op *writeOp, old []byte, exists bool) error {
	if op.IfSet && (!exists || string(old) != string(op.IfValue)) {
		return errConflict
	}
	if len(op.KnownKeyIDs) == 0 || !exists {
		return nil
	}
	id, ok := sealedKeyID(old)
	if !ok {
		return nil // undecodable: a fresh record may replace it
	}
	for _, known := range op.KnownKeyIDs {
		if id == known {
			return nil
		}
	}
	return &foreignKeyError{id: id}
}
