package schema

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"
)

// Queue is one queue declared under queues: in lunora.yaml
// (ARCHITECTURE.md §8). lunora_enqueue(queue, body_json) in a mutation
// writes a message to the shard's outbox in the mutation's transaction;
// the node that holds the shard delivers it at least once.
type Queue struct {
	Name string
	Line int
	// Consumer, when set, is the mutation each message runs: the message
	// body is its arguments (JSON object), and it runs on the shard they
	// name. Without one, messages wait for external consumers (Consume over
	// gRPC, or the HTTP receive/ack endpoints).
	Consumer string
	// MaxAttempts bounds the deliveries of one message; after the last
	// fails (nacked, or its lease expired) it is dead-lettered.
	MaxAttempts int
	// Backoff is the delay before the second delivery of a nacked
	// message; it doubles per attempt up to BackoffMax.
	Backoff, BackoffMax time.Duration
	// VisibilityTimeout is a delivery's lease: a message neither
	// acknowledged nor extended by then is delivered again.
	VisibilityTimeout time.Duration
	// DeadLetter, when set, names the queue dead messages are enqueued on
	// (in the same shard); otherwise they are kept as the queue's
	// dead-letter list, which the admin API lists and redrives.
	DeadLetter string
}

// Queue defaults.
const (
	DefaultQueueMaxAttempts = 5
	DefaultQueueBackoff     = time.Second
	DefaultQueueBackoffMax  = 5 * time.Minute
	DefaultQueueVisibility  = 30 * time.Second
	// MaxQueueMaxAttempts and MaxQueueVisibility bound what lunora.yaml
	// (and a consumer's extend) may ask for.
	MaxQueueMaxAttempts = 1000
	MaxQueueVisibility  = 12 * time.Hour
)

var queueNameRe = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,62}$`)

// ValidQueueName reports whether name may name a queue.
func ValidQueueName(name string) bool { return queueNameRe.MatchString(name) }

// Queue returns the declared queue, or nil.
func (a *App) Queue(name string) *Queue { return a.Queues[name] }

// QueueNames returns the declared queues' names, sorted.
func (a *App) QueueNames() []string {
	out := make([]string, 0, len(a.Queues))
	for n := range a.Queues {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Delay is the wait before delivery attempt+1 of a message whose
// attempt-th delivery failed.
func (q *Queue) Delay(attempt int) time.Duration {
	d := q.Backoff
	for i := 1; i < attempt && d < q.BackoffMax; i++ {
		d *= 2
	}
	return min(d, q.BackoffMax)
}

func (p *parser) queue(name string, k, v *yaml.Node) (*Queue, error) {
	if !ValidQueueName(name) {
		return nil, p.errf(k, "queue name %q must be 1-63 characters of a-z, 0-9, '_', '.', '-', starting with a letter", name)
	}
	q := &Queue{Name: name, Line: k.Line, MaxAttempts: DefaultQueueMaxAttempts, Backoff: DefaultQueueBackoff,
		BackoffMax: DefaultQueueBackoffMax, VisibilityTimeout: DefaultQueueVisibility}
	if v.Kind == yaml.ScalarNode && v.Value == "" {
		return q, nil // "name:" with every default
	}
	duration := func(v *yaml.Node, what string, lo, hi time.Duration) (time.Duration, error) {
		s, err := p.scalar(v, what)
		if err != nil {
			return 0, err
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, p.errf(v, "queue %s: %s %q is not a duration (e.g. 500ms, 30s, 5m)", name, what, s)
		}
		if d < lo || d > hi {
			return 0, p.errf(v, "queue %s: %s must be between %s and %s, not %s", name, what, lo, hi, d)
		}
		return d, nil
	}
	err := p.mapping(v, "queue "+name, []string{"consumer", "max_attempts", "backoff", "backoff_max", "visibility_timeout", "dead_letter"}, func(key string, k, v *yaml.Node) error {
		var err error
		switch key {
		case "consumer":
			q.Consumer, err = p.scalar(v, "consumer")
		case "max_attempts":
			var s string
			if s, err = p.scalar(v, "max_attempts"); err == nil {
				n, cerr := strconv.Atoi(s)
				if cerr != nil || n < 1 || n > MaxQueueMaxAttempts {
					err = p.errf(v, "queue %s: max_attempts must be a whole number from 1 to %d, not %q", name, MaxQueueMaxAttempts, s)
				}
				q.MaxAttempts = n
			}
		case "backoff":
			q.Backoff, err = duration(v, "backoff", 10*time.Millisecond, time.Hour)
		case "backoff_max":
			q.BackoffMax, err = duration(v, "backoff_max", 10*time.Millisecond, 24*time.Hour)
		case "visibility_timeout":
			q.VisibilityTimeout, err = duration(v, "visibility_timeout", time.Second, MaxQueueVisibility)
		case "dead_letter":
			q.DeadLetter, err = p.scalar(v, "dead_letter")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if q.BackoffMax < q.Backoff {
		return nil, p.errf(k, "queue %s: backoff_max (%s) is below backoff (%s)", name, q.BackoffMax, q.Backoff)
	}
	return q, nil
}

// checkQueues validates what refers across declarations: consumers and
// dead-letter queues.
func (a *App) checkQueues(file string) error {
	fail := func(line int, format string, args ...any) error {
		return &LineError{File: file, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	for _, name := range a.QueueNames() {
		q := a.Queues[name]
		if q.Consumer != "" {
			f := a.Functions[q.Consumer]
			switch {
			case f == nil:
				return fail(q.Line, "queue %s: consumer %q is not a declared function", name, q.Consumer)
			case f.Kind != Mutation:
				return fail(q.Line, "queue %s: consumer %s is a %s; a consumer runs as a mutation", name, f.Name, f.Kind)
			case f.Global():
				return fail(q.Line, "queue %s: consumer %s is global; a consumer runs on a shard (the one its arguments name)", name, f.Name)
			}
		}
		if q.DeadLetter != "" {
			d := a.Queues[q.DeadLetter]
			switch {
			case d == nil:
				return fail(q.Line, "queue %s: dead_letter %q is not a declared queue", name, q.DeadLetter)
			case d == q:
				return fail(q.Line, "queue %s: dead_letter cannot be the queue itself", name)
			case d.DeadLetter != "":
				return fail(q.Line, "queue %s: dead_letter %s has a dead_letter of its own; chains of dead-letter queues are not supported", name, d.Name)
			}
		}
	}
	return nil
}
