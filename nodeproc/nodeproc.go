package nodeproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lunora/lunora/clustersecret"
	"github.com/lunora/lunora/cron"
	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/gateway"
	"github.com/lunora/lunora/internal/cli"
	"github.com/lunora/lunora/membership"
	"github.com/lunora/lunora/node"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/rpc"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/server"
	"github.com/lunora/lunora/shardhost"
	"github.com/lunora/lunora/tlsconf"
	"github.com/prometheus/client_golang/prometheus"
)

// Version is reported by Status.
const Version = "0.1.0-dev"

// Config configures a node process.
type Config struct {
	// Dev also serves the public API (gateway) from this process.
	Dev bool
	// Shards configures the shard host; Dir, App, NodeID, Logger and
	// Registerer are filled from this Config.
	Shards shardhost.Config
	// Global configures the global tier; NodeID, Dir, Schema, Bootstrap,
	// BindAddr, Logger and Registerer are filled from this Config.
	Global raftglobal.Config

	App      *schema.App
	Dir      string
	NodeID   string
	GRPCAddr string // node API (and public API in dev mode)
	// GRPCAdvertise is the node-API address other nodes reach this one at,
	// recorded in the cluster metadata; the bound address when empty.
	GRPCAdvertise string
	HTTPAddr      string // /metrics /healthz /readyz (and the HTTP API in dev mode)

	// RaftAddr is the global tier's Raft bind address; RaftAdvertise the
	// address other nodes reach it at (RaftAddr when empty).
	RaftAddr      string
	RaftAdvertise string
	// Bootstrap is the initial voter set; a node in it bootstraps the group
	// when it has no Raft state. Empty in dev mode means "this node alone".
	Bootstrap []raftglobal.Server
	// Seeds are node-API addresses of existing nodes; a node not in
	// Bootstrap joins the global tier as a non-voter through them.
	Seeds []string
	// Cluster configures the ring, handoffs and rebalancing.
	Cluster node.ClusterConfig
	// ForceLeave makes a graceful leave take the node out of the Raft
	// group even when the voters left would have no quorum of live
	// servers (by default it then stays a member and says so).
	ForceLeave bool
	// Server bounds what clients can hold of the node's HTTP and gRPC
	// listeners (timeouts, connections per client and in total); zero
	// fields take server.DefaultConfig's values.
	Server server.Config
	// Gossip, when set, makes the node a member of the gossip cluster
	// (discovery and failure detection for gateways); ID, Role, GRPCAddr,
	// Weight and Logger are filled from this Config.
	Gossip *membership.Config
	// ClusterTLS, when set, is the cluster's mutual TLS (certificate files
	// of this node and the cluster CA): the node API and the Raft
	// transport accept only peers with a certificate of the cluster CA,
	// the node dials its peers with its own, and the HTTP listener is
	// HTTPS (backups need a cluster certificate). Without it everything
	// is plaintext, and a listener not on loopback is warned about.
	ClusterTLS *tlsconf.Reloader
	// PublicTLS, in dev mode, serves the public API (HTTP and gRPC) over
	// TLS with this certificate.
	PublicTLS *tlsconf.Reloader
	// AllowPlaintextGossip lets a node with ClusterTLS gossip without
	// Gossip.SecretKey (refused otherwise).
	AllowPlaintextGossip bool
	// ClusterSecret, when set, is the cluster's shared secret: every
	// node-API call (lunora.v1.Node) must carry its token, and so must
	// every Raft connection and every request to the backup endpoint;
	// the node sends it to its peers. With ClusterTLS too, both are
	// required. Gossip without Gossip.SecretKey is encrypted with a key
	// derived from it.
	ClusterSecret *clustersecret.Secret
	// InsecureNodeAPI lets a node (not in dev mode) serve its node API,
	// Raft and backups beyond loopback with neither ClusterTLS nor
	// ClusterSecret — anyone who reaches them is a cluster member.
	// Refused otherwise.
	InsecureNodeAPI bool

	Logger   *slog.Logger
	Registry *prometheus.Registry
	// Blobs, in dev mode, serves the blob endpoints.
	Blobs *gateway.BlobConfig
}

// Process is a running node.
type Process struct {
	Host     *shardhost.Host
	Global   *raftglobal.Store
	Node     *node.Node
	Gateway  *gateway.Gateway // dev mode only
	Server   *server.Process
	GRPCAddr string
	HTTPAddr string
	RaftAddr string
	Members  *membership.Membership // nil without gossip

	// gossip is Members for the node's Status, which may run before
	// gossip has started.
	gossip   atomic.Pointer[membership.Membership]
	cancel   context.CancelFunc
	announce sync.WaitGroup
	// joinCancel stops the start-up join (announce, then ring); joined is
	// closed when it has returned. Leave waits for it.
	joinCancel context.CancelFunc
	joined     chan struct{}
	forceLeave bool
	peers      []*rpc.NodeClient
	peersMu    sync.Mutex
	tls        *clusterTLS           // nil: plaintext
	secret     *clustersecret.Secret // nil: no cluster secret
	log        *slog.Logger
}

// Start builds and serves a node. On error everything started is stopped.
func Start(cfg Config) (p *Process, err error) {
	if cfg.App == nil || cfg.Dir == "" || cfg.NodeID == "" {
		return nil, errors.New("nodeproc: App, Dir and NodeID are required")
	}
	if err := checkGlobalFunctions(cfg.App); err != nil {
		return nil, err
	}
	if cfg.Dev && (!cli.IsLoopback(cfg.GRPCAddr) || !cli.IsLoopback(cfg.HTTPAddr)) {
		// Dev mode's public API is anonymous (every caller an admin).
		return nil, fmt.Errorf("nodeproc: dev mode has no authentication and listens on loopback only, not on %s and %s", cfg.GRPCAddr, cfg.HTTPAddr)
	}
	if cfg.ClusterSecret != nil && cfg.Gossip != nil && len(cfg.Gossip.SecretKey) == 0 {
		gc := *cfg.Gossip
		gc.SecretKey = cfg.ClusterSecret.GossipKey()
		cfg.Gossip = &gc
	}
	if err := cfg.checkSecurity(); err != nil {
		return nil, err
	}
	if cfg.Registry == nil {
		cfg.Registry = server.NewRegistry()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p = &Process{log: log, joined: make(chan struct{}), forceLeave: cfg.ForceLeave}
	if cfg.ClusterTLS != nil {
		if p.tls, err = newClusterTLS(cfg.ClusterTLS); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	// The error returns below set p to nil: clean up through a copy of it.
	started := p
	defer func() {
		if err != nil {
			started.Shutdown(context.Background())
		}
	}()

	g := cfg.Global
	g.NodeID, g.Dir, g.Logger, g.Registerer = cfg.NodeID, filepath.Join(cfg.Dir, "raft"), log, cfg.Registry
	g.BindAddr, g.AdvertiseAddr = cfg.RaftAddr, cfg.RaftAdvertise
	g.Schema = cfg.App.GroupDDL(schema.GlobalGroup)
	g.Bootstrap = cfg.Bootstrap
	if p.tls != nil {
		g.TLSServer, g.TLSClient = p.tls.raftServer, p.tls.client
	}
	g.Secret = cfg.ClusterSecret
	p.secret = cfg.ClusterSecret
	// A new leader publishes its own address at once, so followers can
	// forward to it without waiting for its announce loop.
	leader := &lateNode{}
	g.OnLeader = func() {
		if n := leader.node.Load(); n != nil {
			n.PublishSelf(context.Background())
		}
	}
	// Membership changes count a server live only if it answers now.
	g.Probe = func(ctx context.Context, id string) bool {
		if n := leader.node.Load(); n != nil {
			return n.Probe(ctx, id)
		}
		return true
	}
	if len(g.Bootstrap) == 0 && len(cfg.Seeds) == 0 {
		g.Bootstrap = []raftglobal.Server{{ID: cfg.NodeID}} // a one-voter group
	}
	if p.Global, err = raftglobal.Open(g); err != nil {
		return nil, fmt.Errorf("global tier: %w", err)
	}
	p.RaftAddr = p.Global.Addr()
	if len(g.Bootstrap) == 1 && g.Bootstrap[0].ID == cfg.NodeID {
		// A lone node elects itself; wait for it so the first requests
		// (which register new shards through the leader) do not.
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = p.Global.WaitForLeader(wctx)
		wcancel()
		if err != nil {
			return nil, fmt.Errorf("global tier: electing this lone node: %w", err)
		}
	}

	sc := cfg.Shards
	sc.Dir, sc.App, sc.NodeID, sc.Logger, sc.Registerer = cfg.Dir, cfg.App, cfg.NodeID, log, cfg.Registry
	registry := &lateRegistry{}
	sc.Registry = registry
	sc.DeferAlarms = true // until the registry has its node (StartAlarms below)
	if p.Host, err = shardhost.New(sc); err != nil {
		return nil, err
	}

	srvCfg := cfg.Server
	switch {
	case p.tls != nil:
		srvCfg.GRPCTLS, srvCfg.HTTPTLS = p.tls.grpcServer, p.tls.httpServer
	case cfg.PublicTLS != nil:
		pub, err := cfg.PublicTLS.ServerConfig(tlsconf.NoClientCert)
		if err != nil {
			return nil, err
		}
		srvCfg.GRPCTLS, srvCfg.HTTPTLS = pub, pub
	}
	if cfg.ClusterSecret != nil {
		// The node API only: dev mode serves the public API (with its own
		// authentication) on the same server, and health checks stay open.
		srvCfg.GRPCOptions = append(srvCfg.GRPCOptions, cfg.ClusterSecret.ServerOptions(NodeService)...)
	}
	p.Server = server.New(cfg.Registry, log, nil, srvCfg)
	grpcLn, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("listen gRPC %s: %w", cfg.GRPCAddr, err)
	}
	p.GRPCAddr = grpcLn.Addr().String()
	served := false
	defer func() {
		if !served {
			grpcLn.Close()
		}
	}()
	advertise := cfg.GRPCAdvertise
	if advertise == "" {
		advertise = p.GRPCAddr
	}

	incarnation, err := nextIncarnation(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if p.Node, err = node.New(node.Config{
		App: cfg.App, Shards: p.Host, Global: p.Global,
		NodeID: cfg.NodeID, GRPCAddr: advertise, Version: Version, Logger: log, Incarnation: incarnation,
		Dial: p.dial, Cluster: cfg.Cluster, Liveness: p.liveness,
	}); err != nil {
		return nil, err
	}
	registry.node.Store(p.Node)
	leader.node.Store(p.Node)
	p.Host.StartAlarms()
	// Queue consumer functions run on the shard their message names,
	// routed by this node's view of the ring.
	p.Host.StartConsumers(func(ctx context.Context, shardID, function string, args map[string]any) error {
		_, err := p.Node.CallRouted(ctx, shardID, function, args)
		return err
	})
	rpc.RegisterNodeServer(p.Server.GRPC, rpc.NewNodeServer(p.Node, log))
	var api *gateway.Gateway
	if cfg.Dev {
		gc := gateway.DefaultConfig()
		// Dev mode is anonymous: every caller is an admin. The binary
		// binds dev mode to loopback only (cmd/lunora-node).
		gc.App, gc.Backend, gc.Logger, gc.Registerer, gc.AuthOff = cfg.App, devBackend{p.Node}, log, cfg.Registry, true
		gc.Blobs = cfg.Blobs
		gc.SchemaLimits = schema.Limits{MaxStatements: sc.MaxStatements, MaxSQLLen: sc.MaxSQLLen, MaxParams: sc.MaxParams, MaxValueBytes: sc.MaxValueBytes}
		if api, err = gateway.New(gc); err != nil {
			return nil, err
		}
		p.Gateway = api
		rpc.RegisterPublicServer(p.Server.GRPC, rpc.NewPublicServer(api, nil))
	}
	p.Server.ServeGRPCOn(grpcLn)
	served = true
	var h = p.Server.Handler(cfg.Registry, nil)
	if api != nil && cfg.App.Function("messages:send") != nil && cfg.App.Function("messages:list") != nil {
		// Dev mode with the chat example's schema also serves its page at
		// /chat/, and sends GET / there; everything else is the public API.
		dev := http.NewServeMux()
		dev.Handle("/", api.Handler())
		dev.Handle("GET /chat/", http.StripPrefix("/chat", chat.Page()))
		dev.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
			to := "/chat/"
			if r.URL.RawQuery != "" {
				to += "?" + r.URL.RawQuery
			}
			http.Redirect(w, r, to, http.StatusFound)
		})
		h = p.Server.Handler(cfg.Registry, dev)
	} else if api != nil {
		h = p.Server.Handler(cfg.Registry, api.Handler())
	}
	h = p.backupHandler(cfg.NodeID, cfg.Dir, log, h)
	if cfg.ClusterSecret != nil {
		h = requireClusterSecret(BackupPath, cfg.ClusterSecret, h)
	}
	if p.tls != nil {
		h = requireClusterCert(BackupPath, h)
	}
	httpAddr, err := p.Server.ServeHTTP(cfg.HTTPAddr, gateway.SecurityHeaders(h))
	if err != nil {
		return nil, err
	}
	p.HTTPAddr = httpAddr.String()
	if p.tls == nil && !cfg.Dev {
		warnPlaintext(log, cfg.ClusterSecret != nil, map[string]string{"node-API (gRPC)": p.GRPCAddr, "Raft": p.RaftAddr, "HTTP (backups)": p.HTTPAddr})
	}

	if cfg.Gossip != nil {
		mc := *cfg.Gossip
		mc.Meta.ID, mc.Meta.Role, mc.Meta.GRPCAddr = cfg.NodeID, membership.RoleNode, advertise
		mc.Meta.Weight, mc.Meta.State = cfg.Cluster.Weight, "up"
		if mc.Logger == nil {
			mc.Logger = log
		}
		if p.Members, err = membership.Start(mc); err != nil {
			return nil, fmt.Errorf("gossip: %w", err)
		}
		p.gossip.Store(p.Members)
	}

	if len(cfg.App.Crons) > 0 {
		// Every node follows the global tier's leadership; the leader runs
		// the crons.
		cc := cron.DefaultConfig()
		cc.App, cc.Store, cc.Caller, cc.Logger, cc.Registerer = cfg.App, p.Global, p.Node, log, cfg.Registry
		crons, err := cron.New(cc)
		if err != nil {
			return nil, err
		}
		p.announce.Add(1)
		go func() {
			defer p.announce.Done()
			crons.Run(ctx, p.Global)
		}()
	}
	voter := len(g.Bootstrap) > 0
	jctx, jcancel := context.WithCancel(ctx)
	p.joinCancel = jcancel
	p.announce.Add(2)
	go func() {
		defer p.announce.Done()
		p.Node.Run(ctx)
	}()
	go func() {
		defer p.announce.Done()
		defer close(p.joined)
		if err := p.Node.Announce(jctx, voter, cfg.Seeds); err != nil {
			if jctx.Err() == nil {
				log.Error("could not announce this node to the global tier", "err", err)
			}
			return
		}
		if err := p.Node.JoinRing(jctx); err != nil && jctx.Err() == nil {
			log.Error("could not add this node to the ring", "err", err)
		}
	}()
	return p, nil
}

func (p *Process) dial(addr string) (node.Peer, error) {
	opts := p.tls.dialOptions()
	if p.secret != nil {
		opts = append(opts, p.secret.DialOption())
	}
	c, err := rpc.NewNodeClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	p.peersMu.Lock()
	p.peers = append(p.peers, c)
	p.peersMu.Unlock()
	return c, nil
}

// Leave takes the node out of the ring and hands off its shards (a
// graceful leave, on SIGTERM), bounded by ctx, then out of the global
// tier's Raft group (see node.Node.Leave: a voter is replaced by a
// non-voter; it stays a member, and says so, if leaving would lose the
// quorum, unless Config.ForceLeave). The node keeps serving
// meanwhile: requests for shards not moved yet are still answered, the
// others are refused as NOT_OWNER and the gateway retries at their new
// owner.
func (p *Process) Leave(ctx context.Context) error {
	if p.Node == nil {
		return nil
	}
	if p.Members != nil {
		p.Members.SetMeta(func(m *membership.Meta) { m.State = "leaving" })
	}
	// This process's own join must not land after its leave: stop it and
	// wait. (One already in flight at the leader is refused there: the
	// leave is recorded with this process's incarnation.)
	if p.joinCancel != nil {
		p.joinCancel()
		<-p.joined
	}
	left, err := p.Node.Leave(ctx, node.LeaveOptions{Force: p.forceLeave})
	if err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	if left > 0 {
		return fmt.Errorf("leave: %d shards were not handed off", left)
	}
	return nil
}

// Shutdown stops serving, then closes the shard host and the global tier.
func (p *Process) Shutdown(ctx context.Context) error {
	if p.cancel != nil {
		p.cancel()
	}
	p.announce.Wait()
	if p.Members != nil {
		p.Members.Leave(2 * time.Second)
		p.Members.Shutdown()
	}
	if p.Server != nil {
		p.Server.Shutdown(ctx)
	}
	var errs []error
	if p.Host != nil {
		errs = append(errs, p.Host.Shutdown(ctx))
	}
	if p.Global != nil {
		errs = append(errs, p.Global.Close())
	}
	p.peersMu.Lock()
	for _, c := range p.peers {
		c.Close()
	}
	p.peersMu.Unlock()
	return errors.Join(errs...)
}

// devBackend is the node router as the dev gateway's backend; it lists the
// registry's shards for fan-out reads over every shard of a group.
type devBackend struct{ *node.Node }

func (d devBackend) ListShards(ctx context.Context, group, after string, limit int) ([]string, string, error) {
	return d.Node.ListShards(ctx, group, "", after, limit)
}

// lateRegistry lets the shard host, built before the node router, use the
// router's registry methods (which forward to the Raft leader).
type lateRegistry struct{ node atomic.Pointer[node.Node] }

// lateNode is the node router for hooks of components built before it.
type lateNode struct{ node atomic.Pointer[node.Node] }

func (r *lateRegistry) ShardHolder(ctx context.Context, id string) (string, bool, error) {
	return r.node.Load().ShardHolder(ctx, id)
}

func (r *lateRegistry) RegisterShard(ctx context.Context, id string) (bool, string, error) {
	n := r.node.Load()
	return n.RegisterShard(ctx, id, n.ID(), false)
}

// checkGlobalFunctions refuses, at start, global functions whose SQL reads
// the wall clock: replicas would disagree. (random() is made deterministic
// by the global tier; lunora_now() is the leader's time.)
func checkGlobalFunctions(app *schema.App) error {
	for _, name := range app.FunctionNames() {
		f := app.Function(name)
		if !f.Global() {
			continue
		}
		for i, stmt := range f.SQL {
			if err := raftglobal.CheckDeterministic(stmt); err != nil {
				return &schema.LineError{File: app.File, Line: f.Line, Msg: fmt.Sprintf("function %s statement %d: %v", name, i+1, err)}
			}
		}
	}
	return nil
}

// liveness is a node's status in this node's gossip view ("" without
// gossip, or for a node gossip does not know).
func (p *Process) liveness(id string) string {
	m := p.gossip.Load()
	if m == nil {
		return ""
	}
	if mb, ok := m.Member(id); ok && mb.Role == membership.RoleNode {
		return string(mb.Status)
	}
	return ""
}

// nextIncarnation returns this start's incarnation of the node and
// records it in <dir>/incarnation: the wall clock in nanoseconds, or one
// more than the last start's if the clock is behind it, so it grows with
// every start of a node that keeps its data (and, clocks permitting, of
// one that lost it).
func nextIncarnation(dir string) (uint64, error) {
	path := filepath.Join(dir, "incarnation")
	inc := uint64(time.Now().UnixNano())
	if b, err := os.ReadFile(path); err == nil {
		if last, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && last >= inc {
			inc = last + 1
		}
	} else if !os.IsNotExist(err) {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, err
	}
	_, err = fmt.Fprintf(f, "%d\n", inc)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return 0, fmt.Errorf("record the incarnation in %s: %w", path, err)
	}
	return inc, nil
}

// The node API serves API keys from the global tier and its shards'
// queues, and dev mode's gateway manages keys and serves queues through
// its backend: in one process the node is the whole cluster, so a queue
// fan-out is the node itself.
var (
	_ rpc.Keys         = (*node.Node)(nil)
	_ rpc.Queues       = (*node.Node)(nil)
	_ gateway.KeyAdmin = devBackend{}
	_ gateway.Backend  = devBackend{}
)
