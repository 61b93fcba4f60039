package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/gateway"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// workload is one kind of call the callers make.
type workload string

const (
	mutation workload = "mutation"
	query    workload = "query"
)

// function is the chat function a workload calls.
func (w workload) function() string {
	switch w {
	case mutation:
		return "messages:send"
	case emit:
		return "bench:emit"
	}
	return "messages:list"
}

const (
	benchAuthor = "bench"
	benchBody   = "hello from lunora-bench, a message of ordinary size"
	queryLimit  = 10
)

func roomName(i int) string { return "r" + strconv.Itoa(i) }

func text(s string) *lunorav1.Value { return &lunorav1.Value{Kind: &lunorav1.Value_Text{Text: s}} }

// request builds the call of w on room.
func (w workload) request(room string) *lunorav1.CallRequest {
	args := map[string]*lunorav1.Value{"room_id": text(room)}
	if w == mutation {
		args["author"] = text(benchAuthor)
		args["body"] = text(benchBody)
	} else {
		args["limit"] = &lunorav1.Value{Kind: &lunorav1.Value_Integer{Integer: queryLimit}}
	}
	return &lunorav1.CallRequest{Function: w.function(), Args: args}
}

// dial opens n client connections to target.
func dial(target string, n int) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, 0, n)
	for range n {
		cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("dial %s: %w", target, err)
		}
		conns = append(conns, cc)
	}
	return conns, nil
}

func closeAll(conns []*grpc.ClientConn) {
	for _, cc := range conns {
		cc.Close()
	}
}

// phaseResult is what one measured phase produced.
type phaseResult struct {
	name     string
	ops      uint64 // successful calls completed in the window
	window   time.Duration
	hist     histogram // latencies of the successful calls in the window
	errors   map[string]uint64
	cpu      time.Duration // process CPU time (user+sys) in the window
	busy     time.Duration // CPU time of the whole machine in the window (other processes included)
	commits  *commitStats  // in-process stack only, mutations only
	note     string        // one more line about the phase, if any
	baseline bool
}

func (r *phaseResult) throughput() float64 {
	if r.window <= 0 {
		return 0
	}
	return float64(r.ops) / r.window.Seconds()
}

// errorSummary renders errors by code, most frequent first.
func (r *phaseResult) errorSummary() string {
	if len(r.errors) == 0 {
		return "none"
	}
	codes := make([]string, 0, len(r.errors))
	for c := range r.errors {
		codes = append(codes, c)
	}
	sort.Slice(codes, func(i, j int) bool {
		if r.errors[codes[i]] != r.errors[codes[j]] {
			return r.errors[codes[i]] > r.errors[codes[j]]
		}
		return codes[i] < codes[j]
	})
	s := ""
	for i, c := range codes {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%s=%d", c, r.errors[c])
	}
	return s
}

// window is a phase's measurement window. Hooks run at its start and end
// (for server-side counters and CPU time).
type window struct {
	start, end time.Time
	onStart    func()
	onEnd      func()
}

// watch calls the window's hooks at its start and end; the returned
// function waits for both (or for ctx).
func (w *window) watch(ctx context.Context) func() {
	var wg sync.WaitGroup
	wg.Go(func() {
		for _, at := range []struct {
			t  time.Time
			fn func()
		}{{w.start, w.onStart}, {w.end, w.onEnd}} {
			t := time.NewTimer(time.Until(at.t))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			if at.fn != nil {
				at.fn()
			}
		}
	})
	return wg.Wait
}

// callerStats is one caller goroutine's own record, merged at the end.
type callerStats struct {
	hist   histogram
	ops    uint64
	errors map[codes.Code]uint64
}

// caller makes one call on a room. Each caller goroutine has its own.
type caller func(ctx context.Context, room string) error

// transport makes callers: over gRPC (the real path) or, for finding where
// time goes, straight into the in-process gateway.
type transport interface {
	// caller returns caller i's function for w.
	caller(i int, w workload) caller
	// code is the canonical code of a caller's error.
	code(err error) codes.Code
}

// grpcTransport calls the public gRPC API; caller i uses conns[i/perConn].
type grpcTransport struct {
	conns   []*grpc.ClientConn
	perConn int
}

func (t grpcTransport) caller(i int, w workload) caller {
	client := lunorav1.NewLunoraClient(t.conns[i/t.perConn])
	req := w.request("")
	return func(ctx context.Context, room string) error {
		req.Args["room_id"] = text(room)
		_, err := client.Call(ctx, req)
		return err
	}
}

func (grpcTransport) code(err error) codes.Code { return status.Code(err) }

// directTransport calls the in-process gateway's Go API: everything but gRPC.
type directTransport struct{ gw *gateway.Gateway }

func (t directTransport) caller(_ int, w workload) caller {
	fn := w.function()
	return func(ctx context.Context, room string) error {
		args := map[string]any{"room_id": room}
		if w == mutation {
			args["author"], args["body"] = benchAuthor, benchBody
		} else {
			args["limit"] = int64(queryLimit)
		}
		_, err := t.gw.Call(ctx, fn, args, "", api.ReadOptions{})
		return err
	}
}

func (directTransport) code(err error) codes.Code { return api.CodeOf(err) }

// runPhase runs callers calling w for warmup+duration and measures the calls
// that complete in the last duration. Caller i walks the rooms from room i
// in steps of the number of callers (callLoop).
func runPhase(ctx context.Context, w workload, tr transport, o *options, onStart, onEnd func()) *phaseResult {
	now := time.Now()
	win := &window{start: now.Add(o.warmup), end: now.Add(o.warmup + o.duration)}
	var cpuStart, cpuEnd, busyStart, busyEnd time.Duration
	win.onStart = func() {
		cpuStart, busyStart = processCPU(), machineBusy()
		if onStart != nil {
			onStart()
		}
	}
	win.onEnd = func() {
		cpuEnd, busyEnd = processCPU(), machineBusy()
		if onEnd != nil {
			onEnd()
		}
	}
	hooksDone := win.watch(ctx)

	rooms := make([]string, o.shards)
	for i := range rooms {
		rooms[i] = roomName(i)
	}
	stats := make([]*callerStats, o.callers)
	var wg sync.WaitGroup
	for i := range o.callers {
		st := &callerStats{errors: map[codes.Code]uint64{}}
		stats[i] = st
		call := tr.caller(i, w)
		wg.Go(func() { callLoop(ctx, call, tr.code, rooms, i, o.callers, win, st) })
	}
	wg.Wait()
	hooksDone()

	res := &phaseResult{name: fmt.Sprintf("%s %s", w, w.function()), window: o.duration, errors: map[string]uint64{}}
	for _, st := range stats {
		res.hist.merge(&st.hist)
		res.ops += st.ops
		for c, n := range st.errors {
			res.errors[c.String()] += n
		}
	}
	if ctx.Err() != nil {
		// Interrupted: the window did not run to its end.
		res.window = min(max(time.Since(win.start), 0), o.duration)
		cpuEnd, busyEnd = processCPU(), machineBusy()
	}
	res.cpu, res.busy = cpuEnd-cpuStart, busyEnd-busyStart
	return res
}

// callLoop is one caller: call, record, repeat until the window ends.
// Caller i of n walks rooms i, i+n, i+2n, ... (mod the number of rooms).
// With a number of rooms that is a multiple of n, callers never share a
// room — with -shards 64 -c 64 each shard has one caller of its own —, and
// with fewer rooms than callers each room keeps the same callers. (Stepping
// by one room made callers that met in a room walk on together, bunched
// into convoys on a few shards at a time.)
func callLoop(ctx context.Context, call caller, code func(error) codes.Code, rooms []string, i, n int, win *window, st *callerStats) {
	room := i % len(rooms)
	for ctx.Err() == nil {
		start := time.Now()
		err := call(ctx, rooms[room])
		end := time.Now()
		if end.After(win.start) && !end.After(win.end) {
			if err != nil {
				st.errors[code(err)]++
			} else {
				st.ops++
				st.hist.record(end.Sub(start))
			}
		}
		if end.After(win.end) {
			return
		}
		room = (room + n) % len(rooms)
	}
}

// seed makes sure every room has at least queryLimit messages so that a
// query phase reads full pages.
func seed(ctx context.Context, tr transport, o *options) error {
	jobs := make(chan string)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for i := range min(o.callers, o.shards*queryLimit) {
		call := tr.caller(i, mutation)
		wg.Go(func() {
			for room := range jobs {
				if err := call(ctx, room); err != nil {
					select {
					case errc <- fmt.Errorf("seeding room %s: %w", room, err):
					default:
					}
				}
			}
		})
	}
	for room := range o.shards {
		for range queryLimit {
			jobs <- roomName(room)
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// processCPU is the process's user+system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineBusy is the CPU time all CPUs of the machine have spent not idle
// (nor waiting for I/O) since boot, from /proc/stat; 0 where there is none.
// Compared with processCPU it shows how much else ran during a window.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0
	}
	var busy uint64
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0
		}
		// user nice system idle iowait irq softirq steal guest guest_nice;
		// guest time is already counted in user.
		if i == 3 || i == 4 || i >= 8 {
			continue
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/stat; 100 on every Linux
// architecture Go supports.
const clockTicks = 100
