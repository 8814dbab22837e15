// Package faulttest holds no product code: its tests run the assembled
// server against a sandbox instance with injected faults (a failing
// instance, network and host) and check what the user sees, that tokens
// are kept or dropped as they should be, and that no secret escapes.
// docs/FAULTS.md names these tests, and a test keeps that table true.
package faulttest
