package sqlitex

import (
	"errors"

	"github.com/lunora/lunora/api"
	"google.golang.org/grpc/codes"
)

// Scheduler is what lunora_schedule and lunora_cancel call. The shard's
// writer sets Conn.Sched while a mutation runs; it is nil everywhere else
// (queries, subscriptions, schema checks), where both functions refuse.
// Its methods run inside the statement that called them, on the same
// connection and transaction: the rows they write commit or roll back
// with the mutation.
type Scheduler interface {
	// Schedule records an alarm that runs function with argsJSON (a JSON
	// object, or "" for none) at when: a delay in milliseconds if below
	// 10^12, else an absolute Unix time in milliseconds. It returns the
	// alarm's ID.
	Schedule(when int64, function, argsJSON string) (string, error)
	// Cancel deletes a pending alarm and reports whether one was deleted.
	Cancel(id string) (bool, error)
	// Enqueue writes a message with bodyJSON (JSON text) to the shard's
	// outbox for queue and returns the message's ID.
	Enqueue(queue, bodyJSON string) (string, error)
}

// ErrNotMutation: lunora_schedule or lunora_cancel outside a mutation.
var ErrNotMutation = api.New(codes.FailedPrecondition, "lunora_schedule, lunora_cancel and lunora_enqueue are only available in mutations")

// registerAlarms adds lunora_schedule(when, function[, args_json]),
// lunora_cancel(id), lunora_enqueue(queue, body_json) and lunora_attempt().
func (c *Conn) registerAlarms() error {
	schedule := func(when int64, function string, args any) (string, error) {
		if c.Sched == nil {
			c.fnErr = api.Wrap(ErrNotMutation, "lunora_schedule is not available here: alarms are scheduled by mutations on shards, not by queries or global functions")
			return "", c.fnErr
		}
		var a string
		switch x := args.(type) {
		case nil:
		case string:
			a = x
		case []byte:
			a = string(x)
		default:
			c.fnErr = api.Errorf(codes.InvalidArgument, "lunora_schedule: args must be a JSON object as text, e.g. json_object('room', :room)")
			return "", c.fnErr
		}
		id, err := c.Sched.Schedule(when, function, a)
		if err != nil {
			c.fnErr = err
			return "", err
		}
		return id, nil
	}
	schedule2 := func(when int64, function string) (string, error) { return schedule(when, function, nil) }
	cancel := func(id string) (int64, error) {
		if c.Sched == nil {
			c.fnErr = api.Wrap(ErrNotMutation, "lunora_cancel is not available here: alarms are cancelled by mutations on shards, not by queries or global functions")
			return 0, c.fnErr
		}
		ok, err := c.Sched.Cancel(id)
		if err != nil {
			c.fnErr = err
			return 0, err
		}
		if ok {
			return 1, nil
		}
		return 0, nil
	}
	enqueue := func(queue string, body any) (string, error) {
		if c.Sched == nil {
			c.fnErr = api.Wrap(ErrNotMutation, "lunora_enqueue is not available here: messages are enqueued by mutations on shards, not by queries or global functions")
			return "", c.fnErr
		}
		var b string
		switch x := body.(type) {
		case string:
			b = x
		case []byte:
			b = string(x)
		default:
			c.fnErr = api.Errorf(codes.InvalidArgument, "lunora_enqueue: the body must be JSON as text, e.g. json_object('room', :room), not %T", body)
			return "", c.fnErr
		}
		id, err := c.Sched.Enqueue(queue, b)
		if err != nil {
			c.fnErr = err
			return "", err
		}
		return id, nil
	}
	attempt := func() int64 { return c.Attempt }
	for _, f := range []struct {
		name string
		impl any
	}{
		{"lunora_schedule", schedule},
		{"lunora_schedule", schedule2},
		{"lunora_cancel", cancel},
		{"lunora_enqueue", enqueue},
		{"lunora_attempt", attempt},
	} {
		if err := c.C.RegisterFunc(f.name, f.impl, false); err != nil {
			return errors.New("register " + f.name + ": " + err.Error())
		}
	}
	return nil
}
