package gateway

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
)

// Per-client limits. A client is the authenticated identity of a request
// (auth.FromContext: its method and Subject) when it has one, else its
// remote address — the IP, or the /64 network of an IPv6 address, which
// one host can rotate addresses within. Each client has:
//
//   - a token bucket (Config.RateLimit requests per second, bursts of
//     Config.RateBurst): every HTTP request, gRPC call and WebSocket
//     subscribe frame takes a token; without one the request is refused
//     with RESOURCE_EXHAUSTED (HTTP 429) and a Retry-After of the time
//     until the next token;
//   - a byte bucket (Config.BodyBytesPerSecond): the bodies of its HTTP
//     requests are charged to it — the Content-Length up front (at most
//     Config.MaxBodyBytes), a body of unknown length as it is read — and a
//     client in debt is refused like one without a token, before its
//     body is read or decoded, until the debt is paid back;
//   - a bound on its requests in flight (Config.MaxConcurrentPerClient);
//   - a bound on its open WebSockets and gRPC subscription streams
//     (Config.MaxWebSocketsPerClient), which do not count as requests in
//     flight.
//
// Refusals are counted in lunora_gateway_limited_total{limit}.

// Values of the limit label of lunora_gateway_limited_total.
const (
	limitRate        = "rate"
	limitBytes       = "bytes"
	limitConcurrency = "concurrency"
	limitSockets     = "websockets"
)

// Errors of the per-client limits; each refusal carries its own message
// and matches one of these with errors.Is.
var (
	// ErrRateLimited: the client has no token left in its bucket.
	ErrRateLimited = api.New(codes.ResourceExhausted, "rate limit exceeded")
	// ErrTooManyRequests: the client already has Config.MaxConcurrentPerClient
	// requests in flight.
	ErrTooManyRequests = api.New(codes.ResourceExhausted, "too many concurrent requests")
	// ErrTooManySockets: the client already holds
	// Config.MaxWebSocketsPerClient live connections.
	ErrTooManySockets = api.New(codes.ResourceExhausted, "too many live connections")
)

// concurrencyRetryAfter is the retry hint of a refusal for requests in
// flight (answered as Retry-After: 1 over HTTP).
const concurrencyRetryAfter = 100 * time.Millisecond

// sweepEvery is how often a stripe of the client table drops clients that
// hold nothing and whose bucket is full again: they are what a new client
// would be.
const sweepEvery = 10 * time.Second

const limitStripes = 32

type clientState struct {
	tokens   float64
	bytes    float64   // the byte bucket; negative: in debt
	last     time.Time // when tokens and bytes were computed
	inFlight int
	sockets  int
}

type limitStripe struct {
	mu        sync.Mutex
	clients   map[string]*clientState
	lastSweep time.Time
}

type clientLimits struct {
	rate  float64 // tokens per second; 0: no rate limit
	burst float64
	// byteRate refills the byte bucket (bytes per second; 0: no byte
	// bound) up to byteBurst.
	byteRate  float64
	byteBurst float64
	maxConc   int // 0: no bound
	maxWS     int // 0: no bound
	now       func() time.Time
	seed      maphash.Seed
	stripes   [limitStripes]limitStripe
	limited   *prometheus.CounterVec
}

func newClientLimits(cfg Config, reg prometheus.Registerer) (*clientLimits, error) {
	l := &clientLimits{
		rate: cfg.RateLimit, burst: float64(cfg.RateBurst),
		byteRate: float64(cfg.BodyBytesPerSecond), byteBurst: math.Max(float64(cfg.BodyBytesPerSecond), float64(cfg.MaxBodyBytes)),
		maxConc: cfg.MaxConcurrentPerClient, maxWS: cfg.MaxWebSocketsPerClient,
		now: time.Now, seed: maphash.MakeSeed(),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lunora_gateway_limited_total",
			Help: "Requests the gateway refused for a per-client limit: rate, concurrency or websockets.",
		}, []string{"limit"}),
	}
	if l.rate > 0 && l.burst < 1 {
		l.burst = math.Max(1, math.Ceil(l.rate))
	}
	for i := range l.stripes {
		l.stripes[i].clients = map[string]*clientState{}
	}
	if reg != nil {
		if err := reg.Register(l.limited); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("gateway: metrics already registered on Config.Registerer (one Gateway per registry)")
			}
			return nil, err
		}
	}
	return l, nil
}

func (l *clientLimits) off() bool {
	return l.rate <= 0 && l.byteRate <= 0 && l.maxConc <= 0 && l.maxWS <= 0
}

func (l *clientLimits) stripe(key string) *limitStripe {
	return &l.stripes[maphash.String(l.seed, key)%limitStripes]
}

// state returns key's state with its bucket refilled to now; s.mu held.
func (l *clientLimits) state(s *limitStripe, key string, now time.Time) *clientState {
	if now.Sub(s.lastSweep) >= sweepEvery {
		s.lastSweep = now
		for k, c := range s.clients {
			if tokens, bytes := l.refill(c, now); c.inFlight == 0 && c.sockets == 0 && tokens >= l.burst && bytes >= l.byteBurst {
				delete(s.clients, k)
			}
		}
	}
	c := s.clients[key]
	if c == nil {
		c = &clientState{tokens: l.burst, bytes: l.byteBurst, last: now}
		s.clients[key] = c
	}
	c.tokens, c.bytes = l.refill(c, now)
	c.last = now
	return c
}

// refill returns c's token and byte buckets as they are at now.
func (l *clientLimits) refill(c *clientState, now time.Time) (tokens, bytes float64) {
	elapsed := now.Sub(c.last).Seconds()
	tokens, bytes = l.burst, l.byteBurst
	if l.rate > 0 {
		tokens = math.Min(l.burst, c.tokens+elapsed*l.rate)
	}
	if l.byteRate > 0 {
		bytes = math.Min(l.byteBurst, c.bytes+elapsed*l.byteRate)
	}
	return tokens, bytes
}

// checkBytes refuses a client whose byte bucket is in debt; s.mu held.
func (l *clientLimits) checkBytes(c *clientState) error {
	if l.byteRate <= 0 || c.bytes >= 0 {
		return nil
	}
	wait := time.Duration(math.Min(-c.bytes/l.byteRate, 86400) * float64(time.Second))
	l.limited.WithLabelValues(limitBytes).Inc()
	return &api.Error{
		Code:       codes.ResourceExhausted,
		Msg:        fmt.Sprintf("rate limit exceeded: this client may send %s of request bodies per second; retry in %s", byteSize(int64(l.byteRate)), wait.Round(time.Millisecond)),
		RetryAfter: max(wait, time.Millisecond),
		Err:        ErrRateLimited,
	}
}

// charge takes n body bytes from key's byte bucket (a body of unknown
// length, once read).
func (l *clientLimits) charge(key string, n int64) {
	if l.byteRate <= 0 || n <= 0 {
		return
	}
	s := l.stripe(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	l.state(s, key, l.now()).bytes -= float64(n)
}

// takeToken spends one of c's tokens or says how long until there is one;
// s.mu held.
func (l *clientLimits) takeToken(c *clientState) error {
	if l.rate <= 0 {
		return nil
	}
	if c.tokens >= 1 {
		c.tokens--
		return nil
	}
	// At most a day: a rate of a few per year must not overflow.
	wait := time.Duration(math.Min((1-c.tokens)/l.rate, 86400) * float64(time.Second))
	l.limited.WithLabelValues(limitRate).Inc()
	return &api.Error{
		Code:       codes.ResourceExhausted,
		Msg:        fmt.Sprintf("rate limit exceeded: this client may send %s requests per second (bursts of %d); retry in %s", trimFloat(l.rate), int(l.burst), wait.Round(time.Millisecond)),
		RetryAfter: max(wait, time.Millisecond),
		Err:        ErrRateLimited,
	}
}

// admit takes a token and a request slot for key, and charges body bytes
// to it; release gives the slot back.
func (l *clientLimits) admit(key string, body int64) (release func(), err error) {
	if l.off() {
		return func() {}, nil
	}
	s := l.stripe(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	c := l.state(s, key, l.now())
	if l.maxConc > 0 && c.inFlight >= l.maxConc {
		l.limited.WithLabelValues(limitConcurrency).Inc()
		return nil, &api.Error{
			Code:       codes.ResourceExhausted,
			Msg:        fmt.Sprintf("this client already has %d requests in flight, the limit; wait for one to finish", c.inFlight),
			RetryAfter: concurrencyRetryAfter,
			Err:        ErrTooManyRequests,
		}
	}
	if err := l.checkBytes(c); err != nil {
		return nil, err
	}
	if err := l.takeToken(c); err != nil {
		return nil, err
	}
	if l.byteRate > 0 {
		c.bytes -= float64(body)
	}
	c.inFlight++
	return func() {
		s.mu.Lock()
		c.inFlight--
		s.mu.Unlock()
	}, nil
}

// admitSocket takes a token and a live-connection slot for key.
func (l *clientLimits) admitSocket(key string) (release func(), err error) {
	if l.off() {
		return func() {}, nil
	}
	s := l.stripe(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	c := l.state(s, key, l.now())
	if l.maxWS > 0 && c.sockets >= l.maxWS {
		l.limited.WithLabelValues(limitSockets).Inc()
		return nil, &api.Error{
			Code:       codes.ResourceExhausted,
			Msg:        fmt.Sprintf("this client already holds %d live connections (WebSockets and subscription streams), the limit; close one first", c.sockets),
			RetryAfter: time.Second,
			Err:        ErrTooManySockets,
		}
	}
	if err := l.takeToken(c); err != nil {
		return nil, err
	}
	c.sockets++
	return func() {
		s.mu.Lock()
		c.sockets--
		s.mu.Unlock()
	}, nil
}

// allow takes a token for key (a WebSocket frame that starts work).
func (l *clientLimits) allow(key string) error {
	if l.rate <= 0 {
		return nil
	}
	s := l.stripe(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	return l.takeToken(l.state(s, key, l.now()))
}

// clients is how many clients the table holds (tests).
func (l *clientLimits) clients() int {
	n := 0
	for i := range l.stripes {
		s := &l.stripes[i]
		s.mu.Lock()
		n += len(s.clients)
		s.mu.Unlock()
	}
	return n
}

func trimFloat(f float64) string {
	if f == math.Trunc(f) {
		return fmt.Sprintf("%.0f", f)
	}
	return fmt.Sprintf("%g", f)
}

// ClientKey names the client a request counts against: "<method>:<subject>"
// for an authenticated identity with a subject (the dev identity of a
// gateway without authentication does not count), else "ip:<address>" of
// remoteAddr (host:port or a bare address), an IPv6 address reduced to
// its /64.
func ClientKey(ctx context.Context, remoteAddr string) string {
	// The dev identity (authentication off) names no one: every caller
	// has it, so callers are told apart by address.
	if id := auth.FromContext(ctx); id != nil && id.Subject != "" && id.Method != auth.MethodDev {
		return string(id.Method) + ":" + id.Subject
	}
	host := remoteAddr
	if h, _, err := net.SplitHostPort(remoteAddr); err == nil {
		host = h
	}
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		if a.Is6() {
			if p, err := a.WithZone("").Prefix(64); err == nil {
				return "ip:" + p.String()
			}
		}
		return "ip:" + a.String()
	}
	return "ip:" + host
}

// grpcClientKey is ClientKey for a gRPC call's context.
func grpcClientKey(ctx context.Context) string {
	addr := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		addr = p.Addr.String()
	}
	return ClientKey(ctx, addr)
}

// admitGRPC authenticates a gRPC call (Call, Sql, Status, FanOut) and
// admits it for the client it names — its identity, as on HTTP, so the
// limits key on who calls rather than on the address.
func (g *Gateway) admitGRPC(ctx context.Context) (context.Context, func(), error) {
	ctx, err := g.grpcAuth(ctx)
	if err != nil {
		return ctx, nil, err
	}
	release, err := g.limits.admit(grpcClientKey(ctx), 0)
	return ctx, release, err
}

// limitHTTP applies the per-client limits to the HTTP API: a WebSocket
// (GET /v1/subscribe) holds a connection slot for its life, any other
// request a request slot while it is served.
func (g *Gateway) limitHTTP(next http.Handler) http.Handler {
	if g.limits.off() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := ClientKey(r.Context(), r.RemoteAddr)
		var (
			release func()
			err     error
			counted *countingBody
		)
		switch {
		case r.URL.Path == "/v1/subscribe":
			release, err = g.limits.admitSocket(key)
		case r.ContentLength >= 0:
			// The handler reads at most MaxBodyBytes of it.
			release, err = g.limits.admit(key, min(r.ContentLength, g.cfg.MaxBodyBytes))
		default:
			release, err = g.limits.admit(key, 0)
			if err == nil && g.limits.byteRate > 0 {
				counted = &countingBody{ReadCloser: r.Body}
				r.Body = counted
			}
		}
		if err != nil {
			if r.ContentLength != 0 {
				// Its body is not read: the connection closes after the
				// answer; a small body (a typical call) is dropped first
				// so the client reads the 429, a large one is not
				// received at all.
				discardBody(w, r, 64<<10)
			}
			g.metrics.observe(protocolHTTP, limitedLabel, err, 0)
			g.writeError(w, r, err)
			return
		}
		defer release()
		next.ServeHTTP(w, r)
		if counted != nil {
			g.limits.charge(key, counted.n)
		}
	})
}

// countingBody counts the bytes read from a request body of unknown
// length.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// limitedLabel is the function label of HTTP requests refused before
// their body was read: by a per-client limit, or at the edge for their
// origin.
const limitedLabel = "limited"
