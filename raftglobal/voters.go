package raftglobal

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// Raft membership follows the ring: a node that leaves (or is removed) is
// taken out of the Raft configuration, and the leader keeps
// Config.TargetVoters voters by promoting live non-voters. No change is
// made that would leave the voters without a quorum of live servers
// unless forced. See DESIGN.md, "Membership".

// Node states recorded in __lunora_nodes by the node layer. Non-voters in
// the states leaving, left or removed are never promoted.
const (
	NodeUp      = "up"
	NodeLeaving = "leaving"
	NodeLeft    = "left"
	NodeRemoved = "removed"
)

// ErrWouldLoseQuorum: a membership change was refused because, with the
// servers the leader cannot reach, the voters left would not have a quorum.
var ErrWouldLoseQuorum = api.New(codes.FailedPrecondition, "refused: the change would leave the global tier without a quorum of live voters")

// ErrStaleIncarnation: a join (or leave) of a node's process that a later
// leave (or a later process of the same node) has superseded.
var ErrStaleIncarnation = api.New(codes.FailedPrecondition, "stale incarnation: this process of the node has left, or a newer one has joined")

// health is the leader's view of which servers it can reach: hashicorp/raft
// reports every failed heartbeat to a server (FailedHeartbeatObservation)
// and the first success after failures (ResumedHeartbeatObservation). A
// server is live when its heartbeats are not failing and this node has
// been leader long enough for a failure to have shown (healthGrace).
//
// Observations are dropped when the channel is full (raft never blocks on
// an observer), so a failure is forgotten failingFor after the last one
// observed: heartbeats to a server that stays unreachable fail again well
// within that (every HeartbeatTimeout/2 at most, or once per transport
// timeout, 10 s, for a black hole), and a lost "resumed" cannot mark a
// server dead for good.
type health struct {
	mu      sync.Mutex
	since   time.Time            // when this node became leader; zero when it is not
	failing map[string]time.Time // last failed heartbeat, by server ID
}

const failingFor = 30 * time.Second

func (h *health) setLeader(leader bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failing = map[string]time.Time{}
	if leader {
		h.since = time.Now()
	} else {
		h.since = time.Time{}
	}
}

func (h *health) observe(o any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failing == nil {
		h.failing = map[string]time.Time{}
	}
	switch o := o.(type) {
	case raft.FailedHeartbeatObservation:
		h.failing[string(o.PeerID)] = time.Now()
	case raft.ResumedHeartbeatObservation:
		delete(h.failing, string(o.PeerID))
	case raft.PeerObservation:
		if o.Removed {
			delete(h.failing, string(o.Peer.ID))
		}
	}
}

func (h *health) isFailing(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	last, ok := h.failing[id]
	return ok && time.Since(last) < failingFor
}

func (h *health) leaderSince() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.since
}

// healthGrace is how long a new leader waits before trusting its view of
// which servers are live: heartbeats go out every HeartbeatTimeout/10, and
// one to a stopped process fails at once (connection refused).
func (s *Store) healthGrace() time.Duration { return s.cfg.HeartbeatTimeout }

// awaitHealth waits (bounded by ctx) until this leader's view of its
// servers' liveness is trustworthy.
func (s *Store) awaitHealth(ctx context.Context) error {
	for {
		if s.raft.State() != raft.Leader {
			return s.notLeader()
		}
		since := s.health.leaderSince()
		if !since.IsZero() && time.Since(since) >= s.healthGrace() {
			return nil
		}
		select {
		case <-ctx.Done():
			return api.Errorf(codes.Unavailable, "global tier: the leader is too new to know which servers are live: %v", ctx.Err())
		case <-s.closed:
			return ErrClosed
		case <-time.After(pollInterval):
		}
	}
}

// live reports whether the leader's heartbeats reach server id (itself
// included).
func (s *Store) live(id string) bool {
	return id == s.cfg.NodeID || !s.health.isFailing(id)
}

// probeTimeout bounds one Config.Probe call.
const probeTimeout = time.Second

// liveness is, for one membership decision, which servers count as live:
// those the leader's heartbeats reach and, with Config.Probe, that answer
// it now (in parallel, each bounded by probeTimeout). Heartbeats go out
// every HeartbeatTimeout/10, so a process killed a moment ago still looks
// live to them; the probe sees it at once.
func (s *Store) liveness(ctx context.Context, servers []raft.Server) map[string]bool {
	alive := make(map[string]bool, len(servers))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, srv := range servers {
		id := string(srv.ID)
		if id == s.cfg.NodeID || !s.live(id) || s.cfg.Probe == nil {
			mu.Lock()
			alive[id] = id == s.cfg.NodeID || s.live(id)
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, probeTimeout)
			ok := s.cfg.Probe(pctx, id)
			cancel()
			mu.Lock()
			alive[id] = ok
			mu.Unlock()
		}()
	}
	wg.Wait()
	return alive
}

// Health returns, on the leader, the servers whose heartbeats are failing,
// by ID, with the last failure; nil on a follower.
func (s *Store) Health() map[string]time.Time {
	if s.raft.State() != raft.Leader {
		return nil
	}
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	out := make(map[string]time.Time, len(s.health.failing))
	for id, t := range s.health.failing {
		if time.Since(t) < failingFor {
			out[id] = t
		}
	}
	return out
}

func quorum(voters int) int { return voters/2 + 1 }

// membershipContext bounds a membership operation: a promotion, a
// leadership transfer and a removal may each take up to ApplyTimeout.
func (s *Store) membershipContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, 3*s.cfg.ApplyTimeout)
}

// configuration is the leader's latest Raft configuration.
func (s *Store) configuration() ([]raft.Server, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, s.raftError(err)
	}
	return f.Configuration().Servers, nil
}

// unpromotable returns the nodes whose recorded state rules out a
// promotion (leaving, left or removed).
func (s *Store) unpromotable(ctx context.Context) map[string]bool {
	out := map[string]bool{}
	nodes, err := s.Nodes(ctx)
	if err != nil {
		return out
	}
	for _, n := range nodes {
		if n.State == NodeLeaving || n.State == NodeLeft || n.State == NodeRemoved {
			out[n.ID] = true
		}
	}
	return out
}

// promotable returns the live non-voters that may become voters, by ID,
// leaving out except.
func (s *Store) promotable(ctx context.Context, servers []raft.Server, except string, alive map[string]bool) []raft.Server {
	skip := s.unpromotable(ctx)
	var out []raft.Server
	for _, srv := range servers {
		id := string(srv.ID)
		if srv.Suffrage != raft.Voter && id != except && !skip[id] && alive[id] {
			out = append(out, srv)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// voterCounts counts the voters of servers and the live ones among them.
func (s *Store) voterCounts(servers []raft.Server, alive map[string]bool) (voters, live int, down []string) {
	for _, srv := range servers {
		if srv.Suffrage != raft.Voter {
			continue
		}
		voters++
		if alive[string(srv.ID)] {
			live++
		} else {
			down = append(down, string(srv.ID))
		}
	}
	return voters, live, down
}

// RemoveOptions adjust RemoveWith.
type RemoveOptions struct {
	// Force removes the server even when the voters left would not have a
	// quorum of live servers (the global tier is then unavailable until
	// enough of them come back).
	Force bool
	// DryRun makes every check (leader, quorum) and changes nothing: a
	// caller with other changes to make first asks whether the removal
	// would be refused.
	DryRun bool
}

// Remove takes a server out of the Raft configuration (leader only): on a
// graceful leave, or to drop a dead node. Removing a server that is not a
// member does nothing. When the server is a voter and the voters left
// would be fewer than TargetVoters, a live non-voter is promoted — before
// the removal when the leaving server is live (the voters never drop below
// a quorum of live servers), after it when it is dead. A removal that
// would leave the voters without a quorum of the servers the leader can
// reach is refused with ErrWouldLoseQuorum. The leader removing itself
// first hands its leadership to a live voter and answers *NotLeaderError
// naming it: ask the new leader.
func (s *Store) Remove(ctx context.Context, id string) error {
	return s.RemoveWith(ctx, id, RemoveOptions{})
}

// RemoveWith is Remove with options.
func (s *Store) RemoveWith(ctx context.Context, id string, opts RemoveOptions) error {
	if id == "" {
		return api.Errorf(codes.InvalidArgument, "remove needs a server ID")
	}
	ctx, cancel := s.membershipContext(ctx)
	defer cancel()
	s.memberMu.Lock()
	defer s.memberMu.Unlock()
	if err := s.requireLeader(ctx); err != nil {
		return err
	}
	if err := s.awaitHealth(ctx); err != nil {
		return err
	}
	servers, err := s.configuration()
	if err != nil {
		return err
	}
	var leaving *raft.Server
	for i := range servers {
		if string(servers[i].ID) == id {
			leaving = &servers[i]
		}
	}
	if leaving == nil {
		return nil
	}
	if leaving.Suffrage != raft.Voter {
		if opts.DryRun {
			return nil
		}
		return s.removeServer(ctx, id)
	}
	alive := s.liveness(ctx, servers)
	voters, live, down := s.voterCounts(servers, alive)
	if voters == 1 {
		return api.Wrap(ErrWouldLoseQuorum, fmt.Sprintf("%s is the last voter", id))
	}
	leavingLive := alive[id]
	var promote *raft.Server
	if voters-1 < s.cfg.TargetVoters {
		if c := s.promotable(ctx, servers, id, alive); len(c) > 0 {
			promote = &c[0]
		}
	}
	// The live voters after the change (and after each of its steps) must
	// be a quorum of the voters then.
	after, liveAfter := voters-1, live
	if leavingLive {
		liveAfter--
	}
	ok := liveAfter >= quorum(after)
	if promote != nil {
		after++
		liveAfter++
		if leavingLive {
			// Promote first: voters+1 with live+1.
			ok = live+1 >= quorum(voters+1) && liveAfter >= quorum(after)
		} else {
			// Remove first: voters-1 with live, then the promotion.
			ok = live >= quorum(voters-1) && liveAfter >= quorum(after)
		}
	}
	if !ok {
		detail := fmt.Sprintf("removing %s leaves %d voters of which %d are live (a quorum is %d); unreachable voters: %s",
			id, after, liveAfter, quorum(after), strings.Join(down, ", "))
		if !opts.Force {
			return api.Wrap(ErrWouldLoseQuorum, detail+"; bring them back, or force it")
		}
		if !opts.DryRun {
			s.log.Warn("forced removal of a voter without a quorum of live voters left", "id", id, "detail", detail)
		}
	}
	if opts.DryRun {
		return nil
	}
	if promote != nil && leavingLive {
		if err := s.promote(ctx, *promote); err != nil {
			return err
		}
	}
	if id == s.cfg.NodeID {
		// A leader removing itself hands leadership over first, so the
		// others do not wait an election timeout; the caller then asks
		// the new leader, which removes this node.
		if err := s.transferLeadership(ctx, id, alive); err == nil {
			return s.notLeader()
		} else {
			s.log.Warn("leadership transfer before leaving failed; removing this leader directly", "err", err)
		}
	}
	if err := s.removeServer(ctx, id); err != nil {
		return err
	}
	if promote != nil && !leavingLive && id != s.cfg.NodeID {
		if err := s.promote(ctx, *promote); err != nil {
			return err
		}
	}
	s.kickVoters()
	return nil
}

func (s *Store) removeServer(ctx context.Context, id string) error {
	start := time.Now()
	if err := waitFuture(ctx, s.raft.RemoveServer(raft.ServerID(id), 0, s.cfg.ApplyTimeout)); err != nil {
		return s.raftError(err)
	}
	s.log.Info("server removed", "id", id, "took", time.Since(start))
	return nil
}

// demotable picks the voter to demote when there are too many: one of a
// node recorded as leaving, left or removed (gone) if any, else an
// unreachable one, else the highest ID; never this leader.
func (s *Store) demotable(servers []raft.Server, alive, gone map[string]bool) (raft.Server, bool) {
	var out []raft.Server
	for _, srv := range servers {
		if srv.Suffrage == raft.Voter && string(srv.ID) != s.cfg.NodeID {
			out = append(out, srv)
		}
	}
	if len(out) == 0 {
		return raft.Server{}, false
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := string(out[i].ID), string(out[j].ID)
		if gone[a] != gone[b] {
			return gone[a]
		}
		if alive[a] != alive[b] {
			return !alive[a]
		}
		return a > b
	})
	return out[0], true
}

func (s *Store) demote(ctx context.Context, srv raft.Server) error {
	start := time.Now()
	if err := waitFuture(ctx, s.raft.DemoteVoter(srv.ID, 0, s.cfg.ApplyTimeout)); err != nil {
		return s.raftError(err)
	}
	s.log.Info("voter demoted to non-voter: more voters than the target", "id", srv.ID, "took", time.Since(start))
	return nil
}

func (s *Store) promote(ctx context.Context, srv raft.Server) error {
	start := time.Now()
	if err := waitFuture(ctx, s.raft.AddVoter(srv.ID, srv.Address, 0, s.cfg.ApplyTimeout)); err != nil {
		return s.raftError(err)
	}
	s.log.Info("non-voter promoted to voter", "id", srv.ID, "took", time.Since(start))
	return nil
}

// transferLeadership hands this leader's leadership to a live voter other
// than except and waits until this node is no longer the leader.
func (s *Store) transferLeadership(ctx context.Context, except string, alive map[string]bool) error {
	servers, err := s.configuration()
	if err != nil {
		return err
	}
	if alive == nil {
		alive = s.liveness(ctx, servers)
	}
	var to *raft.Server
	for i := range servers {
		srv := &servers[i]
		id := string(srv.ID)
		if srv.Suffrage == raft.Voter && id != except && id != s.cfg.NodeID && alive[id] {
			to = srv
			break
		}
	}
	if to == nil {
		return api.Errorf(codes.FailedPrecondition, "no live voter to hand leadership to")
	}
	start := time.Now()
	if err := waitFuture(ctx, s.raft.LeadershipTransferToServer(to.ID, to.Address)); err != nil {
		return err
	}
	for s.raft.State() == raft.Leader {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
	s.log.Info("leadership handed over", "to", to.ID, "took", time.Since(start))
	return nil
}

// TransferLeadership hands leadership to a live voter (leader only); a
// leaving node calls it before it stops.
func (s *Store) TransferLeadership(ctx context.Context) error {
	ctx, cancel := s.membershipContext(ctx)
	defer cancel()
	s.memberMu.Lock()
	defer s.memberMu.Unlock()
	if err := s.requireLeader(ctx); err != nil {
		return err
	}
	if err := s.awaitHealth(ctx); err != nil {
		return err
	}
	return s.transferLeadership(ctx, "", nil)
}

// AddServer makes a node a member (leader only): a non-voter that
// replicates and serves reads; the leader promotes it when there are
// fewer than TargetVoters voters. A member keeps its role (its address is
// updated). incarnation identifies the node's process (see ChangeRing): a
// process that has left, or that a newer process of the node has
// superseded, is refused with ErrStaleIncarnation; 0 skips the check.
func (s *Store) AddServer(ctx context.Context, id, addr string, incarnation uint64) error {
	if id == "" || addr == "" {
		return api.Errorf(codes.InvalidArgument, "join needs a server ID and a Raft address")
	}
	ctx, cancel := s.writeContext(ctx)
	defer cancel()
	s.memberMu.Lock()
	defer s.memberMu.Unlock()
	if err := s.requireLeader(ctx); err != nil {
		return err
	}
	if incarnation > 0 {
		if stale, err := s.staleIncarnation(ctx, id, incarnation); err != nil {
			return err
		} else if stale {
			return api.Wrap(ErrStaleIncarnation, fmt.Sprintf("node %s incarnation %d", id, incarnation))
		}
	}
	servers, err := s.configuration()
	if err != nil {
		return err
	}
	for _, srv := range servers {
		if string(srv.ID) == id && string(srv.Address) == addr {
			s.kickVoters()
			return nil
		}
	}
	var f raft.IndexFuture
	voter := false
	for _, srv := range servers {
		if string(srv.ID) == id && srv.Suffrage == raft.Voter {
			voter = true
		}
	}
	if voter {
		f = s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, s.cfg.ApplyTimeout)
	} else {
		f = s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, s.cfg.ApplyTimeout)
	}
	if err := waitFuture(ctx, f); err != nil {
		return s.raftError(err)
	}
	s.log.Info("server joined", "id", id, "addr", addr, "voter", voter)
	s.kickVoters()
	return nil
}

// kickVoters asks the voter keeper to look at the configuration now.
func (s *Store) kickVoters() {
	select {
	case s.votersKick <- struct{}{}:
	default:
	}
}

// keepVoters runs on every node; on the leader it promotes live
// non-voters while there are fewer than TargetVoters voters, and demotes
// voters while there are more, after every membership change and every
// VoterCheckInterval.
func (s *Store) keepVoters() {
	defer s.wg.Done()
	tick := time.NewTicker(s.cfg.VoterCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.closed:
			return
		case <-tick.C:
		case <-s.votersKick:
		}
		if s.raft.State() != raft.Leader {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ApplyTimeout)
		if err := s.ensureVoters(ctx); err != nil {
			s.log.Debug("keep voters", "err", err)
		}
		cancel()
	}
}

// ensureVoters promotes live non-voters (by ID) until there are
// TargetVoters voters or none is left to promote, and demotes voters
// (unreachable ones first, never the leader) while there are more — a
// leave that promoted a replacement and then could not remove its voter
// (its deadline passed) leaves one too many. Each step only if the live
// voters stay a quorum.
func (s *Store) ensureVoters(ctx context.Context) error {
	s.memberMu.Lock()
	defer s.memberMu.Unlock()
	if err := s.requireLeader(ctx); err != nil {
		return err
	}
	if err := s.awaitHealth(ctx); err != nil {
		return err
	}
	for {
		servers, err := s.configuration()
		if err != nil {
			return err
		}
		if voters, _, _ := s.voterCounts(servers, nil); voters == s.cfg.TargetVoters {
			return nil
		}
		alive := s.liveness(ctx, servers)
		voters, live, _ := s.voterCounts(servers, alive)
		if voters > s.cfg.TargetVoters {
			d, ok := s.demotable(servers, alive, s.unpromotable(ctx))
			if !ok {
				return nil
			}
			liveAfter := live
			if alive[string(d.ID)] {
				liveAfter--
			}
			if liveAfter < quorum(voters-1) {
				return nil
			}
			if err := s.demote(ctx, d); err != nil {
				return err
			}
			continue
		}
		c := s.promotable(ctx, servers, "", alive)
		if len(c) == 0 || live+1 < quorum(voters+1) {
			return nil
		}
		if err := s.promote(ctx, c[0]); err != nil {
			return err
		}
	}
}
