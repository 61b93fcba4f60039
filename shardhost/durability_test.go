package shardhost_test

import (
	"bufio"
	"context"
	"fmt"
	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lunora/lunora/shardhost"
	"github.com/prometheus/client_golang/prometheus"
)

// ack is one acknowledged messages:send: its room, body, message ID and
// commit sequence number.
type ack struct {
	room, body string
	id         int64
	seq        uint64
}

// ackLog collects acknowledgements as callers receive them.
type ackLog struct {
	mu   sync.Mutex
	acks []ack
}

func (l *ackLog) add(a ack) {
	l.mu.Lock()
	l.acks = append(l.acks, a)
	l.mu.Unlock()
}

func (l *ackLog) snapshot() []ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]ack(nil), l.acks...)
}

// powerCut copies what a power cut at this instant would leave of dir's
// shard files into a new directory: each database file as it is (only a
// checkpoint writes it, and a checkpoint syncs it) and each -wal file cut
// to its length at its last fdatasync; no -shm. The acknowledgements taken
// before the copy must all be in it.
func powerCut(t *testing.T, h *shardhost.Host, dir string) (string, error) {
	synced := shardhost.SyncedWALLens(h)
	out := t.TempDir()
	err := filepath.WalkDir(filepath.Join(dir, "shards"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".db") {
			return err
		}
		n, ok := synced[path]
		if !ok {
			// Still activating: nothing of it was acknowledged (and a
			// fresh shard is created in the copy).
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		dst := filepath.Join(out, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := copyPrefix(path, dst, -1); err != nil {
			return err
		}
		return copyPrefix(path+"-wal", dst+"-wal", n)
	})
	return out, err
}

// copyPrefix copies the first n bytes of src (all of it if n < 0).
func copyPrefix(src, dst string, n int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	o, err := os.Create(dst)
	if err != nil {
		return err
	}
	var r io.Reader = in
	if n >= 0 {
		r = io.LimitReader(in, n)
	}
	if _, err := io.Copy(o, r); err != nil {
		o.Close()
		return err
	}
	return o.Close()
}

// checkRecovered opens a host on a power-cut copy and checks that every
// acknowledged mutation is there, with its message ID and sequence number,
// and that each shard's commits are continuous: messages 1..seq, message k
// written by commit k.
func checkRecovered(t *testing.T, dir string, acks []ack, rooms int) (recovered uint64) {
	t.Helper()
	h := newHost(t, func(c *shardhost.Config) {
		c.Dir = dir
		c.IdleTimeout = time.Minute
	})
	byRoom := map[string]map[int64]ack{}
	for _, a := range acks {
		if byRoom[a.room] == nil {
			byRoom[a.room] = map[int64]ack{}
		}
		byRoom[a.room][a.id] = a
	}
	for i := range rooms {
		room := fmt.Sprintf("r%d", i)
		res, err := h.Exec(context.Background(), "room_id="+room, "SELECT id, body FROM messages ORDER BY id", nil)
		if err != nil {
			t.Fatalf("%s: %v", room, err)
		}
		if uint64(len(res.Rows)) != res.Seq {
			t.Errorf("%s: %d messages at commit sequence %d: commits are not continuous", room, len(res.Rows), res.Seq)
		}
		recovered += res.Seq
		bodies := map[int64]string{}
		for k, row := range res.Rows {
			id := row[0].(int64)
			if id != int64(k+1) {
				t.Errorf("%s: message %d at position %d: a gap", room, id, k+1)
			}
			bodies[id] = row[1].(string)
		}
		for id, a := range byRoom[room] {
			if bodies[id] != a.body {
				t.Errorf("%s: acknowledged message %d (%q, seq %d) lost after the power cut (recovered seq %d)", room, id, a.body, a.seq, res.Seq)
			}
			if a.seq != uint64(id) {
				t.Errorf("%s: message %d acknowledged with seq %d", room, id, a.seq)
			}
		}
	}
	return recovered
}

// TestNodeDurabilityCrashPoints simulates a power cut — writes not yet
// fdatasynced are lost — at each crash point of the node durability path
// (syncer.go) while callers write to several shards: after commits and
// before the round syncs them, between two shards' fdatasyncs of a round,
// after the round's fdatasyncs and before its acknowledgements, and after
// them. At each point the shard files are copied as the power cut would
// leave them (each -wal cut to its last synced length); a host opened on
// the copy must hold every mutation acknowledged before the cut, with
// continuous commit sequences.
//
// Both sync methods are run: fdatasync of each -wal (the default) and one
// syncfs per round.
func TestNodeDurabilityCrashPoints(t *testing.T) {
	const rooms, callers = 4, 12
	points := []string{"before-sync", "between-shard-syncs", "after-sync-before-acks", "after-acks"}
	for _, method := range []string{"fdatasync", "syncfs"} {
		for _, point := range points {
			t.Run(method+"/"+point, func(t *testing.T) {
				crashPointRun(t, point, method == "syncfs", rooms, callers)
			})
		}
	}
}

func crashPointRun(t *testing.T, point string, syncfs bool, rooms, callers int) {
	dir := t.TempDir()
	var h *shardhost.Host
	var acks ackLog
	var rounds atomic.Int64
	var mu sync.Mutex
	var cuts []string
	var cutAcks [][]ack
	cut := func() {
		// The snapshot of acknowledgements precedes the copy: each
		// of them must be in it.
		a := acks.snapshot()
		c, err := powerCut(t, h, dir)
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		cuts, cutAcks = append(cuts, c), append(cutAcks, a)
		mu.Unlock()
	}
	// Cut at the point in three rounds spread over the run.
	hit := func() bool {
		n := rounds.Add(1)
		return n == 5 || n == 40 || n == 120
	}
	hooks := shardhost.DurabilityHooks{SyncFS: syncfs}
	switch point {
	case "before-sync":
		hooks.BeforeSync = func() {
			if hit() {
				cut()
			}
		}
	case "between-shard-syncs":
		var first atomic.Bool
		hooks.BeforeSync = func() { first.Store(true) }
		hooks.AfterShardSync = func(string) {
			if first.CompareAndSwap(true, false) && hit() {
				cut()
			}
		}
	case "after-sync-before-acks":
		hooks.AfterSync = func() {
			if hit() {
				cut()
			}
		}
	case "after-acks":
		hooks.AfterAcks = func() {
			if hit() {
				cut()
			}
		}
	}
	h = newHost(t, func(c *shardhost.Config) {
		c.Dir = dir
		c.IdleTimeout = time.Minute
		c.Durability = shardhost.DurabilityNode
		shardhost.SetDurabilityHooks(c, hooks)
	})
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			room := fmt.Sprintf("r%d", c%rooms)
			for i := 0; rounds.Load() < 130; i++ {
				body := fmt.Sprintf("c%d-%d", c, i)
				res, err := send(context.Background(), h, room, "a", body)
				if err != nil {
					t.Error(err)
					return
				}
				acks.add(ack{room: room, body: body, id: res.Rows[0][0].(int64), seq: res.Seq})
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(cuts) != 3 {
		t.Fatalf("%d power cuts taken, want 3", len(cuts))
	}
	for i, c := range cuts {
		got := checkRecovered(t, c, cutAcks[i], rooms)
		t.Logf("cut %d: %d acknowledged before it, %d commits recovered", i, len(cutAcks[i]), got)
	}
}

// TestNodeDurabilitySIGKILLChild is the node process of
// TestNodeDurabilitySIGKILL: callers write to several shards and print
// each acknowledgement ("ack room id seq body") until the process is
// killed.
func TestNodeDurabilitySIGKILLChild(t *testing.T) {
	dir := os.Getenv("LUNORA_DURABILITY_CHILD_DIR")
	if dir == "" {
		t.Skip("the child process of TestNodeDurabilitySIGKILL")
	}
	cfg := shardhost.DefaultLocalConfig()
	cfg.Dir, cfg.App, cfg.IdleTimeout = dir, chatApp(t), time.Minute
	cfg.Durability = shardhost.DurabilityNode
	h, err := shardhost.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	fmt.Println("ready")
	var wg sync.WaitGroup
	for c := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			room := fmt.Sprintf("r%d", c%4)
			for i := 0; ; i++ {
				body := fmt.Sprintf("c%d-%d", c, i)
				res, err := send(context.Background(), h, room, "a", body)
				if err != nil {
					fmt.Fprintln(os.Stderr, "send:", err)
					return
				}
				mu.Lock()
				fmt.Printf("ack %s %d %d %s\n", room, res.Rows[0][0].(int64), res.Seq, body)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Fatal("a caller failed")
}

// TestNodeDurabilitySIGKILL SIGKILLs a node process (this test binary run
// as TestNodeDurabilitySIGKILLChild) in node durability mode while it
// writes, then reopens its data directory: every acknowledgement the child
// printed must be in it, with continuous commit sequences.
func TestNodeDurabilitySIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	dir := t.TempDir()
	cmd, sc := startChild(t, "LUNORA_DURABILITY_CHILD_DIR="+dir, "-test.run=^TestNodeDurabilitySIGKILLChild$")
	var acks []ack
	killed := false
	for sc.Scan() {
		var a ack
		if n, _ := fmt.Sscanf(sc.Text(), "ack %s %d %d %s", &a.room, &a.id, &a.seq, &a.body); n != 4 {
			continue // the ready line, or a line the kill cut short
		}
		acks = append(acks, a)
		if len(acks) == 500 && !killed {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	cmd.Wait()
	if !killed {
		t.Fatalf("the child stopped after %d acknowledgements", len(acks))
	}
	got := checkRecovered(t, dir, acks, 4)
	t.Logf("%d acknowledged before the kill, %d commits recovered", len(acks), got)
}

// TestNodeDurabilityReadersWaitForSync holds a durability round before
// its fdatasync: the mutation in it is committed in the shard's file but
// not durable, so it is not acknowledged and a query — whose snapshot holds
// it — does not answer until the round has synced (I2).
func TestNodeDurabilityReadersWaitForSync(t *testing.T) {
	var armed atomic.Bool
	held := make(chan struct{})
	release := make(chan struct{})
	h := newHost(t, func(c *shardhost.Config) {
		c.Durability = shardhost.DurabilityNode
		shardhost.SetDurabilityHooks(c, shardhost.DurabilityHooks{BeforeSync: func() {
			if armed.CompareAndSwap(true, false) {
				close(held)
				<-release
			}
		}})
	})
	ctx := context.Background()
	if _, err := send(ctx, h, "r", "a", "first"); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	acked := make(chan error, 1)
	go func() {
		_, err := send(ctx, h, "r", "a", "second")
		acked <- err
	}()
	<-held
	select {
	case err := <-acked:
		t.Fatalf("the mutation was acknowledged before its round synced (err %v)", err)
	default:
	}
	qctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	res, err := h.Call(qctx, "room_id=r", "messages:count", map[string]any{"room_id": "r"})
	cancel()
	if err == nil {
		if n := res.Rows[0][0].(int64); n != 1 || res.Seq != 1 {
			t.Fatalf("a query saw %d messages at seq %d while the second commit was not durable", n, res.Seq)
		}
	} else if api.CodeOf(err) != codes.DeadlineExceeded {
		t.Fatalf("query while the round is held: %v", err)
	}
	close(release)
	if err := <-acked; err != nil {
		t.Fatal(err)
	}
	if n := count(t, h, "r"); n != 2 {
		t.Fatalf("%d messages after the round, want 2", n)
	}
}

// startChild runs this test binary again as a child process with env
// added to its environment and the -test flags args (one test, once),
// its stderr on ours; it is killed when the test ends. It returns the
// child and a scanner of its stdout.
func startChild(t *testing.T, env string, args ...string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append(args, "-test.count=1")...)
	cmd.Env = append(os.Environ(), env)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() }) // a no-op once it has exited
	return cmd, bufio.NewScanner(out)
}

// TestNodeDurabilityAfterCleanActivation: shards that hibernated cleanly
// and come back without syncing (their files unchanged since the close)
// lose no acknowledged mutation to a power cut — neither those written
// before the hibernation nor those acknowledged since, whose rounds
// fdatasync the -wal through the descriptor the clean activation opened.
// The power-cut model (powerCut) keeps database files as they are, which
// holds because a clean close's checkpoint synced them; it does not model
// directory entries, so the -wal entry's durability (synced by the
// activation that created it) rests on the argument in DESIGN.md.
func TestNodeDurabilityAfterCleanActivation(t *testing.T) {
	const rooms = 4
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	var h *shardhost.Host
	var acks ackLog
	var armed atomic.Bool
	var rounds atomic.Int64
	var once sync.Once
	var cutDir string
	var cutAcks []ack
	var cutErr error
	hooks := shardhost.DurabilityHooks{AfterAcks: func() {
		if armed.Load() && rounds.Add(1) == 20 {
			once.Do(func() {
				cutAcks = acks.snapshot()
				cutDir, cutErr = powerCut(t, h, dir)
			})
		}
	}}
	h = newHost(t, func(c *shardhost.Config) {
		c.Dir = dir
		c.IdleTimeout = 100 * time.Millisecond
		c.Registerer = reg
		shardhost.SetDurabilityHooks(c, hooks)
	})
	write := func(room string, i int) {
		body := fmt.Sprintf("%s-%d", room, i)
		res, err := send(context.Background(), h, room, "a", body)
		if err != nil {
			t.Error(err)
			return
		}
		acks.add(ack{room: room, body: body, id: res.Rows[0][0].(int64), seq: res.Seq})
	}
	for r := range rooms {
		for i := range 10 {
			write(fmt.Sprint("r", r), i)
		}
	}
	waitActive(t, h, 0) // every room closes cleanly
	armed.Store(true)
	var wg sync.WaitGroup
	for r := range rooms {
		wg.Go(func() {
			for i := 10; rounds.Load() < 30 && !t.Failed(); i++ {
				write(fmt.Sprint("r", r), i)
			}
		})
	}
	wg.Wait()
	if clean := metricValue(t, reg, "lunora_shard_clean_activations_total"); clean < rooms {
		t.Fatalf("%v clean activations, want at least %d: the rooms synced again when they came back", clean, rooms)
	}
	if cutErr != nil || cutDir == "" {
		t.Fatalf("no power cut taken: %v", cutErr)
	}
	got := checkRecovered(t, cutDir, cutAcks, rooms)
	t.Logf("%d acknowledged before the cut, %d commits recovered", len(cutAcks), got)
}
