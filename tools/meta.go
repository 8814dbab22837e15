package tools

import (
	"context"
)

// TableMeta is what the tools know of a table from its dictionary.
type TableMeta struct {
	Name    string
	Label   string
	Parents []string // super classes, nearest first
	// Display is the field shown for a record in references.
	Display string
	Fields  map[string]*FieldMeta
	// Order lists field names in dictionary order.
	Order []string
}

// FieldMeta is one column.
type FieldMeta struct {
	Name      string
	Label     string
	Type      string // internal type: string, integer, reference, glide_date_time, journal_input, ...
	Reference string // target table of a reference
	Mandatory bool
	ReadOnly  bool
	MaxLength int
	Choices   []Choice
}

// Choice is one value of a choice field.
type Choice struct {
	Value string `json:"value"`
	Label string `json:"label"`
}

// dictionary returns the table's metadata, cached per connection.
func (d *Deps) dictionary(ctx context.Context, c *Call, table string) (*TableMeta, error) {
	return nil, nil
}
