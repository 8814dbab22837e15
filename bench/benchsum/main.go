// Command benchsum reads `go test -bench` output on stdin and prints, for
// every benchmark and metric, the minimum, median and maximum over the
// repeated runs (-count), as a Markdown table, with the target of the
// metrics that have one.
package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// target is what a metric's median should be; meets is nil when the
// target is read from other figures rather than checked here.
type target struct {
	text  string
	meets func(median float64) bool
}

func below(limit float64) func(float64) bool { return func(v float64) bool { return v < limit } }

func equal(want float64) func(float64) bool { return func(v float64) bool { return v == want } }

// targets maps "benchmark metric" (benchmark without the -N suffix) to
// its target. A name ending in * matches any suffix of the benchmark.
var targets = map[string]target{
	"BenchmarkOverhead/instance=50ms request-stdio-added-p50-ms": {"< 0.5 ms", below(0.5)},
	"BenchmarkOverhead/instance=50ms request-http-added-p50-ms":  {"< 0.5 ms", below(0.5)},
	"BenchmarkOverhead/instance=50ms query-stdio-added-p50-ms":   {"< 0.5 ms", below(0.5)},
	"BenchmarkOverhead/instance=50ms query-http-added-p50-ms":    {"< 0.5 ms", below(0.5)},
	"BenchmarkOverhead/instance=50ms request-stdio-added-p99-ms": {"< 2 ms", below(2)},
	"BenchmarkOverhead/instance=50ms request-http-added-p99-ms":  {"< 2 ms", below(2)},
	"BenchmarkOverhead/instance=50ms query-stdio-added-p99-ms":   {"< 2 ms", below(2)},
	"BenchmarkOverhead/instance=50ms query-http-added-p99-ms":    {"< 2 ms", below(2)},
	"BenchmarkRoundTrips/* sn-requests/call":                     {"its expected count (the benchmark fails above it)", nil},
	"BenchmarkThroughput failed-calls":                           {"0", equal(0)},
	"BenchmarkThroughput server-cores":                           {"< sandbox-cores", nil},
	"BenchmarkRefreshUnderLoad refreshes":                        {"= 50", equal(50)},
	"BenchmarkRefreshUnderLoad failed-calls":                     {"0", equal(0)},
	"BenchmarkStartup/* p50-ms-to-initialize":                    {"< 50 ms", below(50)},
	"BenchmarkStartup/* max-ms-to-initialize":                    {"< 50 ms", below(50)},
	"BenchmarkMemory/idle stdio-peak-MiB":                        {"< 30 MiB", below(30)},
	"BenchmarkMemory/idle http-peak-MiB":                         {"< 30 MiB", below(30)},
	"BenchmarkMemory/sessions=1000 peak-MiB":                     {"< 150 MiB", below(150)},
	"BenchmarkMemory/response=20MB added-peak-budgets":           {"a few budgets", nil},
	"BenchmarkStoreRewrites peak-disk-MiB":                       {"bounded (< 16 MiB)", below(16)},
	"BenchmarkGetAccount/* ns/op":                                {"flat in the count", nil},
	"BenchmarkPutAccount/* ns/op":                                {"flat in the count", nil},
}

var standardUnits = map[string]bool{"ns/op": true, "B/op": true, "allocs/op": true, "MB/s": true}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+(\d+)\s+(.*)$`)

func main() {
	values := map[string]map[string][]float64{}
	var order []string
	var units = map[string][]string{}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		name := m[1]
		fields := strings.Fields(m[4])
		if values[name] == nil {
			values[name] = map[string][]float64{}
			order = append(order, name)
		}
		for i := 0; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			unit := fields[i+1]
			if values[name][unit] == nil {
				units[name] = append(units[name], unit)
			}
			values[name][unit] = append(values[name][unit], v)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "benchsum:", err)
		os.Exit(1)
	}

	fmt.Println("| benchmark | metric | runs | min | median | max | target | median meets it |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, name := range order {
		custom := slices.ContainsFunc(units[name], func(u string) bool { return !standardUnits[u] })
		for _, unit := range units[name] {
			if custom && standardUnits[unit] {
				continue // a measurement's own figures say more than its run time
			}
			vs := slices.Clone(values[name][unit])
			slices.Sort(vs)
			med := median(vs)
			t, ok := lookup(name, unit)
			verdict := ""
			if ok && t.meets != nil {
				verdict = "yes"
				if !t.meets(med) {
					verdict = "**no**"
				}
			}
			fmt.Printf("| %s | %s | %d | %s | %s | %s | %s | %s |\n", strings.TrimPrefix(name, "Benchmark"), unit,
				len(vs), num(vs[0]), num(med), num(vs[len(vs)-1]), t.text, verdict)
		}
	}
}

func lookup(name, unit string) (target, bool) {
	if t, ok := targets[name+" "+unit]; ok {
		return t, true
	}
	for k, t := range targets {
		pattern, u, _ := strings.Cut(k, " ")
		if u == unit && strings.HasSuffix(pattern, "*") && strings.HasPrefix(name, strings.TrimSuffix(pattern, "*")) {
			return t, true
		}
	}
	return target{}, false
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func num(v float64) string {
	switch {
	case v == float64(int64(v)) && v < 1e7:
		return strconv.FormatInt(int64(v), 10)
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}
