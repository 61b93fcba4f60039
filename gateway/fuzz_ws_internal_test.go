package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/coder/websocket"
	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc/codes"
)

// snapshotBackend answers every subscription with one snapshot naming its
// shard, then waits for the end; calls are refused (the frame handler
// makes none).
type snapshotBackend struct{ noQueues }

func (snapshotBackend) Call(context.Context, string, string, map[string]any, api.ReadOptions) (*api.Result, error) {
	return nil, api.New(codes.Unimplemented, "not in this test")
}

func (snapshotBackend) Exec(context.Context, string, string, map[string]any, api.ReadOptions) (*api.Result, error) {
	return nil, api.New(codes.Unimplemented, "not in this test")
}

func (snapshotBackend) Status(context.Context) (*api.Status, error) {
	return nil, api.New(codes.Unimplemented, "not in this test")
}

func (snapshotBackend) Subscribe(ctx context.Context, shardID, function string, args map[string]any, sinceSeq uint64) (api.Stream, error) {
	return &snapshotStream{shardID: shardID}, nil
}

type snapshotStream struct {
	shardID string
	sent    bool
}

func (s *snapshotStream) Next(ctx context.Context) (*api.Update, error) {
	if !s.sent {
		s.sent = true
		return &api.Update{Kind: api.UpdateSnapshot, Seq: 1, ShardID: s.shardID, Columns: []string{"id"}, Rows: [][]any{{int64(1)}}, Keyed: true}, nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (s *snapshotStream) Close() {}

// FuzzWebSocketFrames feeds the frames of one WebSocket (the input split
// at newlines) to the gateway's frame handler and checks: no panic; a
// frame that does not decode as a frame object (not JSON, not an object,
// a field of the wrong type) closes the socket with 1003 and any other
// never does; every error frame carries a code a caller can act on
// (never OK, INTERNAL or UNKNOWN) and a message; every data frame answers
// a subscribe the client sent, on a valid shard ID of the app; every frame
// the gateway sends encodes as JSON; the subscriptions' goroutines end
// with the connection.
//
//	go test -run '^$' -fuzz '^FuzzWebSocketFrames$' -fuzztime 60s ./gateway/
func FuzzWebSocketFrames(f *testing.F) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		f.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.App, cfg.Backend, cfg.Logger, cfg.AuthOff = app, snapshotBackend{}, slog.New(slog.DiscardHandler), true
	cfg.MaxSubscriptionsPerConn = 4
	g, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		`{"type":"subscribe","id":"s1","function":"messages:list","args":{"room_id":"r1"}}`,
		`{"type":"subscribe","id":"s1","function":"messages:list","args":{"room_id":"r1"}}` + "\n" + `{"type":"unsubscribe","id":"s1"}` + "\n" + `{"type":"unsubscribe","id":"s1"}`,
		`{"type":"subscribe","id":"s1","function":"messages:list","shard_key":"r1","since_seq":7}` + "\n" + `{"type":"subscribe","id":"s1","function":"messages:list","shard_key":"r1"}`,
		`{"type":"subscribe","id":"a","function":"messages:send","args":{"room_id":"r1"}}`,
		`{"type":"subscribe","id":"b","function":"users:get","args":{"user_id":"u"}}`,
		`{"type":"subscribe","id":"c","function":"settings:get","args":{"key":"k"}}`,
		`{"type":"subscribe","function":"messages:list"}`,
		`{"type":"subscribe","id":"d","function":"nope"}`,
		`{"type":"subscribe","id":"e","function":"messages:list","args":[1]}`,
		`{"type":"ping"}` + "\n" + `{"type":"pong"}` + "\n" + `null`,
		`{"type":"subscribe","id":"1","function":"messages:list","shard_key":"a"}` + "\n" + `{"type":"subscribe","id":"2","function":"messages:list","shard_key":"b"}` + "\n" + `{"type":"subscribe","id":"3","function":"messages:list","shard_key":"c"}` + "\n" + `{"type":"subscribe","id":"4","function":"messages:list","shard_key":"d"}` + "\n" + `{"type":"subscribe","id":"5","function":"messages:list","shard_key":"e"}`,
		`[1,2]`,
		`"text"`,
		`{"type":1}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		ctx, cancel := context.WithCancel(context.Background())
		ws := &wsConn{g: g, out: make(chan wsOut, 16), subs: map[string]*wsSub{}, client: "ip:192.0.2.1"}
		var sent []wsOut
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for {
				select {
				case fr := <-ws.out:
					sent = append(sent, fr)
				case <-ctx.Done():
					return
				}
			}
		}()
		subscribed := map[string]bool{}
		for _, data := range bytes.Split(input, []byte("\n")) {
			var in wsIn
			decodes := json.Unmarshal(data, &in) == nil
			var probe any
			if json.Unmarshal(data, &probe) == nil {
				if _, obj := probe.(map[string]any); !obj && probe != nil && decodes {
					t.Fatalf("frame %q is JSON but not an object, and decodes as a frame", data)
				}
			}
			if decodes && in.Type == "subscribe" {
				subscribed[in.ID] = true
			}
			status, _, closeConn := ws.handleFrame(ctx, data)
			if closeConn == decodes {
				t.Fatalf("frame %q: close %v (status %d), decodes as a frame: %v", data, closeConn, status, decodes)
			}
			if closeConn {
				if status != websocket.StatusUnsupportedData {
					t.Fatalf("frame %q: closed with %d", data, status)
				}
				break
			}
		}
		// End the connection as the read loop does: every subscription's
		// goroutine must end with it.
		cancel()
		ws.wg.Wait()
		<-drained
		for {
			select {
			case fr := <-ws.out:
				sent = append(sent, fr)
				continue
			default:
			}
			break
		}
		for _, fr := range sent {
			if _, err := json.Marshal(fr); err != nil {
				t.Fatalf("input %q: frame %+v does not encode: %v", input, fr, err)
			}
			switch fr.Type {
			case "error":
				if fr.Code == "" || fr.Code == "OK" || fr.Code == "INTERNAL" || fr.Code == "UNKNOWN" || fr.Message == "" {
					t.Fatalf("input %q: error frame %+v", input, fr)
				}
			case "data":
				if !subscribed[fr.ID] {
					t.Fatalf("input %q: data for %q, never subscribed", input, fr.ID)
				}
				if _, _, err := app.ParseShardID(fr.ShardID); err != nil {
					t.Fatalf("input %q: data on shard %q: %v", input, fr.ShardID, err)
				}
			case "settled", "pong":
			default:
				t.Fatalf("input %q: frame type %q", input, fr.Type)
			}
		}
	})
}
