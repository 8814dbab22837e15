package tools

import (
	"context"

	"github.com/mark3labs/mcp-go/mcp"

	"servicenow-mcp/servicenow"
)

// ListSpec describes one list of records for listRecords.
type ListSpec struct {
	Table string
	// Conditions are structured conditions; choice labels and reference
	// keys in their values are resolved to stored values first.
	Conditions []servicenow.Condition
	// Filters are field → value (a string, or a list meaning IN).
	Filters map[string]any
	// Encoded is a raw encoded query; every field it names is checked.
	Encoded string
	Fields  []string
	Order   []servicenow.Order
	// DefaultOrder applies when Order is empty; sys_id is always added
	// last as a tie-break so that paging is stable.
	DefaultOrder  []servicenow.Order
	Limit, Offset int64
	DefaultFields []string
}

// listRecords runs one Table API list and shapes it for a model.
func listRecords(ctx context.Context, d *Deps, c *Call, spec ListSpec) *mcp.CallToolResult {
	return errorResult("not implemented yet")
}

// getRecord reads one record by sys_id, or by number on tables that have
// one. The result is nil on success.
func getRecord(ctx context.Context, d *Deps, c *Call, table, idOrNumber string, fields []string) (map[string]any, *mcp.CallToolResult) {
	return nil, errorResult("not implemented yet")
}

// writeRecord creates (POST), updates (PATCH) or deletes (DELETE) one
// record after resolving choice labels and reference keys in values.
func writeRecord(ctx context.Context, d *Deps, c *Call, method, table, sysID string, values map[string]any, fields []string) *mcp.CallToolResult {
	return errorResult("not implemented yet")
}

// resolveReference turns a human key into the sys_id of a record of
// table: for sys_user a user name, email, name or "me"; for
// sys_user_group a name; otherwise a number or the display value.
func resolveReference(ctx context.Context, d *Deps, c *Call, table, key string) (string, error) {
	return "", nil
}
