package nodetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/node"
	"github.com/lunora/lunora/rpc"
	"google.golang.org/grpc/codes"
)

// Server is the node API as the network delivers calls to it: *node.Node.
// rpc/node_server.go and rpc/cluster.go serve the same methods over gRPC;
// the network reproduces what that hop does to a call (see invoke).
type Server interface {
	Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error)
	Exec(ctx context.Context, shardID, sql string, params map[string]any, read api.ReadOptions) (*api.Result, error)
	Join(ctx context.Context, req api.JoinRequest) (string, error)
	RemoveNode(ctx context.Context, req api.RemoveRequest) error
	RegisterShard(ctx context.Context, shardID, owner string, forwarded bool) (bool, string, error)
	Ring(ctx context.Context, minEpoch uint64) (*api.Ring, error)
	UpdateRing(ctx context.Context, req api.RingChange) (uint64, error)
	MoveShard(ctx context.Context, shardID, from, to string, toIncarnation uint64, forwarded bool) (string, uint64, error)
	Pull(ctx context.Context, shardID, to string, epoch uint64) (uint64, error)
	ReceiveHandoff(ctx context.Context, h api.HandoffHeader, r io.Reader, sum []byte) error
	HandoffDone(ctx context.Context, shardID string, index uint64) error
}

// Network is an in-memory network between the nodes' node APIs, with
// fault hooks in the manner of hashicorp/raft's InmemTransport. A call
// from one node to another runs the target's method in a goroutine of its
// own with what a gRPC hop gives the server: a fresh context that
// keeps only the caller's deadline and cancellation (and, for Call and
// Exec, the ring epoch the request carries), arguments and results
// through their protobuf conversions, and errors through
// rpc.ToStatus/rpc.FromStatus, so they arrive as *api.Error with the code,
// message, reason and retry hint a remote node would send.
//
// Faults, all safe to change while calls run:
//   - a node that is down (not registered) refuses at once: UNAVAILABLE,
//     errors.Is rpc.ErrNotSent (gRPC's "connection refused");
//   - nodes in different partition groups do not reach each other: the
//     call blocks until its context ends or UnreachableAfter passes (a
//     blackholed connection), then UNAVAILABLE, ErrNotSent;
//   - SetDrop loses a fraction of calls, half before delivery (not sent)
//     and half after the target ran them (the answer is lost: UNAVAILABLE
//     without ErrNotSent, as a reset connection);
//   - SetDelay delays each call by up to a bound, honouring its context;
//   - a node that dies during a call (its process context ends) loses the
//     answer, and a handoff stream breaks when its ends are cut apart.
//
// Randomness comes from the seed given to NewNetwork.
type Network struct {
	mu     sync.Mutex
	byAddr map[string]*endpoint
	groups map[string]int // node ID → partition group; absent: 0
	rng    *rand.Rand
	drop   float64
	delay  time.Duration

	// UnreachableAfter bounds how long a call across a partition hangs
	// when its context has no earlier deadline (gRPC's connect and
	// keepalive timeouts, scaled down for tests). Set before use.
	UnreachableAfter time.Duration

	calls, refused, cut, dropped atomic.Int64
}

type endpoint struct {
	id, addr string
	srv      Server
	alive    context.Context // ends when the process dies
	handlers sync.WaitGroup  // calls the target is running
}

// NewNetwork returns an empty network whose faults draw from seed.
func NewNetwork(seed uint64) *Network {
	return &Network{
		byAddr:           map[string]*endpoint{},
		groups:           map[string]int{},
		rng:              rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		UnreachableAfter: time.Second,
	}
}

// Register makes srv reachable at addr as node id until alive ends or
// Unregister is called; it replaces whatever was at addr.
func (n *Network) Register(id, addr string, srv Server, alive context.Context) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.byAddr[addr] = &endpoint{id: id, addr: addr, srv: srv, alive: alive}
}

// Unregister takes the node at addr off the network: calls to it are
// refused from now on. It returns a func that waits, up to timeout, for
// the calls the node is still running (their contexts end with its
// process) and reports whether they all returned.
func (n *Network) Unregister(addr string) (wait func(timeout time.Duration) bool) {
	n.mu.Lock()
	ep := n.byAddr[addr]
	delete(n.byAddr, addr)
	n.mu.Unlock()
	return func(timeout time.Duration) bool {
		if ep == nil {
			return true
		}
		done := make(chan struct{})
		go func() { ep.handlers.Wait(); close(done) }()
		select {
		case <-done:
			return true
		case <-time.After(timeout):
			return false
		}
	}
}

// SetGroups sets the partition groups: nodes in different groups do not
// reach each other; a node not named is in group 0. Nil heals.
func (n *Network) SetGroups(groups map[string]int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.groups = map[string]int{}
	for id, g := range groups {
		n.groups[id] = g
	}
}

// SetDrop makes the network lose the fraction p (0–1) of calls.
func (n *Network) SetDrop(p float64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.drop = p
}

// SetDelay delays every call by a random duration up to max (0: none).
func (n *Network) SetDelay(max time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.delay = max
}

// Reachable reports whether node from reaches node to (by ID) now.
func (n *Network) Reachable(from, to string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.groups[from] == n.groups[to]
}

// reachableAddr reports whether node from reaches a live node at addr.
func (n *Network) reachableAddr(from, addr string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	ep := n.byAddr[addr]
	return ep != nil && ep.alive.Err() == nil && n.groups[from] == n.groups[ep.id]
}

// NetworkStats counts what the network did.
type NetworkStats struct {
	Calls, Refused, Cut, Dropped int64
}

// Stats returns the counts so far.
func (n *Network) Stats() NetworkStats {
	return NetworkStats{Calls: n.calls.Load(), Refused: n.refused.Load(), Cut: n.cut.Load(), Dropped: n.dropped.Load()}
}

// Peer returns node from's client for the node API at addr (a node.Peer,
// what Config.Dial returns). It finds the target at each call, so it
// reaches the node's next process after a restart.
func (n *Network) Peer(from, addr string) node.Peer {
	return &peer{net: n, from: from, addr: addr, alive: context.Background()}
}

// ProcessPeer is Peer for a client inside a process that can die: once
// alive ends, the process's calls are refused before they leave it — a
// killed process reaches no one, whatever its goroutines still try.
func (n *Network) ProcessPeer(from string, alive context.Context, addr string) node.Peer {
	return &peer{net: n, from: from, addr: addr, alive: alive}
}

// plan is what the network decided for one call.
type plan struct {
	ep        *endpoint
	delay     time.Duration
	dropAfter bool
}

func (n *Network) route(ctx context.Context, from, addr string) (plan, error) {
	n.calls.Add(1)
	n.mu.Lock()
	ep := n.byAddr[addr]
	var p plan
	dropBefore := false
	if n.drop > 0 && n.rng.Float64() < n.drop {
		if n.rng.IntN(2) == 0 {
			dropBefore = true
		} else {
			p.dropAfter = true
		}
	}
	if n.delay > 0 {
		p.delay = time.Duration(n.rng.Int64N(int64(n.delay)) + 1)
	}
	cut := ep != nil && n.groups[from] != n.groups[ep.id]
	n.mu.Unlock()
	switch {
	case ep == nil || ep.alive.Err() != nil:
		n.refused.Add(1)
		return p, notSent(addr, "connection refused")
	case cut:
		n.cut.Add(1)
		return p, n.hang(ctx, addr)
	case dropBefore:
		n.dropped.Add(1)
		return p, notSent(addr, "connection reset before the request was sent")
	}
	if p.delay > 0 {
		t := time.NewTimer(p.delay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return p, fromContext(ctx.Err())
		case <-t.C:
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.byAddr[addr] != ep {
		n.refused.Add(1)
		return p, notSent(addr, "connection refused")
	}
	ep.handlers.Add(1) // under mu: Unregister's wait sees it
	p.ep = ep
	return p, nil
}

// hang is a call into a partition: nothing answers.
func (n *Network) hang(ctx context.Context, addr string) error {
	t := time.NewTimer(n.UnreachableAfter)
	defer t.Stop()
	select {
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.Canceled) {
			return fromContext(ctx.Err())
		}
	case <-t.C:
	}
	return notSent(addr, "unreachable: no connection could be made")
}

func notSent(addr, why string) error {
	return &api.Error{Code: codes.Unavailable, Msg: "node " + addr + ": " + why, Err: fmt.Errorf("%w: %s", rpc.ErrNotSent, why)}
}

func lost(addr, why string) error {
	return &api.Error{Code: codes.Unavailable, Msg: "node " + addr + ": " + why}
}

func fromContext(err error) error {
	return rpc.FromStatus(rpc.ToStatus(err))
}

// wire is what an error becomes on its way back over gRPC
// (rpc.NodeClient's conversion included).
func wire(addr string, err error) error {
	if err == nil {
		return nil
	}
	converted := rpc.FromStatus(rpc.ToStatus(err))
	var e *api.Error
	if errors.As(converted, &e) && e.Code == codes.Unavailable && e.Reason == "" {
		return &api.Error{Code: codes.Unavailable, Msg: "node " + addr + ": " + e.Msg, RetryAfter: e.RetryAfter, Err: e}
	}
	return converted
}

// serverContext is the context a gRPC server gives its handler: the
// caller's deadline and cancellation, none of its values, and it ends
// when the serving process dies.
func serverContext(caller, alive context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	if d, ok := caller.Deadline(); ok {
		var cancelDeadline context.CancelFunc
		ctx, cancelDeadline = context.WithDeadline(ctx, d)
		parent := cancel
		cancel = func() { cancelDeadline(); parent() }
	}
	stopCaller := context.AfterFunc(caller, cancel)
	stopAlive := context.AfterFunc(alive, cancel)
	return ctx, func() { stopCaller(); stopAlive(); cancel() }
}

// invoke delivers one call from p's node to its target.
func invoke[T any](ctx context.Context, p *peer, call func(ctx context.Context, s Server) (T, error)) (T, error) {
	var zero T
	if p.alive.Err() != nil {
		p.net.refused.Add(1)
		return zero, notSent(p.addr, "the calling process is dead")
	}
	pl, err := p.net.route(ctx, p.from, p.addr)
	if err != nil {
		return zero, err
	}
	sctx, cancel := serverContext(ctx, pl.ep.alive)
	defer cancel()
	// The target runs the call in a goroutine of its own, as a gRPC
	// server does: a caller whose context ends, or whose target dies (a
	// goroutine of a killed process may never return), has its answer at
	// once.
	type answer struct {
		v   T
		err error
	}
	done := make(chan answer, 1)
	go func() {
		defer pl.ep.handlers.Done()
		v, err := call(sctx, pl.ep.srv)
		done <- answer{v, err}
	}()
	var v T
	select {
	case a := <-done:
		v, err = a.v, a.err
	case <-pl.ep.alive.Done():
	case <-ctx.Done():
		return zero, fromContext(ctx.Err())
	}
	switch {
	case pl.ep.alive.Err() != nil:
		return zero, lost(p.addr, "the node went away during the call")
	case !p.net.Reachable(p.from, pl.ep.id):
		p.net.cut.Add(1)
		return zero, lost(p.addr, "the connection was cut during the call")
	case pl.dropAfter:
		p.net.dropped.Add(1)
		return zero, lost(p.addr, "connection reset before the answer arrived")
	case ctx.Err() != nil:
		return zero, fromContext(ctx.Err())
	}
	if err != nil {
		return zero, wire(p.addr, err)
	}
	return v, nil
}

// peer is one node's client for another node's API: a node.Peer.
type peer struct {
	net   *Network
	from  string // the calling node's ID
	addr  string
	alive context.Context // the calling process's life
}

var _ node.Peer = (*peer)(nil)

func (p *peer) Call(ctx context.Context, shardID, function string, args map[string]any, read api.ReadOptions) (*api.Result, error) {
	pargs, err := rpc.ArgsToProto(args)
	if err != nil {
		return nil, err
	}
	epoch, pread, fwd := api.RingEpochOf(ctx), rpc.ReadOptionsToProto(read), read.Forwarded
	return invoke(ctx, p, func(ctx context.Context, s Server) (*api.Result, error) {
		r := rpc.ReadOptionsFromProto(pread)
		r.Forwarded = fwd
		res, err := s.Call(api.WithRingEpoch(ctx, epoch), shardID, function, rpc.ArgsFromProto(pargs), r)
		if err != nil {
			return nil, err
		}
		resp, err := rpc.CallResponseFromResult(res)
		if err != nil {
			return nil, err
		}
		return rpc.ResultFromCallResponse(resp), nil
	})
}

func (p *peer) Exec(ctx context.Context, shardID, sql string, params map[string]any, read api.ReadOptions) (*api.Result, error) {
	pparams, err := rpc.ArgsToProto(params)
	if err != nil {
		return nil, err
	}
	epoch, pread, fwd := api.RingEpochOf(ctx), rpc.ReadOptionsToProto(read), read.Forwarded
	return invoke(ctx, p, func(ctx context.Context, s Server) (*api.Result, error) {
		r := rpc.ReadOptionsFromProto(pread)
		r.Forwarded = fwd
		res, err := s.Exec(api.WithRingEpoch(ctx, epoch), shardID, sql, rpc.ArgsFromProto(pparams), r)
		if err != nil {
			return nil, err
		}
		resp, err := rpc.SqlResponseFromResult(res)
		if err != nil {
			return nil, err
		}
		return rpc.ResultFromSqlResponse(resp), nil
	})
}

func (p *peer) Join(ctx context.Context, req api.JoinRequest) (string, error) {
	return invoke(ctx, p, func(ctx context.Context, s Server) (string, error) { return s.Join(ctx, req) })
}

func (p *peer) RemoveNode(ctx context.Context, req api.RemoveRequest) error {
	_, err := invoke(ctx, p, func(ctx context.Context, s Server) (struct{}, error) { return struct{}{}, s.RemoveNode(ctx, req) })
	return err
}

type registered struct {
	existed bool
	holder  string
}

func (p *peer) RegisterShard(ctx context.Context, shardID, owner string, forwarded bool) (bool, string, error) {
	r, err := invoke(ctx, p, func(ctx context.Context, s Server) (registered, error) {
		existed, holder, err := s.RegisterShard(ctx, shardID, owner, forwarded)
		return registered{existed, holder}, err
	})
	return r.existed, r.holder, err
}

func (p *peer) Ring(ctx context.Context, minEpoch uint64) (*api.Ring, error) {
	return invoke(ctx, p, func(ctx context.Context, s Server) (*api.Ring, error) {
		r, err := s.Ring(ctx, minEpoch)
		if err != nil {
			return nil, err
		}
		return rpc.RingFromProto(rpc.RingToProto(r)), nil
	})
}

func (p *peer) UpdateRing(ctx context.Context, req api.RingChange) (uint64, error) {
	return invoke(ctx, p, func(ctx context.Context, s Server) (uint64, error) { return s.UpdateRing(ctx, req) })
}

type moved struct {
	holder string
	index  uint64
}

func (p *peer) MoveShard(ctx context.Context, shardID, from, to string, toIncarnation uint64, forwarded bool) (string, uint64, error) {
	m, err := invoke(ctx, p, func(ctx context.Context, s Server) (moved, error) {
		holder, idx, err := s.MoveShard(ctx, shardID, from, to, toIncarnation, forwarded)
		return moved{holder, idx}, err
	})
	return m.holder, m.index, err
}

func (p *peer) Pull(ctx context.Context, shardID, to string, epoch uint64) (uint64, error) {
	return invoke(ctx, p, func(ctx context.Context, s Server) (uint64, error) { return s.Pull(ctx, shardID, to, epoch) })
}

func (p *peer) HandoffDone(ctx context.Context, shardID string, index uint64) error {
	_, err := invoke(ctx, p, func(ctx context.Context, s Server) (struct{}, error) {
		return struct{}{}, s.HandoffDone(ctx, shardID, index)
	})
	return err
}

// handoffChunk is how much of a handoff stream crosses the network at a
// time; the stream breaks between chunks when the network cuts its ends
// apart.
const handoffChunk = 64 << 10

// Handoff streams a shard's file through an io.Pipe to the target's
// ReceiveHandoff, as the gRPC client stream does.
func (p *peer) Handoff(ctx context.Context, h api.HandoffHeader, r io.Reader, sum []byte) error {
	sum = append([]byte(nil), sum...)
	pr, pw := io.Pipe()
	// An answer that comes early (the receiver died) unblocks the copy.
	defer pr.CloseWithError(io.ErrClosedPipe)
	_, err := invoke(ctx, p, func(ctx context.Context, s Server) (struct{}, error) {
		var readErr error
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, handoffChunk)
			for {
				if !p.net.reachableAddr(p.from, p.addr) {
					pw.CloseWithError(errors.New("handoff stream: the connection was cut"))
					return
				}
				n, rerr := r.Read(buf)
				if n > 0 {
					if _, werr := pw.Write(buf[:n]); werr != nil {
						return // the receiver stopped reading; its answer says why
					}
				}
				if rerr == io.EOF {
					pw.Close()
					return
				}
				if rerr != nil {
					readErr = rerr
					pw.CloseWithError(rerr)
					return
				}
			}
		}()
		err := s.ReceiveHandoff(ctx, h, pr, sum)
		pr.CloseWithError(io.ErrClosedPipe)
		<-done
		if readErr != nil {
			return struct{}{}, api.Errorf(codes.Internal, "handoff of shard %s: read: %v", h.ShardID, readErr)
		}
		return struct{}{}, err
	})
	return err
}
