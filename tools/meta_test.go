package tools

import (
	"testing"
	"time"
)

func TestTTLCache(t *testing.T) {
	now := time.Unix(0, 0)
	c := newTTLCache[string](2, time.Minute)
	c.now = func() time.Time { return now }

	c.put("a", "1")
	c.put("b", "2")
	if _, ok := c.get("a"); !ok {
		t.Fatal("a missing")
	}
	c.put("c", "3") // evicts b, the least recently used
	if _, ok := c.get("b"); ok {
		t.Fatal("b should have been evicted")
	}
	if c.len() != 2 {
		t.Fatalf("len %d, want 2", c.len())
	}
	now = now.Add(2 * time.Minute)
	if _, ok := c.get("a"); ok {
		t.Fatal("a should have expired")
	}
}
