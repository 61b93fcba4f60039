package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/schema"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/codes"
)

// The WebSocket protocol of GET /v1/subscribe. Every frame is a JSON object
// with a "type".
//
// Client to server:
//
//	{"type":"subscribe","id":"s1","function":"messages:list","args":{...},"shard_key":"","since_seq":0}
//	{"type":"unsubscribe","id":"s1"}
//	{"type":"ping"}
//
// Server to client:
//
//	{"type":"data","id":"s1","seq":7,"shard_id":"room_id=r1","columns":[...],"rows":[[...]],"keyed":true,"reset":false}
//	{"type":"delta","id":"s1","seq":8,"changes":[{"op":"insert","key":[...],"row":[...]}]}
//	{"type":"settled","id":"s1","seq":7}   after the first data (or resumed deltas)
//	{"type":"error","id":"s1","code":"INVALID_ARGUMENT","message":"...","retry_after_ms":N}
//	{"type":"pong"}
//
// A bad subscribe gets an error frame for its id and the socket stays open;
// the socket closes only for a frame over the size limit (1009), one that
// is not JSON (1003), or when the credential it was opened with expires:
// an error frame without an id (code UNAUTHENTICATED) and then close 1008.
//
// The credential comes with the upgrade request: an "Authorization: Bearer"
// header, or, from a browser (which cannot set one), the query parameter
// ?access_token=<credential>. Without one the upgrade is answered 401.
type wsIn struct {
	Type     string          `json:"type"`
	ID       string          `json:"id"`
	Function string          `json:"function"`
	Args     json.RawMessage `json:"args"`
	ShardKey string          `json:"shard_key"`
	SinceSeq uint64          `json:"since_seq"`
}

type wsOut struct {
	Type    string     `json:"type"`
	ID      string     `json:"id,omitempty"`
	Seq     uint64     `json:"seq,omitempty"`
	ShardID string     `json:"shard_id,omitempty"`
	Columns []string   `json:"columns,omitempty"`
	Rows    [][]any    `json:"rows,omitempty"`
	Changes []wsChange `json:"changes,omitempty"`
	Keyed   *bool      `json:"keyed,omitempty"`
	Reset   bool       `json:"reset,omitempty"`
	Code    string     `json:"code,omitempty"`
	Message string     `json:"message,omitempty"`
	// RetryAfterMS is an error's retry hint (a rate limit's time to the
	// next token), in milliseconds.
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
}

type wsChange struct {
	Op  string `json:"op"`
	Key []any  `json:"key"`
	Row []any  `json:"row,omitempty"`
}

// wsConn is one WebSocket: a reader loop (this goroutine), a writer
// goroutine draining out, and a goroutine per subscription.
type wsConn struct {
	g    *Gateway
	c    *websocket.Conn
	out  chan wsOut
	mu   sync.Mutex
	subs map[string]*wsSub
	wg   sync.WaitGroup
	// client is the key of the per-client limits (ClientKey): each
	// subscribe frame takes a token of its rate limit.
	client string
}

func (g *Gateway) serveSubscribe(w http.ResponseWriter, r *http.Request) {
	if _, ok := g.originAllowed(r); !ok {
		// Handler's edge refuses it first; kept here so that the upgrade
		// never depends on being mounted behind it.
		g.writeError(w, r, api.Wrap(ErrOriginNotAllowed, fmt.Sprintf("%q is not in the CORS allow-list", clip(r.Header.Get("Origin")))))
		return
	}
	// The origin was checked above against the same allow-list the rest
	// of the API uses (exact scheme://host:port); the library's own check
	// matches hosts only.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return // Accept has answered the client
	}
	c.SetReadLimit(g.cfg.MaxFrameBytes)
	ctx, cancel := context.WithCancel(r.Context())
	ws := &wsConn{g: g, c: c, out: make(chan wsOut, 64), subs: map[string]*wsSub{}, client: ClientKey(r.Context(), r.RemoteAddr)}
	writerDone := make(chan struct{})
	go func() { defer close(writerDone); ws.writeLoop(ctx) }()
	if id := auth.FromContext(r.Context()); id != nil && !id.Expires.IsZero() {
		// The connection never outlives its credential (auth.go).
		defer time.AfterFunc(time.Until(id.Expires), func() { ws.expire(id.Expires) }).Stop()
	}
	status, reason := ws.readLoop(ctx)
	cancel()
	ws.wg.Wait()
	<-writerDone
	c.Close(status, reason)
}

func (ws *wsConn) readLoop(ctx context.Context) (websocket.StatusCode, string) {
	for {
		_, data, err := ws.c.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) != -1 || errors.Is(err, context.Canceled) {
				return websocket.StatusNormalClosure, ""
			}
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Reason
			}
			// coder/websocket reports an oversized frame as a read error
			// after failing the connection with 1009.
			return websocket.StatusMessageTooBig, fmt.Sprintf("frame over %d bytes", ws.g.cfg.MaxFrameBytes)
		}
		if status, reason, closeConn := ws.handleFrame(ctx, data); closeConn {
			return status, reason
		}
	}
}

// handleFrame acts on one frame from the client. closeConn is true (with
// the close status and reason) when the frame ends the connection: it is
// not a JSON object.
func (ws *wsConn) handleFrame(ctx context.Context, data []byte) (status websocket.StatusCode, reason string, closeConn bool) {
	var in wsIn
	if err := json.Unmarshal(data, &in); err != nil {
		return websocket.StatusUnsupportedData, "frames must be JSON objects", true
	}
	switch in.Type {
	case "subscribe":
		ws.subscribe(ctx, in)
	case "unsubscribe":
		ws.mu.Lock()
		sub, ok := ws.subs[in.ID]
		delete(ws.subs, in.ID)
		ws.mu.Unlock()
		if ok {
			sub.cancel()
		} else {
			ws.send(ctx, errFrame(in.ID, api.Errorf(codes.NotFound, "no subscription %q on this connection", clip(in.ID))))
		}
	case "ping":
		ws.send(ctx, wsOut{Type: "pong"})
	default:
		ws.send(ctx, errFrame(in.ID, api.Errorf(codes.InvalidArgument, "unknown frame type %q: use subscribe, unsubscribe or ping", clip(in.Type))))
	}
	return 0, "", false
}

func (ws *wsConn) subscribe(ctx context.Context, in wsIn) {
	if in.ID == "" {
		ws.send(ctx, errFrame("", api.New(codes.InvalidArgument, "subscribe needs an id the later frames will carry")))
		return
	}
	ws.mu.Lock()
	_, dup := ws.subs[in.ID]
	n := len(ws.subs)
	ws.mu.Unlock()
	switch {
	case dup:
		ws.send(ctx, errFrame(in.ID, api.Errorf(codes.AlreadyExists, "subscription %q already exists on this connection", clip(in.ID))))
		return
	case n >= ws.g.cfg.MaxSubscriptionsPerConn:
		ws.send(ctx, errFrame(in.ID, api.Errorf(codes.ResourceExhausted, "this connection already holds %d subscriptions, the limit", n)))
		return
	}
	if err := ws.g.limits.allow(ws.client); err != nil {
		ws.send(ctx, errFrame(in.ID, err))
		return
	}
	args, err := schema.DecodeJSONArgs(in.Args)
	if err != nil {
		ws.send(ctx, errFrame(in.ID, err))
		return
	}
	sctx, cancel := context.WithCancel(ctx)
	st, err := ws.g.subscribe(sctx, protocolWS, in.Function, args, in.ShardKey, in.SinceSeq)
	if err != nil {
		cancel()
		ws.send(ctx, errFrame(in.ID, err))
		return
	}
	sub := &wsSub{cancel: cancel}
	ws.mu.Lock()
	ws.subs[in.ID] = sub
	ws.mu.Unlock()
	ws.wg.Add(1)
	go func() {
		defer ws.wg.Done()
		defer cancel()
		defer st.Close()
		ws.relay(sctx, in.ID, st)
		// The id may name a newer subscription by now (unsubscribed, then
		// subscribed again): only this one's entry is removed.
		ws.mu.Lock()
		if ws.subs[in.ID] == sub {
			delete(ws.subs, in.ID)
		}
		ws.mu.Unlock()
	}()
}

// wsSub is one live subscription of a connection.
type wsSub struct{ cancel context.CancelFunc }

// relay sends a subscription's updates until it ends.
func (ws *wsConn) relay(ctx context.Context, id string, st api.Stream) {
	first := true
	for {
		u, err := st.Next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				ws.send(ctx, errFrame(id, err))
			}
			return
		}
		if !ws.send(ctx, updateFrame(id, u)) {
			return
		}
		if first {
			first = false
			ws.send(ctx, wsOut{Type: "settled", ID: id, Seq: u.Seq})
		}
	}
}

// send queues a frame for the writer; false when the connection is gone.
func (ws *wsConn) send(ctx context.Context, f wsOut) bool {
	select {
	case ws.out <- f:
		return true
	case <-ctx.Done():
		return false
	}
}

func (ws *wsConn) writeLoop(ctx context.Context) {
	ping := time.NewTicker(ws.g.cfg.PingInterval)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-ws.out:
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := wsjson.Write(wctx, ws.c, f)
			cancel()
			if err != nil {
				ws.c.CloseNow()
				return
			}
		case <-ping.C:
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := ws.c.Ping(pctx)
			cancel()
			if err != nil {
				ws.c.CloseNow()
				return
			}
		}
	}
}

func updateFrame(id string, u *api.Update) wsOut {
	keyed := u.Keyed
	if u.Kind == api.UpdateSnapshot {
		rows := make([][]any, len(u.Rows))
		for i, r := range u.Rows {
			rows[i] = jsonRow(r)
		}
		return wsOut{Type: "data", ID: id, Seq: u.Seq, ShardID: u.ShardID, Columns: u.Columns, Rows: rows, Keyed: &keyed, Reset: u.Reset}
	}
	changes := make([]wsChange, len(u.Changes))
	for i, c := range u.Changes {
		op := "insert"
		switch c.Op {
		case api.ChangeUpdate:
			op = "update"
		case api.ChangeDelete:
			op = "delete"
		}
		changes[i] = wsChange{Op: op, Key: jsonRow(c.Key), Row: jsonRow(c.Row)}
	}
	return wsOut{Type: "delta", ID: id, Seq: u.Seq, Columns: u.Columns, Changes: changes}
}

func jsonRow(r []any) []any {
	if r == nil {
		return nil
	}
	out := make([]any, len(r))
	for i, v := range r {
		out[i] = jsonValue(v)
	}
	return out
}

func errFrame(id string, err error) wsOut {
	f := wsOut{Type: "error", ID: id, Code: code.Code(api.CodeOf(err)).String(), Message: err.Error()}
	var ae *api.Error
	if errors.As(err, &ae) && ae.RetryAfter > 0 {
		f.RetryAfterMS = max(1, ae.RetryAfter.Milliseconds())
	}
	return f
}

// expire ends the connection because its credential expired at.
func (ws *wsConn) expire(at time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = wsjson.Write(ctx, ws.c, errFrame("", expiredError(at)))
	_ = ws.c.Close(websocket.StatusPolicyViolation, "credential expired")
}
