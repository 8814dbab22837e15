package storage

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// Keyring holds the key that seals new records and the keys that may
// still open older ones. Every key is 32 bytes (AES-256).
type Keyring struct {
	Current  []byte
	Previous [][]byte
}

// KeyID names a key without revealing it: the first 8 hex digits of the
// SHA-256 of the key. It is stored in the clear beside each sealed value.
func KeyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:4])
}

// Sealed value layout, version 1:
//
//	0x01 | key id (8 ASCII hex bytes) | nonce (12 bytes) | AES-GCM ciphertext+tag
const (
	sealVersion  = 0x01
	keyIDLen     = 8
	nonceLen     = 12
	sealedHeader = 1 + keyIDLen + nonceLen
)

// aadPrefix separates our associated data from any other use of the key.
const aadPrefix = "servicenow-mcp/v1\x00"

// sealer seals and opens values with a keyring.
type sealer struct {
	currentID string
	aeads     map[string]cipher.AEAD // by key id
}

func newSealer(kr Keyring) (*sealer, error) {
	if len(kr.Current) == 0 {
		return nil, errors.New("no encryption key configured: set SERVICENOW_MCP_ENCRYPTION_KEY " +
			"or a key file (generate a key with: openssl rand -base64 32)")
	}

	s := &sealer{currentID: KeyID(kr.Current), aeads: map[string]cipher.AEAD{}}
	for i, key := range append([][]byte{kr.Current}, kr.Previous...) {
		aead, err := newAEAD(key)
		if err != nil {
			if i == 0 {
				return nil, fmt.Errorf("current encryption key: %w", err)
			}
			return nil, fmt.Errorf("previous encryption key %d: %w", i, err)
		}
		id := KeyID(key)
		if _, dup := s.aeads[id]; !dup {
			s.aeads[id] = aead
		}
	}
	return s, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("key is %d bytes, want 32 (AES-256)", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// knownIDs lists the key ids this sealer can open.
func (s *sealer) knownIDs() []string {
	ids := make([]string, 0, len(s.aeads))
	for id := range s.aeads {
		ids = append(ids, id)
	}
	return ids
}

// seal encrypts plain with the current key, binding it to location.
func (s *sealer) seal(location, plain []byte) []byte {
	out := make([]byte, sealedHeader, sealedHeader+len(plain)+16)
	out[0] = sealVersion
	copy(out[1:], s.currentID)
	if _, err := rand.Read(out[1+keyIDLen : sealedHeader]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // never happens on supported systems
	}
	return s.aeads[s.currentID].Seal(out, out[1+keyIDLen:sealedHeader], plain, aad(location))
}

// open decrypts a sealed value stored at location. It returns ErrWrongKey
// when no configured key has the value's key id, and ErrCorrupt when the
// bytes do not decode or fail authentication.
func (s *sealer) open(location, sealed []byte) (plain []byte, current bool, err error) {
	id, ok := sealedKeyID(sealed)
	if !ok {
		return nil, false, fmt.Errorf("%w: not a sealed value (%d bytes)", ErrCorrupt, len(sealed))
	}
	aead, ok := s.aeads[id]
	if !ok {
		return nil, false, wrongKeyError(id, s.currentID)
	}

	nonce := sealed[1+keyIDLen : sealedHeader]
	plain, err = aead.Open(nil, nonce, sealed[sealedHeader:], aad(location))
	if err != nil {
		return nil, false, fmt.Errorf("%w: authentication failed with key %s "+
			"(the bytes were altered or moved from another record)", ErrCorrupt, id)
	}
	return plain, id == s.currentID, nil
}

// sealedKeyID reads the key id from a sealed value's clear header.
func sealedKeyID(sealed []byte) (string, bool) {
	if len(sealed) < sealedHeader+16 || sealed[0] != sealVersion {
		return "", false
	}
	id := string(sealed[1 : 1+keyIDLen])
	if _, err := hex.DecodeString(id); err != nil {
		return "", false
	}
	return id, true
}

// WrongKeyError is ErrWrongKey with the key ids involved (never a key).
type WrongKeyError struct {
	Needed  string // id of the key the record was sealed with
	Current string // id of the configured current key
}

func (e *WrongKeyError) Error() string {
	return fmt.Sprintf("%v: the record was sealed with key %s but the configured key is %s "+
		"and no previous key matches; set SERVICENOW_MCP_ENCRYPTION_KEY (or the key file) "+
		"to the key that wrote the data, or add that key under previous_encryption_keys "+
		"to read it and re-seal it with the new key", ErrWrongKey, e.Needed, e.Current)
}

// Is makes errors.Is(err, ErrWrongKey) hold.
func (e *WrongKeyError) Is(target error) bool { return target == ErrWrongKey }

func wrongKeyError(needed, current string) error {
	return &WrongKeyError{Needed: needed, Current: current}
}

func aad(location []byte) []byte {
	return append([]byte(aadPrefix), location...)
}
