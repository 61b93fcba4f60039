package server_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lunora/lunora/server"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// testProcess is a server.Process serving h over HTTP (and gRPC health)
// on 127.0.0.1:0 with cfg.
type testProcess struct {
	*server.Process
	reg      *prometheus.Registry
	httpAddr string
	grpcAddr string
}

func start(t *testing.T, cfg server.Config, h http.Handler) *testProcess {
	t.Helper()
	reg := prometheus.NewRegistry()
	p := server.New(reg, slog.New(slog.DiscardHandler), nil, cfg)
	ha, err := p.ServeHTTP("127.0.0.1:0", p.Handler(reg, h))
	if err != nil {
		t.Fatal(err)
	}
	ga, err := p.ServeGRPC("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return &testProcess{Process: p, reg: reg, httpAddr: ha.String(), grpcAddr: ga.String()}
}

// metric is the value of a gauge or counter with exactly these labels (0
// when absent).
func (p *testProcess) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := p.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// poll calls f until it returns nil, failing the test after limit.
func poll(t *testing.T, limit time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", limit, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *testProcess) waitMetric(t *testing.T, name string, labels map[string]string, want float64) {
	t.Helper()
	poll(t, 10*time.Second, func() error {
		if got := p.metric(t, name, labels); got != want {
			return fmt.Errorf("%s%v = %v, want %v", name, labels, got, want)
		}
		return nil
	})
}

// dialFrom opens a TCP connection to addr from the loopback address src
// (127.0.0.x: every one is a distinct client to the server). It skips
// the test where the system cannot bind such an address.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		if src != "127.0.0.1" && strings.Contains(err.Error(), "assign requested address") {
			t.Skipf("cannot connect from %s on this system: %v", src, err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// httpClientFrom is an HTTP client whose connections come from src.
func httpClientFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// closedByServer waits until the server closes c (EOF or a reset on read)
// and reports what it read first; it fails the test if c stays open.
func closedByServer(t *testing.T, c net.Conn, limit time.Duration) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(limit))
	data, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection %s still open after %s (read %q)", c.LocalAddr(), limit, data)
	}
	return string(data)
}

// refusedByServer connects from src and checks that the server closes the
// connection at once, before answering anything. (The reset can win the
// race with the dial itself, which then fails with ECONNRESET.)
func refusedByServer(t *testing.T, src, addr string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: lunora\r\n\r\n")
	if answer := closedByServer(t, c, 10*time.Second); answer != "" {
		t.Fatalf("a connection over the cap was answered: %q", answer)
	}
}

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Write([]byte("ok"))
	})
}

// TestDribbledBodyIsCutOff: a client that sends its headers and then its
// body a byte at a time is cut off once the body timeout passes: the
// handler's read fails and the connection is closed after the answer —
// where before it held the connection (and a file descriptor) for as long
// as it kept dribbling.
func TestDribbledBodyIsCutOff(t *testing.T) {
	t.Parallel()
	const bodyTimeout = 500 * time.Millisecond
	readErr := make(chan error, 1)
	p := start(t, server.Config{BodyTimeout: bodyTimeout, ReadHeaderTimeout: 5 * time.Second}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		readErr <- err
		if err != nil {
			http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
			return
		}
		w.Write([]byte("ok"))
	}))

	c := dialFrom(t, "127.0.0.1", p.httpAddr)
	if _, err := io.WriteString(c, "POST /v1/call HTTP/1.1\r\nHost: lunora\r\nContent-Length: 1000000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	stop := make(chan struct{})
	dribbled := make(chan int, 1)
	go func() {
		n := 0
		defer func() { dribbled <- n }()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := c.Write([]byte{'x'}); err != nil {
				return
			}
			n++
		}
	}()
	answer := closedByServer(t, c, 10*bodyTimeout)
	cutOff := time.Since(sent)
	close(stop)
	n := <-dribbled

	select {
	case err := <-readErr:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("handler's body read ended with %v, want a deadline error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler never finished reading the body")
	}
	if !strings.HasPrefix(answer, "HTTP/1.1 400") || !strings.Contains(answer, "Connection: close") {
		t.Errorf("answer = %q, want the handler's 400 with Connection: close", answer)
	}
	if cutOff < bodyTimeout || cutOff > bodyTimeout+time.Second {
		t.Errorf("connection closed %s after the headers, want within [%s, %s]", cutOff, bodyTimeout, bodyTimeout+time.Second)
	}
	t.Logf("a client dribbling its body (%d bytes sent) was cut off %s after its headers (body timeout %s)", n, cutOff.Round(time.Millisecond), bodyTimeout)
}

// TestDribbledHeadersAreCutOff: headers sent a line at a time are bounded
// by the header timeout.
func TestDribbledHeadersAreCutOff(t *testing.T) {
	t.Parallel()
	const headerTimeout = 300 * time.Millisecond
	p := start(t, server.Config{ReadHeaderTimeout: headerTimeout}, okHandler())
	c := dialFrom(t, "127.0.0.1", p.httpAddr)
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: lunora\r\n"); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := fmt.Fprintf(c, "X-Slow-%d: y\r\n", i); err != nil {
				return
			}
		}
	}()
	if answer := closedByServer(t, c, 10*headerTimeout); strings.HasPrefix(answer, "HTTP/1.1 200") {
		t.Fatalf("a request whose headers never ended was answered: %q", answer)
	}
	if d := time.Since(began); d > headerTimeout+time.Second {
		t.Errorf("closed %s after the first header line, want about %s", d, headerTimeout)
	}
	t.Logf("dribbled headers cut off after %s (header timeout %s)", time.Since(began).Round(time.Millisecond), headerTimeout)
}

// TestSlowHandlerAfterBodyKeepsItsContext: the body deadline is lifted
// once the body is read, so a handler that runs past it is not canceled
// (the connection's background read must not time out) and the
// connection is reused for the next request.
func TestSlowHandlerAfterBodyKeepsItsContext(t *testing.T) {
	t.Parallel()
	const bodyTimeout = 200 * time.Millisecond
	p := start(t, server.Config{BodyTimeout: bodyTimeout}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if r.URL.Query().Get("slow") != "" {
			select { // run for three body timeouts, unless canceled
			case <-r.Context().Done():
				http.Error(w, "canceled: "+context.Cause(r.Context()).Error(), http.StatusServiceUnavailable)
				return
			case <-time.After(3 * bodyTimeout):
			}
		}
		w.Write([]byte("ok"))
	}))
	c := dialFrom(t, "127.0.0.1", p.httpAddr)
	br := bufio.NewReader(c)
	for _, path := range []string{"/x?slow=1", "/x"} {
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: lunora\r\nContent-Length: 5\r\n\r\nhello", path)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s on the same connection: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("%s: %d %q, want 200 ok", path, resp.StatusCode, body)
		}
	}
}

// TestConnectionCaps: a client opening more connections than the per-IP
// cap has the extra ones closed as soon as they are accepted — on the
// HTTP and the gRPC listener alike, which share the count — while another
// client's requests still succeed; the total cap refuses any client once
// the process holds that many. Refusals are counted in
// lunora_server_connections_refused_total.
func TestConnectionCaps(t *testing.T) {
	t.Parallel()
	const perIP, total = 3, 5
	p := start(t, server.Config{MaxConnsPerIP: perIP, MaxConns: total}, okHandler())
	open := func(listener string) map[string]string { return map[string]string{"listener": listener} }
	refused := func(listener, reason string) map[string]string {
		return map[string]string{"listener": listener, "reason": reason}
	}

	// The greedy client holds its cap in idle connections...
	for range perIP {
		dialFrom(t, "127.0.0.1", p.httpAddr)
	}
	p.waitMetric(t, "lunora_server_connections_open", open("http"), perIP)
	// ...and every further one is closed at once, over HTTP and gRPC.
	const extra = 4
	for range extra {
		refusedByServer(t, "127.0.0.1", p.httpAddr)
	}
	p.waitMetric(t, "lunora_server_connections_refused_total", refused("http", "per_ip"), extra)
	refusedByServer(t, "127.0.0.1", p.grpcAddr)
	p.waitMetric(t, "lunora_server_connections_refused_total", refused("grpc", "per_ip"), 1)

	// A well-behaved client elsewhere is served, over HTTP and gRPC.
	resp, err := httpClientFrom("127.0.0.2").Get("http://" + p.httpAddr + "/healthz")
	if err != nil {
		t.Fatalf("a request from another client failed: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a request from another client: %s", resp.Status)
	}
	checkHealth(t, p.grpcAddr, "127.0.0.2")
	// Both of its connections are closed again before the count below:
	// one still closing would take a slot of the total.
	p.waitMetric(t, "lunora_server_connections_open", open("http"), perIP)
	p.waitMetric(t, "lunora_server_connections_open", open("grpc"), 0)

	// Up to the total cap: 3 from .1, 2 from .2; a third client is refused.
	dialFrom(t, "127.0.0.2", p.httpAddr)
	dialFrom(t, "127.0.0.2", p.grpcAddr)
	poll(t, 10*time.Second, func() error {
		if n := p.metric(t, "lunora_server_connections_open", open("http")) + p.metric(t, "lunora_server_connections_open", open("grpc")); n != total {
			return fmt.Errorf("%v connections open, want %d", n, total)
		}
		return nil
	})
	refusedByServer(t, "127.0.0.3", p.httpAddr)
	p.waitMetric(t, "lunora_server_connections_refused_total", refused("http", "total"), 1)

	// Connections closed give their slots back.
	if r := p.metric(t, "lunora_server_connections_refused_total", refused("http", "per_ip")); r != extra {
		t.Errorf("per-IP refusals = %v, want %d", r, extra)
	}
}

// TestConnectionSlotsComeBack: closing connections frees their slots, so
// a client at its cap that closes one can connect again.
func TestConnectionSlotsComeBack(t *testing.T) {
	t.Parallel()
	p := start(t, server.Config{MaxConnsPerIP: 2}, okHandler())
	first := dialFrom(t, "127.0.0.1", p.httpAddr)
	dialFrom(t, "127.0.0.1", p.httpAddr)
	p.waitMetric(t, "lunora_server_connections_open", map[string]string{"listener": "http"}, 2)
	refusedByServer(t, "127.0.0.1", p.httpAddr)
	first.Close()
	p.waitMetric(t, "lunora_server_connections_open", map[string]string{"listener": "http"}, 1)
	resp, err := httpClientFrom("127.0.0.1").Get("http://" + p.httpAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatal(resp.Status)
	}
}

func checkHealth(t *testing.T, addr, src string) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC health from %s: %v %v", src, resp, err)
	}
}

// TestGRPCHandshakeTimeout: a client that connects to the gRPC listener
// and never completes the HTTP/2 setup is closed after the handshake
// timeout.
func TestGRPCHandshakeTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	p := start(t, server.Config{GRPCHandshakeTimeout: timeout}, nil)
	c := dialFrom(t, "127.0.0.1", p.grpcAddr)
	began := time.Now()
	closedByServer(t, c, 20*timeout)
	if d := time.Since(began); d > timeout+time.Second {
		t.Errorf("a silent gRPC client was closed after %s, want about %s", d, timeout)
	}
	t.Logf("silent gRPC connection closed after %s (handshake timeout %s)", time.Since(began).Round(time.Millisecond), timeout)
}

// TestWebSocketOutlivesRequestTimeouts: a WebSocket is a bodiless GET
// whose connection outlives its request: neither the body timeout nor
// the write timeout (nor the header and idle timeouts) cut it, however
// long it stays quiet.
func TestWebSocketOutlivesRequestTimeouts(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	p := start(t, server.Config{BodyTimeout: timeout, WriteTimeout: timeout, ReadHeaderTimeout: timeout, IdleTimeout: timeout},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			for { // echo
				typ, data, err := c.Read(r.Context())
				if err != nil {
					return
				}
				if err := c.Write(r.Context(), typ, data); err != nil {
					return
				}
			}
		}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+p.httpAddr+"/v1/subscribe", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	echo := func(msg string) {
		t.Helper()
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatalf("write %q: %v", msg, err)
		}
		_, got, err := c.Read(ctx)
		if err != nil || string(got) != msg {
			t.Fatalf("echo of %q: %q, %v", msg, got, err)
		}
	}
	echo("first")
	// Quiet for five times every timeout: a deliberate wait, the property
	// under test is that time passing does not end the socket.
	time.Sleep(5 * timeout)
	echo("after a quiet spell")
	// And busy past them.
	for began := time.Now(); time.Since(began) < 5*timeout; {
		echo("busy")
	}
}

// TestSlowReaderIsCutOff: a client that never reads its answer holds the
// connection only until the write timeout: the handler's write fails then
// and the connection is closed.
func TestSlowReaderIsCutOff(t *testing.T) {
	t.Parallel()
	const writeTimeout = 300 * time.Millisecond
	writeErr := make(chan error, 1)
	p := start(t, server.Config{WriteTimeout: writeTimeout}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for range 1024 { // 64 MiB: far more than the socket buffers hold
			if _, err := w.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- nil
	}))
	c := dialFrom(t, "127.0.0.1", p.httpAddr)
	fmt.Fprintf(c, "GET /big HTTP/1.1\r\nHost: lunora\r\n\r\n")
	began := time.Now()
	select {
	case err := <-writeErr:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the answer's write ended with %v, want a deadline error", err)
		}
	case <-time.After(20 * writeTimeout):
		t.Fatalf("the handler was still writing to a client that reads nothing after %s", 20*writeTimeout)
	}
	if d := time.Since(began); d > writeTimeout+time.Second {
		t.Errorf("write cut off %s after the request, want about %s", d, writeTimeout)
	}
	closedByServer(t, c, 10*time.Second)
	t.Logf("a client reading nothing was cut off %s after its request (write timeout %s)", time.Since(began).Round(time.Millisecond), writeTimeout)
}
