package membership

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrClosed is returned by SetMeta and Leave after Shutdown.
var ErrClosed = errors.New("membership: shut down")

// Membership is this process's view of the gossip cluster. Its methods are
// safe for concurrent use.
type Membership struct {
	list     *memberlist.Memberlist
	log      *slog.Logger
	addr     string // advertised gossip host:port
	seeds    []hostPort
	resolver func(ctx context.Context, host string) ([]string, error)
	onChange func()
	rejoin   time.Duration // see rejoinInterval
	reg      prometheus.Registerer
	coll     collector

	// life guards closed. SetMeta and Leave hold it shared while they call
	// into memberlist, which panics on Leave after Shutdown.
	life   sync.RWMutex
	closed bool

	// setMu serializes SetMeta and Leave.
	setMu sync.Mutex

	// mu guards the fields below. It is taken inside memberlist's callbacks
	// (which run with memberlist's own lock held), so it is never held while
	// calling into memberlist or user code.
	mu        sync.Mutex
	local     Meta
	localWire []byte // encoded local meta
	byeWire   []byte // encoded local meta with the farewell flag
	leaving   bool
	members   map[string]*memberState
	badMeta   map[string]bool // members whose bad metadata was already logged

	changed chan struct{} // wakes the OnChange goroutine; capacity 1
	stop    chan struct{} // closed by Shutdown
	ctx     context.Context
	cancel  context.CancelFunc
	joinWG  sync.WaitGroup
}

type memberState struct {
	Member
	bye bool // the member's last metadata carried the farewell flag
}

// Start binds the gossip listeners, joins the cluster through the seeds and
// returns the running member. Not reaching any seed is not an error (the
// first member of a cluster has no one to join); a background loop keeps
// retrying, with back-off up to about 5 s and re-resolving seed names each
// time, while this member knows no other member.
func Start(cfg Config) (*Membership, error) {
	meta := cfg.Meta
	if _, _, err := encodeMeta(meta); err != nil {
		return nil, err
	}
	var key []byte
	if cfg.SecretKey != nil {
		if err := checkKey(cfg.SecretKey); err != nil {
			return nil, err
		}
		key = slices.Clone(cfg.SecretKey)
	}
	seeds := make([]hostPort, 0, len(cfg.Seeds))
	for _, s := range cfg.Seeds {
		hp, err := splitHostPort(s, false)
		if err != nil {
			return nil, fmt.Errorf("membership: seed: %w", err)
		}
		if hp.port == "0" {
			return nil, fmt.Errorf("membership: seed %q: port 0", s)
		}
		seeds = append(seeds, hp)
	}
	bind := cfg.BindAddr
	if bind == "" {
		bind = "0.0.0.0:" + strconv.Itoa(DefaultPort)
	}
	bindHP, err := splitHostPort(bind, true)
	if err != nil {
		return nil, fmt.Errorf("membership: BindAddr: %w", err)
	}
	if bindHP.host == "" {
		bindHP.host = "0.0.0.0"
	}
	bindIP := net.ParseIP(bindHP.host)
	if bindIP == nil {
		return nil, fmt.Errorf("membership: BindAddr %q: host must be an IP address", cfg.BindAddr)
	}
	var advHP hostPort
	if cfg.AdvertiseAddr != "" {
		advHP, err = splitHostPort(cfg.AdvertiseAddr, false)
		if err != nil {
			return nil, fmt.Errorf("membership: AdvertiseAddr: %w", err)
		}
		if net.ParseIP(advHP.host) == nil {
			return nil, fmt.Errorf("membership: AdvertiseAddr %q: host must be an IP address", cfg.AdvertiseAddr)
		}
		if advHP.defaultPort {
			advHP.port = "" // no port given: use the bound one
		}
	} else if bindIP.IsUnspecified() && bindIP.To4() == nil {
		return nil, errors.New("membership: AdvertiseAddr is required when binding to the IPv6 wildcard address")
	}

	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "membership", "id", meta.ID)
	mlLogger := memberlistLogger(logger)

	port, _ := strconv.Atoi(bindHP.port)
	transport, err := bindTransport(bindIP.String(), port, mlLogger)
	if err != nil {
		return nil, fmt.Errorf("membership: binding %s: %w", net.JoinHostPort(bindHP.host, bindHP.port), err)
	}
	advPort := transport.GetAutoBindPort()
	if advHP.port != "" {
		advPort, _ = strconv.Atoi(advHP.port)
	}
	advIP, advPort, err := transport.FinalAdvertiseAddr(advHP.host, advPort)
	if err != nil {
		_ = transport.Shutdown()
		return nil, fmt.Errorf("membership: advertise address: %w", err)
	}
	addr := net.JoinHostPort(advIP.String(), strconv.Itoa(advPort))
	meta.GossipAddr = addr
	normal, bye, err := encodeMeta(meta)
	if err != nil {
		_ = transport.Shutdown()
		return nil, err
	}

	resolver := cfg.Resolver
	if resolver == nil {
		resolver = net.DefaultResolver.LookupHost
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Membership{
		log:       logger,
		addr:      addr,
		seeds:     seeds,
		resolver:  resolver,
		onChange:  cfg.OnChange,
		rejoin:    orDefault(cfg.rejoinEvery, rejoinInterval),
		reg:       cfg.Registerer,
		local:     meta,
		localWire: normal,
		byeWire:   bye,
		members:   map[string]*memberState{},
		badMeta:   map[string]bool{},
		changed:   make(chan struct{}, 1),
		stop:      make(chan struct{}),
		ctx:       ctx,
		cancel:    cancel,
	}
	m.coll = collector{m}

	mc := memberlist.DefaultLANConfig()
	mc.Name = meta.ID
	mc.Transport = transport
	mc.BindAddr = bindIP.String()
	mc.BindPort = transport.GetAutoBindPort()
	mc.AdvertiseAddr = advIP.String()
	mc.AdvertisePort = advPort
	mc.SecretKey = key
	mc.Delegate = delegate{m}
	mc.Events = delegate{m}
	mc.Conflict = delegate{m}
	mc.Logger = mlLogger
	mc.ProbeInterval = cfg.probeInterval()
	mc.ProbeTimeout = cfg.probeTimeout()
	mc.SuspicionMult = cfg.suspicionMult()
	mc.GossipInterval = cfg.gossipInterval()
	mc.PushPullInterval = cfg.pushPullInterval()
	mc.TCPTimeout = streamTimeout
	mc.DeadNodeReclaimTime = deadReclaimTime
	mc.GossipToTheDeadTime = gossipToDead

	list, err := memberlist.Create(mc)
	if err != nil {
		_ = transport.Shutdown() // Create does not always release it on error
		cancel()
		return nil, fmt.Errorf("membership: starting gossip: %w", err)
	}
	m.list = list

	if m.reg != nil {
		if err := m.reg.Register(m.coll); err != nil {
			_ = list.Shutdown()
			cancel()
			return nil, fmt.Errorf("membership: registering metrics: %w", err)
		}
	}
	if m.onChange != nil {
		go m.notifyLoop()
	}
	logger.Info("gossip started", "addr", addr, "role", meta.Role, "encrypted", key != nil)

	if len(seeds) > 0 {
		if n := m.joinSeeds(); n == 0 || m.alone() {
			logger.Info("no other member reached through the seeds yet; retrying in the background", "seeds", cfg.Seeds)
		}
		m.joinWG.Add(1)
		go m.joinLoop()
	}
	return m, nil
}

// bindTransport creates memberlist's UDP+TCP transport. With port 0 the
// kernel picks the TCP port and UDP may find it taken, so that case is
// retried.
func bindTransport(ip string, port int, logger *log.Logger) (*memberlist.NetTransport, error) {
	attempts := 1
	if port == 0 {
		attempts = bindAttempts
	}
	var err error
	for range attempts {
		var t *memberlist.NetTransport
		t, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{ip},
			BindPort:  port,
			Logger:    logger,
		})
		if err == nil {
			return t, nil
		}
	}
	return nil, err
}

// LocalAddr returns the advertised gossip address, host:port.
func (m *Membership) LocalAddr() string { return m.addr }

// Local returns this member's current Meta.
func (m *Membership) Local() Meta {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.local
}

// Members returns every member this process has seen, itself included,
// sorted by ID. Dead and Left members stay listed; one that comes back is
// listed as Alive again with its new address and meta.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	out := make([]Member, 0, len(m.members))
	for _, st := range m.members {
		out = append(out, st.Member)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Member returns the member with the given ID, if this process has seen it.
func (m *Membership) Member(id string) (Member, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.members[id]
	if !ok {
		return Member{}, false
	}
	return st.Member, true
}

// SetMeta changes this member's Meta and gossips it, waiting (up to a few
// seconds) for the update to be sent. update gets a copy of the current Meta;
// it must not change ID, and GossipAddr is reset to the advertised address.
// The new Meta must still encode to at most MetaMaxSize bytes; if it does not,
// nothing changes. A timeout error means the change was applied locally but
// its broadcast was not confirmed; anti-entropy sync will still carry it.
func (m *Membership) SetMeta(update func(*Meta)) error {
	m.life.RLock()
	defer m.life.RUnlock()
	if m.closed {
		return ErrClosed
	}
	m.setMu.Lock()
	defer m.setMu.Unlock()

	m.mu.Lock()
	next, leaving := m.local, m.leaving
	m.mu.Unlock()
	if leaving {
		return errors.New("membership: SetMeta after Leave")
	}
	id := next.ID
	if update != nil {
		update(&next) // outside mu: update may call Local
	}
	if next.ID != id {
		return fmt.Errorf("membership: SetMeta cannot change ID (%q to %q)", id, next.ID)
	}
	next.GossipAddr = m.addr
	normal, bye, err := encodeMeta(next)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.local, m.localWire, m.byeWire = next, normal, bye
	m.mu.Unlock()
	if err := m.list.UpdateNode(metaBroadcastTimeout); err != nil {
		return fmt.Errorf("membership: gossiping meta: %w", err)
	}
	return nil
}

// Leave announces a graceful departure: other members see this one as Left.
// It waits up to timeout (no limit if timeout <= 0) for the announcement to
// go out, and stops the background join loop. The member keeps answering
// gossip until Shutdown, which should follow.
func (m *Membership) Leave(timeout time.Duration) error {
	m.life.RLock()
	defer m.life.RUnlock()
	if m.closed {
		return ErrClosed
	}
	m.setMu.Lock()
	defer m.setMu.Unlock()

	m.mu.Lock()
	already := m.leaving
	m.leaving = true
	m.mu.Unlock()

	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	remaining := func(fraction float64) time.Duration {
		if deadline.IsZero() {
			return 0 // memberlist: wait without limit
		}
		return max(time.Duration(float64(time.Until(deadline))*fraction), time.Millisecond)
	}

	var errs []error
	if !already {
		// First gossip the farewell flag in our meta, so that members can
		// tell the departure that follows from a failure. memberlist's own
		// leave message does not say which it was to its user.
		if err := m.list.UpdateNode(remaining(0.5)); err != nil {
			errs = append(errs, fmt.Errorf("membership: announcing leave: %w", err))
		}
	}
	if err := m.list.Leave(remaining(1)); err != nil {
		errs = append(errs, fmt.Errorf("membership: leaving: %w", err))
	}
	return errors.Join(errs...)
}

// Shutdown stops gossip without announcing a departure (others will find
// this member Dead) and stops the background join loop. It is idempotent.
func (m *Membership) Shutdown() error {
	m.life.Lock()
	if m.closed {
		m.life.Unlock()
		return nil
	}
	m.closed = true
	m.life.Unlock()

	m.cancel()
	close(m.stop)
	err := m.list.Shutdown()
	m.joinWG.Wait()
	if m.reg != nil {
		m.reg.Unregister(m.coll)
	}
	m.log.Info("gossip stopped")
	return err
}

// notifyLoop calls OnChange, outside every lock, after changes were signalled.
func (m *Membership) notifyLoop() {
	for {
		select {
		case <-m.stop:
			return
		case <-m.changed:
			m.onChange()
		}
	}
}

func (m *Membership) signalChange() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// event is what memberlist reported about a member.
type event int

const (
	evJoin event = iota
	evUpdate
	evLeave
)

// observe records a memberlist notification. memberlist calls it with its
// own node lock held, so it must not call back into memberlist.
func (m *Membership) observe(n *memberlist.Node, ev event) {
	name, addr := n.Name, n.Address()
	meta, bye, problem := decodeMeta(name, n.Meta)
	now := time.Now()

	m.mu.Lock()
	st, known := m.members[name]
	if !known {
		st = &memberState{Member: Member{Since: now}}
		m.members[name] = st
	}
	old := st.Status
	// A farewell meta may be a stripped-down form; keep what we knew.
	if !bye || !known {
		st.Meta = meta
	}
	st.Addr = addr
	st.bye = bye
	switch ev {
	case evJoin:
		st.Status = Alive
	case evUpdate:
		if !known {
			st.Status = Alive
		}
	case evLeave:
		if bye || (name == m.local.ID && m.leaving) {
			st.Status = Left
		} else {
			st.Status = Dead
		}
	}
	if st.Status != old || !known {
		st.Since = now
	}
	status := st.Status
	logBad := false
	if problem != "" {
		logBad = !m.badMeta[name]
		m.badMeta[name] = true
	} else {
		delete(m.badMeta, name)
	}
	m.mu.Unlock()

	if logBad {
		m.log.Warn("member has unusable metadata; listing it by its node name only", "member", name, "addr", addr, "problem", problem)
	}
	if status != old || !known {
		m.log.Info("member status", "member", name, "addr", addr, "status", status, "role", meta.Role)
	}
	m.signalChange()
}

// delegate implements memberlist's callback interfaces for a Membership
// without adding their methods to its API.
type delegate struct{ m *Membership }

// NodeMeta returns the encoded local meta. Its size was checked against
// MetaMaxSize when it was set; memberlist panics on anything larger.
func (d delegate) NodeMeta(limit int) []byte {
	d.m.mu.Lock()
	b := d.m.localWire
	if d.m.leaving {
		b = d.m.byeWire
	}
	d.m.mu.Unlock()
	if len(b) > limit {
		return nil
	}
	return slices.Clone(b)
}

func (delegate) NotifyMsg([]byte)                           {}
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d delegate) NotifyJoin(n *memberlist.Node)   { d.m.observe(n, evJoin) }
func (d delegate) NotifyUpdate(n *memberlist.Node) { d.m.observe(n, evUpdate) }
func (d delegate) NotifyLeave(n *memberlist.Node)  { d.m.observe(n, evLeave) }

// NotifyConflict reports a second process announcing a member ID under
// another address (two members configured with one ID, or a restarted
// member seen before its old incarnation was found dead).
func (d delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.m.log.Warn("another address claims a known member ID", "member", existing.Name,
		"known_addr", existing.Address(), "other_addr", other.Address())
}

// alone reports whether this member knows no other live member.
func (m *Membership) alone() bool { return m.list.NumMembers() <= 1 }

// seedAddrs resolves the seeds to ip:port addresses, leaving out this
// member's own address.
func (m *Membership) seedAddrs() []string {
	var out []string
	seen := map[string]bool{m.addr: true}
	add := func(ip net.IP, port string) {
		a := net.JoinHostPort(ip.String(), port)
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, s := range m.seeds {
		if ip := net.ParseIP(s.host); ip != nil {
			add(ip, s.port)
			continue
		}
		ctx, cancel := context.WithTimeout(m.ctx, resolveTimeout)
		hosts, err := m.resolver(ctx, s.host)
		cancel()
		if err != nil {
			m.log.Debug("resolving seed failed", "seed", s.host, "err", err)
			continue
		}
		for _, h := range hosts {
			ip := net.ParseIP(h)
			if ip == nil {
				m.log.Debug("seed resolved to a non-IP address; skipped", "seed", s.host, "addr", h)
				continue
			}
			add(ip, s.port)
		}
	}
	return out
}

// joinSeeds resolves the seeds, contacts every address at once and returns
// how many answered.
func (m *Membership) joinSeeds() int { return m.join(m.seedAddrs()) }

// join contacts the addresses at once and returns how many answered.
func (m *Membership) join(addrs []string) int {
	if len(addrs) == 0 {
		return 0
	}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
		ok int
	)
	for _, a := range addrs {
		wg.Go(func() {
			n, err := m.list.Join([]string{a})
			if err != nil {
				m.log.Debug("join attempt failed", "seed", a, "err", err)
			}
			mu.Lock()
			ok += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if ok > 0 {
		m.log.Debug("joined through seeds", "answered", ok, "tried", len(addrs))
	}
	return ok
}

// joinLoop retries the seeds while this member knows no other member, with
// jittered exponential back-off, until Leave or Shutdown. While the member
// is not alone it still re-resolves the seeds every rejoinInterval and joins
// any seed address that is not a live member it knows, so that two groups
// formed apart (say, from partial DNS answers at startup) merge.
func (m *Membership) joinLoop() {
	defer m.joinWG.Done()
	backoff := joinBackoffMin
	wait := backoff
	lastRejoin := time.Now()
	for {
		select {
		case <-m.stop:
			return
		case <-time.After(wait):
		}
		m.mu.Lock()
		leaving := m.leaving
		m.mu.Unlock()
		if leaving {
			return
		}
		if !m.alone() {
			backoff = joinBackoffMin
			wait = joinIdleCheck
			if time.Since(lastRejoin) >= m.rejoin {
				lastRejoin = time.Now()
				if addrs := m.unknownSeedAddrs(); len(addrs) > 0 {
					m.log.Debug("joining seed addresses of no known live member", "addrs", addrs)
					m.join(addrs)
				}
			}
			continue
		}
		m.joinSeeds()
		if !m.alone() {
			m.log.Info("joined the cluster through the seeds")
			backoff = joinBackoffMin
			wait = joinIdleCheck
			lastRejoin = time.Now()
			continue
		}
		// Jitter by ±20% so members started together do not retry in step.
		wait = time.Duration(float64(backoff) * (0.8 + 0.4*rand.Float64()))
		backoff = min(2*backoff, joinBackoffMax)
	}
}

// unknownSeedAddrs returns the seed addresses that are not the address of a
// member currently Alive in this process's view.
func (m *Membership) unknownSeedAddrs() []string {
	addrs := m.seedAddrs()
	m.mu.Lock()
	known := make(map[string]bool, len(m.members))
	for _, st := range m.members {
		if st.Status == Alive {
			known[st.Addr] = true
		}
	}
	m.mu.Unlock()
	return slices.DeleteFunc(addrs, func(a string) bool { return known[a] })
}
