package tools

import (
	"regexp"
	"testing"
)

// TestDescriptionsNameRealArguments: where a description sends the model
// "through" an argument, the tool has an argument of that name. A word
// that names no argument of any tool ("through the Service Catalog API")
// is prose and passes.
func TestDescriptionsNameRealArguments(t *testing.T) {
	argNames := map[string]bool{}
	for _, def := range All() {
		for _, p := range def.params(false) {
			argNames[p.Name] = true
		}
	}
	through := regexp.MustCompile(`through ([a-z_]+)`)
	for _, def := range All() {
		t.Run(def.Name, func(t *testing.T) {
			own := map[string]bool{}
			for _, p := range def.params(false) {
				own[p.Name] = true
			}
			for _, m := range through.FindAllStringSubmatch(def.Description, -1) {
				if argNames[m[1]] && !own[m[1]] {
					t.Errorf("the description says %q, but %s has no argument %q", m[0], def.Name, m[1])
				}
			}
		})
	}
}
