package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/node"
	"github.com/lunora/lunora/nodeproc"
	"github.com/lunora/lunora/raftglobal"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
)

func startDev(t *testing.T, dir string) *nodeproc.Process {
	t.Helper()
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	p, err := nodeproc.Start(nodeproc.Config{
		Dev: true, Shards: shardhost.DefaultLocalConfig(), Global: raftglobal.DefaultLocalConfig(),
		App: app, Dir: dir, NodeID: "n1", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type callResult struct {
	Rows      [][]any `json:"rows"`
	CommitSeq uint64  `json:"commit_seq"`
	ShardID   string  `json:"shard_id"`
}

func call(ctx context.Context, addr, function string, args map[string]any) (*callResult, error) {
	body, _ := json.Marshal(map[string]any{"function": function, "args": args})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/call", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s: %s", function, resp.Status, b)
	}
	r := &callResult{}
	return r, json.Unmarshal(b, r)
}

// TestBackupRestoreUnderWrites backs a node up while writers keep writing
// to its shards, restores the backup into a fresh data directory, starts a
// node on it and finds, on every shard, exactly the acknowledged writes
// whose commit sequence is at or below the shard's seq in the manifest —
// so every write acknowledged before the backup began — and the global
// tier's writes made before it.
func TestBackupRestoreUnderWrites(t *testing.T) {
	const rooms, writers = 12, 4
	p := startDev(t, t.TempDir())
	stopped := false
	defer func() {
		if !stopped {
			p.Shutdown(context.Background())
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range 5 {
		if _, err := call(ctx, p.HTTPAddr, "users:register", map[string]any{"user_id": fmt.Sprintf("u%d", i), "name": "n"}); err != nil {
			t.Fatal(err)
		}
	}

	// acked[room] = commit seq of each acknowledged message, by body.
	var mu sync.Mutex
	acked := map[string]map[string]uint64{}
	before := map[string]map[string]bool{} // acknowledged before the backup began
	wctx, stopWriters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; wctx.Err() == nil; n++ {
				room := fmt.Sprintf("r%d", (n*writers+w)%rooms)
				body := fmt.Sprintf("w%d-%d", w, n)
				res, err := call(wctx, p.HTTPAddr, "messages:send", map[string]any{"room_id": room, "author": "a", "body": body})
				if err != nil {
					continue // not acknowledged (the writers' context ended)
				}
				mu.Lock()
				if acked[room] == nil {
					acked[room] = map[string]uint64{}
				}
				acked[room][body] = res.CommitSeq
				mu.Unlock()
			}
		}()
	}
	// Wait until every room has writes (deterministic: poll the log).
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n == rooms {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("writers made no progress")
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	for room, m := range acked {
		before[room] = map[string]bool{}
		for body := range m {
			before[room][body] = true
		}
	}
	mu.Unlock()
	out := filepath.Join(t.TempDir(), "backup")
	var stdout bytes.Buffer
	start := time.Now()
	if err := runBackup([]string{"-http", p.HTTPAddr, "-out", out}, &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	stopWriters()
	wg.Wait()
	t.Logf("%s(took %v)", stdout.String(), took)
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopped = true

	m, err := verifyBackup(out)
	if err != nil {
		t.Fatal(err)
	}
	if m.NodeID != "n1" || len(m.Shards) != rooms || len(m.Skipped) != 0 || !m.Global.Strong { // (dev mode runs no ring: epoch 0)
		t.Fatalf("manifest: node %s, %d shards (want %d), skipped %v, ring epoch %d, strong %v", m.NodeID, len(m.Shards), rooms, m.Skipped, m.RingEpoch, m.Global.Strong)
	}
	if err := runRestore([]string{"-from", out, "-verify"}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	// A corrupted file fails the check.
	bad := filepath.Join(t.TempDir(), "bad")
	copyTree(t, out, bad)
	f := filepath.Join(bad, filepath.FromSlash(m.Shards[0].File))
	b, _ := os.ReadFile(f)
	b[len(b)/2] ^= 1
	os.WriteFile(f, b, 0o644)
	if err := runRestore([]string{"-from", bad, "-verify"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "SHA-256") {
		t.Fatalf("a flipped bit: %v", err)
	}

	data := filepath.Join(t.TempDir(), "restored")
	if err := runRestore([]string{"-from", out, "-data", data}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := runRestore([]string{"-from", out, "-data", data}, io.Discard, io.Discard); err == nil {
		t.Fatal("restore into a non-empty directory succeeded")
	}
	q := startDev(t, data)
	defer q.Shutdown(context.Background())
	seqs := map[string]uint64{}
	for _, s := range m.Shards {
		seqs[s.ID] = s.Seq
	}
	var kept, later int
	for room, bodies := range acked {
		res, err := call(ctx, q.HTTPAddr, "messages:list", map[string]any{"room_id": room})
		if err != nil {
			t.Fatal(err)
		}
		seq, ok := seqs[res.ShardID]
		if !ok {
			t.Fatalf("room %s: shard %s is not in the manifest", room, res.ShardID)
		}
		if res.CommitSeq != seq {
			t.Errorf("room %s: restored at seq %d, the manifest says %d", room, res.CommitSeq, seq)
		}
		got := map[string]bool{}
		for _, row := range res.Rows {
			for _, v := range row {
				if s, ok := v.(string); ok && strings.HasPrefix(s, "w") {
					got[s] = true
				}
			}
		}
		for body, s := range bodies {
			switch {
			case s <= seq && !got[body]:
				t.Errorf("room %s: acknowledged write %s (seq %d ≤ backup seq %d) lost", room, body, s, seq)
			case s > seq && got[body]:
				t.Errorf("room %s: write %s (seq %d) after the backup's seq %d is in the backup", room, body, s, seq)
			case s <= seq:
				kept++
			default:
				later++
			}
			if before[room][body] && s > seq {
				t.Errorf("room %s: write %s acknowledged before the backup began is not in it", room, body)
			}
		}
	}
	for i := range 5 {
		res, err := call(ctx, q.HTTPAddr, "users:get", map[string]any{"user_id": fmt.Sprintf("u%d", i)})
		if err != nil || len(res.Rows) != 1 {
			t.Fatalf("global user u%d after restore: %v %v", i, res, err)
		}
	}
	// The restored node takes writes.
	if _, err := call(ctx, q.HTTPAddr, "messages:send", map[string]any{"room_id": "r0", "author": "a", "body": "after"}); err != nil {
		t.Fatal(err)
	}
	if _, err := call(ctx, q.HTTPAddr, "users:register", map[string]any{"user_id": "late", "name": "n"}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d acknowledged writes in the backup, %d acknowledged after it; %d acknowledged before it began", kept, later, count(before))
}

func count(m map[string]map[string]bool) (n int) {
	for _, b := range m {
		n += len(b)
	}
	return n
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		return writeFile(filepath.Join(to, rel), in)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestBackupServeNode backs up a node as lunora-node serve runs it (a lone
// node: its own ring and one-voter global tier, the backup endpoint on its
// ops port) holding N shards ($LUNORA_BACKUP_SHARDS, default 40), restores
// it and checks every shard's rows and seq on a node started on the copy.
// It logs the backup's time and size (figures in BENCHMARKS.md).
func TestBackupServeNode(t *testing.T) {
	shards := 40
	if s := os.Getenv("LUNORA_BACKUP_SHARDS"); s != "" {
		fmt.Sscan(s, &shards)
	}
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	start := func(dir string) *nodeproc.Process {
		p, err := nodeproc.Start(nodeproc.Config{
			Shards: shardhost.DefaultLocalConfig(), Global: raftglobal.DefaultLocalConfig(), Cluster: node.DefaultClusterConfig(),
			App: app, Dir: dir, NodeID: "n1", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
		})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p := start(t.TempDir())
	for { // the node puts itself in the ring after it starts
		if epoch, _, err := p.Global.Ring(ctx); err == nil && epoch > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the node never joined its ring")
		}
		time.Sleep(10 * time.Millisecond)
	}
	seqs := map[string]uint64{}
	for i := range shards {
		id := fmt.Sprintf("room_id=r%d", i)
		for j := range 1 + i%3 {
			res, err := p.Host.Call(ctx, id, "messages:send", map[string]any{"room_id": fmt.Sprintf("r%d", i), "author": "a", "body": fmt.Sprint(j)})
			if err != nil {
				t.Fatal(err)
			}
			seqs[id] = res.Seq
		}
	}
	out := filepath.Join(t.TempDir(), "backup")
	began := time.Now()
	var stdout bytes.Buffer
	if err := runBackup([]string{"-http", p.HTTPAddr, "-out", out}, &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	took := time.Since(began)
	p.Shutdown(context.Background())
	m, err := verifyBackup(out)
	if err != nil {
		t.Fatal(err)
	}
	size := m.Global.Size
	for _, s := range m.Shards {
		size += s.Size
		if s.Seq != seqs[s.ID] {
			t.Errorf("shard %s: seq %d in the manifest, %d acknowledged", s.ID, s.Seq, seqs[s.ID])
		}
	}
	if len(m.Shards) != shards || m.RingEpoch == 0 || !m.Global.Strong {
		t.Fatalf("manifest: %d shards (want %d), ring epoch %d, strong %v", len(m.Shards), shards, m.RingEpoch, m.Global.Strong)
	}
	t.Logf("%d shards: backup %v, %d bytes (%d global), ring epoch %d", shards, took.Round(time.Millisecond), size, m.Global.Size, m.RingEpoch)

	data := filepath.Join(t.TempDir(), "restored")
	if err := runRestore([]string{"-from", out, "-data", data}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	q := start(data)
	defer q.Shutdown(context.Background())
	for i := range shards {
		id := fmt.Sprintf("room_id=r%d", i)
		res, err := q.Host.Call(ctx, id, "messages:list", map[string]any{"room_id": fmt.Sprintf("r%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Rows) != 1+i%3 || res.Seq != seqs[id] {
			t.Errorf("shard %s after restore: %d rows at seq %d, want %d at %d", id, len(res.Rows), res.Seq, 1+i%3, seqs[id])
		}
	}
}
