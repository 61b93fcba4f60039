package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/client"
	"github.com/lunora/lunora/lunoratest"
	"github.com/lunora/lunora/shardhost"
	"google.golang.org/grpc/codes"
)

func TestSessionReadsItsWrites(t *testing.T) {
	dev := lunoratest.StartDev(t, shardhost.DefaultLocalConfig())
	c, err := client.Dial(dev.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := c.NewSession(0)
	var res *api.Result
	// The one-voter global tier elects itself shortly after start.
	lunoratest.WaitFor(t, 20*time.Second, func() error {
		res, err = s.Call(ctx, "users:register", map[string]any{"user_id": "ada", "name": "Ada"}, "")
		return err
	})
	if res.Bookmark == 0 || s.Bookmark() != res.Bookmark {
		t.Fatalf("write bookmark %d, session bookmark %d", res.Bookmark, s.Bookmark())
	}
	got, err := s.Call(ctx, "users:get", map[string]any{"user_id": "ada"}, "")
	if err != nil || len(got.Rows) != 1 || got.Rows[0][1] != "Ada" || got.Seq < res.Bookmark {
		t.Fatalf("session read = %+v, %v", got, err)
	}
	// Shard calls go through the same session untouched.
	if _, err := s.Call(ctx, "messages:send", map[string]any{"room_id": "r", "author": "a", "body": "b"}, ""); err != nil {
		t.Fatal(err)
	}
	if s.Bookmark() != res.Bookmark {
		t.Fatalf("a shard call changed the session bookmark to %d", s.Bookmark())
	}
	// A session resumed from a bookmark this cluster never issued is
	// refused clearly, not left hanging.
	_, err = c.NewSession(res.Bookmark+1_000_000).Call(ctx, "users:get", map[string]any{"user_id": "ada"}, "")
	if api.CodeOf(err) != codes.FailedPrecondition {
		t.Fatalf("future bookmark: %v", err)
	}
	// Errors keep their canonical code.
	_, err = s.Call(ctx, "users:register", map[string]any{"user_id": "ada", "name": "Again"}, "")
	if api.CodeOf(err) != codes.FailedPrecondition {
		t.Fatalf("duplicate user: %v", err)
	}
}

func TestSubscribeYieldsTypedUpdates(t *testing.T) {
	dev := lunoratest.StartDev(t, shardhost.DefaultLocalConfig())
	c, err := client.Dial(dev.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Subscribe(ctx, "messages:send", map[string]any{"room_id": "r", "author": "a", "body": "b"}, "", 0); api.CodeOf(err) != codes.InvalidArgument {
		t.Fatalf("subscribing to a mutation: %v", err)
	}
	st, err := c.Subscribe(ctx, "messages:list", map[string]any{"room_id": "typed"}, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	u, err := st.Next(ctx)
	if err != nil || u.Kind != api.UpdateSnapshot || len(u.Rows) != 0 {
		t.Fatalf("first update = %+v, %v", u, err)
	}
	if _, err := c.Call(ctx, "messages:send", map[string]any{"room_id": "typed", "author": "a", "body": "hi"}, "", api.ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	u, err = st.Next(ctx)
	if err != nil || u.Kind != api.UpdateDelta || len(u.Changes) != 1 || u.Changes[0].Op != api.ChangeInsert || u.Changes[0].Row[2] != "hi" {
		t.Fatalf("delta = %+v, %v", u, err)
	}
}
