// Command lunora-bench is Lunora's load generator: concurrent callers on the
// public gRPC API, throughput and latency percentiles, and a plain-SQLite
// baseline measured in the same run so that every figure is a ratio.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"
	"time"
)

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lunora-bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	command := "lunora-bench " + strings.Join(os.Args[1:], " ")
	if err := run(ctx, o, command, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "lunora-bench:", err)
		os.Exit(1)
	}
}

// run benchmarks as o says, printing each phase as it ends and then the
// summary.
func run(ctx context.Context, o *options, command string, stdout, stderr io.Writer) (err error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	dir, err := os.MkdirTemp(o.dataDir, "lunora-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if o.mode == "global" {
		return runGlobal(ctx, o, dir, command, stdout, log)
	}
	if o.mode == "queue" {
		return runQueue(ctx, o, dir, command, stdout, log)
	}

	info := runInfo{command: command, o: o, dataDir: dir, procs: fmt.Sprintf("GOMAXPROCS %d (callers, in-process stack and baseline alike)", runtime.GOMAXPROCS(0))}
	target := o.target
	var st *stack
	if target == "" {
		if st, err = startStack(filepath.Join(dir, "lunora"), o.synchronous, o.durability, log); err != nil {
			return fmt.Errorf("start the in-process stack: %w", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if serr := st.shutdown(sctx); serr != nil && err == nil {
				err = serr
			}
		}()
		target = st.addr
		info.target = fmt.Sprintf("in-process dev stack (shardhost + gateway + gRPC on %s), synchronous=%s, durability=%s", target, o.synchronous, o.durability)
	} else {
		info.target = fmt.Sprintf("%s (remote; its synchronous level is its own, -sync applies to the baseline only)", target)
	}

	var tr transport
	if o.transport == "direct" {
		tr = directTransport{gw: st.gw}
		info.target += "; callers call the gateway's Go API directly (-transport direct: no gRPC)"
	} else {
		conns, err := dial(target, o.conns())
		if err != nil {
			return err
		}
		defer closeAll(conns)
		tr = grpcTransport{conns: conns, perConn: o.callersPerConn}
	}

	var results []*phaseResult
	if err := profile(o.cpuProfile, o.trace, func() error {
		results, err = runLunora(ctx, o, tr, st, stdout)
		return err
	}); err != nil {
		return err
	}
	if o.baseline && ctx.Err() == nil {
		r, err := runBaseline(ctx, dir, o)
		if err != nil {
			return err
		}
		printPhase(stdout, r)
		results = append(results, r)
	}
	printSummary(stdout, info, results)
	return ctx.Err()
}

// runLunora runs the mutation and/or query phases through tr; st is the
// in-process stack (nil with -target), whose group-commit counters it reads.
func runLunora(ctx context.Context, o *options, tr transport, st *stack, stdout io.Writer) ([]*phaseResult, error) {
	var results []*phaseResult
	if o.mode != string(query) {
		var before, after commitStats
		var statsErr error
		var onStart, onEnd func()
		if st != nil {
			onStart = func() { before, statsErr = st.commitStats() }
			onEnd = func() { after, statsErr = st.commitStats() }
		}
		r := runPhase(ctx, mutation, tr, o, onStart, onEnd)
		if st != nil && statsErr == nil && ctx.Err() == nil {
			cs := after.sub(before)
			r.commits = &cs
		}
		printPhase(stdout, r)
		results = append(results, r)
	}
	if o.mode != string(mutation) && ctx.Err() == nil {
		if o.mode == string(query) {
			if err := seed(ctx, tr, o); err != nil {
				return nil, err
			}
		}
		r := runPhase(ctx, query, tr, o, nil, nil)
		printPhase(stdout, r)
		results = append(results, r)
	}
	return results, nil
}

// profile runs fn under a CPU profile written to cpuPath and an execution
// trace written to tracePath (each only when its path is set).
func profile(cpuPath, tracePath string, fn func() error) (err error) {
	if cpuPath != "" {
		f, err := os.Create(cpuPath)
		if err != nil {
			return err
		}
		defer func() {
			if cerr := f.Close(); cerr != nil && err == nil {
				err = cerr
			}
		}()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if tracePath != "" {
		f, err := os.Create(tracePath)
		if err != nil {
			return err
		}
		defer func() {
			if cerr := f.Close(); cerr != nil && err == nil {
				err = cerr
			}
		}()
		if err := trace.Start(f); err != nil {
			return err
		}
		defer trace.Stop()
	}
	return fn()
}
