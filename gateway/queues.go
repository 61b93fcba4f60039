package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	"google.golang.org/grpc/codes"
)

// Queues over HTTP (ARCHITECTURE.md §8), role service or admin:
//
//	POST /v1/queues/{queue}/receive  {"max": 10, "visibility_ms": 30000, "wait_ms": 1000} → {"messages": [...]}
//	POST /v1/queues/{queue}/ack      {"receipts": [...]}                                  → {"settled": n}
//	POST /v1/queues/{queue}/nack     {"receipts": [...], "delay_ms": 5000}
//	POST /v1/queues/{queue}/extend   {"receipts": [...], "visibility_ms": 60000}
//
// and the admin API over dead letters and alarms, role admin:
//
//	GET  /v1/admin/queues/{queue}/dead?limit=N  → {"messages": [...]} (oldest death first)
//	POST /v1/admin/queues/{queue}/redrive       {"ids": [...]} (none or no body: all) → {"redriven": n}
//	GET  /v1/admin/alarms?shard=ID&limit=N      → {"alarms": [...]} (one shard's, pending then dead)
//	GET  /v1/admin/alarms?limit=N               → {"due": [...]} (every node's alarm index)
//
// A settle whose receipts span shards settles each shard's share; when
// some shares fail, the answer lists their receipts under "failed" (HTTP
// 200), and when all fail it is the first failure's error.

// Bounds of the queue API.
const (
	// DefaultPrefetch is a Consume stream's prefetch when it names none;
	// MaxPrefetch caps it.
	DefaultPrefetch = 32
	MaxPrefetch     = 1024
	// MaxReceive caps the messages one HTTP receive asks for.
	MaxReceive = 100
	// MaxReceiveWait caps an HTTP receive's long poll.
	MaxReceiveWait = 20 * time.Second
	// MaxVisibility caps a lease, an extension and a nack's delay.
	MaxVisibility = 12 * time.Hour
	// MaxReceipts caps the receipts of one settle request.
	MaxReceipts = 1000
	// defaultAdminLimit and maxAdminLimit bound the admin listings.
	defaultAdminLimit = 100
	maxAdminLimit     = 1000
	// maxQueueName bounds a queue name in a request.
	maxQueueName = 128
)

// Values of the function label for the queue API.
const (
	receiveLabel = "queue receive"
	settleLabel  = "queue settle"
	consumeLabel = "queue consume"
)

// authorizeQueue decides whether id may receive and settle messages:
// roles admin and service, as for admin SQL (a queue's messages are any
// shard's data).
func authorizeQueue(id *auth.Identity) error {
	if id == nil {
		return auth.ErrNoCredential
	}
	if id.Role == auth.RoleAdmin || id.Role == auth.RoleService {
		return nil
	}
	return api.Wrap(auth.ErrPermissionDenied, fmt.Sprintf("consuming a queue needs the admin or service role; this credential has role %q", id.Role))
}

// checkQueue refuses a name no queue can have (INVALID_ARGUMENT) and a
// queue lunora.yaml does not declare (NOT_FOUND).
func (g *Gateway) checkQueue(q string) error {
	if q == "" {
		return api.New(codes.InvalidArgument, "name a queue declared in lunora.yaml")
	}
	if len(q) > maxQueueName || strings.ContainsAny(q, "/ \t\r\n") {
		return api.Errorf(codes.InvalidArgument, "%q is not a queue name", clip(q))
	}
	if g.cfg.App.Queue(q) == nil {
		return api.Errorf(codes.NotFound, "queue %q is not declared in lunora.yaml", clip(q))
	}
	return nil
}

// millis converts a client's millisecond duration, at most limit.
func millis(field string, ms int64, limit time.Duration) (time.Duration, error) {
	if ms < 0 {
		return 0, api.Errorf(codes.InvalidArgument, "%s must not be negative, got %d", field, ms)
	}
	if ms > limit.Milliseconds() {
		return 0, api.Errorf(codes.InvalidArgument, "%s is %d, over the limit of %d (%s)", field, ms, limit.Milliseconds(), limit)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// receiptFailure is one receipt a settle could not settle.
type receiptFailure struct {
	Receipt string     `json:"receipt"`
	Code    codes.Code `json:"-"`
	CodeStr string     `json:"code"`
	Message string     `json:"message"`
}

// settled is the outcome of a settle request.
type settled struct {
	n      int
	failed []receiptFailure
	// err is the first share's error when every share failed.
	err error
	// done lists the receipts of the shares that were settled.
	done []string
}

// settleShares settles receipts that all parsed (byShard: shard → message
// IDs, with their receipts in the same order), each shard's share in
// parallel.
func (g *Gateway) settleShares(ctx context.Context, how api.Settle, byShard map[string][]string, receipts map[string][]string, delay time.Duration) settled {
	type share struct {
		n   int
		err error
	}
	results := make(map[string]share, len(byShard))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for shard, ids := range byShard {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := g.backend.SettleMessages(ctx, shard, how, ids, delay)
			if err != nil {
				err = g.backendError(ctx, err, how.String(), shard)
			}
			mu.Lock()
			results[shard] = share{n, err}
			mu.Unlock()
		}()
	}
	wg.Wait()
	var out settled
	failedShares := 0
	for shard, r := range results {
		if r.err == nil {
			out.n += r.n
			out.done = append(out.done, receipts[shard]...)
			continue
		}
		failedShares++
		if out.err == nil {
			out.err = r.err
		}
		ae := asAPIError(r.err)
		for _, rc := range receipts[shard] {
			out.failed = append(out.failed, receiptFailure{Receipt: rc, Code: ae.Code, CodeStr: codeName(r.err), Message: ae.Msg})
		}
	}
	if failedShares < len(results) {
		out.err = nil
	}
	return out
}

func asAPIError(err error) *api.Error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	return &api.Error{Code: api.CodeOf(err), Msg: err.Error(), Err: err}
}

// groupReceipts parses receipts into each shard's message IDs; the
// receipts that do not parse are answered apart.
func groupReceipts(receipts []string) (byShard, receiptsByShard map[string][]string, bad []receiptFailure) {
	byShard, receiptsByShard = map[string][]string{}, map[string][]string{}
	for _, rc := range receipts {
		shard, id, err := api.ParseReceipt(rc)
		if err != nil {
			ae := asAPIError(err)
			bad = append(bad, receiptFailure{Receipt: rc, Code: ae.Code, CodeStr: codeName(err), Message: ae.Msg})
			continue
		}
		byShard[shard] = append(byShard[shard], id)
		receiptsByShard[shard] = append(receiptsByShard[shard], rc)
	}
	return byShard, receiptsByShard, bad
}

// checkSettle refuses a settle request that cannot be served.
func checkSettle(how api.Settle, n int, delay time.Duration) error {
	switch {
	case how != api.Ack && how != api.Nack && how != api.Extend:
		return api.New(codes.InvalidArgument, "settle with ack, nack or extend")
	case n == 0:
		return api.Errorf(codes.InvalidArgument, "%s needs receipts: the receipt fields of received messages", how)
	case n > MaxReceipts:
		return api.Errorf(codes.InvalidArgument, "%d receipts, over the limit of %d per request", n, MaxReceipts)
	case delay < 0 || delay > MaxVisibility:
		return api.Errorf(codes.InvalidArgument, "the delay must be between 0 and %s, got %s", MaxVisibility, delay)
	case how == api.Extend && delay <= 0:
		return api.New(codes.InvalidArgument, "extend needs visibility_ms: the new lease from now, in milliseconds")
	}
	return nil
}

// queueMessageJSON is a message in the HTTP API. Body is the message's
// JSON as is (a string if it is not valid JSON).
type queueMessageJSON struct {
	ID           string          `json:"id"`
	Queue        string          `json:"queue"`
	ShardID      string          `json:"shard_id"`
	Body         json.RawMessage `json:"body"`
	Attempt      int             `json:"attempt"`
	Enqueued     string          `json:"enqueued"`
	Receipt      string          `json:"receipt,omitempty"`
	VisibleUntil string          `json:"visible_until,omitempty"`
	Error        string          `json:"error,omitempty"`
	Died         string          `json:"died,omitempty"`
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// rawJSON is s when it is JSON, else s as a JSON string.
func rawJSON(s string) json.RawMessage {
	if s != "" && json.Valid([]byte(s)) {
		return json.RawMessage(s)
	}
	b, _ := json.Marshal(s)
	return b
}

func toQueueMessageJSON(ms []api.QueueMessage) []queueMessageJSON {
	out := make([]queueMessageJSON, len(ms))
	for i, m := range ms {
		out[i] = queueMessageJSON{ID: m.ID, Queue: m.Queue, ShardID: m.ShardID, Body: rawJSON(m.Body), Attempt: m.Attempt,
			Enqueued: rfc3339(m.Enqueued), Receipt: m.Receipt, VisibleUntil: rfc3339(m.VisibleUntil), Error: m.Error, Died: rfc3339(m.Died)}
	}
	return out
}

// serveQueues serves /v1/queues/{queue}/{receive,ack,nack,extend}.
func (g *Gateway) serveQueues(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	queue, verb, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v1/queues/"), "/")
	label := settleLabel
	if verb == "receive" {
		label = receiveLabel
	}
	err := func() error {
		if !ok || strings.Contains(verb, "/") {
			return api.Errorf(codes.NotFound, "no endpoint %s: use /v1/queues/{queue}/receive, ack, nack or extend", clip(r.URL.Path))
		}
		switch verb {
		case "receive", "ack", "nack", "extend":
		default:
			return api.Errorf(codes.NotFound, "no endpoint %s: use /v1/queues/{queue}/receive, ack, nack or extend", clip(r.URL.Path))
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			return &api.Error{Code: codes.Unimplemented, Msg: fmt.Sprintf("method %s is not allowed on %s: use POST", clip(r.Method), r.URL.Path), Err: ErrMethodNotAllowed}
		}
		id, err := g.caller(r.Context())
		if err == nil {
			err = authorizeQueue(id)
		}
		if err != nil {
			return err
		}
		return g.checkQueue(queue)
	}()
	if err != nil {
		g.metrics.observe(protocolHTTP, label, err, time.Since(start))
		g.writeAuthError(w, r, err)
		return
	}
	if verb == "receive" {
		g.serveReceive(w, r, queue, start)
		return
	}
	g.serveSettle(w, r, verb, start)
}

func (g *Gateway) serveReceive(w http.ResponseWriter, r *http.Request, queue string, start time.Time) {
	var req struct {
		Max          int   `json:"max"`
		VisibilityMS int64 `json:"visibility_ms"`
		WaitMS       int64 `json:"wait_ms"`
	}
	msgs, err := func() ([]api.QueueMessage, error) {
		if err := g.decodeBody(w, r, &req); err != nil {
			return nil, err
		}
		if req.Max == 0 {
			req.Max = 1
		}
		if req.Max < 0 || req.Max > MaxReceive {
			return nil, api.Errorf(codes.InvalidArgument, "max must be between 1 and %d, got %d", MaxReceive, req.Max)
		}
		vis, err := millis("visibility_ms", req.VisibilityMS, MaxVisibility)
		if err != nil {
			return nil, err
		}
		wait, err := millis("wait_ms", req.WaitMS, MaxReceiveWait)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(r.Context(), wait+g.cfg.RequestTimeout)
		defer cancel()
		msgs, err := g.backend.ReceiveMessages(ctx, queue, req.Max, vis, wait)
		if err != nil {
			return nil, g.backendError(ctx, err, "receive from queue "+queue, "")
		}
		return msgs, nil
	}()
	g.metrics.observe(protocolHTTP, receiveLabel, err, time.Since(start))
	if err != nil {
		g.writeError(w, r, err)
		return
	}
	g.writeJSON(w, r, http.StatusOK, struct {
		Messages []queueMessageJSON `json:"messages"`
	}{toQueueMessageJSON(msgs)})
}

func (g *Gateway) serveSettle(w http.ResponseWriter, r *http.Request, verb string, start time.Time) {
	var req struct {
		Receipts     []string `json:"receipts"`
		DelayMS      int64    `json:"delay_ms"`
		VisibilityMS int64    `json:"visibility_ms"`
	}
	how := map[string]api.Settle{"ack": api.Ack, "nack": api.Nack, "extend": api.Extend}[verb]
	out, err := func() (settled, error) {
		if err := g.decodeBody(w, r, &req); err != nil {
			return settled{}, err
		}
		var delay time.Duration
		var err error
		switch {
		case how == api.Ack && (req.DelayMS != 0 || req.VisibilityMS != 0):
			return settled{}, api.New(codes.InvalidArgument, "ack takes receipts only")
		case how == api.Nack && req.VisibilityMS != 0:
			return settled{}, api.New(codes.InvalidArgument, "nack takes delay_ms (the wait before redelivery), not visibility_ms")
		case how == api.Extend && req.DelayMS != 0:
			return settled{}, api.New(codes.InvalidArgument, "extend takes visibility_ms (the new lease from now), not delay_ms")
		case how == api.Nack:
			delay, err = millis("delay_ms", req.DelayMS, MaxVisibility)
		case how == api.Extend:
			delay, err = millis("visibility_ms", req.VisibilityMS, MaxVisibility)
		}
		if err != nil {
			return settled{}, err
		}
		if err := checkSettle(how, len(req.Receipts), delay); err != nil {
			return settled{}, err
		}
		byShard, receipts, bad := groupReceipts(req.Receipts)
		if len(bad) > 0 {
			return settled{}, api.Errorf(codes.InvalidArgument, "receipts[%d]: %s", indexOf(req.Receipts, bad[0].Receipt), bad[0].Message)
		}
		ctx, cancel := context.WithTimeout(r.Context(), g.cfg.RequestTimeout)
		defer cancel()
		out := g.settleShares(ctx, how, byShard, receipts, delay)
		return out, out.err
	}()
	g.metrics.observe(protocolHTTP, settleLabel, err, time.Since(start))
	if err != nil {
		g.writeError(w, r, err)
		return
	}
	g.writeJSON(w, r, http.StatusOK, struct {
		Settled int              `json:"settled"`
		Failed  []receiptFailure `json:"failed,omitempty"`
	}{out.n, out.failed})
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// adminLimit reads ?limit= (default defaultAdminLimit).
func adminLimit(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return defaultAdminLimit, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxAdminLimit {
		return 0, api.Errorf(codes.InvalidArgument, "limit must be a number between 1 and %d, got %q", maxAdminLimit, clip(v))
	}
	return n, nil
}

// serveAdminQueues serves /v1/admin/queues/{queue}/{dead,redrive}.
func (g *Gateway) serveAdminQueues(w http.ResponseWriter, r *http.Request) {
	queue, verb, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v1/admin/queues/"), "/")
	id, err := g.caller(r.Context())
	if err == nil {
		err = auth.AuthorizeAdmin(id)
	}
	if err != nil {
		g.writeAuthError(w, r, err)
		return
	}
	want := map[string]string{"dead": http.MethodGet, "redrive": http.MethodPost}[verb]
	switch {
	case !ok || want == "":
		g.writeError(w, r, api.Errorf(codes.NotFound, "no endpoint %s: use GET /v1/admin/queues/{queue}/dead or POST /v1/admin/queues/{queue}/redrive", clip(r.URL.Path)))
		return
	case r.Method != want:
		w.Header().Set("Allow", want)
		g.writeError(w, r, &api.Error{Code: codes.Unimplemented, Msg: fmt.Sprintf("method %s is not allowed on %s: use %s", clip(r.Method), r.URL.Path, want), Err: ErrMethodNotAllowed})
		return
	}
	if err := g.checkQueue(queue); err != nil {
		g.writeError(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.RequestTimeout)
	defer cancel()
	if verb == "dead" {
		limit, err := adminLimit(r)
		if err != nil {
			g.writeError(w, r, err)
			return
		}
		msgs, err := g.backend.DeadMessages(ctx, queue, limit)
		if err != nil {
			g.writeError(w, r, g.backendError(ctx, err, "listing the dead letters of queue "+queue, ""))
			return
		}
		g.writeJSON(w, r, http.StatusOK, struct {
			Messages []queueMessageJSON `json:"messages"`
		}{toQueueMessageJSON(msgs)})
		return
	}
	var req struct {
		IDs []string `json:"ids"`
	}
	if r.ContentLength != 0 {
		if err := g.decodeBody(w, r, &req); err != nil {
			g.writeError(w, r, err)
			return
		}
	}
	if len(req.IDs) > MaxReceipts {
		g.writeError(w, r, api.Errorf(codes.InvalidArgument, "%d ids, over the limit of %d per request (none redrives them all)", len(req.IDs), MaxReceipts))
		return
	}
	for i, mid := range req.IDs {
		if !strings.HasPrefix(mid, "msg_") || len(mid) > 64 {
			g.writeError(w, r, api.Errorf(codes.InvalidArgument, "ids[%d] = %q is not a message ID (msg_…)", i, clip(mid)))
			return
		}
	}
	n, err := g.backend.Redrive(ctx, queue, req.IDs)
	if err != nil {
		g.writeError(w, r, g.backendError(ctx, err, "redriving queue "+queue, ""))
		return
	}
	g.log.InfoContext(ctx, "dead letters redriven", "queue", queue, "asked", len(req.IDs), "redriven", n, "by", id.Subject)
	g.writeJSON(w, r, http.StatusOK, struct {
		Redriven int `json:"redriven"`
	}{n})
}

// alarmJSON is an alarm in the admin API.
type alarmJSON struct {
	ID       string          `json:"id"`
	ShardID  string          `json:"shard_id"`
	Function string          `json:"function"`
	Args     json.RawMessage `json:"args"`
	Due      string          `json:"due"`
	Attempts int             `json:"attempts"`
	Created  string          `json:"created,omitempty"`
	Dead     bool            `json:"dead"`
	Error    string          `json:"error,omitempty"`
	Died     string          `json:"died,omitempty"`
}

type alarmDueJSON struct {
	ShardID string `json:"shard_id"`
	Node    string `json:"node"`
	Due     string `json:"due"`
}

// serveAdminAlarms serves GET /v1/admin/alarms.
func (g *Gateway) serveAdminAlarms(w http.ResponseWriter, r *http.Request) {
	id, err := g.caller(r.Context())
	if err == nil {
		err = auth.AuthorizeAdmin(id)
	}
	if err != nil {
		g.writeAuthError(w, r, err)
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		g.writeError(w, r, &api.Error{Code: codes.Unimplemented, Msg: fmt.Sprintf("method %s is not allowed on %s: use GET", clip(r.Method), r.URL.Path), Err: ErrMethodNotAllowed})
		return
	}
	limit, err := adminLimit(r)
	if err != nil {
		g.writeError(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.RequestTimeout)
	defer cancel()
	shard := r.URL.Query().Get("shard")
	if shard == "" {
		due, err := g.backend.AlarmsDue(ctx, limit)
		if err != nil {
			g.writeError(w, r, g.backendError(ctx, err, "listing the alarm index", ""))
			return
		}
		out := make([]alarmDueJSON, len(due))
		for i, d := range due {
			out[i] = alarmDueJSON{ShardID: d.ShardID, Node: d.Node, Due: rfc3339(d.Due)}
		}
		g.writeJSON(w, r, http.StatusOK, struct {
			Due []alarmDueJSON `json:"due"`
		}{out})
		return
	}
	if _, _, err := g.app.ParseShardID(shard); err != nil {
		g.writeError(w, r, err)
		return
	}
	alarms, err := g.backend.Alarms(ctx, shard, limit)
	if err != nil {
		g.writeError(w, r, g.backendError(ctx, err, "listing alarms", shard))
		return
	}
	out := make([]alarmJSON, len(alarms))
	for i, a := range alarms {
		out[i] = alarmJSON{ID: a.ID, ShardID: a.ShardID, Function: a.Function, Args: rawJSON(a.Args), Due: rfc3339(a.Due),
			Attempts: a.Attempts, Created: rfc3339(a.Created), Dead: a.Dead, Error: a.Error, Died: rfc3339(a.Died)}
	}
	g.writeJSON(w, r, http.StatusOK, struct {
		Alarms []alarmJSON `json:"alarms"`
	}{out})
}
