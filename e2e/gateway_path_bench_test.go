package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/lunoratest"
	"github.com/lunora/lunora/placement"
	lunorav1 "github.com/lunora/lunora/proto/lunora/v1"
	"github.com/lunora/lunora/rpc"
	"google.golang.org/grpc/codes"
)

// TestGatewayPathBench prints the figures of the gateway hop and the global
// tier's write path (BENCHMARKS.md, "Gateway hop and global write path"); it
// is not a timed test. Each build is a directory holding lunora-node and
// lunora-gateway; "new" (no directory) is this tree, built by the test:
//
//	LUNORA_GWPATH_BENCH=1 LUNORA_GWPATH_BUILDS=old=/tmp/old/bin,new \
//	  go test -count=1 -timeout 1800s -run TestGatewayPathBench -v ./e2e/
//
// For each round and build, in that order:
//
//  1. global: 3 voters (separate processes) and a gateway in front of all
//     three; LUNORA_GWPATH_CALLERS (64) callers over HTTP/JSON call
//     users:register (a new user each time) for LUNORA_GWPATH_SECONDS (10)
//     seconds. Writes/s, and the CPU time of the four processes together
//     (utime+stime from /proc) per write.
//  2. gateway: 3 ring nodes and a gateway; 300 shards of 3 rows; 32
//     callers run items:list straight to each shard's owner (node gRPC) and
//     through the gateway (public gRPC), alternately; queries/s and CPU per
//     query of the nodes and of the gateway.
//
// LUNORA_GWPATH_PARTS=global or gateway runs one part only;
// LUNORA_GWPATH_ROUNDS repeats; LUNORA_GWPATH_PERF=dir records a perf
// profile (perf record -g) of every process during each measured window.
func TestGatewayPathBench(t *testing.T) {
	if os.Getenv("LUNORA_GWPATH_BENCH") == "" {
		t.Skip("set LUNORA_GWPATH_BENCH=1 to print the gateway-path figures")
	}
	builds := benchBuilds(t)
	rounds := envInt("LUNORA_GWPATH_ROUNDS", 1)
	parts := os.Getenv("LUNORA_GWPATH_PARTS")
	for round := 1; round <= rounds; round++ {
		for _, b := range builds {
			if parts == "" || strings.Contains(parts, "global") {
				globalWriteBench(t, round, b)
			}
			if parts == "" || strings.Contains(parts, "gateway") {
				gatewayHopBench(t, round, b)
			}
		}
	}
}

type benchBuild struct {
	name string
	bins *lunoratest.Binaries
}

func benchBuilds(t *testing.T) []benchBuild {
	spec := os.Getenv("LUNORA_GWPATH_BUILDS")
	if spec == "" {
		spec = "new"
	}
	var out []benchBuild
	for _, s := range strings.Split(spec, ",") {
		name, dir, ok := strings.Cut(s, "=")
		if !ok {
			out = append(out, benchBuild{name: name, bins: lunoratest.Build(t)})
			continue
		}
		b := &lunoratest.Binaries{Node: filepath.Join(dir, "lunora-node"), Gateway: filepath.Join(dir, "lunora-gateway")}
		for _, p := range []string{b.Node, b.Gateway} {
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("build %s: %v", name, err)
			}
		}
		out = append(out, benchBuild{name: name, bins: b})
	}
	return out
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// cpuTicks is utime+stime of process pid, in clock ticks (1/100 s).
func cpuTicks(t *testing.T, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name is in parentheses and may hold spaces: fields
	// count from after its closing one.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

func cpuOf(t *testing.T, pids []int) time.Duration {
	var n int64
	for _, p := range pids {
		n += cpuTicks(t, p)
	}
	return time.Duration(n) * 10 * time.Millisecond
}

// perfRecord starts perf record on pids when LUNORA_GWPATH_PERF names a
// directory; the returned func stops it.
func perfRecord(t *testing.T, name string, pids []int) func() {
	dir := os.Getenv("LUNORA_GWPATH_PERF")
	if dir == "" {
		return func() {}
	}
	var ps []string
	for _, p := range pids {
		ps = append(ps, strconv.Itoa(p))
	}
	out := filepath.Join(dir, name+".perf.data")
	cmd := exec.Command("perf", "record", "-F", "499", "-g", "-o", out, "-p", strings.Join(ps, ","))
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Logf("perf record: %v", err)
		return func() {}
	}
	return func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		t.Logf("perf profile of %s: %s", name, out)
	}
}

// loadFor runs callers goroutines calling call until d passes and returns
// the calls that succeeded; an error fails t.
func loadFor(t *testing.T, callers int, d time.Duration, call func(caller, i int) error) int64 {
	var n atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	stop := time.Now().Add(d)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				if err := call(c, i); err != nil {
					failed.Store(err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	return n.Load()
}

func globalWriteBench(t *testing.T, round int, b benchBuild) {
	schemaPath := chatSchemaFile(t)
	c := lunoratest.StartCluster(t, b.bins, schemaPath, 3)
	var addrs []string
	for _, n := range c.Nodes {
		addrs = append(addrs, n.GRPCAddr())
	}
	gw := lunoratest.Start(t, lunoratest.GatewaySpec(t, b.bins, schemaPath, strings.Join(addrs, ","), "-rate-limit", "0"))
	defer func() {
		gw.Kill()
		for _, n := range c.Nodes {
			n.Kill()
		}
	}()
	callers := envInt("LUNORA_GWPATH_CALLERS", 64)
	d := time.Duration(envInt("LUNORA_GWPATH_SECONDS", 10)) * time.Second
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns: callers, MaxIdleConnsPerHost: callers,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}}
	url := "http://" + gw.HTTPAddr() + "/v1/call"
	call := func(ctx context.Context, id string) error {
		body := `{"function":"users:register","args":{"user_id":"` + id + `","name":"bench user"}}`
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("users:register %s: HTTP %d %s", id, resp.StatusCode, data)
		}
		var res struct{ Bookmark uint64 }
		if err := json.Unmarshal(data, &res); err != nil || res.Bookmark == 0 {
			return fmt.Errorf("users:register %s: %s (%v)", id, data, err)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Writable through the gateway: a leader elected and published.
	retryUnavailable(t, "the first write", func(attempt int) error {
		err := call(ctx, fmt.Sprintf("probe-%d", attempt))
		if err != nil && strings.Contains(err.Error(), "HTTP 503") {
			return api.New(codes.Unavailable, err.Error())
		}
		return err
	})
	// A write answered 503 (no leader address yet, an election) is
	// retried with a new user_id and counted.
	var unavailable atomic.Int64
	retried := func(id string) error {
		for try := 0; ; try++ {
			err := call(ctx, fmt.Sprintf("%s-%d", id, try))
			if err == nil || !strings.Contains(err.Error(), "HTTP 503") || try > 100 {
				return err
			}
			unavailable.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Warm-up: every caller's connection open, every node's statements
	// prepared.
	loadFor(t, callers, 2*time.Second, func(c, i int) error { return retried(fmt.Sprintf("w%d-%d", c, i)) })
	unavailable.Store(0)
	pids := []int{gw.PID()}
	for _, n := range c.Nodes {
		pids = append(pids, n.PID())
	}
	stopPerf := perfRecord(t, fmt.Sprintf("global-%s-r%d", b.name, round), pids)
	m0 := globalMetrics(t, ctx, c)
	cpu0, start := cpuOf(t, pids), time.Now()
	n := loadFor(t, callers, d, func(c, i int) error { return retried(fmt.Sprintf("c%d-%d", c, i)) })
	took, cpu := time.Since(start), cpuOf(t, pids)-cpu0
	m1 := globalMetrics(t, ctx, c)
	stopPerf()
	entries := m1["lunora_global_batch_commands_count"] - m0["lunora_global_batch_commands_count"]
	applies := m1["lunora_global_apply_duration_seconds_count"] - m0["lunora_global_apply_duration_seconds_count"]
	if entries > 0 && applies > 0 {
		t.Logf("global %s round %d: %.0f Raft entries written by the leader, %.1f writes per entry; %.1f ms mean from reaching the leader to applied",
			b.name, round, entries, (m1["lunora_global_batch_commands_sum"]-m0["lunora_global_batch_commands_sum"])/entries,
			1000*(m1["lunora_global_apply_duration_seconds_sum"]-m0["lunora_global_apply_duration_seconds_sum"])/applies)
	}
	gwCPU := time.Duration(cpuTicks(t, gw.PID())) * 10 * time.Millisecond
	t.Logf("FIGURE global %s round %d: %d writes in %v with %d HTTP callers: %.0f writes/s, CPU of the 3 nodes + gateway %.3f ms per write (%.2f cores); %d answers 503 retried; gateway total CPU so far %v",
		b.name, round, n, took.Round(time.Millisecond), callers, float64(n)/took.Seconds(),
		float64(cpu.Microseconds())/1000/float64(n), cpu.Seconds()/took.Seconds(), unavailable.Load(), gwCPU)
}

// globalMetrics sums the global tier's batch and apply histograms over
// the nodes (only the leader writes entries and times applies).
func globalMetrics(t *testing.T, ctx context.Context, c *lunoratest.Cluster) map[string]float64 {
	out := map[string]float64{}
	for _, n := range c.Nodes {
		m, err := n.Metrics(ctx)
		if err != nil {
			t.Logf("metrics of %s: %v", n.ID, err)
			continue
		}
		for _, k := range []string{"lunora_global_batch_commands_count", "lunora_global_batch_commands_sum",
			"lunora_global_apply_duration_seconds_count", "lunora_global_apply_duration_seconds_sum"} {
			out[k] += m[k]
		}
	}
	return out
}

func gatewayHopBench(t *testing.T, round int, b benchBuild) {
	schemaPath := writeClusterSchema(t)
	c := lunoratest.StartCluster(t, b.bins, schemaPath, 3)
	var addrs []string
	for _, n := range c.Nodes {
		addrs = append(addrs, n.GRPCAddr())
	}
	gw := lunoratest.Start(t, lunoratest.GatewaySpec(t, b.bins, schemaPath, strings.Join(addrs, ","), "-rate-limit", "0"))
	defer func() {
		gw.Kill()
		for _, n := range c.Nodes {
			n.Kill()
		}
	}()
	rc := &ringCluster{Cluster: c, gw: gw, http: lunoratest.NewHTTPClient(t, gw.HTTPAddr()), schemaPath: schemaPath}
	epoch := rc.waitRing(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	keys, _ := rc.fill(t, ctx, "g%04d", envInt("LUNORA_GWPATH_SHARDS", 300), 3, 16, "0123456789abcdef")
	ringInfo, err := c.Nodes[0].Client().Ring(ctx, epoch)
	if err != nil {
		t.Fatal(err)
	}
	members := make([]placement.Member, len(ringInfo.Nodes))
	direct := map[string]*rpc.NodeClient{}
	for i, n := range ringInfo.Nodes {
		members[i] = placement.Member{ID: placement.NodeID(n.ID), Weight: n.Weight}
		nc, err := rpc.NewNodeClient(n.GRPCAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		direct[n.ID] = nc
	}
	ring, err := placement.NewRing(members)
	if err != nil {
		t.Fatal(err)
	}
	pub := lunoratest.DialGRPC(t, gw.GRPCAddr())
	viaGateway := func(c, i int) error {
		k := keys[(c*7919+i)%len(keys)]
		_, err := pub.Call(ctx, &lunorav1.CallRequest{Function: "items:list", Args: lunoratest.Args(map[string]any{"k": k})})
		return err
	}
	straight := func(c, i int) error {
		k := keys[(c*7919+i)%len(keys)]
		id := "k=" + k
		_, err := direct[string(ring.Owner(id))].Call(api.WithRingEpoch(ctx, epoch), id, "items:list", map[string]any{"k": k}, api.ReadOptions{})
		return err
	}
	if err := parallel(len(keys), 32, func(i int) error { return viaGateway(0, i) }); err != nil {
		t.Fatal(err)
	}
	var nodePIDs []int
	for _, n := range c.Nodes {
		nodePIDs = append(nodePIDs, n.PID())
	}
	const callers = 32
	d := time.Duration(envInt("LUNORA_GWPATH_HOP_SECONDS", 5)) * time.Second
	measure := func(what string, call func(c, i int) error) (rate float64) {
		stopPerf := perfRecord(t, fmt.Sprintf("hop-%s-%s-r%d", what, b.name, round), append([]int{gw.PID()}, nodePIDs...))
		n0, g0, start := cpuOf(t, nodePIDs), cpuOf(t, []int{gw.PID()}), time.Now()
		n := loadFor(t, callers, d, call)
		took := time.Since(start)
		nc, gc := cpuOf(t, nodePIDs)-n0, cpuOf(t, []int{gw.PID()})-g0
		stopPerf()
		rate = float64(n) / took.Seconds()
		t.Logf("%s %s: %.0f queries/s; CPU per query: nodes %.3f ms, gateway %.3f ms", b.name, what, rate,
			float64(nc.Microseconds())/1000/float64(n), float64(gc.Microseconds())/1000/float64(n))
		return rate
	}
	a := measure("direct", straight)
	g := measure("gateway", viaGateway)
	a2 := measure("direct", straight)
	g2 := measure("gateway", viaGateway)
	t.Logf("FIGURE gateway %s round %d: through the gateway %.0f/s and %.0f/s vs straight to the owner %.0f/s and %.0f/s → %.2f× of direct",
		b.name, round, g, g2, a, a2, (g+g2)/(a+a2))
}
