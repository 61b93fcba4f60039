package sqlitex

import (
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

// alarmFuncs are lunora_schedule(when, function[, args_json]),
// lunora_cancel(id), lunora_enqueue(queue, body_json) and
// lunora_attempt().
func (c *Conn) alarmFuncs() []goFunc {
	schedule := func(a []any) (any, error) {
		if c.Sched == nil {
			c.fnErr = api.Wrap(ErrNotMutation, "lunora_schedule is not available here: alarms are scheduled by mutations on shards, not by queries or global functions")
			return nil, c.fnErr
		}
		var args string
		if len(a) == 3 {
			switch x := a[2].(type) {
			case string:
				args = x
			case []byte: // a blob, or NULL (nil)
				args = string(x)
			default:
				c.fnErr = api.Errorf(codes.InvalidArgument, "lunora_schedule: args must be a JSON object as text, e.g. json_object('room', :room)")
				return nil, c.fnErr
			}
		}
		id, err := c.Sched.Schedule(a[0].(int64), a[1].(string), args)
		if err != nil {
			c.fnErr = err
			return nil, err
		}
		return id, nil
	}
	cancel := func(a []any) (any, error) {
		if c.Sched == nil {
			c.fnErr = api.Wrap(ErrNotMutation, "lunora_cancel is not available here: alarms are cancelled by mutations on shards, not by queries or global functions")
			return nil, c.fnErr
		}
		ok, err := c.Sched.Cancel(a[0].(string))
		if err != nil {
			c.fnErr = err
			return nil, err
		}
		if ok {
			return int64(1), nil
		}
		return int64(0), nil
	}
	enqueue := func(a []any) (any, error) {
		if c.Sched == nil {
			c.fnErr = api.Wrap(ErrNotMutation, "lunora_enqueue is not available here: messages are enqueued by mutations on shards, not by queries or global functions")
			return nil, c.fnErr
		}
		var b string
		switch x := a[1].(type) {
		case string:
			b = x
		case []byte:
			b = string(x)
		default:
			c.fnErr = api.Errorf(codes.InvalidArgument, "lunora_enqueue: the body must be JSON as text, e.g. json_object('room', :room), not %T", a[1])
			return nil, c.fnErr
		}
		id, err := c.Sched.Enqueue(a[0].(string), b)
		if err != nil {
			c.fnErr = err
			return nil, err
		}
		return id, nil
	}
	attempt := func([]any) (any, error) { return c.Attempt, nil }
	return []goFunc{
		{name: "lunora_schedule", args: []argKind{argInt, argText, argAny}, impl: schedule},
		{name: "lunora_schedule", args: []argKind{argInt, argText}, impl: schedule},
		{name: "lunora_cancel", args: []argKind{argText}, impl: cancel},
		{name: "lunora_enqueue", args: []argKind{argText, argAny}, impl: enqueue},
		{name: "lunora_attempt", impl: attempt},
	}
}
