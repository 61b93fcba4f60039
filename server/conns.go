package server

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a connection is refused, the "reason" label of
// lunora_server_connections_refused_total.
const (
	refusedPerIP = "per_ip"
	refusedTotal = "total"
)

// connLimiter counts the open connections of a process's listeners, per
// remote address and in total, and refuses those over its bounds.
type connLimiter struct {
	perIP, total int // <= 0: no bound
	log          *slog.Logger

	mu   sync.Mutex
	open int
	byIP map[string]int

	opened  *prometheus.GaugeVec   // listener
	refused *prometheus.CounterVec // listener, reason
	lastLog atomic.Int64           // unix nanos of the last refusal logged
}

func newConnLimiter(cfg Config, reg prometheus.Registerer, log *slog.Logger) *connLimiter {
	l := &connLimiter{
		perIP: cfg.MaxConnsPerIP, total: cfg.MaxConns, log: log, byIP: map[string]int{},
		opened: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lunora_server_connections_open",
			Help: "Connections open on the process's listeners (HTTP, gRPC).",
		}, []string{"listener"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lunora_server_connections_refused_total",
			Help: "Connections closed as soon as accepted because their client address (per_ip) or the process (total) held the most allowed.",
		}, []string{"listener", "reason"}),
	}
	if reg != nil {
		l.opened = registerOr(reg, l.opened)
		l.refused = registerOr(reg, l.refused)
	}
	return l
}

// registerOr registers c, or returns the collector already registered
// under its name (a registry shared by two Processes in one test).
func registerOr[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

// acquire counts a connection from ip, or names the bound it would cross.
func (l *connLimiter) acquire(ip string) (refusedBy string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total > 0 && l.open >= l.total:
		return refusedTotal
	case l.perIP > 0 && l.byIP[ip] >= l.perIP:
		return refusedPerIP
	}
	l.open++
	l.byIP[ip]++
	return ""
}

func (l *connLimiter) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if n := l.byIP[ip] - 1; n > 0 {
		l.byIP[ip] = n
	} else {
		delete(l.byIP, ip)
	}
}

// wrap returns ln with its connections counted and bounded; name labels
// the metrics ("http", "grpc"). A positive userTimeout is set as each
// accepted connection's TCP user timeout.
func (l *connLimiter) wrap(ln net.Listener, name string, userTimeout time.Duration) net.Listener {
	l.opened.WithLabelValues(name) // show 0 before the first connection
	return &limitedListener{Listener: ln, l: l, name: name, userTimeout: userTimeout}
}

type limitedListener struct {
	net.Listener
	l           *connLimiter
	name        string
	userTimeout time.Duration
}

// Accept returns the next connection within the bounds; those over them
// are closed at once (with a reset, so their descriptor and socket are
// freed without lingering) and counted, never returned.
func (ln *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c.RemoteAddr())
		if reason := ln.l.acquire(ip); reason != "" {
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			c.Close()
			ln.l.refused.WithLabelValues(ln.name, reason).Inc()
			ln.l.logRefusal(ln.name, reason, ip)
			continue
		}
		setUserTimeout(c, ln.userTimeout)
		ln.l.opened.WithLabelValues(ln.name).Inc()
		return &limitedConn{Conn: c, release: func() {
			ln.l.release(ip)
			ln.l.opened.WithLabelValues(ln.name).Dec()
		}}, nil
	}
}

// logRefusal logs at most one refusal every 10 seconds (the metric counts
// them all): a flood must not become a flood of logs.
func (l *connLimiter) logRefusal(listener, reason, ip string) {
	now := time.Now().UnixNano()
	last := l.lastLog.Load()
	if now-last < int64(10*time.Second) || !l.lastLog.CompareAndSwap(last, now) {
		return
	}
	l.log.Warn("refusing connections over the limit (logged once per 10s; see lunora_server_connections_refused_total)",
		"listener", listener, "reason", reason, "client", ip, "max_conns_per_ip", l.perIP, "max_conns", l.total)
}

// remoteIP is the address part of a connection's remote address.
func remoteIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	if host, _, err := net.SplitHostPort(a.String()); err == nil {
		return host
	}
	return a.String()
}

// limitedConn gives its slot back once, when closed.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite half-closes the connection when it can (net/http uses it to
// end a response cleanly before closing).
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
