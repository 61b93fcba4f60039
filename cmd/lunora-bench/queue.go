package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lunora/lunora/nodeproc"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/server"
	"github.com/lunora/lunora/shardhost"
)

// queueSchema is -mode queue's app: bench:emit inserts a row and enqueues
// a message carrying the producer's send time, in one mutation.
const queueSchema = `
tables:
  events:
    shard_by: room_id
    columns: {room_id: text, n: int, t: int}
    primary_key: [n]
queues:
  bench:
    max_attempts: 5
    visibility_timeout: 30s
functions:
  bench:emit:
    kind: mutation
    shard_by: room_id
    args: {room_id: text, t: int}
    sql:
      - INSERT INTO events(room_id, t) VALUES (:room_id, :t)
      - SELECT lunora_enqueue('bench', json_object('room_id', :room_id, 't', :t))
`

// emit is -mode queue's producer workload.
const emit workload = "emit"

// runQueue is -mode queue: -c producers call bench:emit on -shards rooms
// while N consumers (each -consumers value, one fresh in-process dev node
// per phase) take the messages over gRPC Consume and acknowledge them;
// first a phase with no consumer, the enqueue-only baseline.
func runQueue(ctx context.Context, o *options, dir, command string, stdout io.Writer, log *slog.Logger) error {
	info := runInfo{command: command, o: o, dataDir: dir,
		target: fmt.Sprintf("in-process dev node per phase (shard host + gateway + gRPC on loopback), synchronous=%s; producers call bench:emit (insert a row + lunora_enqueue) on %d rooms; consumers: gRPC Consume, prefetch %d, acks batched per consumer (up to 64, or after 2 ms)", o.synchronous, o.shards, o.prefetch)}
	var results []*phaseResult
	var base float64
	err := profile(o.cpuProfile, o.trace, func() error {
		for _, n := range append([]int{0}, o.consumers...) {
			r, err := queuePhase(ctx, o, filepath.Join(dir, "consumers-"+strconv.Itoa(n)), n, log)
			if err != nil {
				return err
			}
			if n == 0 {
				base = r.throughput()
			} else if base > 0 {
				r.note += fmt.Sprintf("; acked/s = %.2f× the enqueue-only phase", r.throughput()/base)
			}
			printPhase(stdout, r)
			results = append(results, r)
			if ctx.Err() != nil {
				break
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	printSummary(stdout, info, results)
	return ctx.Err()
}

// queuePhase measures one phase on a fresh node: with consumers, its ops
// are messages acknowledged in the window and its latencies enqueue → ack.
func queuePhase(ctx context.Context, o *options, dir string, consumers int, log *slog.Logger) (r *phaseResult, err error) {
	app, err := schema.Parse("queue-bench.yaml", []byte(queueSchema))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	sc := shardhost.DefaultConfig()
	sc.Synchronous = o.synchronous
	p, err := nodeproc.Start(nodeproc.Config{
		Dev: true, Shards: sc, Global: raftglobal.DefaultConfig(), App: app, Dir: dir, NodeID: "bench",
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", Logger: log, Registry: server.NewRegistry(),
	})
	if err != nil {
		return nil, fmt.Errorf("start the in-process node: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if serr := p.Shutdown(sctx); serr != nil && err == nil {
			err = serr
		}
	}()
	conns, err := dial(p.GRPCAddr, o.conns()+consumers)
	if err != nil {
		return nil, err
	}
	defer closeAll(conns)

	cctx, stop := context.WithCancel(ctx)
	defer stop()
	var inWindow atomic.Bool
	cs := make([]*consumerStats, consumers)
	var wg sync.WaitGroup
	for i := range cs {
		cs[i] = &consumerStats{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			consume(cctx, lunorav1.NewLunoraClient(conns[o.conns()+i]), o.prefetch, &inWindow, cs[i])
		}()
	}
	tr := emitTransport{grpcTransport{conns: conns[:o.conns()], perConn: o.callersPerConn}}
	var start, end time.Time
	var ackedStart, ackedEnd uint64
	acked := func() uint64 {
		var n uint64
		for _, c := range cs {
			n += c.acked.Load()
		}
		return n
	}
	r = runPhase(ctx, emit, tr, o,
		func() { start, ackedStart = time.Now(), acked(); inWindow.Store(true) },
		func() { end, ackedEnd = time.Now(), acked(); inWindow.Store(false) })
	stop()
	wg.Wait()
	produced := r.throughput()
	r.name = "queue bench: enqueue only"
	if consumers > 0 {
		r.name = fmt.Sprintf("queue bench: %d producers, %d consumer(s)", o.callers, consumers)
		var hist histogram
		var errs []string
		for _, c := range cs {
			hist.merge(&c.hist)
			if c.err != nil && ctx.Err() == nil {
				errs = append(errs, c.err.Error())
			}
		}
		r.ops, r.window, r.hist = ackedEnd-ackedStart, end.Sub(start), hist
		r.note = fmt.Sprintf("produced %.0f msgs/s in the same window; latency = enqueue call sent → ack sent", produced)
		if len(errs) > 0 {
			r.note += fmt.Sprintf("; consumer errors: %v", errs)
		}
	}
	return r, nil
}

// emitTransport's callers call bench:emit with their send time.
type emitTransport struct{ grpcTransport }

func (t emitTransport) caller(i int, _ workload) caller {
	client := lunorav1.NewLunoraClient(t.conns[i/t.perConn])
	return func(ctx context.Context, room string) error {
		_, err := client.Call(ctx, &lunorav1.CallRequest{Function: "bench:emit", Args: map[string]*lunorav1.Value{
			"room_id": text(room), "t": {Kind: &lunorav1.Value_Integer{Integer: time.Now().UnixNano()}},
		}})
		return err
	}
}

type consumerStats struct {
	acked atomic.Uint64
	hist  histogram // enqueue → ack, of messages acked in the window
	err   error
}

// consume takes messages from queue bench over one Consume stream and
// acknowledges them in batches (64, or what arrived within 2 ms).
func consume(ctx context.Context, client lunorav1.LunoraClient, prefetch int, inWindow *atomic.Bool, st *consumerStats) {
	stream, err := client.Consume(ctx)
	if err == nil {
		err = stream.Send(&lunorav1.ConsumeRequest{Request: &lunorav1.ConsumeRequest_Start{Start: &lunorav1.ConsumeStart{Queue: "bench", Prefetch: uint32(prefetch)}}})
	}
	if err != nil {
		st.err = err
		return
	}
	msgs := make(chan *lunorav1.QueueMessage, prefetch)
	recvErr := make(chan error, 1)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				recvErr <- err
				close(msgs)
				return
			}
			if m := resp.GetMessage(); m != nil {
				msgs <- m
			} else if s := resp.GetSettled(); s != nil {
				st.acked.Add(uint64(s.GetSettled()))
			}
		}
	}()
	var pending []string
	flush := func() {
		if len(pending) == 0 {
			return
		}
		if err := stream.Send(&lunorav1.ConsumeRequest{Request: &lunorav1.ConsumeRequest_Settle{Settle: &lunorav1.ConsumeSettle{Verb: lunorav1.SettleVerb_ACK, Receipts: pending}}}); err != nil && st.err == nil && ctx.Err() == nil {
			st.err = err
		}
		pending = nil
	}
	timer := time.NewTimer(time.Hour)
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				if err := <-recvErr; ctx.Err() == nil {
					st.err = err
				}
				return
			}
			var body struct{ T int64 }
			if json.Unmarshal([]byte(m.GetBody()), &body) == nil && inWindow.Load() {
				st.hist.record(time.Since(time.Unix(0, body.T)))
			}
			if len(pending) == 0 {
				timer.Reset(2 * time.Millisecond)
			}
			pending = append(pending, m.GetReceipt())
			if len(pending) >= 64 {
				flush()
			}
		case <-timer.C:
			flush()
		case <-ctx.Done():
			return
		}
	}
}
