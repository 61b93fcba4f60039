package e2e_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/lunora/lunora/lunoratest"
	"github.com/lunora/lunora/shardhost"
)

// TestEndToEnd runs the request path — gateway, shard host, SQLite file —
// over real loopback listeners twice: wired in this process (so -race sees
// every layer) and as the built "lunora-node dev" binary.
func TestEndToEnd(t *testing.T) {
	const idle = 200 * time.Millisecond
	t.Run("in-process", func(t *testing.T) {
		t.Parallel()
		cfg := shardhost.DefaultLocalConfig()
		cfg.IdleTimeout = idle
		dev := lunoratest.StartDev(t, cfg)
		checkEndToEnd(t, dev.HTTPAddr, dev.GRPCAddr, dev.DataDir)
	})
	t.Run("binary", func(t *testing.T) {
		t.Parallel()
		b := lunoratest.Build(t)
		p := lunoratest.Start(t, lunoratest.NodeSpec(t, b, "dev", "-idle-timeout", idle.String()))
		checkEndToEnd(t, p.HTTPAddr(), p.GRPCAddr(), p.DataDir())
	})
}

func checkEndToEnd(t *testing.T, httpAddr, grpcAddr, data string) {
	h := lunoratest.NewHTTPClient(t, httpAddr)
	g := lunoratest.DialGRPC(t, grpcAddr)

	// A mutation then a query on the same shard, over HTTP.
	sent := mustHTTP(t, h, "messages:send", map[string]any{"room_id": "r1", "author": "ada", "body": "hello over http"})
	if sent.ShardID != "room_id=r1" || sent.CommitSeq != 1 || sent.RowsAffected != 1 || len(sent.Rows) != 1 || sent.Column("id") != 0 {
		t.Fatalf("messages:send over HTTP = %+v, want shard room_id=r1, commit_seq 1, one row affected, one [id] row", sent)
	}
	httpID := jsonInt(t, sent.Rows[0][0])
	list := mustHTTP(t, h, "messages:list", map[string]any{"room_id": "r1"})
	got := messagesFromHTTP(t, list)
	if len(got) != 1 || got[0].id != httpID || got[0].author != "ada" || got[0].body != "hello over http" || got[0].createdAt <= 0 {
		t.Fatalf("messages:list over HTTP = %+v, want the row just written (id %d)", got, httpID)
	}
	if list.CommitSeq != sent.CommitSeq || list.ShardID != "room_id=r1" {
		t.Fatalf("query saw commit_seq %d on %q, want %d on room_id=r1", list.CommitSeq, list.ShardID, sent.CommitSeq)
	}

	// The same over gRPC, on the same shard: it sees both rows.
	gsent := mustGRPC(t, g, "messages:send", map[string]any{"room_id": "r1", "author": "bob", "body": "hello over grpc"})
	if gsent.GetShardId() != "room_id=r1" || gsent.GetCommitSeq() != 2 || gsent.GetRowsAffected() != 1 || len(gsent.GetRows()) != 1 {
		t.Fatalf("messages:send over gRPC = %v, want shard room_id=r1, commit_seq 2, one row", gsent)
	}
	grpcID := gsent.GetRows()[0].GetValues()[0].GetInteger()
	glist := mustGRPC(t, g, "messages:list", map[string]any{"room_id": "r1"})
	want := map[string]int64{"hello over http": httpID, "hello over grpc": grpcID}
	if b := bodies(messagesFromGRPC(t, glist)); fmt.Sprint(b) != fmt.Sprint(want) || glist.GetCommitSeq() != 2 {
		t.Fatalf("messages:list over gRPC = %v at seq %d, want %v at seq 2", b, glist.GetCommitSeq(), want)
	}

	// Two shard keys, two files; the root shard is a third.
	mustGRPC(t, g, "messages:send", map[string]any{"room_id": "r2", "author": "cy", "body": "another room"})
	if n := countShardFiles(t, data); n != 2 {
		t.Fatalf("%d shard files after writing rooms r1 and r2, want 2", n)
	}
	if n := mustHTTP(t, h, "messages:count", map[string]any{"room_id": "r2"}); jsonInt(t, n.Rows[0][0]) != 1 {
		t.Fatalf("room r2 holds %v messages, want 1 (rooms must not share rows)", n.Rows)
	}
	mustHTTP(t, h, "settings:set", map[string]any{"key": "motd", "value": "hi"})
	if n := countShardFiles(t, data); n != 3 {
		t.Fatalf("%d shard files after writing the root shard too, want 3", n)
	}
	st, err := h.Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	// (Not ActiveShards: with a 200ms idle timeout any of them may
	// already have hibernated.)
	if st.ShardsOnDisk != 3 {
		t.Fatalf("status = %+v, want 3 shards on disk", st)
	}

	// Hibernation: every shard closes after the idle timeout, and r1
	// reactivates with its rows and its commit sequence.
	lunoratest.WaitFor(t, 20*time.Second, func() error {
		st, err := h.Status(ctxT(t))
		if err != nil {
			return err
		}
		if st.ActiveShards != 0 {
			return fmt.Errorf("%d shards still active", st.ActiveShards)
		}
		return nil
	})
	list = mustHTTP(t, h, "messages:list", map[string]any{"room_id": "r1"})
	if b := bodies(messagesFromHTTP(t, list)); fmt.Sprint(b) != fmt.Sprint(want) || list.CommitSeq != 2 {
		t.Fatalf("after hibernation messages:list = %v at seq %d, want %v at seq 2", b, list.CommitSeq, want)
	}
	if again := mustHTTP(t, h, "messages:send", map[string]any{"room_id": "r1", "author": "ada", "body": "after hibernation"}); again.CommitSeq != 3 {
		t.Fatalf("first write after hibernation got commit_seq %d, want 3", again.CommitSeq)
	}
	if got := mustHTTP(t, h, "settings:get", map[string]any{"key": "motd"}); len(got.Rows) != 1 || got.Rows[0][1] != "hi" {
		t.Fatalf("settings:get after hibernation = %v, want [motd hi]", got.Rows)
	}
	st, err = h.Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.ShardsOnDisk != 3 {
		t.Fatalf("status after reactivation = %+v, want 3 shards on disk", st)
	}
}
