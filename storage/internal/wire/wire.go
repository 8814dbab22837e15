// Package wire holds the messages a storage owner process exchanges with
// the other processes sharing its data directory. net/rpc wants exported
// types; keeping them here keeps them out of the storage API.
package wire

import "time"

// Op is one change within a write.
type Op struct {
	Key    []byte
	Value  []byte
	Delete bool
	TTL    time.Duration // zero: no expiry

	// KnownKeyIDs, when set, refuses to overwrite a value sealed with a
	// key id outside the list: the data of another key is never replaced.
	KnownKeyIDs []string
	// IfValue, when IfSet, makes the op apply only while the stored value
	// still equals IfValue (compare and swap).
	IfValue []byte
	IfSet   bool
}

// Pair is one key and its value.
type Pair struct {
	Key   []byte
	Value []byte
}

// Request is one call: Method names the operation.
type Request struct {
	Method     string
	Key        []byte
	Prefix     []byte
	WithValues bool
	Ops        []Op
}

// Reply carries a result and the outcome codes the caller branches on.
type Reply struct {
	Value      []byte
	Pairs      []Pair
	Code       string
	ForeignKey string
}

// Service is the net/rpc receiver; Handle does the work.
type Service struct {
	Handle func(*Request, *Reply) error
}

// Call serves one request.
func (s *Service) Call(req Request, reply *Reply) error { return s.Handle(&req, reply) }
