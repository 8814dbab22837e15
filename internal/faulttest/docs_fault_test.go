package faulttest

import (
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"servicenow-mcp/sandbox"
)

// TestFaultsTableNamesRealTests keeps docs/FAULTS.md true: every test it
// names exists somewhere in the module, every row names one, and every
// sandbox fault switch is documented.
func TestFaultsTableNamesRealTests(t *testing.T) {
	root := filepath.Join("..", "..")
	doc, err := os.ReadFile(filepath.Join(root, "docs", "FAULTS.md"))
	if err != nil {
		t.Fatal(err)
	}

	defined := map[string]bool{}
	funcRE := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)\w+)\(`)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range funcRE.FindAllSubmatch(b, -1) {
			defined[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	nameRE := regexp.MustCompile("`((?:Test|Fuzz)[A-Za-z0-9_]+)`")
	rows := 0
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| #") {
			continue
		}
		rows++
		names := nameRE.FindAllStringSubmatch(line, -1)
		if len(names) == 0 {
			t.Errorf("row names no test: %s", line)
		}
		for _, n := range names {
			if !defined[n[1]] {
				t.Errorf("docs/FAULTS.md names %s, which does not exist", n[1])
			}
		}
	}
	if rows < 20 {
		t.Fatalf("only %d rows found in docs/FAULTS.md: is the table still there?", rows)
	}

	ft := reflect.TypeOf(sandbox.Faults{})
	for i := range ft.NumField() {
		tag := strings.Split(ft.Field(i).Tag.Get("json"), ",")[0]
		if tag != "" && tag != "-" && !strings.Contains(string(doc), "`"+tag+"`") {
			t.Errorf("sandbox fault switch %q is not documented in docs/FAULTS.md", tag)
		}
	}
}
