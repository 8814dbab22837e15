//go:build race

package e2e

// raceEnabled builds the product binary with -race when the tests run with
// -race, so that a data race in the real process fails the test too.
const raceEnabled = true
