package tools_test

import (
	"testing"

	"servicenow-mcp/internal/testenv"
)

func TestCatalog(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	runChecks(t, env, []check{
		{name: "search by words", user: "carol", tool: "servicenow_search_catalog_items",
			args: map[string]any{"query": "laptop"}, want: []string{"Standard Laptop", `"category":"Hardware"`}, absent: []string{"Mobile"}},
		{name: "search by category title", user: "carol", tool: "servicenow_search_catalog_items",
			args: map[string]any{"category": "Hardware"}, want: []string{"Standard Laptop", "New Mobile Phone"}, absent: []string{"Software License"}},
		{name: "unknown category is named", user: "carol", tool: "servicenow_search_catalog_items", wantErr: true,
			args: map[string]any{"category": "Furniture"}, want: []string{"Furniture"}},
		{name: "item by exact name with variables", user: "carol", tool: "servicenow_get_catalog_item",
			args: map[string]any{"item": "standard laptop"},
			want: []string{`"name":"operating_system"`, `"mandatory":true`, `"value":"macos"`, `"default":"windows"`}},
		{name: "item name that matches nothing exactly lists near ones", user: "carol", tool: "servicenow_get_catalog_item", wantErr: true,
			args: map[string]any{"item": "Laptop"}, want: []string{"Standard Laptop", "exact name"}},
		{name: "unknown item sys_id", user: "carol", tool: "servicenow_get_catalog_item", wantErr: true,
			args: map[string]any{"item": "0123456789abcdef0123456789abcdef"}, want: []string{"no orderable catalog item"}},
		{name: "missing mandatory variable is named before sending", user: "carol", tool: "servicenow_order_catalog_item", wantErr: true,
			args: map[string]any{"item": "Software License"}, want: []string{"software_name", "mandatory"}},
		{name: "unknown variable is named", user: "carol", tool: "servicenow_order_catalog_item", wantErr: true,
			args: map[string]any{"item": "Standard Laptop", "variables": map[string]any{"colour": "red"}},
			want: []string{`\"colour\"`, "operating_system"}},
		{name: "value outside the choices is named", user: "carol", tool: "servicenow_order_catalog_item", wantErr: true,
			args: map[string]any{"item": "Standard Laptop", "variables": map[string]any{"operating_system": "beos"}},
			want: []string{"beos", "windows, macos, linux"}},
		{name: "checkbox takes yes or no", user: "carol", tool: "servicenow_order_catalog_item", wantErr: true,
			args: map[string]any{"item": "Standard Laptop", "variables": map[string]any{"additional_memory": "maybe"}},
			want: []string{"true or false"}},
		{name: "order with a choice label and a boolean", user: "carol", tool: "servicenow_order_catalog_item",
			args: map[string]any{"item": "Standard Laptop", "quantity": 2,
				"variables": map[string]any{"operating_system": "MacOS", "additional_memory": true}},
			want: []string{`"status":"ordered"`, `"request_number":"REQ0010002"`, `"operating_system":"macos"`, `"additional_memory":"true"`}},
		{name: "status of the new request", user: "carol", tool: "servicenow_get_request_status",
			args: map[string]any{"request": "REQ0010002"},
			want: []string{`"number":"REQ0010002"`, "RITM", "Standard Laptop", `"quantity":"2"`, "Carol Chen"}},
		{name: "status by requested item number", user: "carol", tool: "servicenow_get_request_status",
			args: map[string]any{"request": "RITM0010002"}, want: []string{`"number":"REQ0010002"`}},
		{name: "someone else's request is not visible", user: "carol", tool: "servicenow_get_request_status", wantErr: true,
			args: map[string]any{"request": "REQ0010001"}, want: []string{"no request REQ0010001"}},
		{name: "itil sees any request", user: "alice", tool: "servicenow_get_request_status",
			args: map[string]any{"request": "req0010001"}, want: []string{"Erin Evans", "Fulfillment"}},
		{name: "order for someone else by user name", user: "alice", tool: "servicenow_order_catalog_item",
			args: map[string]any{"item": "New Mobile Phone", "requested_for": "bob", "variables": map[string]any{"model": "android"}},
			want: []string{`"status":"ordered"`}},
		{name: "requested_for that matches nobody", user: "alice", tool: "servicenow_order_catalog_item", wantErr: true,
			args: map[string]any{"item": "New Mobile Phone", "requested_for": "nobody@example.com", "variables": map[string]any{"model": "android"}},
			want: []string{"nobody@example.com"}},
		{name: "garbage request key", user: "carol", tool: "servicenow_get_request_status", wantErr: true,
			args: map[string]any{"request": "REQ^ORnumberISNOTEMPTY"}, want: []string{"neither"}},
	})
}
