package main

import (
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lunora/lunora/api"
	"github.com/lunora/lunora/auth"
	"github.com/lunora/lunora/examples/chat"
	"github.com/lunora/lunora/gateway"
	"github.com/lunora/lunora/schema"
	"google.golang.org/grpc/codes"
)

// adminBackend is a gateway backend with one queue, "room-events", holding
// dead letters, and a shard with alarms; it serves nothing else.
type adminBackend struct {
	mu       sync.Mutex
	redrives [][]string
}

var errNotHere = api.New(codes.Unimplemented, "not in this test")

func (*adminBackend) Call(context.Context, string, string, map[string]any, api.ReadOptions) (*api.Result, error) {
	return nil, errNotHere
}
func (*adminBackend) Exec(context.Context, string, string, map[string]any, api.ReadOptions) (*api.Result, error) {
	return nil, errNotHere
}
func (*adminBackend) Status(context.Context) (*api.Status, error) { return nil, errNotHere }
func (*adminBackend) Subscribe(context.Context, string, string, map[string]any, uint64) (api.Stream, error) {
	return nil, errNotHere
}
func (*adminBackend) ReceiveMessages(context.Context, string, int, time.Duration, time.Duration) ([]api.QueueMessage, error) {
	return nil, errNotHere
}
func (*adminBackend) SettleMessages(context.Context, string, api.Settle, []string, time.Duration) (int, error) {
	return 0, errNotHere
}

func knownQueue(q string) error {
	if q != "room-events" {
		return api.Errorf(codes.NotFound, "unknown queue %q", q)
	}
	return nil
}

func (*adminBackend) DeadMessages(_ context.Context, queue string, limit int) ([]api.QueueMessage, error) {
	if err := knownQueue(queue); err != nil {
		return nil, err
	}
	return []api.QueueMessage{
		{ID: "msg_1", Queue: "room-events", ShardID: "room_id=r1", Body: `{"to": "ada"}`, Attempt: 5, Error: "smtp: connection refused", Died: time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)},
		{ID: "msg_2", Queue: "room-events", ShardID: "room_id=r2", Body: `{"to": "bob"}`, Attempt: 5, Error: "smtp:\nrefused", Died: time.Date(2026, 11, 28, 9, 1, 0, 0, time.UTC)},
	}[:min(limit, 2)], nil
}

func (b *adminBackend) Redrive(_ context.Context, queue string, ids []string) (int, error) {
	if err := knownQueue(queue); err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.redrives = append(b.redrives, ids)
	if len(ids) == 0 {
		return 2, nil
	}
	return len(ids), nil
}

func (*adminBackend) Alarms(_ context.Context, shardID string, limit int) ([]api.Alarm, error) {
	return []api.Alarm{
		{ID: "alm_a", ShardID: shardID, Function: "messages:send", Args: `{"room_id":"r1"}`, Due: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)},
		{ID: "alm_b", ShardID: shardID, Function: "messages:send", Args: `{}`, Due: time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC), Attempts: 5, Dead: true, Error: "assert failed", Died: time.Date(2026, 11, 28, 8, 5, 0, 0, time.UTC)},
	}, nil
}

func (*adminBackend) AlarmsDue(context.Context, int) ([]api.AlarmDue, error) {
	return []api.AlarmDue{{ShardID: "room_id=r1", Node: "n2", Due: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)}}, nil
}

// tokens authenticates fixed tokens.
type tokens map[string]*auth.Identity

func (t tokens) Authenticate(_ context.Context, cred string) (*auth.Identity, error) {
	if id, ok := t[cred]; ok {
		return id, nil
	}
	return nil, auth.ErrBadCredential
}

// TestQueuesAndAlarmsCommands: queues dead and redrive and alarms list
// call a gateway's admin API with the API key and print tables; refusals
// come back as the gateway's code and message.
func TestQueuesAndAlarmsCommands(t *testing.T) {
	app, err := schema.Parse(chat.SchemaName, chat.Schema)
	if err != nil {
		t.Fatal(err)
	}
	be := &adminBackend{}
	cfg := gateway.DefaultConfig()
	cfg.App, cfg.Backend = app, be
	cfg.Auth = tokens{
		"adminkey":   {Method: auth.MethodAPIKey, Role: auth.RoleAdmin, Subject: "ops"},
		"servicekey": {Method: auth.MethodAPIKey, Role: auth.RoleService, Subject: "worker"},
	}
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)

	run := func(cmd func([]string, io.Writer, io.Writer) error, args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := cmd(append(args[:1:1], append([]string{"-gateway", srv.URL}, args[1:]...)...), &out, &errOut)
		return out.String(), err
	}
	t.Setenv("LUNORA_API_KEY", "adminkey")

	out, err := run(runQueues, "dead", "room-events")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[0], "ERROR") ||
		!strings.Contains(lines[1], "msg_1") || !strings.Contains(lines[1], "room_id=r1") || !strings.Contains(lines[1], "smtp: connection refused") ||
		!strings.Contains(lines[1], `{"to":"ada"}`) || !strings.Contains(lines[2], "smtp: refused") {
		t.Fatalf("queues dead printed:\n%s", out)
	}
	// Flags may follow the queue's name.
	if out2, err := run(runQueues, "dead", "room-events", "-limit", "50"); err != nil || out2 != out {
		t.Fatalf("queues dead QUEUE -limit 50: %q, %v", out2, err)
	}

	if out, err = run(runQueues, "redrive", "room-events", "msg_1", "msg_2"); err != nil || !strings.Contains(out, "redrove 2 message(s) of queue room-events") {
		t.Fatalf("queues redrive two: %q, %v", out, err)
	}
	if out, err = run(runQueues, "redrive", "room-events"); err != nil || !strings.Contains(out, "redrove 2") || !strings.Contains(out, "every dead-letter message") {
		t.Fatalf("queues redrive all: %q, %v", out, err)
	}
	be.mu.Lock()
	redrives := be.redrives
	be.mu.Unlock()
	if len(redrives) != 2 || !slices.Equal(redrives[0], []string{"msg_1", "msg_2"}) || len(redrives[1]) != 0 {
		t.Fatalf("the gateway was asked to redrive %q", redrives)
	}

	out, err = run(runAlarms, "list")
	if err != nil || !strings.Contains(out, "SHARD") || !strings.Contains(out, "room_id=r1") || !strings.Contains(out, "n2") || !strings.Contains(out, "2026-11-28T10:00:00Z") {
		t.Fatalf("alarms list: %q, %v", out, err)
	}
	out, err = run(runAlarms, "list", "-shard", "room_id=r1")
	if err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], "alm_a") || !strings.Contains(lines[1], "pending") ||
		!strings.Contains(lines[2], "dead") || !strings.Contains(lines[2], "assert failed") {
		t.Fatalf("alarms list -shard printed:\n%s", out)
	}

	for _, tc := range []struct {
		key  string
		cmd  func([]string, io.Writer, io.Writer) error
		args []string
		want string
	}{
		{"adminkey", runQueues, []string{"dead", "nope"}, `NOT_FOUND: queue "nope" is not declared`},
		{"", runQueues, []string{"dead", "room-events"}, "UNAUTHENTICATED"},
		{"servicekey", runAlarms, []string{"list"}, "PERMISSION_DENIED"},
		{"adminkey", runAlarms, []string{"list", "-shard", "user_id=u1"}, "INVALID_ARGUMENT"},
		{"adminkey", runQueues, []string{"purge", "room-events"}, "unknown action"},
	} {
		t.Setenv("LUNORA_API_KEY", tc.key)
		if _, err := run(tc.cmd, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v with key %q: %v, want %q", tc.args, tc.key, err, tc.want)
		}
	}
}
