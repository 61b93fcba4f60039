package raftglobal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

const (
	busyRetryAfter = 50 * time.Millisecond
	// maxInflightEntries bounds the batcher's Raft entries awaiting commit:
	// while they are in flight new Writes queue up and form the next batch.
	maxInflightEntries = 2
	// pollInterval paces the waits that have no notification to wait on
	// (an election, the local log reaching an index).
	pollInterval = 5 * time.Millisecond
)

// Store is one node's member of the global tier: its Raft server, durable
// log, snapshots and SQLite FSM. All methods are safe for concurrent use.
type Store struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics
	raft  *raft.Raft
	fsm   *fsm
	wal   walStore
	snaps *raft.FileSnapshotStore
	trans raft.Transport
	// ownTrans is the TCP transport Open made (closed by Close); nil when
	// the caller gave one.
	ownTrans *raft.NetworkTransport

	pending  chan *pendingWrite
	inflight chan struct{}

	notifyCh chan bool
	obsCh    chan raft.Observation
	observer *raft.Observer

	leadMu    sync.Mutex
	leadTerm  uint64        // the term in which this node's leader barrier applied
	leadReady chan struct{} // closed when it has
	leaderMu  sync.Mutex
	leaderCh  chan struct{} // closed at the next leader change

	// memberMu serialises this node's membership changes (voters.go);
	// health is its view, as leader, of which servers are live.
	memberMu   sync.Mutex
	health     health
	votersKick chan struct{}

	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup
}

// Member is one server of the Raft configuration.
type Member struct {
	ID     string
	Addr   string
	Voter  bool
	Leader bool
}

// Stats is a point-in-time view of the node's Raft and FSM state.
type Stats struct {
	State        string // Follower, Candidate, Leader, Shutdown
	Term         uint64
	LastIndex    uint64 // last entry in this node's log
	CommitIndex  uint64
	AppliedIndex uint64 // highest index in the FSM file
	LastContact  time.Time
	FSM          FSMStats
}

// Open starts this node's member of the global tier: it opens (or creates)
// the log, the snapshots and the FSM file under cfg.Dir, recovers a lost
// quorum if Dir/raft/peers.json asks for it, bootstraps if this node is in
// cfg.Bootstrap and has no state, and starts Raft.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.logger().With("node", cfg.NodeID)
	s := &Store{
		cfg:       cfg,
		log:       log,
		m:         newMetrics(),
		pending:   make(chan *pendingWrite, cfg.MaxPending),
		inflight:  make(chan struct{}, maxInflightEntries),
		notifyCh:  make(chan bool, 16),
		obsCh:     make(chan raft.Observation, 64),
		leadReady: make(chan struct{}),
		leaderCh:  make(chan struct{}),
		closed:    make(chan struct{}),

		votersKick: make(chan struct{}, 1),
	}
	ok := false
	defer func() {
		if !ok {
			s.closeStores()
		}
	}()
	raftDir := filepath.Join(cfg.Dir, "raft")
	if err := os.MkdirAll(raftDir, 0o755); err != nil {
		return nil, err
	}
	var err error
	s.wal, err = openWAL(raftDir, cfg.WALSegmentSize, newHCLogger(log.With("component", "raft-wal"), "raft-wal"))
	if err != nil {
		return nil, fmt.Errorf("raftglobal: open log in %s: %w", raftDir, err)
	}
	s.snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.SnapshotRetain, newHCLogger(log.With("component", "snapshots"), "snapshots"))
	if err != nil {
		return nil, fmt.Errorf("raftglobal: snapshot store: %w", err)
	}
	s.trans = cfg.Transport
	if s.trans == nil {
		// Without AdvertiseAddr the listener's own address is advertised
		// (BindAddr must then name an IP; port 0 picks a free port).
		var advAddr net.Addr
		if cfg.AdvertiseAddr != "" {
			a, err := net.ResolveTCPAddr("tcp", cfg.AdvertiseAddr)
			if err != nil {
				return nil, fmt.Errorf("raftglobal: AdvertiseAddr %q: %w", cfg.AdvertiseAddr, err)
			}
			advAddr = a
		}
		netLog := newHCLogger(log.With("component", "raft-net"), "raft-net")
		var nt *raft.NetworkTransport
		if cfg.TLSServer != nil || cfg.Secret != nil {
			nt, err = newTransport(cfg.BindAddr, advAddr, cfg.TLSServer, cfg.TLSClient, cfg.Secret, 3, 10*time.Second, netLog)
		} else {
			nt, err = raft.NewTCPTransportWithLogger(cfg.BindAddr, advAddr, 3, 10*time.Second, netLog)
		}
		if err != nil {
			return nil, fmt.Errorf("raftglobal: listen on %s: %w", cfg.BindAddr, err)
		}
		s.ownTrans, s.trans = nt, nt
	}
	s.fsm, err = openFSM(&s.cfg, log, s.m)
	if err != nil {
		return nil, err
	}
	if err := s.fsm.restoreIfBehind(s.snaps); err != nil {
		return nil, fmt.Errorf("raftglobal: %w", err)
	}

	rc := cfg.raftConfig(log)
	rc.NotifyCh = s.notifyCh
	if err := s.recoverFromPeersFile(rc, raftDir); err != nil {
		return nil, err
	}
	logs, err := raft.NewLogCache(512, s.wal)
	if err != nil {
		return nil, err
	}
	has, err := raft.HasExistingState(logs, s.wal, s.snaps)
	if err != nil {
		return nil, fmt.Errorf("raftglobal: check Raft state: %w", err)
	}
	s.raft, err = raft.NewRaft(rc, s.fsm, logs, s.wal, s.snaps, s.trans)
	if err != nil {
		return nil, fmt.Errorf("raftglobal: start Raft: %w", err)
	}
	if !has && s.inBootstrap() {
		var conf raft.Configuration
		for _, b := range cfg.Bootstrap {
			addr := raft.ServerAddress(b.Addr)
			if addr == "" {
				addr = s.trans.LocalAddr()
			}
			conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(b.ID), Address: addr})
		}
		if err := s.raft.BootstrapCluster(conf).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			s.raft.Shutdown().Error()
			return nil, fmt.Errorf("raftglobal: bootstrap: %w", err)
		}
		log.Info("bootstrapped the global tier", "voters", len(conf.Servers))
	}
	s.observer = raft.NewObserver(s.obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation, raft.PeerObservation:
			return true
		}
		return false
	})
	s.raft.RegisterObserver(s.observer)
	if cfg.Registerer != nil {
		if err := s.m.register(cfg.Registerer, s); err != nil {
			s.raft.DeregisterObserver(s.observer)
			s.raft.Shutdown().Error()
			return nil, fmt.Errorf("raftglobal: register metrics: %w", err)
		}
	}
	s.wg.Add(4)
	go s.watchLeadership()
	go s.watchLeader()
	go s.runBatcher()
	go s.keepVoters()
	ok = true
	return s, nil
}

func (s *Store) inBootstrap() bool {
	for _, b := range s.cfg.Bootstrap {
		if b.ID == s.cfg.NodeID {
			return true
		}
	}
	return false
}

// recoverFromPeersFile applies Dir/raft/peers.json, the operator's way out
// of a lost quorum (see DESIGN.md): the file lists the surviving servers in
// hashicorp/raft's configuration format, raft.RecoverCluster makes it the
// configuration, and the file is renamed so it is applied once.
func (s *Store) recoverFromPeersFile(rc *raft.Config, raftDir string) error {
	path := filepath.Join(raftDir, "peers.json")
	if _, err := os.Stat(path); os.IsNotExist(err) {
		return nil
	}
	conf, err := raft.ReadConfigJSON(path)
	if err != nil {
		return fmt.Errorf("raftglobal: read %s: %w", path, err)
	}
	s.log.Warn("recovering the global tier from peers.json", "servers", fmt.Sprintf("%+v", conf.Servers))
	if err := raft.RecoverCluster(rc, recoveryFSM{s.fsm}, s.wal, s.wal, s.snaps, s.trans, conf); err != nil {
		return fmt.Errorf("raftglobal: recover from %s: %w", path, err)
	}
	return os.Rename(path, path+".applied")
}

// recoveryFSM is the FSM as raft.RecoverCluster gets it: v1.8.0 persists
// the snapshot it takes but never releases it, so Persist releases it.
type recoveryFSM struct{ *fsm }

func (r recoveryFSM) Snapshot() (raft.FSMSnapshot, error) {
	snap, err := r.fsm.Snapshot()
	if err != nil {
		return nil, err
	}
	return releaseAfterPersist{snap.(*fsmSnapshot)}, nil
}

type releaseAfterPersist struct{ *fsmSnapshot }

func (s releaseAfterPersist) Persist(sink raft.SnapshotSink) error {
	defer s.Release()
	return s.fsmSnapshot.Persist(sink)
}

// Close stops this node: it stops accepting
// requests, shuts Raft down and closes the files. It does not remove the
// node from the configuration (call Remove on the leader for that).
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		if s.raft != nil {
			s.raft.DeregisterObserver(s.observer)
			err = s.raft.Shutdown().Error()
		}
		s.wg.Wait()
		s.failPending()
		if s.cfg.Registerer != nil {
			s.m.unregister(s.cfg.Registerer, s)
		}
		if cerr := s.closeStores(); err == nil {
			err = cerr
		}
	})
	return err
}

func (s *Store) closeStores() error {
	var errs []error
	if s.fsm != nil {
		errs = append(errs, s.fsm.close())
	}
	if s.ownTrans != nil {
		errs = append(errs, s.ownTrans.Close())
	}
	if s.wal.WAL != nil {
		errs = append(errs, s.wal.Close())
	}
	return errors.Join(errs...)
}

// watchLeadership follows this node's own leadership. On winning it writes
// a barrier entry in the new term; strong reads wait for it (a leader's
// commit index is only current once an entry of its term has committed).
func (s *Store) watchLeadership() {
	defer s.wg.Done()
	for {
		select {
		case <-s.closed:
			return
		case isLeader := <-s.notifyCh:
			s.health.setLeader(isLeader)
			if !isLeader {
				continue
			}
			s.kickVoters()
			s.leadMu.Lock()
			select {
			case <-s.leadReady:
				s.leadReady = make(chan struct{})
			default:
			}
			ready := s.leadReady
			s.leadMu.Unlock()
			s.wg.Add(1)
			go s.establishLeadership(ready)
		}
	}
}

func (s *Store) establishLeadership(ready chan struct{}) {
	defer s.wg.Done()
	for {
		if s.raft.State() != raft.Leader {
			return
		}
		term := s.raft.CurrentTerm()
		data, _ := encodeEntry(&entry{Time: s.cfg.now().UnixNano()})
		if err := s.await(s.raft.Apply(data, s.cfg.ApplyTimeout)); err == nil {
			s.leadMu.Lock()
			if s.leadReady == ready {
				s.leadTerm = term
				select {
				case <-ready:
				default:
					close(ready)
				}
			}
			s.leadMu.Unlock()
			if s.cfg.OnLeader != nil {
				s.cfg.OnLeader()
			}
			return
		}
		select {
		case <-s.closed:
			return
		case <-time.After(10 * pollInterval):
		}
	}
}

// leaderReady waits until this node is the leader and has committed an
// entry in its current term.
func (s *Store) leaderReady(ctx context.Context) error {
	for {
		if s.raft.State() != raft.Leader {
			return s.notLeader()
		}
		s.leadMu.Lock()
		term, ready := s.leadTerm, s.leadReady
		s.leadMu.Unlock()
		if term == s.raft.CurrentTerm() {
			return nil
		}
		select {
		case <-ready:
		case <-time.After(pollInterval):
		case <-ctx.Done():
			return api.Errorf(codes.Unavailable, "global tier: the new leader has not committed an entry in its term yet: %v", ctx.Err())
		case <-s.closed:
			return ErrClosed
		}
	}
}

// watchLeader counts leader changes and wakes waiters for a leader.
func (s *Store) watchLeader() {
	defer s.wg.Done()
	for {
		select {
		case <-s.closed:
			return
		case o := <-s.obsCh:
			lo, ok := o.Data.(raft.LeaderObservation)
			if !ok {
				s.health.observe(o.Data)
				continue
			}
			s.m.leaderChanges.Inc()
			s.log.Info("leader changed", "leader", lo.LeaderID, "addr", lo.LeaderAddr)
			s.leaderMu.Lock()
			close(s.leaderCh)
			s.leaderCh = make(chan struct{})
			s.leaderMu.Unlock()
		}
	}
}

func (s *Store) leaderChanged() <-chan struct{} {
	s.leaderMu.Lock()
	defer s.leaderMu.Unlock()
	return s.leaderCh
}

func (s *Store) notLeader() *NotLeaderError {
	addr, id := s.raft.LeaderWithID()
	return newNotLeader(string(id), string(addr))
}

// requireLeader returns nil on the leader and a *NotLeaderError naming the
// leader elsewhere. While no leader is known it waits for an election,
// until ctx ends; then the error names no leader and wraps ErrNoLeader.
func (s *Store) requireLeader(ctx context.Context) error {
	for {
		changed := s.leaderChanged()
		if s.raft.State() == raft.Leader {
			return nil
		}
		if addr, id := s.raft.LeaderWithID(); id != "" {
			return newNotLeader(string(id), string(addr))
		}
		select {
		case <-changed:
		case <-time.After(pollInterval):
		case <-s.closed:
			return ErrClosed
		case <-ctx.Done():
			e := newNotLeader("", "")
			e.err = api.Wrap(ErrNoLeader, fmt.Sprintf("none elected in time (%v): a majority of the voters may be down or partitioned", ctx.Err()))
			e.err.Err = errors.Join(ErrNoLeader, ErrNotLeader)
			return e
		}
	}
}

// Leader returns the leader this node knows of, or empty strings.
func (s *Store) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a)
}

// IsLeader reports whether this node is the leader.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// NodeID returns this node's Raft server ID.
func (s *Store) NodeID() string { return s.cfg.NodeID }

// Addr returns this node's Raft address.
func (s *Store) Addr() string { return string(s.trans.LocalAddr()) }

// WaitForLeader waits until this node knows a leader and returns its ID.
func (s *Store) WaitForLeader(ctx context.Context) (string, error) {
	for {
		changed := s.leaderChanged()
		if _, id := s.raft.LeaderWithID(); id != "" {
			return string(id), nil
		}
		select {
		case <-changed:
		case <-time.After(pollInterval):
		case <-s.closed:
			return "", ErrClosed
		case <-ctx.Done():
			return "", api.Wrap(ErrNoLeader, ctx.Err().Error())
		}
	}
}

// Servers returns the current Raft configuration.
func (s *Store) Servers() ([]Member, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, s.raftError(err)
	}
	_, leader := s.raft.LeaderWithID()
	var out []Member
	for _, srv := range f.Configuration().Servers {
		out = append(out, Member{ID: string(srv.ID), Addr: string(srv.Address), Voter: srv.Suffrage == raft.Voter, Leader: srv.ID == leader})
	}
	return out, nil
}

// Join adds a server to the cluster with the role given (leader only): a
// voter, or a non-voter that replicates and serves reads without voting.
// Joining a server that is already a member with the same address and role
// does nothing; a voter joined as a non-voter is demoted. Nodes join with
// AddServer, which leaves the role to the leader (voters.go).
func (s *Store) Join(ctx context.Context, id, addr string, voter bool) error {
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
	servers, err := s.Servers()
	if err != nil {
		return err
	}
	var f raft.IndexFuture
	for _, m := range servers {
		if m.ID != id {
			continue
		}
		if m.Addr == addr && m.Voter == voter {
			return nil
		}
		if m.Addr == addr && m.Voter && !voter {
			f = s.raft.DemoteVoter(raft.ServerID(id), 0, s.cfg.ApplyTimeout)
		}
	}
	if f == nil && voter {
		f = s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, s.cfg.ApplyTimeout)
	} else if f == nil {
		f = s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, s.cfg.ApplyTimeout)
	}
	if err := waitFuture(ctx, f); err != nil {
		return s.raftError(err)
	}
	s.log.Info("server joined", "id", id, "addr", addr, "voter", voter)
	return nil
}

// Snapshot makes Raft take a snapshot now (and compact the log).
func (s *Store) Snapshot(ctx context.Context) error {
	err := waitFuture(ctx, s.raft.Snapshot())
	if errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil
	}
	return s.raftError(err)
}

// Stats returns the node's Raft and FSM state.
func (s *Store) Stats() Stats {
	return Stats{
		State:        s.raft.State().String(),
		Term:         s.raft.CurrentTerm(),
		LastIndex:    s.raft.LastIndex(),
		CommitIndex:  s.raft.CommitIndex(),
		AppliedIndex: s.fsm.applied.Load(),
		LastContact:  s.raft.LastContact(),
		FSM:          s.fsm.stats(),
	}
}

// AppliedIndex is the highest log index applied to this node's FSM.
func (s *Store) AppliedIndex() uint64 { return s.fsm.applied.Load() }

// writeContext bounds ctx by ApplyTimeout and by 9/10 of the time the
// caller has left, so that a caller whose own deadline is the same (a
// gateway's RequestTimeout equals the default ApplyTimeout) still receives
// this node's UNAVAILABLE answer — no leader, not committed in time —
// instead of its own DEADLINE_EXCEEDED.
func (s *Store) writeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	d := s.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl)*9/10)
	}
	return context.WithTimeout(ctx, d)
}

// raftError turns an error from a Raft future into a coded error.
func (s *Store) raftError(err error) error {
	var coded *api.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &coded):
		return err
	case errors.Is(err, raft.ErrNotLeader):
		return s.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return api.Wrap(ErrLeadershipLost, "it may or may not have been applied; check before retrying")
	case errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, context.DeadlineExceeded):
		return api.Wrap(ErrTimeout, "it may or may not have been applied; check before retrying")
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	case errors.Is(err, context.Canceled):
		return api.Errorf(codes.Canceled, "request canceled")
	}
	return api.Errorf(codes.Internal, "global tier: %v", err)
}

// await waits for an Apply future, or for the store to close. Raft can
// shut down with an entry it accepted still unanswered (a leader that
// cannot reach a quorum; hashicorp/raft#498), and Close waits for the
// goroutines that wait here. Closed first, the write's outcome is
// unknown: it may have been committed.
func (s *Store) await(f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-s.closed:
		return api.Wrap(ErrClosed, "the write was in flight: it may or may not have been applied")
	}
}

// waitFuture waits for a Raft future or ctx.
func waitFuture(ctx context.Context, f raft.Future) error {
	ch := make(chan error, 1)
	go func() { ch <- f.Error() }()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
