package schema_test

import (
	"strings"
	"testing"
	"time"

	"github.com/lunora/lunora/schema"
)

const queueBase = `
tables:
  t:
    shard_by: k
    columns: {k: text, v: int}
    primary_key: [k]
  g:
    global: true
    columns: {id: text}
    primary_key: [id]
functions:
  t:consume:
    kind: mutation
    shard_by: k
    args: {k: text, v: int}
    sql: ["INSERT INTO t(k, v) VALUES (:k, :v)"]
  t:get:
    kind: query
    shard_by: k
    args: {k: text}
    sql: ["SELECT v FROM t"]
  g:add:
    kind: mutation
    global: true
    args: {id: text}
    sql: ["INSERT INTO g(id) VALUES (:id)"]
`

func TestQueuesParse(t *testing.T) {
	app, err := schema.Parse("q.yaml", []byte(queueBase+`
queues:
  jobs:
    consumer: t:consume
    max_attempts: 7
    backoff: 2s
    backoff_max: 1m
    visibility_timeout: 45s
    dead_letter: jobs.dead
  jobs.dead:
`))
	if err != nil {
		t.Fatal(err)
	}
	q := app.Queue("jobs")
	if q == nil || q.Consumer != "t:consume" || q.MaxAttempts != 7 || q.Backoff != 2*time.Second || q.BackoffMax != time.Minute ||
		q.VisibilityTimeout != 45*time.Second || q.DeadLetter != "jobs.dead" {
		t.Fatalf("jobs: %+v", q)
	}
	d := app.Queue("jobs.dead")
	if d == nil || d.MaxAttempts != schema.DefaultQueueMaxAttempts || d.VisibilityTimeout != schema.DefaultQueueVisibility {
		t.Fatalf("jobs.dead with defaults: %+v", d)
	}
	if got := strings.Join(app.QueueNames(), ","); got != "jobs,jobs.dead" {
		t.Fatalf("names %s", got)
	}
	for attempt, want := range map[int]time.Duration{1: 2 * time.Second, 2: 4 * time.Second, 5: 32 * time.Second, 6: time.Minute, 60: time.Minute} {
		if got := q.Delay(attempt); got != want {
			t.Errorf("Delay(%d) = %s, want %s", attempt, got, want)
		}
	}
}

func TestQueuesRefused(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"queues:\n  Bad!:\n", "queue name"},
		{"queues:\n  q:\n    consumer: nope:fn\n", "not a declared function"},
		{"queues:\n  q:\n    consumer: t:get\n", "is a query"},
		{"queues:\n  q:\n    consumer: g:add\n", "is global"},
		{"queues:\n  q:\n    max_attempts: 0\n", "max_attempts"},
		{"queues:\n  q:\n    max_attempts: many\n", "max_attempts"},
		{"queues:\n  q:\n    backoff: soon\n", "not a duration"},
		{"queues:\n  q:\n    visibility_timeout: 10ms\n", "between"},
		{"queues:\n  q:\n    backoff: 1m\n    backoff_max: 1s\n", "below backoff"},
		{"queues:\n  q:\n    dead_letter: nope\n", "not a declared queue"},
		{"queues:\n  q:\n    dead_letter: q\n", "cannot be the queue itself"},
		{"queues:\n  a:\n    dead_letter: b\n  b:\n    dead_letter: c\n  c:\n", "chains"},
		{"queues:\n  q:\n    colour: red\n", "colour"},
	} {
		_, err := schema.Parse("q.yaml", []byte(queueBase+tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v; want an error mentioning %q", tc.yaml, err, tc.want)
		}
	}
}
