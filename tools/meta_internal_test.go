package tools

import (
	"context"
	"strings"
	"testing"
)

// A choice is found by its value, its whole label, or its label without
// the leading "N - " numbering when that fits one choice alone.
func TestChoiceValue(t *testing.T) {
	impact := &FieldMeta{Name: "impact", Choices: []Choice{{"1", "1 - High"}, {"2", "2 - Medium"}, {"3", "3 - Low"}}}
	// Two choices share the label "High" once their numbers are left out;
	// "Low" is a whole label of its own beside "3 - Low".
	mixed := &FieldMeta{Name: "level", Choices: []Choice{{"1", "1 - High"}, {"2", "2 - High"}, {"low", "Low"}, {"3", "3 - Low"}, {"-2", "-2 - Scheduled"}}}
	tests := []struct {
		field *FieldMeta
		in    string
		want  string
		err   []string // parts of the refusal; nil when accepted
	}{
		{impact, "3", "3", nil},
		{impact, "3 - Low", "3", nil},
		{impact, "3 - low", "3", nil},
		{impact, " Low ", "3", nil},
		{impact, "LOW", "3", nil},
		{impact, "medium", "2", nil},
		{impact, "Lowest", "", []string{"not a choice", "3 (3 - Low)"}},
		{impact, "- Low", "", []string{"not a choice"}},
		{mixed, "High", "", []string{"fits several choices", "1 (1 - High)", "2 (2 - High)"}},
		{mixed, "2 - High", "2", nil},
		{mixed, "Low", "low", nil},
		{mixed, "3 - Low", "3", nil},
		{mixed, "-2 - Scheduled", "-2", nil},
	}
	for _, tt := range tests {
		t.Run(tt.field.Name+"="+tt.in, func(t *testing.T) {
			got, err := storedValue(context.Background(), nil, nil, "incident", tt.field, tt.in)
			if tt.err == nil {
				if err != nil || got != tt.want {
					t.Fatalf("storedValue(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("storedValue(%q) = %q, want a refusal", tt.in, got)
			}
			for _, p := range tt.err {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("refusal %q lacks %q", err, p)
				}
			}
		})
	}
}
