package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/gateway"
	"github.com/lunora/lunora/nodeproc"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
)

// TestLimitsHoldUnderAbuse is the measurement behind "each limit triggers
// its error and the node keeps serving other shards at normal latency
// meanwhile". A real node (shard host, global tier) runs behind a gateway
// with the per-client limits on. A victim client writes and reads its own
// shards at a steady pace while, phase by phase, an abusive client
// hammers one limit on another shard: the rate limit, its requests in
// flight, statements over the SQL length limit and bodies over the body
// limit, values over the value limit (randomblob, zeroblob, printf), and
// statements that run until the statement timeout stops them. Each phase
// checks that the abuser got the limit's error and that the victim's p99
// stays within 5× the p99 of a baseline phase of the same run (no abuse)
// plus 50 ms (500 ms under the race detector), the baseline being the
// worse of two windows measured just before and just after the phase (a
// phase over it is measured again, up to three times); the figures are
// logged:
//
//	go test -count=1 -run TestLimitsHoldUnderAbuse -v ./gateway/ | grep FIGURE
func TestLimitsHoldUnderAbuse(t *testing.T) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sc := shardhost.DefaultConfig()
	sc.StatementTimeout = 300 * time.Millisecond
	p, err := nodeproc.Start(nodeproc.Config{
		Dev: true, Shards: sc, Global: raftglobal.DefaultConfig(),
		App: app, Dir: filepath.Join(dir, "node"), NodeID: "limits",
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	cfg := gateway.DefaultConfig()
	cfg.App, cfg.Backend, cfg.Logger, cfg.AuthOff = app, p.Node, slog.New(slog.DiscardHandler), true
	cfg.RateLimit, cfg.RateBurst = 1000, 1000
	cfg.BodyBytesPerSecond = gateway.DefaultBodyBytesPerSecond
	cfg.MaxConcurrentPerClient = 4
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Clients are told apart by an identity, as the authentication
	// middleware would set it (every test client comes from 127.0.0.1).
	api := gw.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := &auth.Identity{Method: auth.MethodAPIKey, Role: auth.RoleService, Subject: r.Header.Get("X-Test-Client")}
		api.ServeHTTP(w, r.WithContext(auth.NewContext(r.Context(), id)))
	}))
	t.Cleanup(srv.Close)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}, Timeout: 30 * time.Second}
	post := func(ctx context.Context, who, path, body string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, "POST", srv.URL+path, strings.NewReader(body))
		if err != nil {
			return 0, "", err
		}
		req.Header.Set("X-Test-Client", who)
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		json.Unmarshal(raw, &e)
		code := e.Error.Code
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			code += " (no Retry-After)"
		}
		return resp.StatusCode, code, nil
	}

	// The victim: a send or a read of one of its 8 rooms every 2 ms.
	victim := func(phase time.Duration) []time.Duration {
		ctx, cancel := context.WithTimeout(context.Background(), phase)
		defer cancel()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		var lat []time.Duration
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return lat
			case <-tick.C:
			}
			room := fmt.Sprintf("v%d", i%8)
			body := fmt.Sprintf(`{"function": "messages:send", "args": {"room_id": %q, "author": "v", "body": "m%d"}}`, room, i)
			if i%2 == 1 {
				body = fmt.Sprintf(`{"function": "messages:list", "args": {"room_id": %q, "limit": 5}}`, room)
			}
			start := time.Now()
			status, code, err := post(context.Background(), "victim", "/v1/call", body)
			if err != nil || status != 200 {
				t.Errorf("victim call %d: %d %s %v", i, status, code, err)
				return lat
			}
			lat = append(lat, time.Since(start))
		}
	}
	// Warm up: open the victim's shards and the abuser's.
	for i := 0; i < 8; i++ {
		if status, code, err := post(context.Background(), "setup", "/v1/call", fmt.Sprintf(`{"function": "messages:send", "args": {"room_id": "v%d", "author": "v", "body": "x"}}`, i)); status != 200 {
			t.Fatalf("warm-up: %d %s %v", status, code, err)
		}
	}
	if status, code, err := post(context.Background(), "setup", "/v1/call", `{"function": "messages:send", "args": {"room_id": "abuse", "author": "a", "body": "x"}}`); status != 200 {
		t.Fatalf("warm-up: %d %s %v", status, code, err)
	}

	const phase, baseWindow = 2 * time.Second, time.Second
	longSQL := `{"shard_id": "room_id=abuse", "sql": "SELECT '` + strings.Repeat("x", 200<<10) + `'"}`
	bigBody := `{"function": "messages:count", "args": {"room_id": "abuse"}, "shard_key": "` + strings.Repeat("k", 1<<20+100<<10) + `"}`
	sqlBody := func(sql string) string {
		b, _ := json.Marshal(map[string]string{"shard_id": "room_id=abuse", "sql": sql})
		return string(b)
	}
	forever := "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) SELECT count(*) FROM c"
	foreverWrite := "INSERT INTO messages(room_id, author, body, created_at) WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) SELECT 'abuse', 'a', 'b', i FROM c"
	type request struct{ path, body string }
	phases := []struct {
		name    string
		workers int
		reqs    []request
		want    map[string]int // code → HTTP status the abuser must see at least once
	}{
		{"rate limit", 16, []request{{"/v1/call", `{"function": "messages:count", "args": {"room_id": "abuse"}}`}},
			map[string]int{"RESOURCE_EXHAUSTED": 429}},
		{"requests in flight", 12, []request{{"/v1/sql", sqlBody(forever)}},
			map[string]int{"RESOURCE_EXHAUSTED": 429, "DEADLINE_EXCEEDED": 504}},
		{"SQL length and body size", 8, []request{{"/v1/sql", longSQL}, {"/v1/call", bigBody}},
			map[string]int{"INVALID_ARGUMENT": 400, "RESOURCE_EXHAUSTED": 413}}, // and 429s for the bytes
		{"value size (randomblob, zeroblob, printf)", 4, []request{
			{"/v1/sql", sqlBody("SELECT length(randomblob(1000000000))")},
			{"/v1/sql", sqlBody("SELECT length(zeroblob(100000000))")},
			{"/v1/sql", sqlBody("SELECT length(printf('%.*c', 100000000, 'x'))")},
		}, map[string]int{"INVALID_ARGUMENT": 400}},
		{"statement timeout (reads and writes)", 4, []request{{"/v1/sql", sqlBody(forever)}, {"/v1/sql", sqlBody(foreverWrite)}},
			map[string]int{"DEADLINE_EXCEEDED": 504}},
	}
	// The race detector slows the Go side of every request (decoding,
	// routing) several times but not SQLite, so abuse costs the victim far
	// more CPU than in a real build; scripts/test also runs this test
	// without it, under the strict bound.
	slack := 50 * time.Millisecond
	if raceEnabled {
		slack = 500 * time.Millisecond
	}
	// runPhase measures one phase: a baseline window, the abuse, another
	// baseline window. It checks the abuser's answers and reports the
	// victim's p99 and its bound.
	runPhase := func(pi, attempt int) (p99, bound time.Duration) {
		ph := phases[pi]
		// The abuse is compared with baseline windows measured just before
		// and just after it (the larger p99 of the two): the machine's
		// other load drifts over a run.
		baseline := func(when string) time.Duration {
			lat := victim(baseWindow)
			if len(lat) < 10 {
				t.Fatalf("baseline %s %s: only %d victim calls", when, ph.name, len(lat))
			}
			p99 := percentile(lat, 0.99)
			t.Logf("FIGURE   %-40s victim calls %4d  p50 %7s  p99 %7s", "baseline "+when, len(lat), percentile(lat, 0.50).Round(10*time.Microsecond), p99.Round(10*time.Microsecond))
			return p99
		}
		base := baseline("before")

		who := fmt.Sprintf("abuser-%d-%d", pi, attempt)
		ctx, cancel := context.WithCancel(context.Background())
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			seen = map[string]int{}
			n    int
		)
		for w := 0; w < ph.workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := w; ctx.Err() == nil; i++ {
					rq := ph.reqs[i%len(ph.reqs)]
					status, code, err := post(ctx, who, rq.path, rq.body)
					if err != nil {
						continue // the phase ended under it
					}
					mu.Lock()
					seen[fmt.Sprintf("%s %d", code, status)]++
					n++
					mu.Unlock()
				}
			}(w)
		}
		lat := victim(phase)
		cancel()
		wg.Wait()
		base = max(base, baseline("after"))
		if len(lat) < 10 {
			t.Fatalf("%s: only %d victim calls", ph.name, len(lat))
		}
		p50 := percentile(lat, 0.50)
		p99 = percentile(lat, 0.99)
		t.Logf("FIGURE %-42s victim calls %4d  p50 %7s  p99 %7s  (p99 %.1f× baseline)  abuser requests %d: %s",
			ph.name, len(lat), p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond), float64(p99)/float64(base), n, summarize(seen))
		for code, status := range ph.want {
			if seen[fmt.Sprintf("%s %d", code, status)] == 0 {
				t.Errorf("%s: the abuser never got %s (%d); got %v", ph.name, code, status, seen)
			}
		}
		for k := range seen {
			if strings.Contains(k, "INTERNAL") || strings.Contains(k, "no Retry-After") {
				t.Errorf("%s: abuser answer %q", ph.name, k)
			}
		}
		return p99, 5*base + slack
	}
	// A phase over its bound is measured again, up to three times in all:
	// a burst of the machine's other load can spoil one measurement, a
	// limit that does not protect the victim spoils every one.
	for pi, ph := range phases {
		for attempt := 1; ; attempt++ {
			p99, bound := runPhase(pi, attempt)
			if p99 <= bound {
				break
			}
			if attempt == 3 {
				t.Errorf("%s: victim p99 %v over %v (5× the baseline + %v) in %d measurements", ph.name, p99, bound, slack, attempt)
				break
			}
			t.Logf("%s: victim p99 %v over %v; measuring again", ph.name, p99, bound)
		}
	}
	// The abuser's shard still serves once the abuse stops.
	if status, code, err := post(context.Background(), "after", "/v1/call", `{"function": "messages:count", "args": {"room_id": "abuse"}}`); status != 200 {
		t.Errorf("abuser's shard after the abuse: %d %s %v", status, code, err)
	}
}

func percentile(d []time.Duration, q float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func summarize(seen map[string]int) string {
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s×%d", strings.TrimSpace(k), seen[k])
	}
	return b.String()
}
