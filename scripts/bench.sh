#!/usr/bin/env bash
# Runs the benchmark suite (BENCHMARKS.md) and prints min / median / max
# of every figure over COUNT runs, with its target. Loopback only; every
# process it starts stops by itself. About five minutes on two cores.
#
#   scripts/bench.sh                 # everything, COUNT=5
#   COUNT=3 scripts/bench.sh Overhead|Throughput   # a selection (regexp)
#   SHORT=1 scripts/bench.sh         # one brief pass, as CI runs it
set -euo pipefail

cd "$(dirname "$0")/.."
count="${COUNT:-5}"
filter="${1:-.}"
out="${BENCH_OUT:-$(mktemp -t snmcp-bench.XXXXXX)}"
short=()
if [[ -n "${SHORT:-}" ]]; then
	count=1
	short=(-short)
fi

echo "--- machine" | tee "$out"
{
	echo "nproc: $(nproc)"
	grep -m1 'model name' /proc/cpuinfo || true
	go version
	git rev-parse --short HEAD 2>/dev/null || true
} | tee -a "$out"

echo "--- servicenow-mcp benchmarks (bench/), count=$count"
# Each benchmark iteration is one whole measurement, hence -benchtime=1x.
go test -run=NONE -bench="$filter" -benchtime=1x -count="$count" "${short[@]}" -timeout=30m ./bench/ | tee -a "$out"

if [[ -z "${SHORT:-}" && ( "$filter" == "." || "$filter" == *Account* ) ]]; then
	echo "--- store lookup and write at 100 and 100,000 accounts (storage/)"
	go test -run=NONE -bench='GetAccount|PutAccount' -count="$(( count < 3 ? count : 3 ))" -timeout=30m ./storage/ | tee -a "$out"
fi

echo "--- summary (raw output in $out)"
go run ./bench/benchsum < "$out"
