package tools

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	readmeBegin = "<!-- tools:begin -->"
	readmeEnd   = "<!-- tools:end -->"
)

// TestReadmeToolTable fails when the README's tool table differs from the
// registry; go test ./tools -run Readme -update rewrites the block.
func TestReadmeToolTable(t *testing.T) {
	path := filepath.Join("..", "README.md")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read README: %v", err)
	}
	text := string(data)
	begin, end := strings.Index(text, readmeBegin), strings.Index(text, readmeEnd)
	if begin < 0 || end < begin {
		if !*update {
			t.Fatalf("README.md has no %s … %s block; run go test ./tools -run Readme -update to add one", readmeBegin, readmeEnd)
		}
		text = strings.TrimRight(text, "\n") + "\n\n## Tools\n\n" + readmeBegin + "\n" + readmeEnd + "\n"
		begin, end = strings.Index(text, readmeBegin), strings.Index(text, readmeEnd)
	}
	want := readmeBegin + "\n" + MarkdownTable() + readmeEnd
	got := text[begin : end+len(readmeEnd)]
	if got == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(text[:begin]+want+text[end+len(readmeEnd):]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README.md tool table is out of date; run go test ./tools -run Readme -update\nwant:\n%s", want)
}
