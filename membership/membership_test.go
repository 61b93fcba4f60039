package membership

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// ---- helpers ----

func nodeConfig(id string, role Role, seeds ...string) Config {
	return Config{
		BindAddr: "127.0.0.1:0",
		Seeds:    seeds,
		Meta: Meta{
			ID:       id,
			Role:     role,
			GRPCAddr: "127.0.0.1:" + strconv.Itoa(5000+len(id)) + "/" + id,
			Weight:   len(id),
			State:    "active",
		},
	}
}

func start(t *testing.T, cfg Config) *Membership {
	t.Helper()
	m, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start(%s): %v", cfg.Meta.ID, err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return m
}

// waitFor polls cond until it holds or timeout passes, and returns how long
// it took. On timeout it fails the test with what and the members' views.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool, views ...*Membership) time.Duration {
	t.Helper()
	begin := time.Now()
	deadline := begin.Add(timeout)
	for {
		if cond() {
			return time.Since(begin)
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s never happened\n%s", timeout, what, dump(views...))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// holdsFor checks that cond stays true for d (the one kind of bounded wait
// for an absence these tests use).
func holdsFor(t *testing.T, d time.Duration, what string, cond func() bool, views ...*Membership) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !cond() {
			t.Fatalf("%s stopped holding\n%s", what, dump(views...))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func dump(views ...*Membership) string {
	var b strings.Builder
	for _, v := range views {
		fmt.Fprintf(&b, "view of %s (%s):\n", v.Local().ID, v.LocalAddr())
		for _, mem := range v.Members() {
			fmt.Fprintf(&b, "  %-8s %-8s %-22s %+v\n", mem.ID, mem.Status, mem.Addr, mem.Meta)
		}
	}
	return b.String()
}

func statusOf(m *Membership, id string) Status {
	mem, ok := m.Member(id)
	if !ok {
		return ""
	}
	return mem.Status
}

// seesAlive reports whether every observer lists every target as Alive with
// the target's current address and meta.
func seesAlive(observers []*Membership, targets ...*Membership) bool {
	for _, o := range observers {
		for _, tg := range targets {
			mem, ok := o.Member(tg.Local().ID)
			if !ok || mem.Status != Alive || mem.Addr != tg.LocalAddr() || mem.Meta != tg.Local() {
				return false
			}
		}
	}
	return true
}

func randomKey(t *testing.T, n int) []byte {
	t.Helper()
	k := make([]byte, n)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// syncBuffer is an io.Writer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, status Status, role Role) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "lunora_members" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range mt.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["status"] == string(status) && labels["role"] == string(role) {
				return mt.GetGauge().GetValue()
			}
		}
	}
	return -1
}

// ---- tests ----

func TestThreeMembersJoin(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	var changes atomic.Int64
	cfgA := nodeConfig("a", RoleNode)
	cfgA.Registerer = reg
	cfgA.OnChange = func() { changes.Add(1) }
	a := start(t, cfgA)
	b := start(t, nodeConfig("b", RoleNode, a.LocalAddr()))
	g := start(t, nodeConfig("gw", RoleGateway, a.LocalAddr(), b.LocalAddr()))
	all := []*Membership{a, b, g}

	took := waitFor(t, 10*time.Second, "all three see all three alive", func() bool {
		return seesAlive(all, all...)
	}, all...)
	t.Logf("three members converged in %v", took)

	for _, o := range all {
		ms := o.Members()
		if len(ms) != 3 || ms[0].ID != "a" || ms[1].ID != "b" || ms[2].ID != "gw" {
			t.Fatalf("%s: Members() = %+v, want a, b, gw sorted", o.Local().ID, ms)
		}
		for _, mem := range ms {
			want := nodeConfig(mem.ID, RoleNode)
			if mem.ID == "gw" {
				want.Meta.Role = RoleGateway
			}
			if mem.Role != want.Meta.Role || mem.GRPCAddr != want.Meta.GRPCAddr || mem.Weight != want.Meta.Weight {
				t.Errorf("%s sees %s with meta %+v, want role %s grpc %s weight %d", o.Local().ID, mem.ID, mem.Meta,
					want.Meta.Role, want.Meta.GRPCAddr, want.Meta.Weight)
			}
			if mem.GossipAddr != mem.Addr || mem.Since.IsZero() {
				t.Errorf("%s sees %s with gossip addr %q, addr %q, since %v", o.Local().ID, mem.ID, mem.GossipAddr, mem.Addr, mem.Since)
			}
		}
	}
	if _, ok := a.Member("nobody"); ok {
		t.Error("Member(nobody) found something")
	}
	if got := a.Local().GossipAddr; got != a.LocalAddr() || !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("Local().GossipAddr = %q, LocalAddr() = %q", got, a.LocalAddr())
	}

	waitFor(t, 5*time.Second, "OnChange called", func() bool { return changes.Load() > 0 })
	if v := gaugeValue(t, reg, Alive, RoleNode); v != 2 {
		t.Errorf("lunora_members{status=alive,role=node} = %v, want 2", v)
	}
	if v := gaugeValue(t, reg, Alive, RoleGateway); v != 1 {
		t.Errorf("lunora_members{status=alive,role=gateway} = %v, want 1", v)
	}
	if v := gaugeValue(t, reg, Dead, RoleNode); v != 0 {
		t.Errorf("lunora_members{status=dead,role=node} = %v, want 0", v)
	}
	// Shutdown unregisters, so a restarted member can register again.
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := a.Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	cfgA.BindAddr = "127.0.0.1:0"
	start(t, cfgA)
}

func TestSetMeta(t *testing.T) {
	t.Parallel()
	a := start(t, nodeConfig("a", RoleNode))
	b := start(t, nodeConfig("b", RoleNode, a.LocalAddr()))
	c := start(t, nodeConfig("c", RoleNode, a.LocalAddr()))
	all := []*Membership{a, b, c}
	waitFor(t, 10*time.Second, "all alive", func() bool { return seesAlive(all, all...) }, all...)

	if err := b.SetMeta(func(m *Meta) {
		m.Epoch = 7
		m.State = "leaving"
		m.GossipAddr = "ignored:1" // reset to the advertised address
	}); err != nil {
		t.Fatal(err)
	}
	if l := b.Local(); l.Epoch != 7 || l.State != "leaving" || l.GossipAddr != b.LocalAddr() {
		t.Fatalf("Local() after SetMeta = %+v", l)
	}
	took := waitFor(t, 5*time.Second, "a and c see b's new meta", func() bool {
		for _, o := range []*Membership{a, c} {
			mem, _ := o.Member("b")
			if mem.Epoch != 7 || mem.State != "leaving" || mem.Status != Alive {
				return false
			}
		}
		return true
	}, all...)
	t.Logf("meta update seen by all in %v", took)

	// Rejected updates change nothing.
	before := b.Local()
	if err := b.SetMeta(func(m *Meta) { m.ID = "other" }); err == nil {
		t.Error("SetMeta changing ID: no error")
	}
	if err := b.SetMeta(func(m *Meta) { m.BlobAddr = strings.Repeat("x", 600) }); err == nil || !strings.Contains(err.Error(), "512") {
		t.Errorf("SetMeta with oversized meta: err = %v, want one naming the 512-byte limit", err)
	}
	if err := b.SetMeta(func(m *Meta) { m.Role = "" }); err == nil {
		t.Error("SetMeta clearing Role: no error")
	}
	if got := b.Local(); got != before {
		t.Errorf("rejected SetMeta changed Local(): %+v, was %+v", got, before)
	}
}

// Default timing: ProbeInterval 500ms, ProbeTimeout 250ms, SuspicionMult 3.
// A failed member is first probed by a given peer within about 2 rounds of
// n-1 probes (3 s for 4 members), its probe fails within one interval, and
// the suspicion then lasts 1.5 s once another member confirms it, 9 s at
// most without confirmation: about 12.5 s in the worst case, 2-4 s typically.
const failureDetectionBound = 15 * time.Second

func TestFailureDetectionAndLeave(t *testing.T) {
	t.Parallel()
	a := start(t, nodeConfig("a", RoleNode))
	b := start(t, nodeConfig("b", RoleNode, a.LocalAddr()))
	c := start(t, nodeConfig("c", RoleNode, a.LocalAddr()))
	d := start(t, nodeConfig("d", RoleGateway, b.LocalAddr()))
	all := []*Membership{a, b, c, d}
	waitFor(t, 10*time.Second, "all alive", func() bool { return seesAlive(all, all...) }, all...)

	// Crash c: no Leave.
	stopped := time.Now()
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	rest := []*Membership{a, b, d}
	var first time.Duration
	waitFor(t, failureDetectionBound, "a, b and d see c dead", func() bool {
		n := 0
		for _, o := range rest {
			switch statusOf(o, "c") {
			case Dead:
				n++
			case Left:
				t.Fatalf("%s sees crashed c as Left", o.Local().ID)
			}
		}
		if n > 0 && first == 0 {
			first = time.Since(stopped)
		}
		return n == len(rest)
	}, rest...)
	allAt := time.Since(stopped)
	if allAt > failureDetectionBound {
		t.Fatalf("c seen Dead by all only after %v, bound %v", allAt, failureDetectionBound)
	}
	t.Logf("failure detection with default timing: first member saw c Dead %v after the crash, all %v after (asserted bound %v)",
		first, allAt, failureDetectionBound)
	for _, o := range rest {
		if mem, _ := o.Member("c"); mem.Since.Before(stopped) {
			t.Errorf("%s: c's Since %v is before the crash at %v", o.Local().ID, mem.Since, stopped)
		}
	}
	if err := c.Leave(time.Second); !errors.Is(err, ErrClosed) {
		t.Errorf("Leave after Shutdown: err = %v, want ErrClosed", err)
	}
	if err := c.SetMeta(func(m *Meta) { m.Epoch++ }); !errors.Is(err, ErrClosed) {
		t.Errorf("SetMeta after Shutdown: err = %v, want ErrClosed", err)
	}

	// d leaves gracefully.
	leaveAt := time.Now()
	if err := d.Leave(5 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	waitFor(t, 5*time.Second, "a and b see d left", func() bool {
		return statusOf(a, "d") == Left && statusOf(b, "d") == Left
	}, a, b, d)
	t.Logf("graceful leave seen by all %v after Leave was called", time.Since(leaveAt))
	if mem, _ := a.Member("d"); mem.Role != RoleGateway || mem.GRPCAddr != d.Local().GRPCAddr {
		t.Errorf("a lists departed d with meta %+v, want its last meta", mem.Meta)
	}
	if got := statusOf(d, "d"); got != Left {
		t.Errorf("d sees itself as %s after Leave, want left", got)
	}
	if err := d.SetMeta(func(m *Meta) { m.Epoch = 9 }); err == nil {
		t.Error("SetMeta after Leave: no error")
	}
	if err := d.Leave(time.Second); err != nil {
		t.Errorf("second Leave: %v", err)
	}
	// Dead and left members stay listed.
	if ms := a.Members(); len(ms) != 4 {
		t.Errorf("a lists %d members, want 4 (dead and left included):\n%s", len(ms), dump(a))
	}
}

func TestRestartSameID(t *testing.T) {
	t.Parallel()
	a := start(t, nodeConfig("a", RoleNode))
	b := start(t, nodeConfig("b", RoleNode, a.LocalAddr()))
	c := start(t, nodeConfig("c", RoleNode, a.LocalAddr()))
	all := []*Membership{a, b, c}
	waitFor(t, 10*time.Second, "all alive", func() bool { return seesAlive(all, all...) }, all...)

	// Crash c and restart it at once under the same ID on a new port, as a
	// restarted pod would, before the others have noticed the crash.
	oldAddr := c.LocalAddr()
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	cfg := nodeConfig("c", RoleNode, a.LocalAddr(), b.LocalAddr())
	cfg.Meta.GRPCAddr = "127.0.0.1:7777"
	cfg.Meta.Epoch = 3
	c2 := start(t, cfg)
	if c2.LocalAddr() == oldAddr {
		t.Fatalf("restarted member got the old address %s", oldAddr)
	}
	all = []*Membership{a, b, c2}
	waitFor(t, 40*time.Second, "a and b see the restarted c alive at its new address", func() bool {
		return seesAlive(all, all...)
	}, all...)
	t.Logf("restarted member seen alive at its new address %v after its restart", time.Since(restarted))
	if mem, _ := a.Member("c"); mem.GRPCAddr != "127.0.0.1:7777" || mem.Epoch != 3 {
		t.Errorf("a sees restarted c with meta %+v", mem.Meta)
	}
}

func TestDNSSeedsTryEveryAddress(t *testing.T) {
	t.Parallel()
	// a and c are separate one-member clusters on the same port of two
	// loopback addresses. b's only seed is a name resolving to both: the
	// three can only end up together if b contacted both addresses.
	a := start(t, nodeConfig("a", RoleNode))
	_, port, _ := net.SplitHostPort(a.LocalAddr())
	cfgC := nodeConfig("c", RoleNode)
	cfgC.BindAddr = "127.0.0.2:" + port
	c, err := Start(cfgC)
	if err != nil {
		t.Skipf("cannot bind 127.0.0.2:%s (no 127/8 loopback here?): %v", port, err)
	}
	t.Cleanup(func() { _ = c.Shutdown() })

	var mu sync.Mutex
	var asked []string
	cfgB := nodeConfig("b", RoleNode, "lunora-nodes.test:"+port)
	cfgB.Resolver = func(ctx context.Context, host string) ([]string, error) {
		mu.Lock()
		asked = append(asked, host)
		mu.Unlock()
		if host == "lunora-nodes.test" {
			return []string{"127.0.0.2", "127.0.0.1"}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	b := start(t, cfgB)
	all := []*Membership{a, b, c}
	took := waitFor(t, 10*time.Second, "a, b and c together", func() bool { return seesAlive(all, all...) }, all...)
	t.Logf("joined through both resolved addresses in %v", took)
	mu.Lock()
	defer mu.Unlock()
	if len(asked) == 0 || asked[0] != "lunora-nodes.test" {
		t.Errorf("resolver asked %q, want lunora-nodes.test", asked)
	}
}

func TestSeedNameReResolved(t *testing.T) {
	t.Parallel()
	a := start(t, nodeConfig("a", RoleNode))
	_, port, _ := net.SplitHostPort(a.LocalAddr())
	// The name resolves to nothing until the "Service" gets an endpoint.
	var ready atomic.Bool
	var lookups atomic.Int64
	cfgB := nodeConfig("b", RoleNode, "lunora-nodes.test:"+port)
	cfgB.Resolver = func(ctx context.Context, host string) ([]string, error) {
		lookups.Add(1)
		if !ready.Load() {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return []string{"127.0.0.1"}, nil
	}
	b := start(t, cfgB)
	if len(b.Members()) != 1 {
		t.Fatalf("b is not alone:\n%s", dump(b))
	}
	ready.Store(true)
	took := waitFor(t, 15*time.Second, "a and b together", func() bool {
		return seesAlive([]*Membership{a, b}, a, b)
	}, a, b)
	t.Logf("joined after the name started resolving: %v, %d lookups", took, lookups.Load())
	if lookups.Load() < 2 {
		t.Errorf("resolver called %d times, want it re-resolved", lookups.Load())
	}
}

func TestBackgroundJoin(t *testing.T) {
	t.Parallel()
	var a, b *Membership
	for attempt := 0; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()

		// Nobody answers at addr yet: Start must still succeed.
		cfgB := nodeConfig("b", RoleNode, addr)
		b, err = Start(cfgB)
		if err != nil {
			t.Fatalf("Start with an unanswered seed: %v", err)
		}
		if len(b.Members()) != 1 {
			t.Fatalf("b is not alone:\n%s", dump(b))
		}
		cfgA := nodeConfig("a", RoleNode)
		cfgA.BindAddr = addr
		a, err = Start(cfgA)
		if err == nil {
			break
		}
		_ = b.Shutdown()
		if attempt == 4 {
			t.Fatalf("binding the picked port: %v", err)
		}
	}
	t.Cleanup(func() { _ = a.Shutdown(); _ = b.Shutdown() })
	took := waitFor(t, 20*time.Second, "a and b find each other", func() bool {
		return seesAlive([]*Membership{a, b}, a, b)
	}, a, b)
	t.Logf("background join succeeded %v after the seed came up", took)
}

func TestEncryption(t *testing.T) {
	t.Parallel()
	key := randomKey(t, 32)
	cfgA := nodeConfig("a", RoleNode)
	cfgA.SecretKey = key
	a := start(t, cfgA)
	cfgB := nodeConfig("b", RoleNode, a.LocalAddr())
	cfgB.SecretKey = key
	b := start(t, cfgB)
	waitFor(t, 10*time.Second, "a and b together", func() bool {
		return seesAlive([]*Membership{a, b}, a, b)
	}, a, b)

	cfgC := nodeConfig("c", RoleNode, a.LocalAddr(), b.LocalAddr())
	cfgC.SecretKey = randomKey(t, 32)
	c := start(t, cfgC)
	cfgP := nodeConfig("plain", RoleNode, a.LocalAddr(), b.LocalAddr())
	p := start(t, cfgP)
	holdsFor(t, 2*time.Second, "wrong-key and unencrypted members staying out", func() bool {
		if len(c.Members()) != 1 || len(p.Members()) != 1 || len(a.Members()) != 2 || len(b.Members()) != 2 {
			return false
		}
		return seesAlive([]*Membership{a, b}, a, b)
	}, a, b, c, p)
}

func TestParseKey(t *testing.T) {
	t.Parallel()
	for _, n := range []int{16, 24, 32} {
		raw := bytes.Repeat([]byte{byte(n)}, n)
		got, err := ParseKey(" " + base64.StdEncoding.EncodeToString(raw) + "\n")
		if err != nil || !bytes.Equal(got, raw) {
			t.Errorf("ParseKey(%d-byte key) = %x, %v", n, got, err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "empty"},
		{"not base64!!", "base64"},
		{base64.StdEncoding.EncodeToString(make([]byte, 7)), "got 7 bytes"},
		{base64.StdEncoding.EncodeToString(make([]byte, 33)), "got 33 bytes"},
		{base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 16)), "base64"},
	} {
		if _, err := ParseKey(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseKey(%q) error = %v, want one mentioning %q", tc.in, err, tc.want)
		}
	}
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	// 500 bytes without the gossip address, more than 512 with it: only
	// caught after binding.
	fitsUntilBound := nodeConfig("x", RoleNode)
	fitsUntilBound.Meta.GRPCAddr = ""
	fitsUntilBound.Meta.State = ""
	fitsUntilBound.Meta.Weight = 0
	base, _, _ := encodeMeta(fitsUntilBound.Meta)
	fitsUntilBound.Meta.BlobAddr = strings.Repeat("b", 500-len(base)-len(`,"blob":""`))
	if enc, _, err := encodeMeta(fitsUntilBound.Meta); err != nil || len(enc) != 500 {
		t.Fatalf("test meta encodes to %d bytes (%v), want 500", len(enc), err)
	}

	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"7-byte key", func(c *Config) { c.SecretKey = make([]byte, 7) }, "16, 24 or 32 bytes"},
		{"empty key", func(c *Config) { c.SecretKey = []byte{} }, "16, 24 or 32 bytes"},
		{"empty ID", func(c *Config) { c.Meta.ID = "" }, "ID is required"},
		{"missing role", func(c *Config) { c.Meta.Role = "" }, "Role is required"},
		{"unknown role", func(c *Config) { c.Meta.Role = "router" }, "router"},
		{"meta over 512 bytes", func(c *Config) { c.Meta.GRPCAddr = strings.Repeat("g", 600) }, "512"},
		{"meta over 512 bytes with gossip addr", func(c *Config) { c.Meta = fitsUntilBound.Meta }, "512"},
		{"bad seed port", func(c *Config) { c.Seeds = []string{"host:notaport"} }, "seed"},
		{"empty seed", func(c *Config) { c.Seeds = []string{""} }, "seed"},
		{"bind host not an IP", func(c *Config) { c.BindAddr = "localhost:0" }, "IP address"},
		{"advertise host not an IP", func(c *Config) { c.AdvertiseAddr = "example.test:1" }, "IP address"},
	} {
		cfg := nodeConfig("x", RoleNode)
		tc.mutate(&cfg)
		m, err := Start(cfg)
		if err == nil {
			_ = m.Shutdown()
			t.Errorf("%s: Start succeeded", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not mention %q", tc.name, err, tc.want)
		}
	}
}

func TestSplitHostPort(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, host, port string }{
		{"10.0.0.1:7000", "10.0.0.1", "7000"},
		{"10.0.0.1", "10.0.0.1", "7946"},
		{"lunora-nodes.ns.svc", "lunora-nodes.ns.svc", "7946"},
		{"lunora-nodes.ns.svc:8000", "lunora-nodes.ns.svc", "8000"},
		{"[::1]:8000", "::1", "8000"},
		{"[::1]", "::1", "7946"},
		{"::1", "::1", "7946"},
	} {
		hp, err := splitHostPort(tc.in, false)
		if err != nil || hp.host != tc.host || hp.port != tc.port {
			t.Errorf("splitHostPort(%q) = %+v, %v; want %s %s", tc.in, hp, err, tc.host, tc.port)
		}
	}
	for _, bad := range []string{"", ":7000", "host:99999", "host:x"} {
		if hp, err := splitHostPort(bad, false); err == nil {
			t.Errorf("splitHostPort(%q) = %+v, want an error", bad, hp)
		}
	}
}

// rawDelegate lets a bare memberlist node gossip arbitrary metadata.
type rawDelegate struct {
	mu   sync.Mutex
	meta []byte
}

func (d *rawDelegate) NodeMeta(int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.meta
}
func (d *rawDelegate) set(b []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.meta = b
}
func (*rawDelegate) NotifyMsg([]byte)                {}
func (*rawDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (*rawDelegate) LocalState(bool) []byte          { return nil }
func (*rawDelegate) MergeRemoteState([]byte, bool)   {}

func TestUnusablePeerMeta(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	cfgA := nodeConfig("a", RoleNode)
	cfgA.Logger = slog.New(slog.NewTextHandler(logs, nil))
	a := start(t, cfgA)

	d := &rawDelegate{meta: []byte("not json{")}
	mc := memberlist.DefaultLocalConfig()
	mc.Name = "raw"
	mc.BindAddr = "127.0.0.1"
	mc.BindPort = 0
	mc.Delegate = d
	mc.Logger = log.New(io.Discard, "", 0)
	raw, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Shutdown() })
	if _, err := raw.Join([]string{a.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a lists raw by its node name", func() bool {
		mem, ok := a.Member("raw")
		return ok && mem.Status == Alive && mem.Meta == Meta{ID: "raw"} && mem.Addr == raw.LocalNode().Address()
	}, a)

	// Valid JSON claiming another ID: the node name wins; still logged once.
	d.set([]byte(`{"id":"impostor","role":"gateway","grpc":"x:1"}`))
	if err := raw.UpdateNode(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a sees raw's updated meta", func() bool {
		mem, _ := a.Member("raw")
		return mem.Meta == Meta{ID: "raw", Role: RoleGateway, GRPCAddr: "x:1"}
	}, a)
	if _, ok := a.Member("impostor"); ok {
		t.Error("a lists the ID from raw's metadata")
	}
	if n := strings.Count(logs.String(), "unusable metadata"); n != 1 {
		t.Errorf("unusable metadata logged %d times, want once:\n%s", n, logs.String())
	}
}

func TestMemberlistLogsRouted(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	_ = l.Close()

	logs := &syncBuffer{}
	cfg := nodeConfig("a", RoleNode, dead)
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	start(t, cfg)
	waitFor(t, 5*time.Second, "a memberlist line in the slog output", func() bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "level=DEBUG") && strings.Contains(line, "lib=memberlist") &&
				strings.Contains(line, "lib_level=DEBUG") && strings.Contains(line, dead) {
				return true
			}
		}
		return false
	})

	// Above debug level, memberlist stays silent.
	quiet := &syncBuffer{}
	cfg = nodeConfig("b", RoleNode, dead)
	cfg.Logger = slog.New(slog.NewTextHandler(quiet, nil))
	start(t, cfg)
	if strings.Contains(quiet.String(), "lib=memberlist") {
		t.Errorf("memberlist lines logged above debug level:\n%s", quiet.String())
	}
}

func TestSeparateGroupsMerge(t *testing.T) {
	t.Parallel()
	// a (127.0.0.1:P) and c (127.0.0.2:P) are both behind one name, but at
	// first the name resolves only to a for b and only to c for d, so two
	// groups form. Once it resolves fully, the periodic re-join merges them.
	a := start(t, nodeConfig("a", RoleNode))
	_, port, _ := net.SplitHostPort(a.LocalAddr())
	cfgC := nodeConfig("c", RoleNode)
	cfgC.BindAddr = "127.0.0.2:" + port
	c, err := Start(cfgC)
	if err != nil {
		t.Skipf("cannot bind 127.0.0.2:%s (no 127/8 loopback here?): %v", port, err)
	}
	t.Cleanup(func() { _ = c.Shutdown() })

	var full atomic.Bool
	resolver := func(partial string) func(context.Context, string) ([]string, error) {
		return func(context.Context, string) ([]string, error) {
			if full.Load() {
				return []string{"127.0.0.1", "127.0.0.2"}, nil
			}
			return []string{partial}, nil
		}
	}
	cfgB := nodeConfig("b", RoleNode, "lunora-nodes.test:"+port)
	cfgB.Resolver = resolver("127.0.0.1")
	cfgB.rejoinEvery = 300 * time.Millisecond
	b := start(t, cfgB)
	cfgD := nodeConfig("d", RoleNode, "lunora-nodes.test:"+port)
	cfgD.Resolver = resolver("127.0.0.2")
	cfgD.rejoinEvery = 300 * time.Millisecond
	d := start(t, cfgD)
	all := []*Membership{a, b, c, d}
	waitFor(t, 10*time.Second, "two groups {a,b} and {c,d}", func() bool {
		return seesAlive([]*Membership{a, b}, a, b) && seesAlive([]*Membership{c, d}, c, d)
	}, all...)
	if _, ok := a.Member("c"); ok {
		t.Fatalf("groups merged before the name resolved fully:\n%s", dump(all...))
	}

	full.Store(true)
	took := waitFor(t, 15*time.Second, "one group of four", func() bool { return seesAlive(all, all...) }, all...)
	t.Logf("separate groups merged %v after the seed name resolved fully", took)
}
