package gateway

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/schema"
)

// gatedBackend's first stream, once its subscription is canceled, ends
// only when release is closed; closed says when it has been closed.
type gatedBackend struct {
	snapshotBackend
	n       int
	release chan struct{}
	closed  chan struct{}
}

func (b *gatedBackend) Subscribe(ctx context.Context, shardID, function string, args map[string]any, sinceSeq uint64) (api.Stream, error) {
	b.n++
	if b.n == 1 {
		return &gatedStream{snapshotStream: snapshotStream{shardID: shardID}, b: b}, nil
	}
	return &snapshotStream{shardID: shardID}, nil
}

type gatedStream struct {
	snapshotStream
	b *gatedBackend
}

func (s *gatedStream) Next(ctx context.Context) (*api.Update, error) {
	u, err := s.snapshotStream.Next(ctx)
	if err != nil {
		<-s.b.release
	}
	return u, err
}

func (s *gatedStream) Close() { close(s.b.closed) }

// TestResubscribeSameID: a subscription unsubscribed and made again under
// the same id is the one the id names afterwards — the first one's ending
// does not drop it, so it can still be unsubscribed (it was lost, and the
// id could be subscribed twice).
func TestResubscribeSameID(t *testing.T) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	be := &gatedBackend{release: make(chan struct{}), closed: make(chan struct{})}
	cfg := DefaultConfig()
	cfg.App, cfg.Backend, cfg.Logger, cfg.AuthOff = app, be, slog.New(slog.DiscardHandler), true
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ws := &wsConn{g: g, out: make(chan wsOut, 64), subs: map[string]*wsSub{}, client: "ip:192.0.2.1"}
	frame := func(s string) {
		t.Helper()
		if _, _, closeConn := ws.handleFrame(ctx, []byte(s)); closeConn {
			t.Fatalf("%s closed the connection", s)
		}
	}
	next := func() wsOut {
		t.Helper()
		select {
		case f := <-ws.out:
			return f
		case <-time.After(20 * time.Second):
			t.Fatal("no frame")
		}
		return wsOut{}
	}
	sub := `{"type":"subscribe","id":"s1","function":"messages:list","args":{"room_id":"r1"}}`
	frame(sub)
	if f := next(); f.Type != "data" {
		t.Fatalf("first subscription: %+v", f)
	}
	next() // settled
	frame(`{"type":"unsubscribe","id":"s1"}`)
	frame(sub) // the first one's goroutine is still held in its Next
	if f := next(); f.Type != "data" {
		t.Fatalf("second subscription: %+v", f)
	}
	next() // settled
	close(be.release)
	<-be.closed // the first subscription's goroutine has ended
	frame(`{"type":"unsubscribe","id":"s1"}`)
	frame(`{"type":"ping"}`)
	if f := next(); f.Type != "pong" {
		t.Fatalf("unsubscribing the second subscription answered %+v; want nothing before the pong", f)
	}
	cancel()
	ws.wg.Wait()
}
