package shardhost_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/schema"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc/codes"
)

func chatApp(t testing.TB) *schema.App {
	t.Helper()
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	return app
}

func newHost(t testing.TB, mod func(*shardhost.Config)) *shardhost.Host {
	t.Helper()
	cfg := shardhost.DefaultLocalConfig()
	cfg.Dir = t.TempDir()
	cfg.App = chatApp(t)
	if mod != nil {
		mod(&cfg)
	}
	h, err := shardhost.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return h
}

func waitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func send(ctx context.Context, h *shardhost.Host, room, author, body string) (*api.Result, error) {
	return h.Call(ctx, "room_id="+room, "messages:send", map[string]any{"room_id": room, "author": author, "body": body})
}

func count(t testing.TB, h *shardhost.Host, room string) int64 {
	t.Helper()
	res, err := h.Call(context.Background(), "room_id="+room, "messages:count", map[string]any{"room_id": room})
	if err != nil {
		t.Fatal(err)
	}
	return res.Rows[0][0].(int64)
}

func shardFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(dir, "shards"), func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".db") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func TestMutationThenQuery(t *testing.T) {
	h := newHost(t, nil)
	ctx := context.Background()
	res, err := send(ctx, h, "r1", "ada", "hello")
	if err != nil {
		t.Fatal(err)
	}
	if res.Seq != 1 || res.ShardID != "room_id=r1" || len(res.Rows) != 1 || res.Columns[0] != "id" || res.RowsAffected != 1 {
		t.Fatalf("send result = %+v", res)
	}
	got, err := h.Call(ctx, "room_id=r1", "messages:list", map[string]any{"room_id": "r1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Rows) != 1 || got.Rows[0][1] != "ada" || got.Rows[0][2] != "hello" || got.Seq != 1 {
		t.Fatalf("list = %+v", got)
	}
}

func TestTwoKeysTwoFilesAndHibernation(t *testing.T) {
	dir := t.TempDir()
	h := newHost(t, func(c *shardhost.Config) { c.Dir = dir; c.IdleTimeout = 50 * time.Millisecond })
	ctx := context.Background()
	for _, room := range []string{"a", "b"} {
		if _, err := send(ctx, h, room, "x", "hi "+room); err != nil {
			t.Fatal(err)
		}
	}
	if files := shardFiles(t, dir); len(files) != 2 {
		t.Fatalf("want 2 shard files, got %v", files)
	}
	waitFor(t, 5*time.Second, func() error {
		st, _ := h.Status(ctx)
		if st.ActiveShards != 0 {
			return fmt.Errorf("%d shards still active", st.ActiveShards)
		}
		return nil
	})
	if n := count(t, h, "a"); n != 1 {
		t.Fatalf("after reactivation room a has %d messages", n)
	}
	st, _ := h.Status(ctx)
	if st.ShardsOnDisk != 2 {
		t.Fatalf("ShardsOnDisk = %d", st.ShardsOnDisk)
	}
	// The commit sequence continues where it was.
	res, err := send(ctx, h, "a", "x", "again")
	if err != nil || res.Seq != 2 {
		t.Fatalf("send after reactivation: %+v %v", res, err)
	}
}

func TestConcurrentMutationsStrictSeq(t *testing.T) {
	h := newHost(t, nil)
	ctx := context.Background()
	const n = 100
	seqs := make([]uint64, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res, err := send(ctx, h, "busy", "w", fmt.Sprintf("m%d", i))
			if err != nil {
				errs <- err
				return
			}
			seqs[i] = res.Seq
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if c := count(t, h, "busy"); c != n {
		t.Fatalf("rows = %d, want %d", c, n)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("seqs not 1..%d without repeats: %v", n, seqs)
		}
	}
}

// holdWriter returns a BeforeBatch hook that blocks shard's writer until
// release is called, and a channel that receives when it is blocked.
func holdWriter(shard string) (hook func(string), held <-chan struct{}, release func()) {
	gate := make(chan struct{})
	heldC := make(chan struct{}, 1)
	var once sync.Once
	hook = func(id string) {
		if id != shard {
			return
		}
		select {
		case heldC <- struct{}{}:
		default:
		}
		<-gate
	}
	return hook, heldC, func() { once.Do(func() { close(gate) }) }
}

func TestFailingMutationDoesNotRollBackBatch(t *testing.T) {
	hook, held, release := holdWriter("room_id=g")
	h := newHost(t, func(c *shardhost.Config) { c.BeforeBatch = hook })
	defer release()
	ctx := context.Background()
	// The first mutation is taken by the writer, which then blocks: the
	// next ones queue up and form one batch.
	first := make(chan error, 1)
	go func() { _, err := send(ctx, h, "g", "w", "first"); first <- err }()
	<-held
	type out struct {
		body string
		res  *api.Result
		err  error
	}
	results := make(chan out, 5)
	bodies := []string{"a", "b", "   ", "c", "d"} // "   " fails lunora_assert
	for _, b := range bodies {
		go func(b string) {
			res, err := send(ctx, h, "g", "w", b)
			results <- out{b, res, err}
		}(b)
	}
	waitFor(t, 5*time.Second, func() error {
		if n := shardhost.QueuedLen(h); n < len(bodies) {
			return fmt.Errorf("%d queued", n)
		}
		return nil
	})
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for range bodies {
		o := <-results
		if o.body == "   " {
			if !errors.Is(o.err, shardhost.ErrAssert) || api.CodeOf(o.err) != codes.FailedPrecondition {
				t.Fatalf("blank body: want assertion failure, got %v", o.err)
			}
			if !strings.Contains(o.err.Error(), "a message needs a body") {
				t.Fatalf("assert message lost: %v", o.err)
			}
			continue
		}
		if o.err != nil {
			t.Fatalf("neighbour %q failed: %v", o.body, o.err)
		}
		seqs = append(seqs, o.res.Seq)
	}
	if c := count(t, h, "g"); c != 5 {
		t.Fatalf("rows = %d, want 5 (first + 4 neighbours)", c)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	if fmt.Sprint(seqs) != "[2 3 4 5]" {
		t.Fatalf("neighbour seqs = %v, want [2 3 4 5]", seqs)
	}
}
