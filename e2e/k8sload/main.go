// Command k8sload is scripts/k8s-e2e's client: it writes through a gateway
// while the cluster is scaled and restarted, logs every acknowledged write,
// and afterwards checks that every one of them is still there.
//
//	k8sload write  -gateway URL -log FILE -phase-file FILE -stop-file FILE [-rooms N] [-workers N]
//	k8sload verify -gateway URL -log FILE [-nodes N]
//	k8sload wait-ring -gateway URL -nodes N [-timeout D]
//
// write sends messages:send calls of the example chat app (one shard per
// room) until the stop file exists. Each acknowledged call (HTTP 200 with a
// row id) is appended to the log as "room<TAB>id<TAB>body"; every answer is
// counted under the phase named in the phase file when the answer came (the
// e2e script writes the step it is in), by outcome: ok, the error code of
// the JSON answer, or the transport error. At the end it prints one line per
// phase, in order: its length (from the first answer under it to the first
// answer under the next), acknowledged writes, mean and longest call time
// (acknowledged and failed apart), errors by code.
//
// verify reads every room's rows with admin SQL through the gateway and
// fails if an acknowledged (id, body) is missing or different; it then
// checks the cluster status: the ring has exactly -nodes nodes and the
// shards held on all nodes add up to the number of rooms (a shard served
// by two nodes would count twice).
//
// wait-ring polls the gateway's status until the ring holds exactly N
// nodes, every one alive, with no shard move in flight.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: k8sload write|verify [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "write":
		err = write(os.Args[2:])
	case "verify":
		err = verify(os.Args[2:])
	case "wait-ring":
		err = waitRing(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8sload:", err)
		os.Exit(1)
	}
}

var httpClient = &http.Client{Timeout: 15 * time.Second}

// apiKey is the credential sent with every request ($LUNORA_API_KEY; the
// gateway authenticates every call).
var apiKey = os.Getenv("LUNORA_API_KEY")

func authorize(req *http.Request) {
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
}

type callError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// post sends body to gateway+path and returns the decoded answer, or the
// outcome to count it under.
func post(ctx context.Context, url string, body any, out any) (outcome string, err error) {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return "CLIENT", err
	}
	req.Header.Set("Content-Type", "application/json")
	authorize(req)
	resp, err := httpClient.Do(req)
	if err != nil {
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			return "TIMEOUT", err
		}
		return "CONNECTION", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return "CONNECTION", err
	}
	if resp.StatusCode != http.StatusOK {
		var ce callError
		if json.Unmarshal(data, &ce) == nil && ce.Error.Code != "" {
			return ce.Error.Code, fmt.Errorf("%s: %s", ce.Error.Code, ce.Error.Message)
		}
		return "HTTP_" + strconv.Itoa(resp.StatusCode), fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return "BAD_ANSWER", err
	}
	return "ok", nil
}

type result struct {
	Rows [][]json.RawMessage `json:"rows"`
}

type phaseCounts struct {
	name    string
	start   time.Time // first seen
	end     time.Time // the next phase first seen, or the stop
	byCode  map[string]int
	lastErr string
	// call durations: acknowledged and failed calls apart
	okSum, errSum time.Duration
	okMax, errMax time.Duration
}

func write(args []string) error {
	fs := flag.NewFlagSet("write", flag.ContinueOnError)
	gateway := fs.String("gateway", "", "gateway base URL, e.g. http://10.96.0.20:8080")
	logPath := fs.String("log", "acked.log", "file the acknowledged writes are appended to")
	phaseFile := fs.String("phase-file", "", "file holding the name of the current phase")
	stopFile := fs.String("stop-file", "", "stop once this file exists")
	rooms := fs.Int("rooms", 200, "rooms (shards) written to")
	workers := fs.Int("workers", 8, "concurrent writers")
	maxDur := fs.Duration("max", 30*time.Minute, "stop after this long in any case")
	errPath := fs.String("errors", "", "file every failed call is written to (phase, code, message)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *gateway == "" || *stopFile == "" {
		return errors.New("-gateway and -stop-file are required")
	}
	lf, err := os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	ew := io.Discard
	if *errPath != "" {
		ef, err := os.Create(*errPath)
		if err != nil {
			return err
		}
		defer ef.Close()
		bw := bufio.NewWriter(ef)
		defer bw.Flush()
		ew = bw
	}
	ctx, cancel := context.WithTimeout(context.Background(), *maxDur)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var mu sync.Mutex
	w := bufio.NewWriter(lf)
	var phases []*phaseCounts
	byName := map[string]*phaseCounts{}
	phase := func() *phaseCounts { // under mu
		name := "start"
		if *phaseFile != "" {
			if b, err := os.ReadFile(*phaseFile); err == nil && len(bytes.TrimSpace(b)) > 0 {
				name = string(bytes.TrimSpace(b))
			}
		}
		p := byName[name]
		if p == nil {
			now := time.Now()
			if len(phases) > 0 && phases[len(phases)-1].end.IsZero() {
				phases[len(phases)-1].end = now
			}
			p = &phaseCounts{name: name, start: now, byCode: map[string]int{}}
			byName[name] = p
			phases = append(phases, p)
		}
		return p
	}
	go func() { // the stop file
		for ctx.Err() == nil {
			if _, err := os.Stat(*stopFile); err == nil {
				cancel()
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	for i := range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				room := fmt.Sprintf("k8s-%d", (i+n*(*workers))%*rooms)
				body := fmt.Sprintf("w%d-%d-%d", i, n, time.Now().UnixNano())
				var res result
				cctx, ccancel := context.WithTimeout(ctx, 12*time.Second)
				began := time.Now()
				outcome, err := post(cctx, *gateway+"/v1/call", map[string]any{
					"function": "messages:send",
					"args":     map[string]any{"room_id": room, "author": "k8s-e2e", "body": body},
				}, &res)
				ccancel()
				if ctx.Err() != nil && outcome != "ok" {
					return // stopping: an interrupted call is neither acked nor an error
				}
				mu.Lock()
				p := phase()
				p.byCode[outcome]++
				if took := time.Since(began); outcome == "ok" {
					p.okSum, p.okMax = p.okSum+took, max(p.okMax, took)
				} else {
					p.errSum, p.errMax = p.errSum+took, max(p.errMax, took)
				}
				if err != nil {
					p.lastErr = err.Error()
					fmt.Fprintf(ew, "%s\t%s\t%s\t%s\n", time.Now().UTC().Format(time.RFC3339Nano), p.name, outcome, err)
				}
				if outcome == "ok" {
					if len(res.Rows) != 1 || len(res.Rows[0]) != 1 {
						p.byCode["ok"]--
						p.byCode["BAD_ANSWER"]++
					} else {
						fmt.Fprintf(w, "%s\t%s\t%s\n", room, res.Rows[0][0], body)
					}
				}
				mu.Unlock()
				if outcome != "ok" {
					time.Sleep(50 * time.Millisecond) // let a moving shard settle
				}
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(phases) > 0 && phases[len(phases)-1].end.IsZero() {
		phases[len(phases)-1].end = time.Now()
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := lf.Sync(); err != nil {
		return err
	}
	fmt.Printf("%-18s %8s %9s %10s %15s %15s  %s\n", "phase", "seconds", "acked", "writes/s", "ok ms mean/max", "err ms mean/max", "errors by code")
	for _, p := range phases {
		secs := p.end.Sub(p.start).Seconds()
		var errs []string
		codes := make([]string, 0, len(p.byCode))
		for c := range p.byCode {
			codes = append(codes, c)
		}
		sort.Strings(codes)
		for _, c := range codes {
			if c != "ok" && p.byCode[c] > 0 {
				errs = append(errs, fmt.Sprintf("%s=%d", c, p.byCode[c]))
			}
		}
		rate := 0.0
		if secs > 0 {
			rate = float64(p.byCode["ok"]) / secs
		}
		e := "none"
		if len(errs) > 0 {
			e = strings.Join(errs, " ") + "  (last: " + clip(p.lastErr, 120) + ")"
		}
		nerr := 0
		for c, n := range p.byCode {
			if c != "ok" {
				nerr += n
			}
		}
		fmt.Printf("%-18s %8.1f %9d %10.1f %15s %15s  %s\n", p.name, secs, p.byCode["ok"], rate,
			meanMax(p.okSum, p.okMax, p.byCode["ok"]), meanMax(p.errSum, p.errMax, nerr), e)
	}
	return nil
}

func meanMax(sum, most time.Duration, n int) string {
	if n == 0 {
		return "-"
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return fmt.Sprintf("%.0f/%.0f", ms(sum)/float64(n), ms(most))
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func verify(args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	gateway := fs.String("gateway", "", "gateway base URL")
	logPath := fs.String("log", "acked.log", "the write command's log")
	nodes := fs.Int("nodes", 3, "nodes the ring must hold")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := os.Open(*logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	want := map[string]map[string]string{} // room → id → body
	acked := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), "\t", 3)
		if len(parts) != 3 {
			return fmt.Errorf("log line %q", sc.Text())
		}
		if want[parts[0]] == nil {
			want[parts[0]] = map[string]string{}
		}
		if old, dup := want[parts[0]][parts[1]]; dup {
			return fmt.Errorf("room %s: id %s acknowledged twice (%q and %q)", parts[0], parts[1], old, parts[2])
		}
		want[parts[0]][parts[1]] = parts[2]
		acked++
	}
	if err := sc.Err(); err != nil {
		return err
	}
	ctx := context.Background()
	missing, wrong := 0, 0
	for room, rows := range want {
		var res result
		var err error
		for attempt := 0; attempt < 20; attempt++ { // bounded: a shard may still be settling
			if _, err = post(ctx, *gateway+"/v1/sql", map[string]any{
				"shard_id": "room_id=" + room,
				"sql":      "SELECT id, body FROM messages WHERE author = 'k8s-e2e'",
			}, &res); err == nil {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("room %s: %w", room, err)
		}
		got := map[string]string{}
		for _, r := range res.Rows {
			var body string
			if len(r) == 2 && json.Unmarshal(r[1], &body) == nil {
				got[string(r[0])] = body
			}
		}
		for id, body := range rows {
			switch g, ok := got[id]; {
			case !ok:
				missing++
				if missing <= 10 {
					fmt.Printf("MISSING room %s id %s body %s\n", room, id, body)
				}
			case g != body:
				wrong++
				if wrong <= 10 {
					fmt.Printf("DIFFERENT room %s id %s: acked %q, stored %q\n", room, id, body, g)
				}
			}
		}
	}
	fmt.Printf("verify: %d acknowledged writes in %d rooms: %d missing, %d different\n", acked, len(want), missing, wrong)
	if missing+wrong > 0 {
		return errors.New("acknowledged writes lost")
	}
	return checkRing(ctx, *gateway, *nodes, len(want))
}

func allAlive(st statusJSON) bool {
	for _, nd := range st.Cluster.Nodes {
		if nd.Alive != "" && nd.Alive != "alive" && nd.Alive != "reachable" {
			return false
		}
	}
	return true
}

type statusJSON struct {
	Cluster *struct {
		RingEpoch uint64 `json:"ring_epoch"`
		Nodes     []struct {
			ID     string `json:"id"`
			Shards int64  `json:"shards"`
			Alive  string `json:"alive"`
		} `json:"nodes"`
		MovesInFlight int64 `json:"moves_in_flight"`
	} `json:"cluster"`
}

// checkRing waits (bounded) until the ring holds n nodes with no move in
// flight, then checks the shards held add up to the rooms written.
func checkRing(ctx context.Context, gateway string, n, rooms int) error {
	return pollRing(ctx, gateway, n, rooms, 2*time.Minute)
}

func waitRing(args []string) error {
	fs := flag.NewFlagSet("wait-ring", flag.ContinueOnError)
	gateway := fs.String("gateway", "", "gateway base URL")
	n := fs.Int("nodes", 3, "nodes the ring must hold")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return pollRing(context.Background(), *gateway, *n, -1, *timeout)
}

// pollRing waits until the ring holds n live nodes and no move is in
// flight; with rooms >= 0 it then checks the shards held.
func pollRing(ctx context.Context, gateway string, n, rooms int, timeout time.Duration) error {
	var st statusJSON
	var last string
	deadline := time.Now().Add(timeout)
	for {
		st = statusJSON{}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, gateway+"/v1/status", nil)
		authorize(req)
		resp, err := httpClient.Do(req)
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		switch {
		case err != nil:
			last = err.Error()
		case st.Cluster == nil:
			last = "status has no cluster"
		case len(st.Cluster.Nodes) != n:
			last = fmt.Sprintf("ring has %d nodes, want %d", len(st.Cluster.Nodes), n)
		case st.Cluster.MovesInFlight != 0:
			last = fmt.Sprintf("%d moves in flight", st.Cluster.MovesInFlight)
		case !allAlive(st):
			last = "not every node in the ring is alive"
		case rooms < 0:
			return nil
		default:
			var held int64
			var parts []string
			for _, nd := range st.Cluster.Nodes {
				held += nd.Shards
				parts = append(parts, fmt.Sprintf("%s=%d", nd.ID, nd.Shards))
			}
			sort.Strings(parts)
			fmt.Printf("ring: epoch %d, %d nodes, shards held %s (sum %d, rooms written %d)\n",
				st.Cluster.RingEpoch, len(st.Cluster.Nodes), strings.Join(parts, " "), held, rooms)
			// Besides the rooms, a node may hold the root shard.
			if held < int64(rooms) || held > int64(rooms)+1 {
				return fmt.Errorf("shards held on all nodes add up to %d for %d rooms: a shard is missing or served twice", held, rooms)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster status: %s", last)
		}
		time.Sleep(time.Second)
	}
}
