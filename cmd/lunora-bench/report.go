package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// runInfo is what the summary says about the run besides the figures.
type runInfo struct {
	command string
	procs   string // the process's GOMAXPROCS
	target  string // what was benchmarked
	dataDir string
	o       *options
	notes   []string // lines printed after the table
}

// printPhase prints one phase's result as soon as it is known.
func printPhase(w io.Writer, r *phaseResult) {
	fmt.Fprintf(w, "%-52s %9d ops  %10.0f ops/s  p50 %-8s p99 %-8s p99.9 %-8s max %-8s errors: %s\n",
		r.name, r.ops, r.throughput(), fmtDur(r.hist.quantile(0.50)), fmtDur(r.hist.quantile(0.99)),
		fmtDur(r.hist.quantile(0.999)), fmtDur(time.Duration(r.hist.max)), r.errorSummary())
	if cs := r.commits; cs != nil && cs.commits > 0 {
		fmt.Fprintf(w, "%-52s %d group commits, mean batch %.1f mutations, mean BEGIN..COMMIT %s\n",
			"", cs.commits, cs.mutations/float64(cs.commits), fmtDur(time.Duration(cs.commitSecs/float64(cs.commits)*float64(time.Second))))
	}
	if r.note != "" {
		fmt.Fprintf(w, "%-52s %s\n", "", r.note)
	}
}

// printSummary prints the block meant for BENCHMARKS.md.
func printSummary(w io.Writer, info runInfo, results []*phaseResult) {
	o := info.o
	fmt.Fprintln(w)
	fmt.Fprintln(w, "----- lunora-bench summary (paste into BENCHMARKS.md) -----")
	fmt.Fprintf(w, "command:  %s\n", info.command)
	fmt.Fprintf(w, "machine:  %s\n", machine())
	fmt.Fprintf(w, "target:   %s\n", info.target)
	if info.procs != "" {
		fmt.Fprintf(w, "procs:    %s\n", info.procs)
	}
	if info.dataDir != "" {
		fmt.Fprintf(w, "data:     %s (removed after the run)\n", info.dataDir)
	}
	if o.mode == "global" {
		fmt.Fprintf(w, "load:     %d callers on %d gRPC connection(s) to node 1, a new user_id per call, warmup %s, measured %s per phase\n",
			o.callers, o.conns(), o.warmup, o.duration)
	} else {
		fmt.Fprintf(w, "load:     %d callers on %d gRPC connection(s), %d shard(s) round robin, warmup %s, measured %s per phase\n",
			o.callers, o.conns(), o.shards, o.warmup, o.duration)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| phase | ops | ops/s | p50 | p99 | p99.9 | max | errors | CPU cores: bench / machine |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---|---:|")
	for _, r := range results {
		cores := "-"
		if r.window > 0 {
			cores = fmt.Sprintf("%.2f / %.2f", r.cpu.Seconds()/r.window.Seconds(), r.busy.Seconds()/r.window.Seconds())
		}
		fmt.Fprintf(w, "| %s | %d | %.0f | %s | %s | %s | %s | %s | %s |\n",
			r.name, r.ops, r.throughput(), fmtDur(r.hist.quantile(0.50)), fmtDur(r.hist.quantile(0.99)),
			fmtDur(r.hist.quantile(0.999)), fmtDur(time.Duration(r.hist.max)), r.errorSummary(), cores)
	}
	fmt.Fprintln(w)
	var mut, base *phaseResult
	for _, r := range results {
		switch {
		case r.baseline:
			base = r
		case strings.HasPrefix(r.name, string(mutation)):
			mut = r
		}
		if cs := r.commits; cs != nil && cs.commits > 0 {
			fmt.Fprintf(w, "%s: %d group commits in the window, mean batch %.1f mutations, mean BEGIN..COMMIT %s\n", r.name,
				cs.commits, cs.mutations/float64(cs.commits), fmtDur(time.Duration(cs.commitSecs/float64(cs.commits)*float64(time.Second))))
			if cs.rounds > 0 {
				fmt.Fprintf(w, "%s: %d durability rounds, mean %.1f shards and %s per round\n", r.name,
					cs.rounds, cs.roundShards/float64(cs.rounds), fmtDur(time.Duration(cs.roundSecs/float64(cs.rounds)*float64(time.Second))))
			}
		}
		if r.note != "" {
			fmt.Fprintf(w, "%s: %s\n", r.name, r.note)
		}
	}
	if mut != nil && base != nil && base.throughput() > 0 {
		fmt.Fprintf(w, "lunora / baseline = %.1f×  (%.0f vs %.0f inserts/s, synchronous=%s)\n",
			mut.throughput()/base.throughput(), mut.throughput(), base.throughput(), o.synchronous)
	}
	for _, n := range info.notes {
		fmt.Fprintln(w, n)
	}
	fmt.Fprintf(w, "CPU cores = CPU time / window: bench is this process (callers, and the in-process stack when there is no -target), machine is all processes, out of %d.\n", runtime.NumCPU())
	fmt.Fprintln(w, "-----------------------------------------------------------")
}

// fmtDur renders a latency with three significant digits.
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return trim(float64(d)/float64(time.Microsecond)) + "µs"
	case d < time.Second:
		return trim(float64(d)/float64(time.Millisecond)) + "ms"
	}
	return trim(d.Seconds()) + "s"
}

func trim(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// machine describes the host: CPUs and model, memory, kernel, Go.
func machine() string {
	model := "unknown CPU"
	if v := procField("/proc/cpuinfo", "model name"); v != "" {
		model = v
	}
	mem := "? memory"
	if v := procField("/proc/meminfo", "MemTotal"); v != "" {
		if kb, err := strconv.ParseFloat(strings.Fields(v)[0], 64); err == nil {
			mem = fmt.Sprintf("%.1f GiB", kb/(1<<20))
		}
	}
	kernel := runtime.GOOS
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel += " " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%d CPUs (%s), %s, %s, %s, GOMAXPROCS=%d", runtime.NumCPU(), model, mem, kernel, runtime.Version(), runtime.GOMAXPROCS(0))
}

// procField returns the value of the first "key: value" line of a /proc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
