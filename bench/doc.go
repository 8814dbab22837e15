// Package bench measures what servicenow-mcp adds to a ServiceNow call:
// latency against a direct call, requests per tool call, throughput,
// refresh under load, start-up, memory and store scale. Everything runs
// against the sandbox instance on loopback; see BENCHMARKS.md and
// scripts/bench.sh. The package holds only benchmarks and their harness.
package bench
