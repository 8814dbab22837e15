// Package e2e holds the end-to-end tests: the real servicenow-mcp binary
// and its sandbox instance, driven by the published MCP clients (the
// TypeScript SDK and the MCP Inspector CLI) installed from package.json.
// Run "npm ci --prefix e2e" once; without it the tests skip (fail under CI).
package e2e
