package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/lunora/lunora/rpc"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

// MaxMessageBytes bounds a gRPC message in either direction; it matches the
// HTTP body limit plus room for framing.
const MaxMessageBytes = 1<<20 + 64<<10

// NewRegistry returns a metrics registry with the Go and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Process is one Lunora process's listeners: a gRPC server (health and
// reflection on) and an HTTP server (the given API handler plus /metrics,
// /healthz, /readyz).
type Process struct {
	GRPC   *grpc.Server
	Health *health.Server
	log    *slog.Logger

	mu        sync.Mutex
	httpSrv   *http.Server
	listeners []net.Listener
	ready     func() error

	cfg   Config
	conns *connLimiter // shared by the HTTP and gRPC listeners
}

// New builds a Process. ready reports whether the process can take traffic
// (nil means always ready once serving); cfg bounds what clients can hold
// (zero fields take their defaults). Its metrics go to reg (none when nil).
func New(reg *prometheus.Registry, log *slog.Logger, ready func() error, cfg Config) *Process {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	opts := append(rpc.ServerOptions(), grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxSendMsgSize(16<<20))
	if d := on(cfg.GRPCHandshakeTimeout); d > 0 {
		opts = append(opts, grpc.ConnectionTimeout(d))
	}
	if d := on(cfg.GRPCMaxConnectionIdle); d > 0 {
		// Replaces the keepalive parameters of rpc.ServerOptions, so they
		// are kept here.
		ka := rpc.ServerKeepalive()
		ka.MaxConnectionIdle = d
		opts = append(opts, grpc.KeepaliveParams(ka))
	}
	if cfg.GRPCTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.GRPCTLS)))
	}
	opts = append(opts, cfg.GRPCOptions...)
	gs := grpc.NewServer(opts...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	var r prometheus.Registerer
	if reg != nil {
		r = reg
	}
	return &Process{GRPC: gs, Health: hs, log: log, ready: ready, cfg: cfg, conns: newConnLimiter(cfg, r, log)}
}

// Handler returns api with the operational endpoints mounted beside it.
func (p *Process) Handler(reg *prometheus.Registry, api http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if p.ready != nil {
			if err := p.ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		w.Write([]byte("ready\n"))
	})
	if api != nil {
		mux.Handle("/", api)
	}
	return mux
}

// ServeGRPC listens on addr and serves gRPC in the background. It returns
// the bound address (useful with port 0). Register services first.
func (p *Process) ServeGRPC(addr string) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen gRPC %s: %w", addr, err)
	}
	p.ServeGRPCOn(ln)
	return ln.Addr(), nil
}

// ServeGRPCOn serves gRPC on ln in the background; for callers that need
// the bound address before registering services.
func (p *Process) ServeGRPCOn(ln net.Listener) {
	p.track(ln)
	// gRPC sets its keepalive timeout as the TCP user timeout of the
	// connections it accepts, but only on a *net.TCPConn; the wrapper does.
	ln = p.conns.wrap(ln, "grpc", rpc.ServerKeepalive().Timeout)
	go func() {
		if err := p.GRPC.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			p.log.Error("gRPC server stopped", "err", err)
		}
	}()
	p.Health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
}

// ServeHTTP listens on addr and serves h in the background.
func (p *Process) ServeHTTP(addr string, h http.Handler) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen HTTP %s: %w", addr, err)
	}
	p.track(ln)
	srv := &http.Server{
		Handler:           boundRequest(h, on(p.cfg.BodyTimeout), on(p.cfg.WriteTimeout)),
		ReadHeaderTimeout: on(p.cfg.ReadHeaderTimeout),
		IdleTimeout:       on(p.cfg.IdleTimeout),
		MaxHeaderBytes:    p.cfg.MaxHeaderBytes,
	}
	// ReadTimeout stays off: boundRequest bounds a request's body alone,
	// so a WebSocket (a bodiless upgrade) is never under a read deadline.
	p.mu.Lock()
	p.httpSrv = srv
	p.mu.Unlock()
	ln = p.conns.wrap(ln, "http", 0)
	serve := srv.Serve
	if p.cfg.HTTPTLS != nil {
		srv.TLSConfig = p.cfg.HTTPTLS.Clone()
		serve = func(ln net.Listener) error { return srv.ServeTLS(ln, "", "") }
	}
	go func() {
		if err := serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("HTTP server stopped", "err", err)
		}
	}()
	return ln.Addr(), nil
}

func (p *Process) track(ln net.Listener) {
	p.mu.Lock()
	p.listeners = append(p.listeners, ln)
	p.mu.Unlock()
}

// Shutdown marks the process not serving, then drains HTTP and gRPC,
// forcing them closed when ctx ends.
func (p *Process) Shutdown(ctx context.Context) {
	p.Health.Shutdown()
	p.mu.Lock()
	srv := p.httpSrv
	p.mu.Unlock()
	if srv != nil {
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
	}
	done := make(chan struct{})
	go func() { p.GRPC.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		p.GRPC.Stop()
	}
}
